r"""Batched, on-device augmentation: the :class:`BatchTransform` protocol, translation, crops and flips.

Every transform here works on a whole batch ``(N, C, H, W)`` at once, on any device, for
uint8 and floating tensors, and returns a tensor of the same dtype, device and memory
format. Random draws come from an explicit :class:`torch.Generator`
(``forward(images, generator=...)``); without one the device's default generator is used,
which :func:`lightning.seed_everything` seeds.

The protocol: draw the parameters, then apply them
--------------------------------------------------
A :class:`BatchTransform` splits its work in two, as torchvision v2 (``make_params`` /
``transform``) and kornia (``generate_parameters`` / ``apply_transform``) do, but per
batch:

.. math::
    \mathrm{forward}(X, g) = \mathrm{apply\_params}\bigl(X,\ \mathrm{draw\_params}(\mathrm{shape}\,X,\ g)\bigr)

``draw_params`` takes every random decision of the batch (from ``g``, knowing only the
shape); ``apply_params`` is deterministic. A transform whose output image :math:`n` is a window of its
input extended by padding (a crop, a shift) may also say where those windows lie
(:meth:`BatchTransform.windows`, a :class:`~lightning_deepfeat.data.functional.Windows`).
Because the windows are known from the shape alone, before any pixel is read, a data module
that holds the whole training split cuts them straight out of the split (padded once) in
the same pass as the batch gather: see ``InMemoryDataModule.gather_augmented``. Any
transform that implements :meth:`~BatchTransform.windows`, a user's included, takes that
fast path; the others run on the gathered batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Generator, nn
from typing_extensions import override

from lightning_deepfeat.data.functional import (
    PADDING_MODES,
    PaddingMode,
    Windows,
    check_batch,
    check_padding,
    crop_batch,
    cut_windows,
    flip_batch,
    memory_format_of,
    pad_batch,
    shift_batch,
    translate,
)
from lightning_deepfeat.validation import check_choice, check_int, check_pair, check_probability

#: the parameters a transform draws for one batch, by name (``{}`` for a deterministic transform)
Params = dict[str, torch.Tensor]
#: where draws happen when no generator is given (``None``: the CPU)
Device = torch.device | str | None


def _device(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device:
    """Where draws happen: the generator's device, else ``device``, else the CPU."""
    if generator is not None:
        return generator.device
    return torch.device(device if device is not None else "cpu")


