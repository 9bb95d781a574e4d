r"""``DivideLROnPlateau``: divide every learning rate by a constant when the monitored error plateaus."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch.optim import Optimizer
from typing_extensions import override

from lightning_deepfeat.callbacks._utils import callback_state_key, reduce_mean_consistent, same_logged_value
from lightning_deepfeat.metrics import ClassificationError
from lightning_deepfeat.validation import check_bool, check_choice, check_each, check_int, check_number, check_str, fail

log = logging.getLogger(__name__)

#: ``"min"``: lower is better (an error, a loss); ``"max"``: higher is better (an accuracy).
Mode = Literal["min", "max"]
#: ``"rel"``: an improvement beats the best by :math:`|b|\tau`; ``"abs"``: by :math:`\tau`.
ThresholdMode = Literal["rel", "abs"]


class DivideLROnPlateau(Callback):
    r"""Divide the learning rate of every parameter group by ``divisor`` when ``monitor`` stops improving.

    The rule of the recipe: watch the training error as more examples are processed and,
    when it plateaus, divide the learning rate by 10 (Krizhevsky et al. 2012 did the same on
    the validation error, three times).

    **Decision rule.** Each check receives one value :math:`a_t` of the monitored metric
    (averaged over processes, see below). With ``best`` initialised to :math:`+\infty`
    (``mode="min"``) or :math:`-\infty` (``"max"``), :math:`a_t` is an *improvement* when it is
    finite and

    .. math::
        \begin{array}{ll}
        \text{min, rel: } a_t < b - |b|\,\tau \qquad & \text{min, abs: } a_t < b - \tau \\
        \text{max, rel: } a_t > b + |b|\,\tau \qquad & \text{max, abs: } a_t > b + \tau
        \end{array}

    where :math:`b` is the best value so far and :math:`\tau` the ``threshold`` (any finite
    :math:`a_t` improves on an infinite :math:`b`). The ``|b|`` makes the relative rule right
    for negative metrics, where torch's :math:`b(1 - \tau)` is not (pytorch issue 47513); NaN and
    :math:`\pm\infty` are never improvements. Then, exactly as
    ``torch.optim.lr_scheduler.ReduceLROnPlateau(factor=1/divisor)``:

    * an improvement sets :math:`b \leftarrow a_t` and the bad-check counter to 0, anything
      else increments it;
    * during the ``cooldown`` checks that follow a drop the counter is held at 0;
    * when the counter exceeds ``patience`` every learning rate becomes
      :math:`\eta_g \leftarrow \max(\eta_g / d,\ \eta^{\min}_g)` (unchanged when that moves
      it by less than ``eps``), the cooldown starts and the counter is reset.

    Every parameter group of every optimizer is divided by the same :math:`d`, so their
    ratios are kept until a group reaches its floor.

    **When it checks.** Once per epoch by default: right after validation when ``monitor``
    is logged by the validation loop (so ``check_val_every_n_epoch > 1`` simply means fewer
    checks), otherwise at the end of the training epoch. With ``check_every_n_steps=N`` it
    instead checks every ``N`` optimizer steps on the mean of the monitored value over those
    steps: either a value the module logs every step (``self.log(monitor, v, on_step=True)``)
    or, for :class:`~lightning_deepfeat.models.FeatureClassifier`'s epoch-level
    ``train_error``, the exact sample-weighted error of the last ``N`` steps read from the
    metric's running counts.

    A check uses only a value logged since the previous one (a value not logged again is not
    checked twice). In the per-epoch mode a value logged per step only (``on_step=True,
    on_epoch=False``) is refused, and with ``check_every_n_steps`` one logged per epoch only:
    each with an error that says how to log it.

    Checks happen before :class:`~lightning.pytorch.callbacks.ModelCheckpoint` writes the
    checkpoint of that epoch (Lightning runs checkpoint callbacks last), so a run resumed from
    any epoch's checkpoint reproduces the uninterrupted learning-rate sequence. The exception:
    a per-epoch check at the end of the training epoch comes after a checkpoint that
    ``ModelCheckpoint`` writes at the end of validation (its default with
    ``val_check_interval < 1`` or ``check_val_every_n_epoch > 1``); the callback sees such a
    checkpoint being written and warns once.

    **Warm-up.** With ``warmup_steps=N > 0`` every parameter group's learning rate first rises
    linearly from :math:`f\,\eta_g` to its base value :math:`\eta_g` (the group's learning
    rate at fit start) over the first :math:`N` optimizer steps: optimizer step :math:`t`
    (``trainer.global_step``, set before the step) uses

    .. math::
        \eta_g(t) = \eta_g \left(f + (1 - f)\,\frac{t}{N}\right) \quad (t < N), \qquad
        \eta_g(t) = \eta_g \quad (t \ge N),

    with :math:`f` = ``warmup_start_factor``: the values of
    ``torch.optim.lr_scheduler.LinearLR(start_factor=f, total_iters=N)``, which cannot be
    chained with a plateau scheduler. Checks made before the warm-up is over
    (``global_step <= N``) are ignored: they neither count as bad nor set the best value, so
    plateau counting starts after the warm-up; then the rule above applies. The base learning
    rates are saved in checkpoints, and :math:`\eta_g(t)` depends only on ``global_step``, so
    a run resumed mid-warm-up continues bit for bit and every process uses the same values.

    **Distributed runs.** The monitored value is averaged over processes and rank 0's mean is
    broadcast before deciding, so every process takes the same decision even when the metric
    was logged without ``sync_dist``.

    Args:
        monitor: the logged key to watch (default ``"train_error"``).
        mode: ``"min"`` (an error: lower is better) or ``"max"``.
        divisor: :math:`d > 1`; each drop divides the learning rates by it (default 10).
        patience: number of checks without improvement tolerated; the drop happens on the
            ``patience + 1``-th (torch semantics). ``>= 0``.
        threshold: :math:`\tau \geq 0`, the minimal change that counts as an improvement.
        threshold_mode: ``"rel"`` (:math:`|b|\tau`) or ``"abs"`` (:math:`\tau`).
        cooldown: checks ignored after each drop (``>= 0``).
        min_lr: floor of the learning rate, a float or one per parameter group (all groups
            of all optimizers, in order).
        eps: smallest change of learning rate that is applied (as torch, default 1e-8).
        max_drops: stop dividing after this many drops (``None``: no limit).
        stop_on_final_plateau: when ``max_drops`` drops were made and the metric plateaus
            again, stop training (``trainer.should_stop``).
        check_every_n_steps: check every ``N`` optimizer steps on the mean of the last ``N``
            steps instead of once per epoch.
        strict: a missing ``monitor`` key raises (listing the available keys) when ``True``,
            warns and skips the check when ``False``.
        verbose: print each drop (rank 0 only).
        warmup_steps: :math:`N \geq 0`, optimizer steps of linear warm-up before the plateau
            rule starts (0: none).
        warmup_start_factor: :math:`f \in [0, 1]`, the first step's fraction of each base
            learning rate (default 1/3, as ``LinearLR``).

    The current learning rates are in :attr:`current_lrs` and are sent to the trainer's
    loggers as ``lr`` (one group) or ``lr-opt{i}-pg{j}`` after each check.
    """

    def __init__(
        self,
        monitor: str = "train_error",
        mode: Mode = "min",
        divisor: float = 10.0,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: ThresholdMode = "rel",
        cooldown: int = 0,
        min_lr: float | Sequence[float] = 0.0,
        eps: float = 1e-8,
        max_drops: int | None = None,
        stop_on_final_plateau: bool = False,
        check_every_n_steps: int | None = None,
        strict: bool = True,
        verbose: bool = True,
        warmup_steps: int = 0,
        warmup_start_factor: float = 1.0 / 3.0,
    ) -> None:
        super().__init__()
        self.monitor: str = check_str("monitor", monitor, hint="the name of a logged metric")
        self.mode: Mode = check_choice("mode", mode, Mode)
        self.divisor: float = check_number("divisor", divisor, low=1.0, low_open=True)
        self.patience: int = check_int("patience", patience, low=0)
        self.threshold: float = check_number("threshold", threshold, low=0.0)
        self.threshold_mode: ThresholdMode = check_choice("threshold_mode", threshold_mode, ThresholdMode)
        self.cooldown: int = check_int("cooldown", cooldown, low=0)
        self.min_lr: float | list[float]
        if isinstance(min_lr, (list, tuple)):
            if not min_lr:
                raise fail("min_lr", "a finite number >= 0 or a non-empty list of them", min_lr)
            self.min_lr = check_each("min_lr", min_lr, check_number, low=0.0)
        else:
            self.min_lr = check_number("min_lr", min_lr, low=0.0, hint="or a list of them, one per parameter group")
        self.eps: float = check_number("eps", eps, low=0.0)
        self.max_drops: int | None = check_int("max_drops", max_drops, low=0, allow_none=True, hint="None: no limit")
        self.stop_on_final_plateau: bool = check_bool("stop_on_final_plateau", stop_on_final_plateau)
        if stop_on_final_plateau and max_drops is None:
            raise ValueError("`stop_on_final_plateau=True` needs `max_drops` (an int >= 0), got max_drops=None.")
        self.check_every_n_steps: int | None = check_int(
            "check_every_n_steps", check_every_n_steps, low=1, allow_none=True, hint="None: once per epoch"
        )
        self.strict: bool = check_bool("strict", strict)
        self.verbose: bool = check_bool("verbose", verbose)
        self.warmup_steps: int = check_int("warmup_steps", warmup_steps, low=0)
        self.warmup_start_factor: float = check_number("warmup_start_factor", warmup_start_factor, low=0.0, high=1.0)

        # decision state (saved in checkpoints)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_checks = 0
        self.cooldown_counter = 0
        self.num_drops = 0
        self.num_checks = 0
        self.stopped = False
        # step-mode window (saved in checkpoints)
        self._window_sum: float | torch.Tensor = 0.0  # a tensor while a window runs: no host sync per step
        self._window_count: float | torch.Tensor = 0.0
        self._last_global_step = -1
        # warm-up: base learning rates of all groups, captured at fit start (saved in checkpoints)
        self._base_lrs: list[float] | None = None
        self._base_lrs_restored = False
        # per-run bookkeeping (not saved)
        self._decided_epoch = -1
        self._val_ran_epoch = -1
        self._counts_base: tuple[torch.Tensor, torch.Tensor] | None = None
        self._warned_missing: set[str] = set()
        self._base_from_checkpoint = False
        self._reset_run_state()

    def _reset_run_state(self) -> None:
        # Freshness of logged values, read from trainer.callback_metrics (see same_logged_value): the
        # references are kept so that the storage of a consumed value cannot be reused by a newer one.
        self._consumed: Any = None  # the value the last per-epoch check used
        self._val_start: Any = None  # the monitored value when the running validation started
        self._last_step_value: Any = None  # the value after the epoch's last batch (a per-step value, if any)
        self._step_seen: Any = None  # step mode: the value last seen (added to the window or not)
        self._logged_per_step = False  # step mode: the module logged a per-step value in this fit
        # resume-timing warning: a checkpoint written after validation, before the epoch-end decision
        self._after_validation = False
        self._saved_after_validation = False
        self._warned_timing = False

    # ------------------------------------------------------------------ state
    @property
    @override
    def state_key(self) -> str:
        return callback_state_key(
            self, monitor=self.monitor, mode=self.mode, check_every_n_steps=self.check_every_n_steps
        )

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "num_bad_checks": self.num_bad_checks,
            "cooldown_counter": self.cooldown_counter,
            "num_drops": self.num_drops,
            "num_checks": self.num_checks,
            "stopped": self.stopped,
            "window_sum": float(self._window_sum),
            "window_count": float(self._window_count),
            "last_global_step": self._last_global_step,
            # running (wrong, seen) counts of the error metric already in the window: a run resumed mid-epoch
            # whose module restores its running metric (FeatureClassifier does) must not count them twice
            "counts_base": None if self._counts_base is None else [float(c) for c in self._counts_base],
            "divisor": self.divisor,
            "patience": self.patience,
            "base_lrs": None if self._base_lrs is None else list(self._base_lrs),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = float(state_dict["best"])
        self.num_bad_checks = int(state_dict["num_bad_checks"])
        self.cooldown_counter = int(state_dict["cooldown_counter"])
        self.num_drops = int(state_dict["num_drops"])
        self.num_checks = int(state_dict["num_checks"])
        self.stopped = bool(state_dict.get("stopped", False))
        self._window_sum = float(state_dict.get("window_sum", 0.0))
        self._window_count = float(state_dict.get("window_count", 0.0))
        self._last_global_step = int(state_dict.get("last_global_step", -1))
        base = state_dict.get("counts_base")
        self._counts_base = None if base is None else (torch.tensor(int(base[0])), torch.tensor(int(base[1])))
        self._base_from_checkpoint = base is not None
        base_lrs = state_dict.get("base_lrs")
        self._base_lrs = None if base_lrs is None else [float(v) for v in base_lrs]
        self._base_lrs_restored = base_lrs is not None

    # ------------------------------------------------------------------ pure logic
    def is_improvement(self, current: float, best: float) -> bool:
        """Whether ``current`` improves on ``best`` (see the class docstring); NaN/inf never do."""
        if not math.isfinite(current):
            return False
        if not math.isfinite(best):
            return best == (math.inf if self.mode == "min" else -math.inf)
        margin = abs(best) * self.threshold if self.threshold_mode == "rel" else self.threshold
        return current < best - margin if self.mode == "min" else current > best + margin

    def step(self, current: float, optimizers: Sequence[Optimizer]) -> bool:
        """Feed one monitored value; divide the learning rates of ``optimizers`` on a plateau.

        This is the whole decision (the Lightning hooks only gather the value). Returns
        ``True`` when the plateau rule fired (a drop was due), whether or not a learning rate
        moved (``min_lr``, ``max_drops``).
        """
        current = float(current)
        self.num_checks += 1
        if self.is_improvement(current, self.best):
            self.best = current
            self.num_bad_checks = 0
        else:
            self.num_bad_checks += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_checks = 0
        if self.num_bad_checks <= self.patience:
            return False
        self.cooldown_counter = self.cooldown
        self.num_bad_checks = 0
        if self.max_drops is not None and self.num_drops >= self.max_drops:
            if self.stop_on_final_plateau:
                self.stopped = True
            return True
        if self._divide(optimizers):
            self.num_drops += 1
        return True

    def _floors(self, groups: list[dict[str, Any]]) -> list[float]:
        if isinstance(self.min_lr, list):
            if len(self.min_lr) != len(groups):
                raise ValueError(
                    f"`min_lr` has {len(self.min_lr)} values but the optimizers have {len(groups)} parameter "
                    f"groups in all; pass one float or exactly {len(groups)} values, got {self.min_lr!r}."
                )
            return list(self.min_lr)
        return [self.min_lr] * len(groups)

    def _divide(self, optimizers: Sequence[Optimizer]) -> bool:
        groups = [g for opt in optimizers for g in opt.param_groups]
        changed = False
        for group, floor in zip(groups, self._floors(groups), strict=True):
            old = float(group["lr"])
            new = max(old / self.divisor, floor)
            if old - new > self.eps:
                group["lr"] = new
                changed = True
        return changed

    def warmup_lr(self, base_lr: float, step: int) -> float:
        r"""Learning rate of optimizer step ``step`` for a group whose base rate is ``base_lr`` (class docstring)."""
        if step >= self.warmup_steps:
            return base_lr
        f = self.warmup_start_factor
        return base_lr * (f + (1.0 - f) * step / self.warmup_steps)

    @property
    def current_lrs(self) -> list[float]:
        """Learning rate of every parameter group of every optimizer of the last fit, in order."""
        return [float(g["lr"]) for opt in getattr(self, "_optimizers", []) for g in opt.param_groups]

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.lr_scheduler_configs:
            names = ", ".join(type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs)
            raise MisconfigurationException(
                f"DivideLROnPlateau(monitor={self.monitor!r}) owns the learning rate, but the module's "
                f"`configure_optimizers` also returns a learning-rate scheduler ({names}). Two owners of the "
                "learning rate cannot both be right: remove the scheduler or this callback."
            )
        self._optimizers = list(trainer.optimizers)
        if not self._optimizers:
            raise MisconfigurationException(
                "DivideLROnPlateau needs at least one optimizer; the module configured none."
            )
        groups = [g for opt in self._optimizers for g in opt.param_groups]
        self._floors(groups)  # validate min_lr length now
        # Base rates of the warm-up: restored ones on resume (the optimizers' rates are restored only
        # after this hook, and would be mid-warm-up values), else the rates configure_optimizers set.
        if not self._base_lrs_restored or self._base_lrs is None:
            self._base_lrs = [float(g["lr"]) for g in groups]
        elif len(self._base_lrs) != len(groups):
            raise ValueError(
                f"The checkpoint's DivideLROnPlateau state has {len(self._base_lrs)} base learning rates but the "
                f"optimizers have {len(groups)} parameter groups; resume with the same optimizer set-up."
            )
        self._base_lrs_restored = False
        self._decided_epoch = -1
        self._val_ran_epoch = -1
        self._reset_run_state()

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Note a checkpoint written after validation; under DDP, store the step window as seen by all processes.

        Every checkpoint passes through this hook, so a checkpoint written between the end of
        validation and the end-of-epoch check is observed here, whoever writes it.

        Rank 0 writes the file, so the saved window must not be rank 0's alone: the window sum is
        averaged over the processes (their counts are equal, so every process resuming from the
        mean gives the same mean of window means), and the error-count base is summed, which
        matches a module that restores its summed running counts on rank 0 (FeatureClassifier).
        """
        if self._after_validation:
            self._saved_after_validation = True
        if trainer.world_size <= 1 or self.check_every_n_steps is None:
            return
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is None:
            return
        device = pl_module.device
        window = torch.stack(
            [
                torch.as_tensor(self._window_sum, dtype=torch.float64).to(device).reshape(()),
                torch.as_tensor(self._window_count, dtype=torch.float64).to(device).reshape(()),
            ]
        )
        window = trainer.strategy.reduce(window, reduce_op="mean")
        state["window_sum"], state["window_count"] = float(window[0]), float(window[1])
        has_base = torch.tensor(0.0 if self._counts_base is None else 1.0, dtype=torch.float64, device=device)
        base = torch.zeros(2, dtype=torch.float64, device=device)
        if self._counts_base is not None:
            base = torch.stack([c.to(device=device, dtype=torch.float64).reshape(()) for c in self._counts_base])
        has_base = trainer.strategy.reduce(has_base, reduce_op="sum")
        base = trainer.strategy.reduce(base, reduce_op="sum")
        state["counts_base"] = [float(base[0]), float(base[1])] if float(has_base) > 0 else None

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # here, not at fit start: on resume Lightning restores the optimizers (and their learning
        # rates) and the step counter between the two
        self._apply_warmup(trainer)
        self._log_lrs(trainer)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._counts_base = None

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._after_validation = False  # a validation followed by more training: not the epoch-end one
        self._apply_warmup(trainer)

    @override
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.check_every_n_steps is None and not trainer.sanity_checking and trainer.state.fn == "fit":
            self._val_start = trainer.callback_metrics.get(self.monitor)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = trainer.callback_metrics
        if self.check_every_n_steps is not None:
            self._step_seen = self._step_value(metrics)  # logged by validation: not a training step's value
            return
        self._val_ran_epoch = trainer.current_epoch
        value = metrics.get(self.monitor)
        if value is not None and not same_logged_value(value, self._val_start):  # logged by this validation
            self._decided_epoch = trainer.current_epoch
            self._consumed = value
            self._check(trainer, pl_module, value)
        self._val_start = None
        # ModelCheckpoint runs after this hook (Lightning orders checkpoint callbacks last): watch for its save
        self._after_validation = True
        self._saved_after_validation = False

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        saved_before_decision = self._after_validation and self._saved_after_validation
        self._after_validation = False
        metrics = trainer.callback_metrics
        if self.check_every_n_steps is not None:
            self._step_seen = self._step_value(metrics)  # the epoch-level value, if any: not a step's
            return
        if self._decided_epoch == trainer.current_epoch:
            return
        value = metrics.get(self.monitor)
        if value is not None and not same_logged_value(value, self._consumed):
            if same_logged_value(value, self._last_step_value):
                self._logged_per_step_only(trainer)  # the last training step's value, not an epoch's
                return
            if saved_before_decision:
                self._warn_timing()
            self._consumed = value
            self._check(trainer, pl_module, value)
            return
        if value is not None:
            return  # logged elsewhere (e.g. by a validation that did not run this epoch): nothing new
        if trainer.enable_validation and self._val_ran_epoch != trainer.current_epoch:
            return  # it may be a validation metric of a validation that has not run yet
        self._missing(trainer)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.check_every_n_steps is None:
            if trainer.is_last_batch:  # one read per epoch: tells an epoch value from the last step's
                self._last_step_value = trainer.callback_metrics.get(self.monitor)
            return
        value = self._step_value(trainer.callback_metrics)
        if value is not None and not same_logged_value(value, self._step_seen):  # logged at this step
            self._step_seen = value
            self._logged_per_step = True
            self._window_sum = self._window_sum + torch.as_tensor(value, dtype=torch.float64).detach()
            self._window_count += 1.0
        elif not self._logged_per_step:  # (a metric logged at some steps only adds nothing at the others)
            counts = _error_counts(pl_module, self.monitor)
            if counts is None:
                self._missing_step_value(trainer, value)
            else:  # FeatureClassifier fast path: errors and samples seen since the last batch
                wrong, seen = counts
                base_wrong, base_seen = self._counts_base if self._counts_base is not None else (0, 0)
                if self._base_from_checkpoint:  # once after a resume (a host sync): were the counts restored?
                    self._base_from_checkpoint = False
                    if float(seen) < float(base_seen):  # no: the module restarted its running metric from zero
                        base_wrong, base_seen = 0, 0
                self._window_sum = self._window_sum + (wrong - base_wrong).double()
                self._window_count = self._window_count + (seen - base_seen).double()
                self._counts_base = (wrong.clone(), seen.clone())
        step = trainer.global_step
        if step == self._last_global_step or step == 0 or step % self.check_every_n_steps != 0:
            return
        self._last_global_step = step
        count = torch.as_tensor(self._window_count, dtype=torch.float64)
        if float(count) == 0.0:
            return
        mean = torch.as_tensor(self._window_sum, dtype=torch.float64) / count
        self._window_sum, self._window_count = 0.0, 0.0
        self._check(trainer, pl_module, mean)

    # ------------------------------------------------------------------ helpers
    def _step_value(self, metrics: dict[str, Any]) -> Any:
        value = metrics.get(self.monitor)
        return metrics.get(f"{self.monitor}_step") if value is None else value

    def _apply_warmup(self, trainer: Trainer) -> None:
        """Set every group to its warm-up rate for optimizer step ``global_step`` (nothing after the warm-up)."""
        step = trainer.global_step
        if not self.warmup_steps or self._base_lrs is None or step > self.warmup_steps:
            return
        groups = [g for opt in trainer.optimizers for g in opt.param_groups]
        # strict=False: a group added after fit start (BaseFinetuning's unfreeze_and_add_param_group) has no
        # captured base rate and keeps its own
        for group, base in zip(groups, self._base_lrs, strict=False):
            group["lr"] = self.warmup_lr(base, step)

    def _fail(self, msg: str, kind: str) -> None:
        """Raise ``msg`` (``strict``) or warn it once per ``kind`` of problem and skip."""
        if self.strict:
            raise RuntimeError(msg + " Pass `strict=False` to skip the check instead.")
        if kind not in self._warned_missing:
            rank_zero_warn(msg + " Skipping the check (strict=False).")
            self._warned_missing.add(kind)

    def _missing(self, trainer: Trainer) -> None:
        available = sorted(trainer.callback_metrics)
        self._fail(
            f"DivideLROnPlateau(monitor={self.monitor!r}) found no such logged metric. Available keys: "
            f"{', '.join(repr(k) for k in available) or '(none)'}.",
            "missing",
        )

    def _missing_step_value(self, trainer: Trainer, value: Any) -> None:
        m, n = self.monitor, self.check_every_n_steps
        fix = (
            f"Log it at every step, `self.log({m!r}, value, on_step=True)` in `training_step`, or drop "
            "`check_every_n_steps` to check once per epoch."
        )
        if value is not None:  # visible, but never logged at a training step: an epoch (or validation) value
            self._fail(
                f"DivideLROnPlateau(monitor={m!r}, check_every_n_steps={n}) checks the mean of the values logged "
                f"at the last {n} training steps, but {m!r} is logged per epoch only (`on_step=False`, or by the "
                f"validation loop), so it has no value at each step. {fix}",
                "epoch only",
            )
            return
        logged = sorted(trainer.callback_metrics)
        self._fail(
            f"DivideLROnPlateau(monitor={m!r}, check_every_n_steps={n}) checks the mean of the values logged at "
            f"the last {n} training steps, but {m!r} was not logged at training step {trainer.global_step}. A metric "
            f"logged per epoch only (`self.log({m!r}, ..., on_step=False)`, or by the validation loop) has no value "
            f"at each step. {fix} Metrics logged so far: {', '.join(repr(k) for k in logged) or 'none'}.",
            "no step value",
        )

    def _logged_per_step_only(self, trainer: Trainer) -> None:
        m = self.monitor
        self._fail(
            f"DivideLROnPlateau(monitor={m!r}) checks once per epoch on the epoch's value, but {m!r} is logged per "
            f"step only (`on_step=True, on_epoch=False`, the default in `training_step`), so its value at the end "
            f"of the epoch is the last step's. Log it with `self.log({m!r}, value, on_epoch=True)` to check the "
            f"epoch mean, or pass `check_every_n_steps` to check the mean of the last N steps.",
            "step only",
        )

    def _warn_timing(self) -> None:
        if self._warned_timing:
            return
        self._warned_timing = True
        rank_zero_warn(
            f"DivideLROnPlateau monitors the training metric {self.monitor!r}, decided at the end of the training "
            "epoch, but ModelCheckpoint saves at the end of validation (before that), as it does by default with "
            "`val_check_interval < 1` or `check_val_every_n_epoch > 1`: the checkpoint just written lacks this "
            "epoch's decision. A run resumed from such a checkpoint may drop one epoch late; pass "
            "`ModelCheckpoint(save_on_train_epoch_end=True)` for exact resumption."
        )

    def _check(self, trainer: Trainer, pl_module: LightningModule, value: Any) -> None:
        if self.warmup_steps and trainer.global_step <= self.warmup_steps:
            self._log_lrs(trainer)  # a value of the warm-up: plateau counting starts after it
            return
        tensor = torch.as_tensor(value).detach().to(device=pl_module.device, dtype=torch.float64).reshape(())
        current = float(reduce_mean_consistent(trainer, tensor))
        before = self.current_lrs
        drops_before = self.num_drops
        self.step(current, trainer.optimizers)
        if self.num_drops > drops_before and self.verbose:
            after = self.current_lrs
            rank_zero_info(
                f"DivideLROnPlateau: {self.monitor}={current:.6g} has not improved on {self.best:.6g}; "
                f"learning rate divided by {self.divisor:g} (drop {self.num_drops}"
                f"{'' if self.max_drops is None else f'/{self.max_drops}'}): "
                + ", ".join(f"{a:.4g} -> {b:.4g}" for a, b in zip(before, after, strict=True))
            )
        if self.stopped and not trainer.should_stop:
            trainer.should_stop = True
            if self.verbose:
                rank_zero_info(
                    f"DivideLROnPlateau: {self.monitor} plateaued again after the last of {self.max_drops} drops; "
                    "stopping training."
                )
        self._log_lrs(trainer)

    def _log_lrs(self, trainer: Trainer) -> None:
        if not trainer.loggers:
            return
        lrs = {}
        for i, opt in enumerate(trainer.optimizers):
            for j, group in enumerate(opt.param_groups):
                lrs[(i, j)] = float(group["lr"])
        metrics = {"lr": lrs[(0, 0)]} if len(lrs) == 1 else {f"lr-opt{i}-pg{j}": v for (i, j), v in lrs.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)


def _error_counts(pl_module: LightningModule, monitor: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Running (wrong, seen) counts of a :class:`~lightning_deepfeat.metrics.ClassificationError` named ``monitor``.

    Its ``tp``/``fn`` states are the documented confusion counts of torchmetrics' accuracy.
    """
    from torchmetrics import MetricCollection

    for collection in pl_module.modules():
        if isinstance(collection, MetricCollection) and monitor in collection.keys(keep_base=False):
            metric = collection[monitor]
            # tensor states (list states only with multidim_average="samplewise", which has no running counts)
            if isinstance(metric, ClassificationError):
                wrong, right = metric.fn, metric.tp
                if isinstance(wrong, torch.Tensor) and isinstance(right, torch.Tensor):
                    return wrong.sum(), (right + wrong).sum()
    return None
