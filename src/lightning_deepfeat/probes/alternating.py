"""``AlternatingMinimization``: block-coordinate descent between (W_L, head) and W_1 … W_{L−1}."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from torch.optim import Optimizer
from typing_extensions import override

from lightning_deepfeat.inspection import requires_grad_flags, set_requires_grad
from lightning_deepfeat.probes._layers import parameter_layers
from lightning_deepfeat.validation import check_bool, check_int


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

    def __init__(
        self,
        head_steps: int = 10,
        body_steps: int = 1,
        head_includes_last_layer: bool = True,
        skip_frozen_backward: bool = True,
    ) -> None:
        super().__init__()
        hint = "consecutive optimizer steps"
        self.head_steps: int = check_int("head_steps", head_steps, low=1, hint=hint)
        self.body_steps: int = check_int("body_steps", body_steps, low=1, hint=hint)
        self.head_includes_last_layer = check_bool("head_includes_last_layer", head_includes_last_layer)
        self.skip_frozen_backward = check_bool("skip_frozen_backward", skip_frozen_backward)
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

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self.blocks(pl_module)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.top, self.body = self.blocks(pl_module)
        self._saved = requires_grad_flags(pl_module)

    def _frozen(self, step: int) -> tuple[list[str], list[str]]:
        return (self.body, self.top) if self.top_block_active(step) else (self.top, self.body)

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if not self.skip_frozen_backward:
            return
        frozen, active = self._frozen(trainer.global_step)
        set_requires_grad(pl_module, {**{n: self._saved.get(n, True) for n in active}, **dict.fromkeys(frozen, False)})

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        frozen, _ = self._frozen(trainer.global_step)
        params = dict(pl_module.named_parameters())
        for name in frozen:
            params[name].grad = None
        pl_module.log("alt_block", float(self.top_block_active(trainer.global_step)), on_step=True, on_epoch=False)

    def _restore(self, pl_module: LightningModule) -> None:
        set_requires_grad(pl_module, self._saved)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore(pl_module)  # validation and checkpoints see the model as built

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore(pl_module)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore(pl_module)
