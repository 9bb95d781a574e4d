"""``DropoutSchedule``: change the dropout probability during training and log the generalisation gap."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from typing_extensions import override

from lightning_deepfeat.validation import check_choice, check_dropout, check_each, check_int, check_ints, fail

#: the dropout layers a schedule can drive (torch's public classes)
DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
DropoutLayer = nn.Dropout | nn.Dropout1d | nn.Dropout2d | nn.Dropout3d | nn.AlphaDropout | nn.FeatureAlphaDropout

Schedule = Literal["constant", "linear", "step"]


class DropoutSchedule(Callback):
    r"""Set ``p`` of every ``nn.Dropout`` (1d/2d/3d/alpha included) at the start of each epoch.

    With e the epoch and E = ``epochs`` (default: ``trainer.max_epochs``):

    * ``constant``: p_e = ``start``;
    * ``linear``: p_e = start + (end − start)·min(e / (E − 1), 1);
    * ``step``: p_e = start before the first epoch in ``milestones``, then ``end``
      (or the successive ``values`` when given, one per milestone).

    At the end of each training epoch it logs ``dropout_p`` and
    ``generalization_gap`` = ``val_error − train_error`` (both read from the epoch's
    logged metrics), so the effect of dropout on the gap shows in one run.

    Args:
        schedule: ``"constant"``, ``"linear"`` or ``"step"``.
        start: p at epoch 0, in [0, 1).
        end: final p (``linear``) or p after the milestone (``step``), in [0, 1).
        milestones: epochs at which the ``step`` schedule switches.
        values: p after each milestone (``step``; default ``[end]``).
        epochs: length E of the ``linear`` ramp (default ``trainer.max_epochs``).
        modules: fnmatch patterns on module names to restrict which dropouts change.
    """

    def __init__(
        self,
        schedule: Schedule = "constant",
        start: float = 0.5,
        end: float | None = None,
        milestones: Sequence[int] = (),
        values: Sequence[float] | None = None,
        epochs: int | None = None,
        modules: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.schedule: Schedule = check_choice("schedule", schedule, Schedule)
        self.start = check_dropout("start", start)
        self.end = None if end is None else check_dropout("end", end)
        self.milestones = list(check_ints("milestones", milestones, low=0, hint="epoch indices"))
        if self.milestones != sorted(self.milestones):
            raise fail("milestones", "increasing epoch indices", list(milestones))
        if schedule == "step" and not self.milestones:
            raise fail("milestones", "a non-empty list of epochs for schedule='step'", list(milestones))
        if end is None and (schedule == "linear" or (schedule == "step" and values is None)):
            raise fail("end", f"a dropout probability for schedule={schedule!r}", end, hint="the final probability")
        if values is not None:
            if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != len(self.milestones):
                raise fail("values", f"one dropout probability per milestone ({len(self.milestones)})", values)
            self.values = check_each("values", values, check_dropout)
        else:
            self.values = [self.end] * len(self.milestones) if self.end is not None else []
        self.epochs = check_int("epochs", epochs, low=1, allow_none=True, hint="None: trainer.max_epochs")
        if modules is not None and (
            isinstance(modules, str)
            or not isinstance(modules, Sequence)
            or not all(isinstance(m, str) and m for m in modules)
        ):
            raise fail("modules", "a list of non-empty fnmatch patterns over module names or None", modules)
        self.modules = list(modules) if modules else None
        self.history: list[tuple[int, float]] = []

    def probability(self, epoch: int, total_epochs: int | None = None) -> float:
        """The dropout probability p_e of epoch ``epoch``."""
        if self.schedule == "constant":
            return self.start
        if self.schedule == "linear":
            total = self.epochs or total_epochs or 1
            frac = 1.0 if total <= 1 else min(epoch / (total - 1), 1.0)
            assert self.end is not None  # the constructor requires it for "linear"
            return self.start + (self.end - self.start) * frac
        p = self.start
        for milestone, value in zip(self.milestones, self.values, strict=True):
            if epoch >= milestone:
                p = value
        return p

    def dropouts(self, module: nn.Module) -> list[DropoutLayer]:
        """The dropout modules this schedule drives."""
        found: list[DropoutLayer] = []
        for name, sub in module.named_modules():
            if isinstance(sub, DROPOUT_TYPES) and (
                self.modules is None or any(fnmatch.fnmatchcase(name, pat) for pat in self.modules)
            ):
                found.append(sub)
        return found

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and not self.dropouts(pl_module):
            raise ValueError(
                f"DropoutSchedule found no nn.Dropout module in {type(pl_module).__name__}"
                + (f" matching `modules`={self.modules!r}" if self.modules else "")
                + "; build the net with dropout > 0."
            )

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        p = self.probability(trainer.current_epoch, max_epochs)
        for module in self.dropouts(pl_module):
            module.p = p
        self.history.append((trainer.current_epoch, p))

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        p = self.history[-1][1] if self.history else self.start
        pl_module.log("dropout_p", p, on_step=False, on_epoch=True)
        metrics = trainer.callback_metrics
        if "val_error" in metrics and "train_error" in metrics:
            gap = float(metrics["val_error"]) - float(metrics["train_error"])
            pl_module.log("generalization_gap", gap, on_step=False, on_epoch=True)
