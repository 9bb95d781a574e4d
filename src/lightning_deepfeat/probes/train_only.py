"""``TrainOnly``: train a chosen subset of the parameters, keep every other one bit-identical."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch.optim import Optimizer
from typing_extensions import override

from lightning_deepfeat.inspection import requires_grad_flags, set_requires_grad
from lightning_deepfeat.probes._layers import LAYER_HINT, select_parameters
from lightning_deepfeat.validation import check_bool, check_ints, check_patterns


class TrainOnly(Callback):
    r"""Freeze every parameter except the named ones, for the whole fit.

    With θ = (W_1, …, W_L, A, b) and a chosen subset S, training minimises the same loss
    over θ_S only:

    .. math::
        \min_{θ_S}\; \mathcal{L}(θ_S, θ_{\bar S}^{(0)}),\qquad θ_{\bar S} = θ_{\bar S}^{(0)} \text{ (fixed)}

    At ``on_fit_start`` (after the optimizer exists) the others get
    ``requires_grad=False``, so their ``.grad`` stays ``None``; every torch optimizer skips
    such parameters, so weight decay and momentum cannot move them either. As a second
    guard, ``on_before_optimizer_step`` sets any gradient that still reached a frozen
    parameter to ``None``. ``requires_grad`` is restored at the end of fit (also on an
    exception).

    The names of the trained parameters are saved in checkpoints. A run resumed from one
    (``trainer.fit(..., ckpt_path=...)``) must train the same parameters, else it stops
    before its first step with a ``ValueError`` naming both sets: continuing the optimizer
    state of one experiment with another selection is a different experiment.

    Args:
        params: fnmatch patterns on names of ``model.named_parameters()``, e.g.
            ``["features.conv.0.*", "head.*"]``.
        layers: layer indices: ``0`` is W_1 (the first parameterised leaf module of
            ``features``), ``-1`` the ``head``, ``-2`` W_L (see :func:`parameter_layers`).
        verbose: report the trained parameter names at fit start (``rank_zero_info``).

    At least one of ``params`` and ``layers`` must be given; the union is trained.
    """

    def __init__(
        self,
        params: Sequence[str] | str | None = None,
        layers: Sequence[int] | int | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__()
        self.params = check_patterns("params", params, hint="such as ['features.conv.0.*', 'head.*']")
        self.layers = list(check_ints("layers", layers, allow_int=True, allow_none=True, hint=LAYER_HINT) or ())
        if not self.params and not self.layers:
            raise ValueError(
                "TrainOnly needs `params` (name patterns) or `layers` (indices), "
                f"got params={params!r}, layers={layers!r}."
            )
        self.verbose = check_bool("verbose", verbose)
        self.trainable: list[str] = []
        self.frozen: list[str] = []
        self._saved_requires_grad: dict[str, bool] = {}
        self._resumed_trainable: list[str] | None = None  # what the checkpoint's run trained

    def resolve(self, model: LightningModule) -> list[str]:
        """Names of the parameters this callback trains on ``model`` (raises ``ValueError`` if none)."""
        return select_parameters(model, self.params, self.layers, argument="params")

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":  # fail before any training if a pattern or an index is wrong
            self.resolve(pl_module)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        keep = set(self.resolve(pl_module))
        self._saved_requires_grad = requires_grad_flags(pl_module)
        self.trainable = [name for name in self._saved_requires_grad if name in keep]
        self.frozen = [name for name in self._saved_requires_grad if name not in keep]
        set_requires_grad(pl_module, dict.fromkeys(self.frozen, False))
        params = dict(pl_module.named_parameters())
        for name in self.frozen:
            params[name].grad = None
        if self.verbose:
            rank_zero_info(f"TrainOnly: training {len(self.trainable)} tensors: {', '.join(self.trainable)}")

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # here every checkpoint state is back, whatever the strategy's restore order
        resumed, self._resumed_trainable = self._resumed_trainable, None
        if resumed is not None and resumed != self.trainable:
            raise ValueError(
                f"TrainOnly trains {self.trainable} but the run of the checkpoint being resumed trained {resumed}. "
                "Resume with the same `params`/`layers`, or start a new fit from the checkpoint's weights "
                "(load them into the model, no `ckpt_path`) to train another selection."
            )

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        params = dict(pl_module.named_parameters())
        for name in self.frozen:
            params[name].grad = None

    def _restore(self, pl_module: LightningModule) -> None:
        set_requires_grad(pl_module, self._saved_requires_grad)
        self._saved_requires_grad = {}

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore(pl_module)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore(pl_module)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"trainable": list(self.trainable)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed_trainable = list(state_dict["trainable"])
