"""``AlternatingMinimization``: block-coordinate descent between (W_L, head) and W_1 … W_{L−1}."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from torch.optim import Optimizer

from lightning_deepfeat.probes._layers import parameter_layers


class AlternatingMinimization(Callback):
    r"""Cycle ``head_steps`` optimizer steps on the top block and ``body_steps`` on the rest.

    With the top block T = (W_L, A, b) (or only the head (A, b) when
    ``head_includes_last_layer=False``) and the body B = (W_1, …, W_{L−1}), step t updates

    .. math::
        θ_T \leftarrow \mathrm{opt}(θ_T, ∇_{θ_T}\mathcal{L}) \text{ if } t \bmod (k+m) < k,
        \qquad θ_B \leftarrow \mathrm{opt}(θ_B, ∇_{θ_B}\mathcal{L}) \text{ otherwise,}

    k = ``head_steps``, m = ``body_steps``, t = ``trainer.global_step``. For fixed φ the
    loss is convex in (A, b) alone, which is what motivates the scheme.

    Works with any torch optimizer: before each ``optimizer.step`` the gradients of the
    frozen block are set to ``None`` and torch optimizers skip parameters without a
    gradient, so the frozen block's parameters *and* its optimizer state (momentum
    buffers, Adam moments, step counts) stay bit-identical. With ``skip_frozen_backward``
    the frozen block also gets ``requires_grad=False`` for the step, which saves its
    backward pass (leave it off under DDP, whose bucketing expects a fixed set).

    Logged: ``alt_block`` (1 on a top-block step, 0 on a body step).

    Args:
        head_steps: k ≥ 1, consecutive steps on the top block.
        body_steps: m ≥ 1, consecutive steps on the body.
        head_includes_last_layer: put W_L (the last parameterised layer of ``features``)
            in the top block, as in the alternating scheme of the recipe.
        skip_frozen_backward: also turn off ``requires_grad`` of the frozen block.
    """

    def __init__(self, head_steps: int = 10, body_steps: int = 1, head_includes_last_layer: bool = True, skip_frozen_backward: bool = True) -> None:
        super().__init__()
        for name, value in (("head_steps", head_steps), ("body_steps", body_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1 (number of consecutive optimizer steps), got {value!r}.")
        self.head_steps = head_steps
        self.body_steps = body_steps
        self.head_includes_last_layer = bool(head_includes_last_layer)
        self.skip_frozen_backward = bool(skip_frozen_backward)
        self.top: list[str] = []
        self.body: list[str] = []
        self._saved: dict[str, bool] = {}

    def blocks(self, model: LightningModule) -> tuple[list[str], list[str]]:
        """``(top, body)`` parameter names of ``model``."""
        layers = parameter_layers(model)
        n_top = 2 if self.head_includes_last_layer else 1
        if len(layers) < n_top + 1:
            raise ValueError(
                f"AlternatingMinimization needs a body to alternate with: the model has {len(layers)} layers "
                f"({[n for n, _ in layers]}) and head_includes_last_layer={self.head_includes_last_layer}."
            )
        top = [p for _, names in layers[-n_top:] for p in names]
        body = [p for _, names in layers[:-n_top] for p in names]
        return top, body

    def top_block_active(self, step: int) -> bool:
        """Whether optimizer step ``step`` (0-based) updates the top block."""
        return step % (self.head_steps + self.body_steps) < self.head_steps

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self.blocks(pl_module)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.top, self.body = self.blocks(pl_module)
        self._saved = {n: p.requires_grad for n, p in pl_module.named_parameters()}

    def _frozen(self, step: int) -> tuple[list[str], list[str]]:
        return (self.body, self.top) if self.top_block_active(step) else (self.top, self.body)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if not self.skip_frozen_backward:
            return
        frozen, active = self._frozen(trainer.global_step)
        params = dict(pl_module.named_parameters())
        for name in active:
            params[name].requires_grad_(self._saved.get(name, True))
        for name in frozen:
            params[name].requires_grad_(False)

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        frozen, _ = self._frozen(trainer.global_step)
        params = dict(pl_module.named_parameters())
        for name in frozen:
            params[name].grad = None
        pl_module.log("alt_block", float(self.top_block_active(trainer.global_step)), on_step=True, on_epoch=False)

    def _restore(self, pl_module: LightningModule) -> None:
        for name, param in pl_module.named_parameters():
            if name in self._saved:
                param.requires_grad_(self._saved[name])

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore(pl_module)  # validation and checkpoints see the model as built

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore(pl_module)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore(pl_module)
