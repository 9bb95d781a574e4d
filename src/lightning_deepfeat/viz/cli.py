"""``deepfeat visualize``: class models and saliency maps of a checkpoint, from the command line.

``deepfeat visualize --ckpt_path P [--config C] [--out DIR]`` writes ``class_models.png``
and ``saliency.png`` (see :func:`~lightning_deepfeat.viz.visualize`). Without ``--config``
the ``config.yaml`` that ``deepfeat fit`` saved beside the checkpoint's folder is used
(or the classes recorded in the checkpoint). Without ``--out`` the pictures go into
``<run>/visualize/`` of the run that wrote the checkpoint, or a new
``lightning_logs/visualize/version_<n>``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from typing_extensions import override

from lightning_deepfeat.cli.analysis import AnalysisCLI, new_run_dir, positive_int, sanitised_configs


class VisualizeCLI(AnalysisCLI):
    """``deepfeat visualize``: the fit config's model and data, plus the picture arguments."""

    result: dict[str, Any]  # set by visualize_main: the paths written

    @override
    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt_path", type=str, required=True, help="Checkpoint whose weights are visualised.")
        parser.add_argument(
            "--out",
            type=str | None,
            default=None,
            help="Output directory (default: <run>/visualize of the checkpoint's run).",
        )
        parser.add_argument("--num_images", type=int, default=8, help="Test images with a saliency map.")
        parser.add_argument(
            "--classes", type=list[int] | None, default=None, help="Classes with a class-model image (default: all)."
        )
        parser.add_argument("--ascent_steps", type=int, default=200, help="Gradient-ascent steps per class model.")
        parser.add_argument("--l2", type=float, default=0.05, help="λ of the class-model objective S_c(x) − λ‖x‖².")

    @override
    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        positive_int("ascent_steps", self.config.get("ascent_steps"))


def default_out(ckpt_path: str) -> Path:
    """``<run>/visualize`` for a checkpoint in ``<run>/checkpoints/``, else ``lightning_logs/visualize/version_<n>``."""
    folder = Path(ckpt_path).expanduser().resolve().parent
    if folder.name == "checkpoints":
        return folder.parent / "visualize"
    return new_run_dir("lightning_logs/visualize")


def visualize_main(argv: Sequence[str], **kwargs: Any) -> AnalysisCLI:
    """Run ``visualize …`` (``argv`` without the word ``visualize``); the returned CLI carries ``.result``."""
    from lightning_deepfeat.viz.backward import visualize

    parser_kwargs = {"prog": "deepfeat visualize", **kwargs.pop("parser_kwargs", {})}
    with tempfile.TemporaryDirectory() as tmpdir:
        cli = VisualizeCLI(args=sanitised_configs(list(argv), tmpdir), parser_kwargs=parser_kwargs, **kwargs)
    cfg = cli.config
    cli.load_weights(cfg["ckpt_path"])
    out = cfg.get("out") or str(default_out(cfg["ckpt_path"]))
    paths = visualize(
        cli.model,
        cli.datamodule,
        out,
        num_images=cfg["num_images"],
        classes=cfg["classes"],
        steps=cfg["ascent_steps"],
        l2=cfg["l2"],
    )
    print(f"deepfeat visualize: wrote {', '.join(paths.values())}", flush=True)
    cli.result = {"paths": paths}
    return cli


__all__ = ["VisualizeCLI", "default_out", "visualize_main"]
