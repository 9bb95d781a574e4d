"""The ``deepfeat probe layerwise`` and ``deepfeat visualize`` subcommands.

Both read the same config file as ``deepfeat fit`` (its ``model``, ``data``,
``optimizer`` and ``seed_everything`` sections; the ``trainer`` section is parsed but
not used) through a :class:`DeepFeatCLI` built with ``run=False``, so short class names,
the data → model links and ``--model.*``/``--data.*`` overrides work as for ``fit``.

``deepfeat probe layerwise --config C [--ckpt_path P] --steps N [--out DIR]``
    trains each layer alone for N steps from the same weights (see
    :func:`layerwise_probe`) and writes ``layerwise_losses.csv``,
    ``layerwise_summary.csv``, ``layerwise_table.md`` and ``layerwise_losses.png``.

``deepfeat visualize --ckpt_path P [--config C] [--out DIR]``
    writes ``class_models.png`` and ``saliency.png`` (see :func:`visualize`). Without
    ``--config`` the ``config.yaml`` that ``deepfeat fit`` saved next to the checkpoint's
    ``checkpoints/`` directory is used.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from lightning_deepfeat.cli import DeepFeatCLI

_PROBES = ("layerwise",)


class _ProbeCLI(DeepFeatCLI):
    """Parses model/data/optimizer like ``fit`` does, plus the probe's own arguments; runs nothing."""

    command = "probe layerwise"

    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt_path", type=str | None, default=None, help="Start from these weights instead of the initial ones.")
        parser.add_argument("--out", type=str, default="probe_layerwise", help="Output directory.")
        parser.add_argument("--steps", type=int, default=100, help="Optimizer steps per layer.")

    def before_instantiate_classes(self) -> None:
        steps = self.config.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"`--steps` must be an int >= 1 (optimizer steps per layer), got {steps!r}.")
        _check_ckpt(self.config.get("ckpt_path"), required=False)


class _VisualizeCLI(DeepFeatCLI):
    command = "visualize"

    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt_path", type=str, required=True, help="Checkpoint whose weights are visualised.")
        parser.add_argument("--out", type=str, default="visualize", help="Output directory.")
        parser.add_argument("--num_images", type=int, default=8, help="Test images with a saliency map.")
        parser.add_argument("--classes", type=list[int] | None, default=None, help="Classes with a class-model image (default: all).")
        parser.add_argument("--ascent_steps", type=int, default=200, help="Gradient-ascent steps per class model.")
        parser.add_argument("--l2", type=float, default=0.05, help="λ of the class-model objective S_c(x) − λ‖x‖².")

    def before_instantiate_classes(self) -> None:
        _check_ckpt(self.config.get("ckpt_path"), required=True)


def _check_ckpt(path: Any, required: bool) -> None:
    if path is None and not required:
        return
    if not isinstance(path, str) or not os.path.isfile(path):
        raise ValueError(f"`--ckpt_path` must be an existing checkpoint file, got {path!r}.")


def _load_weights(model: torch.nn.Module, path: str) -> None:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    state = checkpoint.get("state_dict", checkpoint)
    model.load_state_dict(state)


def _saved_config(argv: list[str]) -> list[str]:
    """Prepend ``--config <ckpt dir>/../config.yaml`` when ``visualize`` got no ``--config``."""
    if any(a == "--config" or a.startswith("--config=") for a in argv):
        return argv
    ckpt = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--ckpt_path"), None)
    ckpt = ckpt or next((a.split("=", 1)[1] for a in argv if a.startswith("--ckpt_path=")), None)
    if ckpt is None:
        return argv
    for candidate in (os.path.join(os.path.dirname(ckpt), "..", "config.yaml"), os.path.join(os.path.dirname(ckpt), "config.yaml")):
        if os.path.isfile(candidate):
            return ["--config", os.path.normpath(candidate), *argv]
    raise ValueError(f"`--config` is required: no config.yaml found next to --ckpt_path={ckpt!r} (looked in its directory and the one above).")


_FIT_ONLY_KEYS = ("ckpt_path", "weights_only", "test_after_fit", "trainer")


