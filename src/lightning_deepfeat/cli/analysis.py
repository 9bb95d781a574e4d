"""The base of the commands that analyse a model instead of training it (``probe``, ``visualize``).

They read the same config files as ``deepfeat fit`` (its ``model``, ``data``,
``optimizer`` and ``seed_everything`` sections, with short class names, the data → model
shapes and ``--model.*``/``--data.*`` overrides) through a :class:`DeepFeatCLI` built with
``run=False``, and write their files into ``--out`` or, by default, into a new folder
under ``lightning_logs/`` (nothing is written into the current folder).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from lightning_deepfeat.cli.checkpoints import check_weights_fit, read_checkpoint
from lightning_deepfeat.cli.core import DeepFeatCLI
from lightning_deepfeat.validation import check_int

#: keys of a ``deepfeat fit`` config that the analyses do not take (``config.yaml`` saved by fit has them)
FIT_ONLY_KEYS = ("ckpt_path", "weights_only", "test_after_fit", "trainer")


class AnalysisCLI(DeepFeatCLI):
    """Parses ``model``/``data``/``optimizer`` like ``fit`` and builds them; runs no Trainer.

    Subclasses add their own arguments in :meth:`add_arguments_to_parser` (calling
    ``super()``) and do their work on ``self.model`` and ``self.datamodule``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_callback", None)
        kwargs["run"] = False
        super().__init__(*args, **kwargs)

    def load_weights(self, path: str) -> None:
        """Load the weights of checkpoint ``path`` into ``self.model`` (safe loading, named errors)."""
        checkpoint = read_checkpoint(path)
        check_weights_fit(checkpoint, self.model, path)
        self.model.load_state_dict(checkpoint["state_dict"])


def new_run_dir(root: str | os.PathLike[str]) -> Path:
    """``root/version_<n>`` for the first unused ``n`` (created), like Lightning's loggers number their runs."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    taken = {int(p.name.split("_", 1)[1]) for p in root.glob("version_*") if p.name.split("_", 1)[1].isdigit()}
    n = 0
    while n in taken:
        n += 1
    path = root / f"version_{n}"
    path.mkdir()
    return path


def sanitised_configs(argv: list[str], tmpdir: str) -> list[str]:
    """Copy each ``--config`` file without the keys only ``fit`` takes (:data:`FIT_ONLY_KEYS`).

    A ``config.yaml`` saved by ``deepfeat fit`` has them; the model's ``num_classes`` and
    ``input_shape`` are dropped too, since they come from the data module again.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config", "-c") and i + 1 < len(argv):
            path, i = argv[i + 1], i + 2
        elif arg.startswith("--config="):
            path, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        if not os.path.isfile(path):
            raise FileNotFoundError(f"`--config` must be an existing YAML file, got {path!r}.")
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
        if not isinstance(cfg, dict):
            raise ValueError(f"`--config` {path!r} must hold a YAML mapping, got {type(cfg).__name__}.")
        for key in FIT_ONLY_KEYS:
            cfg.pop(key, None)
        model = cfg.get("model")
        model_args = model.get("init_args") if isinstance(model, dict) else None
        if isinstance(model_args, dict):
            model_args.pop("num_classes", None)
            model_args.pop("input_shape", None)
        clean = os.path.join(tmpdir, f"config{len(out)}_{os.path.basename(path)}")
        with open(clean, "w") as f:
            yaml.safe_dump(cfg, f)
        out += ["--config", clean]
    return out


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is a positive int, else a ``ValueError`` naming the option ``--name``."""
    result: int = check_int(f"--{name}", value, low=1)
    return result


__all__ = ["FIT_ONLY_KEYS", "AnalysisCLI", "new_run_dir", "positive_int", "sanitised_configs"]
