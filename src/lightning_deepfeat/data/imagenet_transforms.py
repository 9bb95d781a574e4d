r"""Krizhevsky et al.'s ImageNet extras as batch transforms: PCA colour lighting and the ten-patch test.

:class:`PCALighting` is the paper's second form of data augmentation ("altering the
intensities of the RGB channels"): to every pixel of image :math:`n` it adds the same
multiple of the principal components of the RGB values of the training set,

.. math::
    I'_{n,c,y,x} = I_{n,c,y,x} + s \sum_{i} P_{c,i}\, \alpha_{n,i}\, \lambda_i,
    \qquad \alpha_{n,i} \sim \mathcal N(0, \sigma_\alpha^2),\ \sigma_\alpha = 0.1,

where :math:`\lambda_i` and :math:`P_{:,i}` are the eigenvalues and eigenvectors of the
:math:`3 \times 3` covariance of the RGB values scaled to :math:`[0, 1]` (``deepfeat
prepare`` computes it over the whole prepared training set and stores it), and
:math:`s = 255` brings the offset back to pixel units. One :math:`\alpha_n` per image and
batch, drawn from the batch's generator like every other random parameter.

:class:`TenCrop` gives the paper's test-time views: the four corner patches, the centre
patch and their horizontal reflections, as a ``(N, 10, C, h, w)`` batch in the order of
``torchvision.transforms.v2.functional.ten_crop`` (the five crops of the image, then the
five crops of its mirror image). Averaging the model's softmax over the ten views is the
prediction (see ``StreamingImageDataModule(test_crops="ten")``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Generator
from typing_extensions import override

from lightning_deepfeat.data.functional import check_batch, memory_format_of
from lightning_deepfeat.data.transforms import BatchTransform, Device, Params, _device
from lightning_deepfeat.validation import check_number, check_pair, fail


def rgb_pca(covariance: Any) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(eigenvalues, eigenvectors)`` of a symmetric ``C × C`` covariance, largest eigenvalue first.

    :math:`\Sigma = P \,\mathrm{diag}(\lambda)\, P^\top` with the eigenvectors as the
    columns of :math:`P` (``torch.linalg.eigh``, in float64), each column's sign fixed so
    that its largest entry is positive (a deterministic choice: the sign of an eigenvector
    is arbitrary and :math:`\alpha` is symmetric anyway).
    """
    cov = torch.as_tensor(covariance, dtype=torch.float64)
    if cov.dim() != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"`covariance` must be a square matrix (C, C), got shape {tuple(cov.shape)}.")
    values, vectors = torch.linalg.eigh((cov + cov.T) / 2)
    order = torch.argsort(values, descending=True)
    values, vectors = values[order].clamp_min(0.0), vectors[:, order]
    signs = torch.sign(vectors.gather(0, vectors.abs().argmax(0, keepdim=True))).squeeze(0)
    return values, vectors * torch.where(signs == 0, torch.ones_like(signs), signs)


