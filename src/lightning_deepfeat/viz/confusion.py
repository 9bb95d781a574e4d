"""``ConfusionMatrixPlot``: the confusion matrix on the test split, as a PNG."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lightning_deepfeat.viz._common import agg_pyplot, check_dirpath, output_dir, save_figure


def plot_confusion(matrix: torch.Tensor, class_names: Sequence[str] | None, path: str, trainer: Any = None, normalize: bool = True, figsize: tuple[float, float] = (5.0, 5.0), dpi: int = 100, title: str = "") -> str:
    r"""Draw C (C_{ij} = #{true i, predicted j}); with ``normalize`` each row is divided by its sum (recall per class)."""
    plt = agg_pyplot()
    m = matrix.double()
    shown = m / m.sum(1, keepdim=True).clamp_min(1) if normalize else m
    k = m.shape[0]
    names = list(class_names) if class_names and len(class_names) == k else [str(i) for i in range(k)]
    fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    ax.imshow(shown.numpy(), cmap="Blues", vmin=0, vmax=1 if normalize else None)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if m[i, j] > 0:
                    ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=6, color="white" if shown[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), names, rotation=90 if max(len(n) for n in names) > 2 else 0, fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    errors = int(m.sum() - m.diag().sum())
    ax.set_title(title or f"test confusion matrix ({errors} errors / {int(m.sum())})", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, trainer, tag="confusion_matrix", dpi=dpi)


class ConfusionMatrixPlot(Callback):
    """During ``trainer.test``, accumulate predictions and write ``confusion_matrix.png`` at ``on_test_end``.

    The matrix is also kept in ``self.matrix`` (int64, rows = true class). Class names
    come from the data module's ``class_names`` when it has them.

    Args:
        dirpath: output directory (default: the trainer's log directory).
        filename: PNG name.
        normalize: colour by row-normalised rates (counts are printed in the cells).
        figsize, dpi: fix the PNG size (500×500 by default).
    """

    def __init__(self, dirpath: str | None = None, filename: str = "confusion_matrix.png", normalize: bool = True, figsize: tuple[float, float] = (5.0, 5.0), dpi: int = 100) -> None:
        super().__init__()
        if not isinstance(filename, str) or not filename.endswith(".png"):
            raise ValueError(f"`filename` must be a '.png' file name, got {filename!r}.")
        self.dirpath = check_dirpath(dirpath)
        self.filename = filename
        self.normalize = normalize
        self.figsize = tuple(figsize)
        self.dpi = dpi
        self.matrix: torch.Tensor | None = None
        self.path: str | None = None

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        k = int(getattr(pl_module, "num_classes", 0))
        if k < 2:
            raise ValueError(f"ConfusionMatrixPlot needs a module with `num_classes` >= 2, got {k!r}.")
        self.matrix = torch.zeros(k, k, dtype=torch.int64)

    @torch.no_grad()
    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch[0], batch[1]
        pred = pl_module(x).argmax(1).cpu()
        k = self.matrix.shape[0]
        self.matrix += torch.bincount(y.cpu() * k + pred, minlength=k * k).view(k, k)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        matrix = trainer.strategy.reduce(self.matrix.to(pl_module.device), reduce_op="sum").cpu() if trainer.world_size > 1 else self.matrix
        self.matrix = matrix.long()
        if trainer.is_global_zero:
            names = getattr(trainer.datamodule, "class_names", None) if trainer.datamodule is not None else None
            path = os.path.join(output_dir(trainer, self.dirpath), self.filename)
            self.path = plot_confusion(self.matrix, names, path, trainer, self.normalize, self.figsize, self.dpi)
