"""``deepfeat probe layerwise``: train each layer alone from the same weights, from the command line.

``deepfeat probe layerwise --config C [--ckpt_path P] [--steps N] [--out DIR]`` reads the
model, data and optimizer of a ``deepfeat fit`` config (see
:class:`~lightning_deepfeat.cli.analysis.AnalysisCLI`), trains each layer alone for N
steps from the same weights (:func:`~lightning_deepfeat.probes.layerwise_probe`) and
writes ``layerwise_losses.csv``, ``layerwise_summary.csv``, ``layerwise_table.md`` and
``layerwise_losses.png`` into ``--out`` (default: a new ``lightning_logs/probe_layerwise/version_<n>``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import Any

from typing_extensions import override

from lightning_deepfeat.cli.analysis import AnalysisCLI, new_run_dir, positive_int, sanitised_configs

PROBES = {"layerwise": "train one layer at a time from the same weights and compare the losses"}


class LayerwiseProbeCLI(AnalysisCLI):
    """``deepfeat probe layerwise``: the fit config's model/data/optimizer, plus the probe's own arguments."""

    result: dict[str, Any]  # set by probe_main: the runs and the paths written

    @override
    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--ckpt_path", type=str | None, default=None, help="Start from these weights instead of the initial ones."
        )
        parser.add_argument(
            "--out",
            type=str | None,
            default=None,
            help="Output directory (default: a new lightning_logs/probe_layerwise/version_<n>).",
        )
        parser.add_argument("--steps", type=int, default=100, help="Optimizer steps per layer.")

    @override
    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        positive_int("steps", self.config.get("steps"))


def probe_main(argv: Sequence[str], **kwargs: Any) -> AnalysisCLI:
    """Run ``probe <name> …`` (``argv`` without the word ``probe``); the returned CLI carries ``.result``."""
    argv = list(argv)
    names = ",".join(PROBES)
    if not argv or argv[0] in ("-h", "--help"):
        rows = "\n".join(f"  {name}  {text}" for name, text in PROBES.items())
        print(
            f"usage: deepfeat probe {{{names}}} --config CONFIG [--ckpt_path CKPT] [--steps N] [--out DIR]\n\n"
            f"probes:\n{rows}"
        )
        raise SystemExit(0 if argv else 2)
    if argv[0] not in PROBES:
        raise ValueError(f"`deepfeat probe` got probe name {argv[0]!r}; allowed: {', '.join(PROBES)}.")
    from lightning_deepfeat.probes.layerwise import format_table, layerwise_probe, write_layerwise_outputs

    parser_kwargs = {"prog": f"deepfeat probe {argv[0]}", **kwargs.pop("parser_kwargs", {})}
    with tempfile.TemporaryDirectory() as tmpdir:
        cli = LayerwiseProbeCLI(args=sanitised_configs(argv[1:], tmpdir), parser_kwargs=parser_kwargs, **kwargs)
    cfg = cli.config
    if cfg.get("ckpt_path"):
        cli.load_weights(cfg["ckpt_path"])
    cli.datamodule.setup("fit")
    runs = layerwise_probe(cli.model, cli.datamodule, steps=cfg["steps"], progress=True)
    title = f"{type(cli.model.features).__name__} on {type(cli.datamodule).__name__}: {cfg['steps']} steps per layer"
    out = cfg.get("out") or str(new_run_dir("lightning_logs/probe_layerwise"))
    paths = write_layerwise_outputs(runs, out, title=title)
    print(format_table(runs), flush=True)
    print(f"deepfeat probe layerwise: wrote {', '.join(paths.values())}", flush=True)
    cli.result = {"runs": runs, "paths": paths}
    return cli


__all__ = ["PROBES", "LayerwiseProbeCLI", "probe_main"]