class PCALighting(BatchTransform):
    r"""Krizhevsky's PCA colour augmentation: add :math:`s P (\alpha_n \odot \lambda)` to each pixel of image n.

    .. math::
        Y_{n,c,y,x} = X_{n,c,y,x} + \delta_{n,c}, \qquad
        \delta_{n,c} = s \sum_i P_{c,i}\, \alpha_{n,i}\, \lambda_i, \qquad
        \alpha_{n,i} \sim \mathcal N(0, \sigma_\alpha^2)

    Args:
        eigenvalues: :math:`\lambda`, ``C`` values: the eigenvalues of the covariance of the
            pixel values divided by ``scale`` (:func:`rgb_pca`; ``deepfeat prepare`` stores them).
        eigenvectors: :math:`P`, ``C × C``, the eigenvectors as columns.
        alpha_std: :math:`\sigma_\alpha` (0.1 in the paper); 0 leaves images unchanged.
        scale: :math:`s`, the pixel value that stands for 1.0 (255 for uint8 images).

    Floating batches get :math:`X + \delta` exactly (no clamping, as in the paper). A uint8
    batch is rounded and clamped to ``[0, 255]``; the data modules convert to float32 first
    so that nothing is lost.
    """

    #: the data modules hand this transform a float32 batch (see the class docstring)
    wants_float = True

    def __init__(
        self,
        eigenvalues: Sequence[float] | torch.Tensor,
        eigenvectors: Sequence[Sequence[float]] | torch.Tensor,
        alpha_std: float = 0.1,
        scale: float = 255.0,
    ) -> None:
        super().__init__()
        values = torch.as_tensor(eigenvalues, dtype=torch.float64).flatten()
        vectors = torch.as_tensor(eigenvectors, dtype=torch.float64)
        if values.numel() == 0 or not torch.isfinite(values).all() or (values < 0).any():
            raise fail("eigenvalues", "a non-empty sequence of finite numbers >= 0", _plain(eigenvalues))
        k = values.numel()
        if vectors.shape != (k, k) or not torch.isfinite(vectors).all():
            raise fail("eigenvectors", f"a finite {k}×{k} matrix (one eigenvector per column)", _plain(eigenvectors))
        self.alpha_std = check_number("alpha_std", alpha_std, low=0.0)
        self.scale = check_number("scale", scale, low=0.0, low_open=True)
        self.eigenvalues = values.float()
        self.eigenvectors = vectors.float()
        self._on_device: dict[torch.device, torch.Tensor] = {}

    def _weighted(self, device: torch.device) -> torch.Tensor:
        r""":math:`s P \,\mathrm{diag}(\lambda)`, ``(C, k)`` float32 on ``device`` (cached)."""
        weighted = self._on_device.get(device)
        if weighted is None:
            weighted = (self.scale * self.eigenvectors * self.eigenvalues).to(device)
            self._on_device[device] = weighted
        return weighted

    @override
    def draw_params(self, shape: Sequence[int], generator: Generator | None = None, device: Device = None) -> Params:
        r"""``{"alpha"}``: :math:`\alpha \sim \mathcal N(0, \sigma_\alpha^2)`, ``(N, k)``, or none (``alpha_std`` 0)."""
        if self.alpha_std == 0.0:
            return {}
        if shape[1] != self.eigenvectors.shape[0]:
            raise ValueError(
                f"PCALighting has {self.eigenvectors.shape[0]} colour components, but the images have {shape[1]} "
                "channels."
            )
        alpha = torch.randn(
            (shape[0], self.eigenvalues.numel()), generator=generator, device=_device(generator, device)
        )
        return {"alpha": alpha.mul_(self.alpha_std)}

    def offsets(self, params: Params, device: torch.device | str) -> torch.Tensor:
        r""":math:`\delta`, ``(N, C)`` float32: the offset each image adds to every one of its pixels."""
        weighted = self._weighted(torch.device(device))
        return params["alpha"].to(device=weighted.device, dtype=torch.float32) @ weighted.T

    @override
    def apply_params(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        if not params:
            return images
        delta = self.offsets(params, images.device)[:, :, None, None]
        fmt = memory_format_of(images)
        if images.is_floating_point():
            return (images + delta.to(images.dtype)).contiguous(memory_format=fmt)
        shifted = images.to(torch.float32) + delta
        return shifted.round_().clamp_(0, 255).to(images.dtype).contiguous(memory_format=fmt)

    @override
    def extra_repr(self) -> str:
        values = ", ".join(f"{v:.4g}" for v in self.eigenvalues.tolist())
        return f"eigenvalues=[{values}], alpha_std={self.alpha_std}, scale={self.scale}"


def _plain(value: Any) -> Any:
    """A tensor argument as a list, for the error message."""
    return value.tolist() if isinstance(value, torch.Tensor) else value


def five_crop_corners(image_hw: Sequence[int], size: Sequence[int]) -> list[tuple[int, int]]:
    r"""``(top, left)`` of the top-left, top-right, bottom-left, bottom-right and centre ``size`` patches.

    The centre patch is :class:`~lightning_deepfeat.data.CenterCrop`'s:
    :math:`(\lfloor (H-h)/2 \rfloor, \lfloor (W-w)/2 \rfloor)`.
    """
    (height, width), (h, w) = image_hw, size
    if h > height or w > width:
        raise ValueError(f"`size`={tuple(size)} is larger than the images ({height}, {width}).")
    return [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w), ((height - h) // 2, (width - w) // 2)]


class TenCrop(BatchTransform):
    r"""The ten test patches of Krizhevsky et al.: four corners and the centre, and the same of the mirror image.

    ``forward(images)`` maps ``(N, C, H, W)`` to ``(N, 10, C, h, w)``: views 0-4 are the
    top-left, top-right, bottom-left, bottom-right and centre ``size`` patches of image
    :math:`n`, views 5-9 the same patches of its horizontal reflection (which are the
    reflections of the top-right, top-left, bottom-right, bottom-left and centre patches).
    This is ``torchvision.transforms.v2.functional.ten_crop`` per image, batched; the centre
    patch is :class:`~lightning_deepfeat.data.CenterCrop`'s (floor of half the margin).
    Deterministic: it draws nothing.

    Args:
        size: ``h`` or ``(h, w)`` of the patches (224 in the paper).
    """

    #: views per image
    views = 10

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__()
        self.size = check_pair("size", size, low=1)

    @override
    def apply_params(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        check_batch(images)
        h, w = self.size
        corners = five_crop_corners(images.shape[-2:], self.size)
        mirrored = images.flip(-1)
        patches = [x[:, :, top : top + h, left : left + w] for x in (images, mirrored) for top, left in corners]
        return torch.stack(patches, dim=1)

    @override
    def extra_repr(self) -> str:
        return f"size={self.size}"


__all__ = ["PCALighting", "TenCrop", "five_crop_corners", "rgb_pca"]
