"""``TrainOnly``: train a chosen subset of the parameters, keep every other one bit-identical."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from torch.optim import Optimizer

from lightning_deepfeat.probes._layers import check_layer_indices, check_name_patterns, select_parameters


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

    Args:
        params: fnmatch patterns on names of ``model.named_parameters()``, e.g.
            ``["features.conv.0.*", "head.*"]``.
        layers: layer indices: ``0`` is W_1 (the first parameterised leaf module of
            ``features``), ``-1`` the ``head``, ``-2`` W_L (see :func:`parameter_layers`).
        verbose: print the trained parameter names at fit start.

    At least one of ``params`` and ``layers`` must be given; the union is trained.
    """

    def __init__(self, params: Sequence[str] | str | None = None, layers: Sequence[int] | int | None = None, verbose: bool = False) -> None:
        super().__init__()
        self.params = check_name_patterns("params", params)
        self.layers = check_layer_indices("layers", layers)
        if not self.params and not self.layers:
            raise ValueError(
                f"TrainOnly needs `params` (name patterns) or `layers` (indices), got params={params!r}, layers={layers!r}."
            )
        self.verbose = verbose
        self.trainable: list[str] = []
        self.frozen: list[str] = []
        self._saved_requires_grad: dict[str, bool] = {}

    def resolve(self, model: LightningModule) -> list[str]:
        """Names of the parameters this callback trains on ``model`` (raises ``ValueError`` if none)."""
        return select_parameters(model, self.params, self.layers, argument="params")

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":  # fail before any training if a pattern or an index is wrong
            self.resolve(pl_module)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        keep = set(self.resolve(pl_module))
        self.trainable, self.frozen = [], []
        self._saved_requires_grad = {}
        for name, param in pl_module.named_parameters():
            self._saved_requires_grad[name] = param.requires_grad
            if name in keep:
                self.trainable.append(name)
            else:
                param.requires_grad_(False)
                param.grad = None
                self.frozen.append(name)
        if self.verbose and trainer.is_global_zero:
            print(f"TrainOnly: training {len(self.trainable)} tensors: {', '.join(self.trainable)}", flush=True)

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        params = dict(pl_module.named_parameters())
        for name in self.frozen:
            params[name].grad = None

    def _restore(self, pl_module: LightningModule) -> None:
        for name, param in pl_module.named_parameters():
            if name in self._saved_requires_grad:
                param.requires_grad_(self._saved_requires_grad[name])
        self._saved_requires_grad = {}

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore(pl_module)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore(pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"trainable": list(self.trainable)}
