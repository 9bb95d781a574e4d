"""The multilayer perceptron: φ(x) = σ_L(W_L … σ_1(W_1 x)) with dense W_k."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from typing_extensions import override

from lightning_deepfeat.models._common import Activation, make_activation
from lightning_deepfeat.validation import check_dropout, check_int, check_ints


class MLP(nn.Module):
    r"""Dense feature net: flatten, then ``len(hidden)`` blocks of Linear → σ → Dropout.

    .. math::
        φ(x) = \mathrm{drop}_p(σ(W_L \cdots \mathrm{drop}_p(σ(W_1\, \mathrm{drop}_{p_0}(x)))))

    The logistic-regression head is not part of this module: :class:`FeatureClassifier`
    adds it. The Srivastava et al. (2014) MNIST net is ``MLP(hidden=(1024, 1024, 1024),
    dropout=0.5, input_dropout=0.2)``.

    Args:
        hidden: width of each hidden layer, input side first (at least one).
        in_features: size of the flattened input. ``None`` infers it on the first
            forward pass (``FeatureClassifier`` does a dry run at construction).
        activation: the fixed non-linearity σ: ``relu`` (default), ``gelu``, ``tanh``,
            ``sigmoid``, ``leaky_relu`` or ``elu``.
        dropout: probability of dropping each hidden unit during training, in [0, 1).
        input_dropout: probability of dropping each input pixel, in [0, 1).

    Shape:
        input ``(N, *)``, output ``(N, hidden[-1])``.
    """

    def __init__(
        self,
        hidden: Sequence[int] = (1024, 1024),
        in_features: int | None = None,
        activation: Activation = "relu",
        dropout: float = 0.5,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = check_ints("hidden", hidden, low=1, non_empty=True, hint="one width per hidden layer")
        in_features = check_int("in_features", in_features, low=1, allow_none=True, hint="None: inferred")
        dropout = check_dropout("dropout", dropout)
        input_dropout = check_dropout("input_dropout", input_dropout)
        make_activation(activation)  # validate the name early
        self.init_args = {
            "hidden": list(hidden),
            "in_features": in_features,
            "activation": activation,
            "dropout": dropout,
            "input_dropout": input_dropout,
        }
        layers: list[nn.Module] = [nn.Flatten()]
        if input_dropout > 0:
            layers.append(nn.Dropout(input_dropout))
        previous = in_features
        for width in hidden:
            layers.append(nn.Linear(previous, width) if previous else nn.LazyLinear(width))
            layers.append(make_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            previous = width
        self.layers = nn.Sequential(*layers)
        self.out_features = hidden[-1]

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
