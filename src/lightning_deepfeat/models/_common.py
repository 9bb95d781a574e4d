"""Small pieces shared by the feature nets: argument checks and the spec that lets a
net be rebuilt from a checkpoint without pickling it."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

from torch import nn


def check_probability(name: str, value: float) -> float:
    """Return ``value`` if it is a probability in [0, 1), else raise a ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"`{name}` must be a dropout probability in [0, 1), got {value!r}.")
    return float(value)


def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> Any:
    """Return ``value`` if it is an int > 0 (or None when allowed), else raise a ``ValueError``."""
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        allowed = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(f"`{name}` must be {allowed}, got {value!r}.")
    return value


def check_widths(name: str, widths: Sequence[int]) -> tuple[int, ...]:
    """Return ``widths`` as a tuple of positive ints, else raise a ``ValueError`` naming it."""
    if isinstance(widths, int) or not isinstance(widths, Sequence):
        raise ValueError(f"`{name}` must be a sequence of positive ints, got {widths!r}.")
    for width in widths:
        if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
            raise ValueError(f"`{name}` must be a sequence of positive ints, got {list(widths)!r}.")
    return tuple(widths)


_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}


def make_activation(name: str) -> nn.Module:
    """Build the fixed non-linearity σ named ``name`` (``relu`` by default in every net)."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"`activation` must be one of {sorted(_ACTIVATIONS)}, got {name!r}.") from None


def module_spec(module: nn.Module) -> dict[str, Any] | None:
    """The ``{"class_path", "init_args"}`` dict that rebuilds ``module``, if it records its arguments.

    Our feature nets keep their constructor arguments in ``init_args``; a user's own
    module may do the same to make ``FeatureClassifier.load_from_checkpoint`` rebuild it.
    """
    init_args = getattr(module, "init_args", None)
    if not isinstance(init_args, dict):
        return None
    cls = type(module)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(init_args)}


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Instantiate a ``{"class_path", "init_args"}`` dict, for classes already imported only.

    Checkpoints are data: refusing to import new modules keeps loading one from
    running code that the user did not already choose to run.
    """
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"`features` must be an nn.Module or a dict with 'class_path', got {spec!r}.")
    class_path = spec["class_path"]
    module_name, _, name = str(class_path).rpartition(".")
    if module_name not in sys.modules:
        # Our own nets are safe to import; anything else must have been imported by the user.
        if not module_name.startswith("lightning_deepfeat."):
            raise ValueError(
                f"`features` names {class_path!r}, whose module is not imported. Import it before loading the"
                " checkpoint, or pass `features=` explicitly."
            )
        importlib.import_module(module_name)
    cls: Any = sys.modules[module_name]
    for part in name.split("."):
        cls = getattr(cls, part, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"`features` class_path {class_path!r} does not name an nn.Module subclass.")
    return cls(**spec.get("init_args", {}))
