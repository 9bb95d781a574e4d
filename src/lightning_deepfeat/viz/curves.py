"""``LearningCurves``: train and val error against examples seen, each learning-rate drop marked."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from lightning_deepfeat.validation import check_int, check_number, check_path, fail
from lightning_deepfeat.viz._common import agg_pyplot, output_dir, save_figure


class LearningCurves(Callback):
    r"""At the end of fit, write ``learning_curves.png`` (``figsize`` × ``dpi`` pixels).

    Each training epoch contributes one point (n_e, train_error_e, val_error_e), n_e =
    training examples seen so far (summed over processes). The learning rate of the
    first optimizer's first parameter group is read at the start of every epoch; when
    lr_e ≤ lr_{e−1} / ``drop_factor`` a dashed vertical line marks the drop at n (the
    legend reads "LR ÷``drop_factor`` drop") — so it works with any scheduler or
    callback that lowers the LR.

    The history (``points``, ``lrs``, ``drops``, ``examples_seen``) is saved in
    checkpoints: a run resumed with ``trainer.fit(..., ckpt_path=...)`` draws the curves of
    the whole run, the same as an uninterrupted one.

    Args:
        dirpath: output directory (default: the trainer's log directory).
        filename: PNG name.
        drop_factor: the ratio that counts as a drop (10 for "÷10").
        figsize: inches; with ``dpi`` it fixes the PNG size.
        dpi: pixels per inch.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str = "learning_curves.png",
        drop_factor: float = 10.0,
        figsize: tuple[float, float] = (6.4, 4.0),
        dpi: int = 100,
    ) -> None:
        super().__init__()
        self.drop_factor = check_number("drop_factor", drop_factor, low=1, low_open=True, hint="10 marks ÷10 drops")
        if not isinstance(filename, str) or not filename.endswith(".png"):
            raise fail("filename", "a '.png' file name", filename)
        self.dirpath = check_path("dirpath", dirpath, kind="directory", allow_none=True, hint="None: trainer.log_dir")
        self.filename = filename
        self.figsize = (float(figsize[0]), float(figsize[1]))
        self.dpi = check_int("dpi", dpi, low=1)
        self.examples_seen = 0
        self.points: list[tuple[int, float, float]] = []  # (examples, train_error, val_error)
        self.lrs: list[float] = []
        self.drops: list[tuple[int, float, float]] = []  # (examples, lr_before, lr_after)
        self.path: str | None = None

    @staticmethod
    def current_lr(trainer: Trainer) -> float | None:
        """The learning rate of the first optimizer's first parameter group (``None`` without an optimizer)."""
        if not trainer.optimizers:
            return None
        return float(trainer.optimizers[0].param_groups[0]["lr"])

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        lr = self.current_lr(trainer)
        if lr is None:
            return
        if self.lrs and lr <= self.lrs[-1] / self.drop_factor * (1 + 1e-6):
            self.drops.append((self.examples_seen, self.lrs[-1], lr))
        self.lrs.append(lr)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        y = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else batch
        n = int(y.shape[0]) if hasattr(y, "shape") else 0
        self.examples_seen += n * trainer.world_size

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        m = trainer.callback_metrics
        train = float(m["train_error"]) if "train_error" in m else float("nan")
        val = float(m["val_error"]) if "val_error" in m else float("nan")
        self.points.append((self.examples_seen, train, val))

    def plot(self, trainer: Trainer | None = None, path: str | None = None) -> str:
        """Draw the curves into ``path`` (default: ``filename`` in the working directory) and return it."""
        plt = agg_pyplot()
        fig, ax = plt.subplots(figsize=self.figsize, dpi=self.dpi)
        xs = [p[0] for p in self.points]
        ax.plot(xs, [p[1] for p in self.points], "o-", ms=3, label="train error")
        ax.plot(xs, [p[2] for p in self.points], "s-", ms=3, label="val error")
        label = f"LR ÷{self.drop_factor:g} drop"
        for i, (n, before, after) in enumerate(self.drops):
            ax.axvline(n, color="k", ls="--", lw=0.8, label=label if i == 0 else None)
            ax.annotate(
                f"lr {before:.3g}→{after:.3g}",
                (n, 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                rotation=90,
                va="top",
                ha="right",
            )
        ax.set_xlabel("training examples seen")
        ax.set_ylabel("classification error")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        return save_figure(fig, path or self.filename, trainer, tag="learning_curves", dpi=self.dpi)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero and self.points:
            self.path = self.plot(trainer, os.path.join(output_dir(trainer, self.dirpath), self.filename))

    @property
    @override
    def state_key(self) -> str:
        # two curves of one run differ by their file
        return type(self).__qualname__ + repr({"filename": self.filename})

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "examples_seen": self.examples_seen,
            "points": [list(p) for p in self.points],
            "lrs": list(self.lrs),
            "drops": [list(d) for d in self.drops],
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.examples_seen = int(state_dict["examples_seen"])
        self.points = [(int(n), float(train), float(val)) for n, train, val in state_dict["points"]]
        self.lrs = [float(lr) for lr in state_dict["lrs"]]
        self.drops = [(int(n), float(before), float(after)) for n, before, after in state_dict["drops"]]
