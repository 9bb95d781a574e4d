"""``DropoutSchedule``: change the dropout probability during training and log the generalisation gap."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

#: the dropout layers a schedule can drive (torch's public classes)
DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)

_SCHEDULES = ("constant", "linear", "step")


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
        schedule: str = "constant",
        start: float = 0.5,
        end: float | None = None,
        milestones: Sequence[int] = (),
        values: Sequence[float] | None = None,
        epochs: int | None = None,
        modules: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if schedule not in _SCHEDULES:
            raise ValueError(f"`schedule` must be one of {_SCHEDULES}, got {schedule!r}.")
        for name, value in (("start", start), ("end", end)):
            if value is None and name == "end":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must be a dropout probability in [0, 1), got {value!r}.")
        if isinstance(milestones, (str, bytes)) or not all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in milestones):
            raise ValueError(f"`milestones` must be a list of epoch indices (ints >= 0), got {milestones!r}.")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"`milestones` must be increasing, got {list(milestones)!r}.")
        if schedule == "step" and not milestones:
            raise ValueError("`milestones` must name at least one epoch for schedule='step', got [].")
        if schedule in ("linear", "step") and end is None and values is None:
            raise ValueError(f"`end` is required for schedule={schedule!r} (the final dropout probability), got None.")
        if values is not None:
            if len(values) != len(milestones) or not all(isinstance(v, (int, float)) and 0.0 <= v < 1.0 for v in values):
                raise ValueError(f"`values` must hold one probability in [0, 1) per milestone ({len(milestones)}), got {values!r}.")
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
            raise ValueError(f"`epochs` must be an int >= 1 or None (use trainer.max_epochs), got {epochs!r}.")
        self.schedule = schedule
        self.start = float(start)
        self.end = float(end) if end is not None else None
        self.milestones = list(milestones)
        self.values = [float(v) for v in values] if values is not None else ([self.end] * len(self.milestones) if self.end is not None else [])
        self.epochs = epochs
        self.modules = list(modules) if modules else None
        self.history: list[tuple[int, float]] = []

    def probability(self, epoch: int, total_epochs: int | None = None) -> float:
        """The dropout probability p_e of epoch ``epoch``."""
        if self.schedule == "constant":
            return self.start
        if self.schedule == "linear":
            total = self.epochs or total_epochs or 1
            frac = 1.0 if total <= 1 else min(epoch / (total - 1), 1.0)
            return self.start + (self.end - self.start) * frac
        p = self.start
        for milestone, value in zip(self.milestones, self.values):
            if epoch >= milestone:
                p = value
        return p

    def dropouts(self, module: nn.Module) -> list[nn.Module]:
        """The dropout modules this schedule drives."""
        import fnmatch

        found = []
        for name, sub in module.named_modules():
            if isinstance(sub, DROPOUT_TYPES):
                if self.modules is None or any(fnmatch.fnmatchcase(name, pat) for pat in self.modules):
                    found.append(sub)
        return found

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and not self.dropouts(pl_module):
            raise ValueError(
                f"DropoutSchedule found no nn.Dropout module in {type(pl_module).__name__}"
                + (f" matching `modules`={self.modules!r}" if self.modules else "")
                + "; build the net with dropout > 0."
            )

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        p = self.probability(trainer.current_epoch, max_epochs)
        for module in self.dropouts(pl_module):
            module.p = p
        self.history.append((trainer.current_epoch, p))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        p = self.history[-1][1] if self.history else self.start
        pl_module.log("dropout_p", p, on_step=False, on_epoch=True)
        metrics = trainer.callback_metrics
        if "val_error" in metrics and "train_error" in metrics:
            gap = float(metrics["val_error"]) - float(metrics["train_error"])
            pl_module.log("generalization_gap", gap, on_step=False, on_epoch=True)
