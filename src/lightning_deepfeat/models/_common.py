"""Small pieces shared by the feature nets: argument checks and the fixed non-linearities.

What a checkpoint records to rebuild a model lives in :mod:`lightning_deepfeat.models._rebuild`.
"""

from __future__ import annotations

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
