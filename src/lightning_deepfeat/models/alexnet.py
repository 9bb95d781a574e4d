"""The AlexNet feature net of Krizhevsky, Sutskever & Hinton (2012), for any input size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from lightning_deepfeat.validation import check_bool, check_dropout, check_int, check_number


class OverlappingMaxPool(nn.Module):
    """3×3 max-pooling with stride 2 (windows overlap), skipped on maps smaller than the window.

    The skip is what lets the 224×224 architecture run on 28×28 or 32×32 inputs: once
    the map is smaller than the window there is nothing left to pool.
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < self.kernel_size or x.shape[-2] < self.kernel_size:
            return x
        return F.max_pool2d(x, self.kernel_size, self.stride)

    @override
    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class AlexNet(nn.Module):
    r"""Five conv layers and two wide dense layers with dropout, as in Krizhevsky et al. (2012).

    ======  =========================================  ===========================
    layer   Krizhevsky et al. 2012                     here (``width=1``)
    ======  =========================================  ===========================
    conv1   96 × 11×11, stride 4, ReLU, LRN, pool      same (``stem_kernel``, ``stem_stride``)
    conv2   256 × 5×5, ReLU, LRN, pool                 same
    conv3   384 × 3×3, ReLU                            same
    conv4   384 × 3×3, ReLU                            same
    conv5   256 × 3×3, ReLU, pool                      same
    fc6/7   4096, ReLU, dropout 0.5                    ``hidden``, ``dropout``
    ======  =========================================  ===========================

    Pooling is overlapping, 3×3 with stride 2. Local response normalisation uses the
    paper's constants k=2, n=5, α=1e-4, β=0.75:
    :math:`b_i = a_i / (k + α \sum_{j} a_j^2)^β`. ``torch.nn.LocalResponseNorm`` divides α
    by n, so it is built with ``alpha=α·n`` to give the paper's formula.

    On a 224×224 input the last map is 6×6×256 (9216 features into fc6), as in the
    paper. Smaller inputs work too: pooling is skipped once the map is smaller than
    the window and fc6 infers its input size. For 28×28 or 32×32 images use a small
    stem, e.g. ``stem_kernel=3, stem_stride=1``.

    Args:
        in_channels: input channels; ``None`` infers them on the first forward pass.
        width: multiplier on every conv layer's channel count (0.25 gives a small net).
        hidden: width of fc6 and fc7.
        dropout: dropout on fc6 and fc7, in [0, 1).
        lrn: use local response normalisation after conv1 and conv2.
        stem_kernel: conv1 kernel size (11 in the paper).
        stem_stride: conv1 stride (4 in the paper).

    Shape:
        input ``(N, C, H, W)``, output ``(N, hidden)``.
    """

    PAPER_CHANNELS = (96, 256, 384, 384, 256)

    def __init__(
        self,
        in_channels: int | None = 3,
        width: float = 1.0,
        hidden: int = 4096,
        dropout: float = 0.5,
        lrn: bool = True,
        stem_kernel: int = 11,
        stem_stride: int = 4,
    ) -> None:
        super().__init__()
        in_channels = check_int("in_channels", in_channels, low=1, allow_none=True, hint="None: inferred")
        width = check_number("width", width, low=0.0, low_open=True, hint="a multiplier on the channel counts")
        hidden = check_int("hidden", hidden, low=1)
        dropout = check_dropout("dropout", dropout)
        lrn = check_bool("lrn", lrn)
        stem_kernel = check_int("stem_kernel", stem_kernel, low=1)
        stem_stride = check_int("stem_stride", stem_stride, low=1)
        self.init_args = {
            "in_channels": in_channels,
            "width": width,
            "hidden": hidden,
            "dropout": dropout,
            "lrn": lrn,
            "stem_kernel": stem_kernel,
            "stem_stride": stem_stride,
        }
        c1, c2, c3, c4, c5 = (max(1, round(c * width)) for c in self.PAPER_CHANNELS)

        def conv(cin: int | None, cout: int, kernel: int, stride: int = 1) -> nn.Module:
            padding = kernel // 2 if kernel < 11 else 2
            if cin is None:
                return nn.LazyConv2d(cout, kernel, stride, padding)
            return nn.Conv2d(cin, cout, kernel, stride, padding)

        def norm() -> list[nn.Module]:
            # torch's LRN computes alpha/n * sum; the paper's α multiplies the sum itself.
            return [nn.LocalResponseNorm(size=5, alpha=1e-4 * 5, beta=0.75, k=2.0)] if lrn else []

        self.conv = nn.Sequential(
            conv(in_channels, c1, stem_kernel, stem_stride), nn.ReLU(inplace=True), *norm(), OverlappingMaxPool(),
            conv(c1, c2, 5), nn.ReLU(inplace=True), *norm(), OverlappingMaxPool(),
            conv(c2, c3, 3), nn.ReLU(inplace=True),
            conv(c3, c4, 3), nn.ReLU(inplace=True),
            conv(c4, c5, 3), nn.ReLU(inplace=True), OverlappingMaxPool(),
        )  # fmt: skip
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.LazyLinear(hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
        )  # fmt: skip

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))
