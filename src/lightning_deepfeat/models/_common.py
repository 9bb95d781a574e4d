"""The fixed non-linearities σ shared by the feature nets.

Argument checks live in :mod:`lightning_deepfeat.validation`; what a checkpoint records to
rebuild a model lives in :mod:`lightning_deepfeat.models._rebuild`.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from lightning_deepfeat.validation import check_choice

#: The names of the non-linearities the nets accept as ``activation``.
Activation = Literal["relu", "gelu", "tanh", "sigmoid", "leaky_relu", "elu"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}


def make_activation(name: Activation) -> nn.Module:
    """Build the fixed non-linearity σ named ``name`` (``relu`` by default in every net)."""
    return _ACTIVATIONS[check_choice("activation", name, Activation)]()
