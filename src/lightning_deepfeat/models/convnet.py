"""The ReLU ConvNet with max-pooling: stages of conv → ReLU → max-pool, then dense layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from typing_extensions import override

from lightning_deepfeat.models._common import Activation, make_activation
from lightning_deepfeat.validation import check_choice, check_dropout, check_int, check_ints, fail

#: how each stage ends: max-pooling (the recipe) or average pooling (the ablation's ``no_maxpool`` arm)
Pooling = Literal["max", "avg"]


class ConvNet(nn.Module):
    r"""Convolutional feature net: σ_k = ReLU (∘ max-pooling at the end of each stage).

    Each stage ``s`` is ``convs_per_stage`` blocks of ``Conv2d(channels[s], kernel_size,
    padding=kernel_size // 2)`` → ReLU, then ``MaxPool2d(pool_size)``. The feature maps are
    flattened and go through ``len(hidden)`` blocks of Linear → ReLU → Dropout(``dropout``).
    Dropout on the conv stages (``conv_dropout``) is off by default, as in Srivastava et al.

    .. math::
        φ(x) = \mathrm{drop}(σ(W_{fc} \cdots \mathrm{pool}(σ(W_2 * \mathrm{pool}(σ(W_1 * x))))))

    Args:
        channels: output channels of each stage, input side first.
        hidden: widths of the fully connected layers after the conv stages (may be empty:
            then φ is the flattened last feature map).
        in_channels: input channels; ``None`` infers them on the first forward pass.
        kernel_size: odd square kernel size of every convolution ("same" padding).
        convs_per_stage: convolutions before each pooling.
        pool_size: max-pooling window and stride (2 halves the map).
        dropout: dropout on the fully connected hidden units, in [0, 1).
        conv_dropout: dropout on conv feature maps after each stage, in [0, 1).
        activation: the fixed non-linearity σ (``relu`` by default).
        pooling: ``"max"`` (default): ``MaxPool2d(pool_size)``; ``"avg"``: ``AvgPool2d(pool_size)``,
            the same window and stride (to measure what max-pooling itself contributes).

    Shape:
        input ``(N, C, H, W)``, output ``(N, hidden[-1])`` (or the flattened map when
        ``hidden`` is empty).
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64),
        hidden: Sequence[int] = (256,),
        in_channels: int | None = None,
        kernel_size: int = 3,
        convs_per_stage: int = 1,
        pool_size: int = 2,
        dropout: float = 0.5,
        conv_dropout: float = 0.0,
        activation: Activation = "relu",
        pooling: Pooling = "max",
    ) -> None:
        super().__init__()
        channels = check_ints("channels", channels, low=1, non_empty=True, hint="one width per conv stage")
        hidden = check_ints("hidden", hidden, low=1)
        in_channels = check_int("in_channels", in_channels, low=1, allow_none=True, hint="None: inferred")
        kernel_size = check_int("kernel_size", kernel_size, low=1)
        if kernel_size % 2 == 0:
            raise fail("kernel_size", "odd", kernel_size, hint="for 'same' padding")
        convs_per_stage = check_int("convs_per_stage", convs_per_stage, low=1)
        pool_size = check_int("pool_size", pool_size, low=1)
        dropout = check_dropout("dropout", dropout)
        conv_dropout = check_dropout("conv_dropout", conv_dropout)
        make_activation(activation)  # validate the name early
        pooling = check_choice("pooling", pooling, Pooling)
        self.init_args = {
            "channels": list(channels),
            "hidden": list(hidden),
            "in_channels": in_channels,
            "kernel_size": kernel_size,
            "convs_per_stage": convs_per_stage,
            "pool_size": pool_size,
            "dropout": dropout,
            "conv_dropout": conv_dropout,
            "activation": activation,
            "pooling": pooling,
        }
        stages: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            for _ in range(convs_per_stage):
                conv = (
                    nn.Conv2d(previous, width, kernel_size, padding=kernel_size // 2)
                    if previous
                    else nn.LazyConv2d(width, kernel_size, padding=kernel_size // 2)
                )
                stages += [conv, make_activation(activation)]
                previous = width
            if pool_size > 1:
                stages.append(nn.MaxPool2d(pool_size) if pooling == "max" else nn.AvgPool2d(pool_size))
            if conv_dropout > 0:
                stages.append(nn.Dropout(conv_dropout))
        self.conv = nn.Sequential(*stages)
        dense: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            dense += [nn.LazyLinear(width), make_activation(activation)]
            if dropout > 0:
                dense.append(nn.Dropout(dropout))
        self.fc = nn.Sequential(*dense)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))
