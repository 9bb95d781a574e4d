"""``ConfusionMatrixPlot``: the confusion matrix on the test split, as a PNG."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torchmetrics.classification import MulticlassConfusionMatrix
from typing_extensions import override

from lightning_deepfeat.validation import check_bool, check_int, check_path, fail
from lightning_deepfeat.viz._common import agg_pyplot, output_dir, save_figure


def plot_confusion(
    matrix: torch.Tensor,
    class_names: Sequence[str] | None,
    path: str,
    trainer: Any = None,
    normalize: bool = True,
    figsize: tuple[float, float] = (5.0, 5.0),
    dpi: int = 100,
    title: str = "",
) -> str:
    r"""Draw C (C_{ij} = #{true i, predicted j}).

    With ``normalize`` the colours show each row divided by its sum (the recall per class).
    """
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
                    ax.text(
                        j,
                        i,
                        str(int(m[i, j])),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if shown[i, j] > 0.5 else "black",
                    )
    ax.set_xticks(range(k), names, rotation=90 if max(len(n) for n in names) > 2 else 0, fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    errors = int(m.sum() - m.diag().sum())
    ax.set_title(title or f"test confusion matrix ({errors} errors / {int(m.sum())})", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, trainer, tag="confusion_matrix", dpi=dpi)


def _predictions(outputs: Any, labels: torch.Tensor, num_classes: int, module: Any = None) -> torch.Tensor:
    """The predictions in what a ``test_step`` returned: logits ``(N, num_classes)`` or classes ``(N,)``.

    ``outputs`` is a tensor of either, or a mapping holding one under ``"logits"`` (or
    ``"preds"``), as :meth:`FeatureClassifier.test_step` returns. Anything else (``None``
    from a ``test_step`` that returns nothing, a scalar loss) raises a ``ValueError`` that
    says what to return.
    """
    preds = outputs
    if isinstance(outputs, Mapping):
        preds = next((outputs[key] for key in ("logits", "preds") if key in outputs), None)
    n = int(labels.shape[0])
    if isinstance(preds, torch.Tensor) and (
        (preds.dim() == 2 and tuple(preds.shape) == (n, num_classes)) or (preds.dim() == 1 and preds.shape[0] == n)
    ):
        return preds.detach()
    got = f"a tensor of shape {tuple(preds.shape)}" if isinstance(preds, torch.Tensor) else type(outputs).__name__
    if isinstance(outputs, Mapping) and not isinstance(preds, torch.Tensor):
        got = f"a dict with keys {sorted(map(str, outputs))}"
    owner = f"{type(module).__name__}.test_step" if module is not None else "test_step"
    raise ValueError(
        f"ConfusionMatrixPlot reads the predictions from what {owner} returns: the logits ({n}, {num_classes}) "
        f"or the predicted classes ({n},) of the batch, as a tensor or in a dict under 'logits' (or 'preds'), "
        f"e.g. `return {{'logits': logits}}`; it returned {got}."
    )


class ConfusionMatrixPlot(Callback):
    """During ``trainer.test``, accumulate the confusion matrix and write ``confusion_matrix.png`` at ``on_test_end``.

    The matrix is a torchmetrics ``MulticlassConfusionMatrix`` fed in ``on_test_batch_end``
    with the predictions the module's ``test_step`` returns and the labels ``batch[1]``, so
    the forward pass runs once. ``test_step`` must return the logits ``(N, num_classes)``
    or the predicted classes ``(N,)``, as a tensor or in a dict under ``"logits"`` (or
    ``"preds"``); :class:`FeatureClassifier` returns ``{"loss", "logits"}``. A module whose
    ``test_step`` returns nothing gets a ``ValueError`` saying so at the first test batch.
    Under DDP the counts are summed over processes (the metric's own sync).

    The matrix is also kept in ``self.matrix`` (int64, rows = true class). Class names
    come from the data module's ``class_names`` when it has them.

    Args:
        dirpath: output directory (default: the trainer's log directory).
        filename: PNG name.
        normalize: colour by row-normalised rates (counts are printed in the cells).
        figsize: figure size in inches (with ``dpi``, the PNG size: 500×500 by default).
        dpi: dots per inch of the PNG.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str = "confusion_matrix.png",
        normalize: bool = True,
        figsize: tuple[float, float] = (5.0, 5.0),
        dpi: int = 100,
    ) -> None:
        super().__init__()
        if not isinstance(filename, str) or not filename.endswith(".png"):
            raise fail("filename", "a '.png' file name", filename)
        self.dirpath = check_path("dirpath", dirpath, kind="directory", allow_none=True, hint="None: trainer.log_dir")
        self.filename = filename
        self.normalize = check_bool("normalize", normalize)
        self.figsize = (float(figsize[0]), float(figsize[1]))
        self.dpi = check_int("dpi", dpi, low=1)
        self.metric: MulticlassConfusionMatrix | None = None
        self.matrix: torch.Tensor | None = None
        self.path: str | None = None

    @override
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        hint = "ConfusionMatrixPlot reads the number of classes from the module's attribute"
        k = check_int("num_classes", getattr(pl_module, "num_classes", None), low=2, hint=hint)
        self.metric = MulticlassConfusionMatrix(num_classes=k).to(pl_module.device)

    @override
    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        assert self.metric is not None  # created at on_test_start
        labels = batch[1]
        preds = _predictions(outputs, labels, self.metric.num_classes, pl_module)
        self.metric.update(preds, labels)

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert self.metric is not None
        self.matrix = self.metric.compute().long().cpu()  # summed over processes: every rank takes part
        self.metric.reset()
        if trainer.is_global_zero:
            names = getattr(getattr(trainer, "datamodule", None), "class_names", None)
            path = os.path.join(output_dir(trainer, self.dirpath), self.filename)
            self.path = plot_confusion(self.matrix, names, path, trainer, self.normalize, self.figsize, self.dpi)