def _sanitised_configs(argv: list[str], tmpdir: str) -> list[str]:
    """Copy each ``--config`` file without the keys only ``fit`` knows (``ckpt_path``, ``weights_only`` …).

    A ``config.yaml`` saved by ``deepfeat fit`` has them; the probes read only the
    model, data, optimizer and seed sections. The trainer section is dropped too.
    """
    import yaml

    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        path = None
        if arg == "--config" and i + 1 < len(argv):
            path, i = argv[i + 1], i + 2
        elif arg.startswith("--config="):
            path, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        if not os.path.isfile(path):
            raise ValueError(f"`--config` must be an existing YAML file, got {path!r}.")
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
        if not isinstance(cfg, dict):
            raise ValueError(f"`--config` {path!r} must hold a YAML mapping, got {type(cfg).__name__}.")
        for key in _FIT_ONLY_KEYS:
            cfg.pop(key, None)
        model_args = (cfg.get("model") or {}).get("init_args") if isinstance(cfg.get("model"), dict) else None
        if isinstance(model_args, dict):  # linked from the data module again at parse time
            model_args.pop("num_classes", None)
            model_args.pop("input_shape", None)
        clean = os.path.join(tmpdir, f"config{len(out)}_{os.path.basename(path)}")
        with open(clean, "w") as f:
            yaml.safe_dump(cfg, f)
        out += ["--config", clean]
    return out


def probe_main(argv: Sequence[str], **kwargs: Any) -> DeepFeatCLI:
    """Run ``probe <name> …`` or ``visualize …``; the returned CLI carries ``.result``."""
    import tempfile

    argv = list(argv)
    kwargs.setdefault("save_config_callback", None)

    if argv[0] == "visualize":
        argv = ["visualize", *_saved_config(argv[1:])]
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmpdir:
        warnings.filterwarnings("ignore", message=".*args parameter is intended.*")
        return _dispatch(_sanitised_configs(argv, tmpdir), **kwargs)


def _dispatch(argv: list[str], **kwargs: Any) -> DeepFeatCLI:
    from lightning_deepfeat.probes.layerwise import format_table, layerwise_probe, write_layerwise_outputs
    from lightning_deepfeat.viz.backward import visualize

    if argv[0] == "probe":
        if len(argv) < 2 or argv[1] in ("-h", "--help"):
            print(f"usage: deepfeat probe {{{','.join(_PROBES)}}} --config CONFIG [--ckpt_path CKPT] --steps N [--out DIR]")
            raise SystemExit(0 if len(argv) >= 2 else 2)
        if argv[1] not in _PROBES:
            raise ValueError(f"`deepfeat probe` got probe name {argv[1]!r}; allowed: {', '.join(_PROBES)}.")
        cli = _ProbeCLI(args=argv[2:], run=False, **kwargs)
        cfg = cli.config
        if cfg.get("ckpt_path"):
            _load_weights(cli.model, cfg["ckpt_path"])
        cli.datamodule.setup("fit")
        runs = layerwise_probe(cli.model, cli.datamodule, steps=cfg["steps"], progress=True)
        title = f"{type(cli.model.features).__name__} on {type(cli.datamodule).__name__}: {cfg['steps']} steps per layer"
        paths = write_layerwise_outputs(runs, cfg["out"], title=title)
        print(format_table(runs), flush=True)
        print(f"deepfeat probe layerwise: wrote {', '.join(paths.values())}", flush=True)
        cli.result = {"runs": runs, "paths": paths}
        return cli
    cli = _VisualizeCLI(args=argv[1:], run=False, **kwargs)
    cfg = cli.config
    _load_weights(cli.model, cfg["ckpt_path"])
    paths = visualize(
        cli.model, cli.datamodule, cfg["out"], num_images=cfg["num_images"], classes=cfg["classes"], steps=cfg["ascent_steps"], l2=cfg["l2"]
    )
    print(f"deepfeat visualize: wrote {', '.join(paths.values())}", flush=True)
    cli.result = {"paths": paths}
    return cli