def _randint(low: int, high: int, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``n`` integers uniform in ``[low, high]`` (both ends included), int64, on the generator's device."""
    return torch.randint(low, high + 1, (n,), generator=generator, device=_device(generator, device))


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand((n,), generator=generator, device=_device(generator, device))


class BatchTransform(nn.Module):
    r"""A batch transform in two steps: draw the batch's random parameters, then apply them.

    :meth:`forward` is ``apply_params(images, draw_params(images.shape, generator, images.device))``.
    Subclasses implement:

    * :meth:`draw_params` (random transforms): every random number the batch needs, from
      ``generator``, knowing only the batch shape; nothing else. The base draws nothing.
    * :meth:`apply_params`: the deterministic part, given the drawn parameters.
    * :meth:`windows` (optional): for a transform whose output image :math:`n` is a window
      of its (padded) input, where the windows lie:
      :math:`Y_{n,c,i,j} = \tilde X_{n,c,t_n+i,l_n+j}` (see
      :class:`~lightning_deepfeat.data.functional.Windows`). Then :meth:`apply_params` need not be
      written (the base cuts the windows), and a data module holding its split in memory
      fuses the transform with the batch gather: one copy per output byte.

    The same generator state gives the same parameters whichever path runs, so the fused
    and the plain path give bit-identical batches.
    """

    def draw_params(self, shape: Sequence[int], generator: Generator | None = None, device: Device = None) -> Params:
        """The parameters of a batch of ``shape`` ``(N, C, H, W)``, drawn on the generator's device, else ``device``."""
        return {}

    def apply_params(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        """Apply drawn ``params`` to ``images``; the base cuts the :meth:`windows` out of the batch."""
        windows = self.windows(params, images.shape)
        if windows is None:
            raise NotImplementedError(
                f"{type(self).__name__} must implement apply_params(images, params) or windows()."
            )
        return cut_windows(images, windows)

    def windows(self, params: Params, shape: Sequence[int]) -> Windows | None:
        """Where output image ``n`` lies in the input of ``shape``, padded; ``None``: not a window of its input."""
        return None

    @override
    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_batch(images)
        return self.apply_params(images, self.draw_params(images.shape, generator, images.device))


class RandomTranslate(BatchTransform):
    r"""Shift every image of a batch by its own random integer offset.

    Offsets are uniform on the grid :math:`dx \in \{-s_x, \dots, s_x\}`,
    :math:`dy \in \{-s_y, \dots, s_y\}`, independently per image; with probability
    ``1 - p`` an image keeps offset ``(0, 0)``. Pixels moved in from outside the image are
    filled by ``padding_mode`` (see :func:`~lightning_deepfeat.data.functional.translate`).
    The shifted image is the ``(H, W)`` window at :math:`(s_y - dy, s_x - dx)` of the image
    padded by :math:`(s_y, s_x)`, which is :meth:`windows`; it equals
    ``v2.RandomCrop((H, W), padding=(s_x, s_y), padding_mode=...)`` with that crop corner.

    Args:
        max_shift: ``s`` or ``(s_y, s_x)`` in pixels; 0 leaves images unchanged.
        padding_mode: ``"zeros"``, ``"reflect"`` or ``"replicate"``.
        p: probability that an image is shifted at all.
    """

    def __init__(self, max_shift: int | Sequence[int], padding_mode: PaddingMode = "zeros", p: float = 1.0) -> None:
        super().__init__()
        self.max_shift = check_pair("max_shift", max_shift)
        self.padding_mode: PaddingMode = check_choice("padding_mode", padding_mode, PaddingMode)
        self.p = check_probability("p", p)

    def sample_offsets(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``(dx, dy)``, each ``(n,)`` int64, on the generator's device (or ``device``)."""
        sy, sx = self.max_shift
        device = torch.device(device)
        dx = _randint(-sx, sx, n, generator, device)
        dy = _randint(-sy, sy, n, generator, device)
        if self.p < 1.0:
            keep = _rand(n, generator, device) < self.p
            dx, dy = dx * keep, dy * keep
        return dx, dy

    @override
    def draw_params(self, shape: Sequence[int], generator: Generator | None = None, device: Device = None) -> Params:
        """``{"dx", "dy"}``; nothing when no image can move (``max_shift`` 0 or ``p`` 0)."""
        if self.max_shift == (0, 0) or self.p == 0.0:
            return {}
        dx, dy = self.sample_offsets(shape[0], generator, _device(generator, device))
        return {"dx": dx, "dy": dy}

    @override
    def windows(self, params: Params, shape: Sequence[int]) -> Windows | None:
        if not params:
            return None
        sy, sx = self.max_shift
        return Windows(sy - params["dy"], sx - params["dx"], (shape[-2], shape[-1]), self.max_shift, self.padding_mode)

    @override
    def apply_params(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        if not params:
            return images
        # the offsets lie in [-s, s] by construction: no host-side range check (it would sync the device)
        check_padding(images.shape, self.max_shift, self.padding_mode)
        return shift_batch(images, params["dx"], params["dy"], self.max_shift, self.padding_mode, self._scratch(images))

    def _scratch(self, images: torch.Tensor) -> torch.Tensor:
        """The padded-batch scratch buffer, reused while batches keep dtype, device, format and size."""
        (sy, sx), (n, c, h, w) = self.max_shift, images.shape
        shape = (c, h + 2 * sy, w + 2 * sx)
        fmt = memory_format_of(images)
        buf = self.__dict__.get("_buffer")
        if (
            buf is None
            or buf.shape[0] < n
            or tuple(buf.shape[1:]) != shape
            or buf.dtype != images.dtype
            or buf.device != images.device
            or memory_format_of(buf) != fmt
        ):
            buf = torch.empty((n, *shape), dtype=images.dtype, device=images.device, memory_format=fmt)
            self.__dict__["_buffer"] = buf  # plain attribute: not a registered buffer, not in state_dict
        return buf

    @override
    def extra_repr(self) -> str:
        return f"max_shift={self.max_shift}, padding_mode={self.padding_mode!r}, p={self.p}"


class RandomCrop(BatchTransform):
    r"""Cut a random ``size`` window out of every image (Krizhevsky's 224 out of 256).

    Corners are uniform: :math:`t \in \{0, \dots, H - h\}`, :math:`l \in \{0, \dots, W - w\}`,
    independently per image; :math:`Y_{n,c,i,j} = X_{n,c,t_n+i,l_n+j}`. Output ``(N, C, h, w)``.

    Args:
        size: ``h`` or ``(h, w)``.
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__()
        self.size = check_pair("size", size, low=1)

    def sample_corners(
        self,
        images_hw: Sequence[int],
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``(top, left)`` for ``n`` images of size ``images_hw``."""
        (height, width), (h, w) = images_hw, self.size
        if h > height or w > width:
            raise ValueError(f"`size`={self.size} is larger than the images ({height}, {width}).")
        device = torch.device(device)
        return _randint(0, height - h, n, generator, device), _randint(0, width - w, n, generator, device)

    @override
    def draw_params(self, shape: Sequence[int], generator: Generator | None = None, device: Device = None) -> Params:
        """``{"top", "left"}``: the corners."""
        top, left = self.sample_corners((shape[-2], shape[-1]), shape[0], generator, _device(generator, device))
        return {"top": top, "left": left}

    @override
    def windows(self, params: Params, shape: Sequence[int]) -> Windows:
        return Windows(params["top"], params["left"], self.size)

    @override
    def apply_params(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return crop_batch(images, params["top"], params["left"], self.size)

    @override
    def extra_repr(self) -> str:
        return f"size={self.size}"


class CenterCrop(BatchTransform):
    r"""Cut the central ``size`` window of every image (evaluation counterpart of :class:`RandomCrop`).

    The corner is :math:`t = \lfloor (H - h) / 2 \rfloor`, :math:`l = \lfloor (W - w) / 2 \rfloor`.
    Deterministic: it draws nothing.
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__()
        self.size = check_pair("size", size, low=1)

    @override
    def apply_params(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        (height, width), (h, w) = images.shape[-2:], self.size
        if h > height or w > width:
            raise ValueError(f"`size`={self.size} is larger than the images ({height}, {width}).")
        if (h, w) == (height, width):
            return images
        top, left = (height - h) // 2, (width - w) // 2
        return images[:, :, top : top + h, left : left + w].clone(memory_format=memory_format_of(images))

    @override
    def extra_repr(self) -> str:
        return f"size={self.size}"


class RandomHorizontalFlip(BatchTransform):
    r"""Mirror each image left-right with probability ``p``: :math:`Y_{n,c,i,j} = X_{n,c,i,W-1-j}`."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = check_probability("p", p)

    def sample_flags(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """``(n,)`` booleans, True where the image is flipped."""
        return _rand(n, generator, torch.device(device)) < self.p

    @override
    def draw_params(self, shape: Sequence[int], generator: Generator | None = None, device: Device = None) -> Params:
        """``{"flip"}``: the flags; nothing when ``p`` is 0."""
        if self.p == 0.0:
            return {}
        return {"flip": self.sample_flags(shape[0], generator, _device(generator, device))}

    @override
    def apply_params(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        if not params:
            return images
        return flip_batch(images, params["flip"].to(images.device))

    @override
    def extra_repr(self) -> str:
        return f"p={self.p}"


#: the test-time views :class:`ShiftFlipViews` makes of each image
ViewSet = Literal["flip", "ten"]


class ShiftFlipViews(BatchTransform):
    r"""Test-time views of small images: the image, its one-pixel shifts and their mirror images.

    ``forward(images)`` maps ``(N, C, H, W)`` to ``(N, V, C, H, W)``:

    * ``"flip"`` (:math:`V = 2`): the image and its horizontal reflection;
    * ``"ten"`` (:math:`V = 10`): view 0 is the image, views 1-4 the image moved by
      ``shift`` pixels up, down, left and right
      (:math:`Y_{n,c,i,j} = \tilde X_{n,\,c,\,i - dy,\,j - dx}`, pixels moved in from
      outside filled by ``padding_mode``, as :class:`RandomTranslate` fills them), views 5-9
      the reflections of views 0-4.

    The counterpart, for images too small to cut patches from, of Krizhevsky et al.'s
    ten-patch test (:class:`~lightning_deepfeat.data.TenCrop`: four corners, the centre and
    their reflections): a model that averages its softmax over the views
    (``FeatureClassifier.view_averaged_logits``) is tested on the translations and
    reflections it was trained on. Deterministic: it draws nothing.

    Args:
        views: ``"flip"`` or ``"ten"``.
        shift: pixels of the four shifts in ``"ten"`` (≥ 1).
        padding_mode: ``"zeros"``, ``"reflect"`` or ``"replicate"``.
    """

    def __init__(self, views: ViewSet = "ten", shift: int = 1, padding_mode: PaddingMode = "zeros") -> None:
        super().__init__()
        self.view_set: ViewSet = check_choice("views", views, ViewSet)
        self.shift: int = check_int("shift", shift, low=1)
        self.padding_mode: PaddingMode = check_choice("padding_mode", padding_mode, PaddingMode)

    @property
    def views(self) -> int:
        """Views per image."""
        return 10 if self.view_set == "ten" else 2

    @override
    def apply_params(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        check_batch(images)
        originals = [images]
        if self.view_set == "ten":
            # padded once; a shift by (dy, dx) is the window at (s - dy, s - dx): slices, no host sync
            s, (height, width) = self.shift, images.shape[-2:]
            check_padding(images.shape, (s, s), self.padding_mode)
            padded = pad_batch(images, (s, s), self.padding_mode)
            for dy, dx in ((-s, 0), (s, 0), (0, -s), (0, s)):  # up, down, left, right
                top, left = s - dy, s - dx
                originals.append(padded[:, :, top : top + height, left : left + width])
        return torch.stack(originals + [x.flip(-1) for x in originals], dim=1)

    @override
    def extra_repr(self) -> str:
        return f"views={self.view_set!r}, shift={self.shift}, padding_mode={self.padding_mode!r}"


__all__ = [
    "PADDING_MODES",
    "BatchTransform",
    "CenterCrop",
    "PaddingMode",
    "Params",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomTranslate",
    "ShiftFlipViews",
    "ViewSet",
    "Windows",
    "crop_batch",
    "cut_windows",
    "flip_batch",
    "memory_format_of",
    "pad_batch",
    "translate",
]
