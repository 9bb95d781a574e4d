r"""``MaxNormConstraint``: project each unit's incoming weight vector onto the ball of radius c after every step."""

from __future__ import annotations

import fnmatch
import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.optim import Optimizer
from typing_extensions import override

from lightning_deepfeat.callbacks._utils import callback_state_key
from lightning_deepfeat.validation import check_bool, check_int, check_number, check_patterns, fail

_DEFAULT_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_HEAD_PATTERNS = ("head.*", "*.head.*")


def _resolve_type(spec: str | type) -> type[nn.Module]:
    if isinstance(spec, type) and issubclass(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        module_name, _, name = spec.rpartition(".")
        try:
            if module_name:
                import importlib

                obj = getattr(importlib.import_module(module_name), name)
            else:
                obj = getattr(nn, name)
        except (ImportError, AttributeError):
            obj = None
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            return obj
    raise ValueError(
        f"`module_types` must list nn.Module classes or their names (e.g. 'Linear', 'Conv2d', "
        f"'torch.nn.ConvTranspose2d'), got {spec!r}."
    )


class MaxNormConstraint(Callback):
    r"""Max-norm regularisation (Srivastava et al. 2014): keep :math:`\|w_u\|_2 \le c` for every unit.

    After every optimizer step that really updates the weights, each constrained weight
    :math:`W` is projected onto the set :math:`\{W : \|W_{u}\|_2 \le c\ \forall u\}`, where
    :math:`W_u` is the incoming weight vector of output unit :math:`u` (a row of a Linear
    weight, one filter ``W[u, :, :, :]`` of a convolution, ``W[:, u]`` of a transposed
    convolution whose weight is ``(in, out, ...)``):

    .. math::
        W_u \leftarrow W_u \cdot s_u, \qquad
        s_u = \begin{cases} c\,(1 - \mu) / \|W_u\|_2 & \text{if } \|W_u\|_2 > c \\ 1 & \text{otherwise} \end{cases}

    A unit inside the ball is left bit-identical (its factor is exactly 1). A unit outside
    is scaled to norm :math:`c(1-\mu)`: the Euclidean projection onto the ball, moved a relative
    :math:`\mu` further in. :math:`\mu` bounds the rounding error of the computed norms, so the
    projected unit's *computed* norm is :math:`\le c` and a second projection multiplies it by
    exactly 1: the projection is idempotent bit for bit, which is what makes a resumed run
    (whose fit-start projection sees weights already projected) equal an uninterrupted one.
    With :math:`K` incoming weights per unit, summed in :math:`b` blocks of :math:`q`
    (:math:`q \approx 8\sqrt K` when :math:`K > 256` and such a divisor exists, else
    :math:`q = K, b = 1`),

    .. math::
        \mu = (q + b + 16)\,u + 2\,u_W,

    where :math:`u` is the unit roundoff of the dtype the norms are computed in (:math:`2^{-24}`:
    float32, also for bfloat16/float16 weights; :math:`2^{-53}` for float64) and :math:`u_W`
    that of the weight: :math:`\mu \approx 1.7\cdot 10^{-6}` for a 3×3 filter on one
    channel, :math:`1.8\cdot 10^{-5}` on 32 channels, :math:`4.8\cdot 10^{-5}` for a 9216-wide
    float32 row, :math:`0.8\%` in bfloat16 (whose own rounding is 0.4%). Keras' ``MaxNorm``
    instead multiplies every unit by :math:`\min(n, c)/(n + 10^{-7})`, which shrinks small units
    at every step.

    **When.** The projection runs as a ``register_step_post_hook`` on each optimizer, so it
    follows every ``optimizer.step()`` that runs: once per step under gradient accumulation,
    never when ``GradScaler`` skips a step on an inf/NaN gradient, after each optimizer (only
    on the weights that optimizer owns) and under manual optimisation. It also runs once at
    fit start, so the bound holds from the first step. On resume (the callback's state restored
    from the checkpoint) that projection changes nothing, by idempotence, and is not counted in
    :attr:`num_applications`, which stays "optimizer steps + 1" as in an uninterrupted run.

    **Cost.** One pass over each weight for the norms (a second, :math:`\sqrt K`-times smaller
    reduction sums the blocks), one ``where`` over the units and one in-place multiply; no
    ``.item()``, no host-device synchronisation (except every ``log_every_n_steps`` steps
    when logging).

    **Distributed.** Under DDP each process applies the same deterministic projection to the
    same weights, which therefore stay bitwise identical. FSDP (1) flattens and shards
    parameters across units, so a local projection would be silently wrong: it is refused
    at setup. With DTensor parameters (FSDP2 / ``ModelParallelStrategy``) sharded only on the
    unit dimension the local projection is exact and is used; any other placement is refused.

    Args:
        max_norm: :math:`c > 0` (the paper uses 3-4; default 3).
        module_types: which layers are constrained, as classes or names
            (default ``Linear``, ``Conv1d``, ``Conv2d``, ``Conv3d``; add ``ConvTranspose2d``
            etc. as needed). Only their ``weight`` is constrained, never biases.
        include: fnmatch patterns over parameter names (``"features.*"``); when given, only
            matching weights are constrained. Each pattern must match some parameter.
        exclude: fnmatch patterns of weights to leave alone. Each must match some parameter.
        exclude_head: leave out every parameter under a module named ``head`` (the
            logistic-regression head of :class:`~lightning_deepfeat.models.FeatureClassifier`);
            default ``True``, since the recipe constrains the feature weights :math:`W_k`.
        dim: the unit axis. ``None`` (default): 0, or 1 for transposed convolutions. An int
            uses that axis for every weight (norm over all other axes), like ``torch.renorm``.
        log_every_n_steps: every ``N`` steps, log to the loggers the fraction of units sitting
            on the bound, per weight (``maxnorm/on_bound/<name>``, see :meth:`fraction_on_bound`).
            ``None``: never.
    """

    def __init__(
        self,
        max_norm: float = 3.0,
        module_types: Sequence[str | type] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        exclude_head: bool = True,
        dim: int | None = None,
        log_every_n_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.max_norm: float = check_number("max_norm", max_norm, low=0.0, low_open=True)
        if module_types is None:
            self.module_types = _DEFAULT_TYPES
        else:
            if isinstance(module_types, (str, type)) or not isinstance(module_types, Sequence) or not module_types:
                raise fail(
                    "module_types",
                    "a non-empty list of nn.Module classes or names",
                    module_types,
                    hint="such as ['Linear', 'Conv2d']",
                )
            self.module_types = tuple(_resolve_type(t) for t in module_types)
        self.include: list[str] = check_patterns("include", include)
        self.exclude: list[str] = check_patterns("exclude", exclude)
        self.exclude_head: bool = check_bool("exclude_head", exclude_head)
        self.dim: int | None = check_int(
            "dim", dim, allow_none=True, hint="the unit axis; None: 0, or 1 for transposed convolutions"
        )
        self.log_every_n_steps: int | None = check_int(
            "log_every_n_steps", log_every_n_steps, low=1, allow_none=True, hint="None: never"
        )

        self.constrained: dict[str, tuple[torch.Tensor, int]] = {}
        self.num_applications = 0  #: number of projections run (fit start + each real optimizer step)
        self._per_optimizer: list[list[tuple[str, torch.Tensor, int]]] = []
        self._handles: list[Any] = []
        self._calls = 0
        self._trainer: Trainer | None = None
        self._restored = False  # load_state_dict ran: the fit-start projection of this fit is not counted

    @property
    @override
    def state_key(self) -> str:
        return callback_state_key(self, max_norm=self.max_norm, include=self.include, exclude=self.exclude)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"num_applications": self.num_applications, "calls": self._calls}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.num_applications = int(state_dict.get("num_applications", 0))
        self._calls = int(state_dict.get("calls", 0))
        self._restored = True

    # ------------------------------------------------------------------ selection
    def select(self, module: nn.Module) -> dict[str, tuple[torch.Tensor, int]]:
        """The weights this callback constrains in ``module``: ``{name: (weight, unit_dim)}``.

        Raises ``ValueError`` when an ``include``/``exclude`` pattern matches no parameter, a
        ``dim`` is out of range, or nothing at all is selected.
        """
        all_names = [n for n, _ in module.named_parameters()]
        for arg, patterns in (("include", self.include), ("exclude", self.exclude)):
            for pattern in patterns:
                if not any(fnmatch.fnmatchcase(n, pattern) for n in all_names):
                    raise ValueError(
                        f"`{arg}` pattern {pattern!r} matches no parameter of {type(module).__name__}; "
                        f"parameter names look like {all_names[:6]}."
                    )
        selected: dict[str, tuple[torch.Tensor, int]] = {}
        for mod_name, mod in module.named_modules():
            if not isinstance(mod, self.module_types):
                continue
            weight = getattr(mod, "weight", None)
            if not isinstance(weight, torch.Tensor):
                continue
            name = f"{mod_name}.weight" if mod_name else "weight"
            if self.include and not any(fnmatch.fnmatchcase(name, p) for p in self.include):
                continue
            if any(fnmatch.fnmatchcase(name, p) for p in self.exclude):
                continue
            if self.exclude_head and any(fnmatch.fnmatchcase(name, p) for p in _HEAD_PATTERNS):
                continue
            if weight.dim() < 2:
                continue
            unit_dim = self.dim if self.dim is not None else (1 if isinstance(mod, _TRANSPOSED) else 0)
            if not -weight.dim() <= unit_dim < weight.dim():
                raise ValueError(f"`dim`={self.dim} is out of range for {name} of shape {tuple(weight.shape)}.")
            selected[name] = (weight, unit_dim % weight.dim())
        if not selected:
            raise ValueError(
                f"MaxNormConstraint selected no weight in {type(module).__name__}: module_types="
                f"{[t.__name__ for t in self.module_types]}, include={self.include}, exclude={self.exclude}, "
                f"exclude_head={self.exclude_head}."
            )
        return selected

    # ------------------------------------------------------------------ projection
    @torch.no_grad()
    def project(self, weights: Sequence[tuple[torch.Tensor, int]]) -> None:
        r"""Project each ``(weight, unit_dim)`` in place (class docstring); counted in :attr:`num_applications`.

        :math:`W_u \leftarrow W_u \cdot c(1-\mu)/\|W_u\|` where the computed :math:`\|W_u\| > c`,
        else unchanged; idempotent bit for bit.
        """
        self._project(weights)
        self.num_applications += 1

    def _project(self, weights: Sequence[tuple[torch.Tensor, int]]) -> None:
        c = self.max_norm
        for weight, unit_dim in weights:
            local = _local(weight)
            if local.numel() == 0:
                continue
            norms, margin = _unit_norms(local, unit_dim)
            # where, not a clamp: a unit with norm <= c gets the factor 1.0 exactly and stays bit-identical
            local.mul_(torch.where(norms > c, (c * (1.0 - margin)) / norms, 1.0))

    def fraction_on_bound(self, rtol: float = 1e-5) -> dict[str, torch.Tensor]:
        r"""Per constrained weight, the fraction of units on the bound (a tensor, no sync).

        A unit is on the bound when its norm is at least :math:`c(1 - 2\mu)(1 - \text{rtol})`: a
        projected unit ends at :math:`c(1-\mu)` up to rounding, inside the ball by the margin
        :math:`\mu` of the class docstring.
        """
        out = {}
        with torch.no_grad():
            for name, (weight, unit_dim) in self.constrained.items():
                local = _local(weight)
                norms, margin = _unit_norms(local, unit_dim)
                out[name] = (norms >= self.max_norm * (1 - 2 * margin) * (1 - rtol)).float().mean()
        return out

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        from lightning.pytorch.strategies import FSDPStrategy

        if isinstance(trainer.strategy, FSDPStrategy):
            raise MisconfigurationException(
                "MaxNormConstraint cannot run under FSDPStrategy: FSDP flattens and shards parameters across "
                "units, so a local projection would use partial row norms and be silently wrong. Use DDP, or "
                "FSDP2 (ModelParallelStrategy / fully_shard) with weights sharded on dim 0."
            )
        self.select(pl_module)  # validate patterns before any training step

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._remove_hooks()
        self._trainer = trainer
        self.constrained = self.select(pl_module)
        for name, (weight, unit_dim) in self.constrained.items():
            _check_placement(name, weight, unit_dim)
        by_id = {id(w): (name, w, d) for name, (w, d) in self.constrained.items()}
        self._per_optimizer = []
        for opt in trainer.optimizers:
            owned = [by_id[id(p)] for g in opt.param_groups for p in g["params"] if id(p) in by_id]
            self._per_optimizer.append(owned)
            if owned:
                self._handles.append(opt.register_step_post_hook(self._make_hook(owned)))
        weights = [(w, d) for w, d in self.constrained.values()]
        if self._restored:
            # resumed: the restored weights were saved after a projection, so this one is a no-op
            # (idempotence); it is not counted, so num_applications stays "optimizer steps + 1"
            self._project(weights)
        else:
            self.project(weights)
        self._restored = False

    def _make_hook(self, owned: list[tuple[str, torch.Tensor, int]]) -> Any:
        weights = [(w, d) for _, w, d in owned]

        def hook(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
            self.project(weights)
            self._calls += 1
            if self.log_every_n_steps is not None and self._calls % self.log_every_n_steps == 0:
                self._log_fraction()

        return hook

    def _log_fraction(self) -> None:
        trainer = self._trainer
        if trainer is None or not trainer.loggers:
            return
        metrics = {f"maxnorm/on_bound/{n}": float(v) for n, v in self.fraction_on_bound().items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._remove_hooks()
        self._trainer = None


_SINGLE_BLOCK_MAX = 256  # units with up to this many incoming weights are summed in one block


@functools.lru_cache(maxsize=512)
def _block_length(k: int) -> int:
    """Length ``q`` of the blocks in which the squares of a unit's ``k`` weights are summed.

    The rounding error of a sum of ``q`` non-negative terms is at most ``(q - 1) u`` times the
    sum, in any order (so on every backend); summing ``b = k / q`` block sums then adds
    ``(b - 1) u``. Blocks of about ``8 sqrt(k)`` keep the bound near ``8 sqrt(k) u`` instead of
    ``k u`` (5e-5 instead of 5e-4 for ``k = 9216`` in float32) while the first reduction stays
    long enough to vectorise as well as a single one. ``k`` itself when it has no useful divisor.
    """
    if k <= _SINGLE_BLOCK_MAX:
        return k
    target = 8.0 * math.sqrt(k)
    best = k
    for d in range(1, math.isqrt(k) + 1):
        if k % d == 0:
            for q in (d, k // d):
                if abs(math.log(q / target)) < abs(math.log(best / target)):
                    best = q
    return best if best + k // best < k // 2 else k


@functools.lru_cache(maxsize=512)
def _margin(q: int, b: int, dtype: torch.dtype) -> float:
    r"""The margin :math:`\mu` of the class docstring for blocks ``q`` x ``b`` and a ``dtype`` weight.

    With :math:`A = ((q + b)/2 + 5)u` a bound on the relative error of a computed norm (sums
    of squares in blocks, then of the blocks, then a square root), a unit scaled to
    :math:`c(1-\mu)/\hat n` has exact norm within :math:`(1 \pm (A + 2u + u_W))` of
    :math:`c(1-\mu)`; its recomputed norm adds :math:`A`. It stays :math:`\le c` (``c`` rounded
    to the norm dtype included) when :math:`\mu \ge 2A + 6u + 2u_W`, which this returns.
    """
    u = 2.0**-53 if dtype == torch.float64 else 2.0**-24
    u_w = torch.finfo(dtype).eps / 2
    return (q + b + 16) * u + 2 * u_w


def _unit_norms(local: torch.Tensor, unit_dim: int) -> tuple[torch.Tensor, float]:
    """The norm of each unit, shaped to broadcast against ``local``, and the margin for this computation.

    Norms are computed in float32 (float64 for float64 weights), in blocks when ``local`` is
    contiguous with units on dim 0 (every Linear and Conv weight): one pass over the weight,
    then a reduction over ``b`` block norms per unit. Any other layout is summed in one block.
    """
    acc = torch.float64 if local.dtype == torch.float64 else torch.float32
    dtype = None if local.dtype == acc else acc
    units = local.shape[unit_dim]
    k = local.numel() // units
    q = _block_length(k) if unit_dim == 0 and local.is_contiguous() else k
    if q < k:
        blocks = torch.linalg.vector_norm(local.view(units, k // q, q), 2, dim=2, dtype=dtype)
        norms = torch.linalg.vector_norm(blocks, 2, dim=1).view((units,) + (1,) * (local.dim() - 1))
    else:
        other = [d for d in range(local.dim()) if d != unit_dim]
        norms = torch.linalg.vector_norm(local, 2, dim=other, keepdim=True, dtype=dtype)
    return norms, _margin(q, k // q, local.dtype)


def _local(weight: torch.Tensor) -> torch.Tensor:
    """The locally stored tensor of a (possibly DTensor) parameter, as a view that in-place ops write through."""
    to_local = getattr(weight, "to_local", None)
    data = weight.detach()
    data_to_local = getattr(data, "to_local", None)
    return data_to_local() if to_local is not None and callable(data_to_local) else data


def _check_placement(name: str, weight: torch.Tensor, unit_dim: int) -> None:
    placements = getattr(weight, "placements", None)
    if placements is None:
        return
    from torch.distributed.tensor import Replicate, Shard

    ok = all(isinstance(p, Replicate) or (isinstance(p, Shard) and p.dim == unit_dim) for p in placements)
    if not ok:
        raise MisconfigurationException(
            f"MaxNormConstraint: {name} is a DTensor with placements {placements}; the unit norms over "
            f"dim != {unit_dim} would be partial. Only Shard({unit_dim}) or Replicate are supported."
        )
