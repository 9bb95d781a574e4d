r"""Batched, on-device image augmentation: translation, crops and horizontal flips.

Every transform here works on a whole batch ``(N, C, H, W)`` at once, on any device,
for uint8 and floating tensors, and returns a tensor of the same dtype, device and
memory format (``channels_last`` in, ``channels_last`` out). Random draws come from an
explicit :class:`torch.Generator` (``forward(images, generator=...)``); without one the
device's default generator is used, which :func:`lightning.seed_everything` seeds.

How a batch is cut without a per-image loop
-------------------------------------------
For a batch :math:`P` of shape ``(N, C, H_p, W_p)`` and crops of size ``(h, w)`` with
top-left corners :math:`(t_n, l_n)`, the crops are

.. math::
    Y_{n,c,i,j} = P_{n,\,c,\,t_n + i,\,l_n + j}.

:func:`torch.Tensor.as_strided` gives a *window view* ``V`` of shape
``(N, H_p - h + 1, W_p - w + 1, C, h, w)`` with ``V[n, t, l] = P[n, :, t:t+h, l:l+w]``
(no copy), and ``Y = V[arange(N), t, l]`` is one advanced-index gather: one pass
over the output, whatever the batch size. :func:`crop_batch` implements it as
``index_select`` over an even flatter view, ``(L, C, h, w)`` with unit stride along
the first dimension, indexed by the windows' storage offsets
:math:`n s_N + t_n s_H + l_n s_W`. Measured on 2 CPU cores this beats a per-image
slice loop at every size, 28×28 to 256→224.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

PADDING_MODES = ("zeros", "reflect", "replicate")


def _pair(name: str, value: int | Sequence[int], minimum: int = 0) -> tuple[int, int]:
    """``value`` as ``(y, x)``; an int means the same for both. Raises ``ValueError`` naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"`{name}` must be an int >= {minimum} or a pair of them (y, x), got {value!r}.")
    if isinstance(value, int):
        value = (value, value)
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in value)
    ):
        raise ValueError(f"`{name}` must be an int >= {minimum} or a pair of them (y, x), got {value!r}.")
    return int(value[0]), int(value[1])


def _check_probability(name: str, p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"`{name}` must be a probability in [0, 1], got {p!r}.")
    return float(p)


def _check_batch(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"`images` must be a batch tensor (N, C, H, W), got {shape}.")


def memory_format_of(images: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` when a 4-D tensor is stored NHWC (and not also NCHW), else contiguous."""
    if images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _randint(low: int, high: int, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``n`` integers uniform in ``[low, high]`` (both ends included), int64, on the generator's device."""
    if generator is not None:
        device = generator.device
    return torch.randint(low, high + 1, (n,), generator=generator, device=device)


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    if generator is not None:
        device = generator.device
    return torch.rand((n,), generator=generator, device=device)


def crop_batch(
    images: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    size: tuple[int, int],
    out: torch.Tensor | None = None,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Cut one ``size`` window per image: ``out[n] = images[n, :, top[n]:top[n]+h, left[n]:left[n]+w]``.

    One :func:`torch.index_select` over a window view of the batch's storage (see the
    module docstring); dtype, device and memory format are kept.

    Args:
        images: ``(N, C, H, W)``.
        top: ``(N,)`` integer rows of the windows' top edges, in ``[0, H - h]``.
        left: ``(N,)`` integer columns of the windows' left edges, in ``[0, W - w]``.
        size: ``(h, w)``.
        out: optional preallocated ``(N, C, h, w)`` output of the same dtype, device and
            memory format (saves the page faults of a fresh allocation on every batch).
        index: optional ``(B,)`` image indices: crop ``images[index[b]]`` for ``b < B``
            (``top``/``left`` then have ``B`` entries). This fuses a batch gather out of
            a whole data set with the crop, so each output byte is copied once.
    """
    _check_batch(images)
    n, c, height, width = images.shape
    h, w = size
    if h > height or w > width:
        raise ValueError(f"crop `size` {size} is larger than the images ({height}, {width}).")
    fmt = memory_format_of(images)
    images = images.contiguous(memory_format=fmt)
    top = top.to(device=images.device, dtype=torch.long)
    left = left.to(device=images.device, dtype=torch.long)
    rows = torch.arange(n, device=images.device) if index is None else index.to(device=images.device, dtype=torch.long)
    if rows.shape != top.shape or top.shape != left.shape:
        raise ValueError(f"`top`, `left` (and `index`) need one entry per output image, got {tuple(top.shape)}, {tuple(left.shape)}, {tuple(rows.shape)}.")
    if rows.numel() == 0 or n == 0:
        return images.new_empty((rows.numel(), c, h, w)).contiguous(memory_format=fmt)
    sn, sc, sh, sw = images.stride()
    # every window starts at a storage offset n*sn + t*sh + l*sw; a view whose first dim
    # walks the storage one element at a time holds them all, overlapping, without a copy
    starts = rows * sn + top * sh + left * sw
    length = (n - 1) * sn + (height - h) * sh + (width - w) * sw + 1
    if fmt == torch.channels_last:
        windows = images.as_strided((length, h, w, c), (1, sh, sw, sc), images.storage_offset())
        if out is not None:
            torch.index_select(windows, 0, starts, out=out.permute(0, 2, 3, 1))
            return out
        return torch.index_select(windows, 0, starts).permute(0, 3, 1, 2)
    windows = images.as_strided((length, c, h, w), (1, sc, sh, sw), images.storage_offset())
    if out is not None:
        return torch.index_select(windows, 0, starts, out=out)
    return torch.index_select(windows, 0, starts)


def _check_padding(images: torch.Tensor, pad: tuple[int, int], padding_mode: str) -> None:
    """Raise ``ValueError`` for an unknown ``padding_mode`` or a reflect padding not smaller than the images."""
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"`padding_mode` must be one of {PADDING_MODES}, got {padding_mode!r}.")
    if padding_mode == "reflect" and (pad[0] >= images.shape[-2] or pad[1] >= images.shape[-1]):
        raise ValueError(
            f"`padding_mode`='reflect' needs the shift {pad} to be smaller than the image "
            f"({images.shape[-2]}, {images.shape[-1]}); use 'replicate' or 'zeros'."
        )


def pad_batch(images: torch.Tensor, pad: tuple[int, int], padding_mode: str = "zeros") -> torch.Tensor:
    """Pad ``pad = (py, px)`` pixels on each side of every image, keeping dtype and memory format.

    ``padding_mode``: ``"zeros"`` (value 0), ``"reflect"`` (mirror without repeating the
    edge, needs ``p < size``) or ``"replicate"`` (repeat the edge pixel).
    """
    _check_padding(images, pad, padding_mode)
    py, px = pad
    if py == 0 and px == 0:
        return images
    mode = "constant" if padding_mode == "zeros" else padding_mode
    fmt = memory_format_of(images)
    try:
        padded = F.pad(images, (px, px, py, py), mode=mode)
    except (RuntimeError, NotImplementedError):  # integer reflect/replicate missing on some backends
        padded = F.pad(images.float(), (px, px, py, py), mode=mode).to(images.dtype)
    return padded.contiguous(memory_format=fmt)


def pad_into(images: torch.Tensor, pad: tuple[int, int], padding_mode: str, buffer: torch.Tensor) -> torch.Tensor:
    """Like :func:`pad_batch`, but written into ``buffer`` (at least as many images, same
    dtype, device and memory format), whose first ``N`` images are returned.

    Reusing one buffer across batches avoids a fresh allocation (and its page faults) per
    batch. Fill order: the image, then the left/right columns beside it, then the
    top/bottom rows over the full width — which gives the same corners as
    ``torch.nn.functional.pad``.
    """
    py, px = pad
    n, _, height, width = images.shape
    out = buffer[:n]
    out[:, :, py : py + height, px : px + width].copy_(images)
    middle = out[:, :, py : py + height]
    if padding_mode == "zeros":
        if px:
            middle[..., :px].zero_()
            middle[..., px + width :].zero_()
        if py:
            out[:, :, :py].zero_()
            out[:, :, py + height :].zero_()
        return out
    if padding_mode == "replicate":
        if px:
            middle[..., :px].copy_(middle[..., px : px + 1].expand_as(middle[..., :px]))
            middle[..., px + width :].copy_(middle[..., px + width - 1 : px + width].expand_as(middle[..., :px]))
        if py:
            out[:, :, :py].copy_(out[:, :, py : py + 1].expand_as(out[:, :, :py]))
            out[:, :, py + height :].copy_(out[:, :, py + height - 1 : py + height].expand_as(out[:, :, :py]))
        return out
    # reflect: padded column px - k mirrors px + k (the edge itself is not repeated)
    if px:
        middle[..., :px].copy_(middle[..., px + 1 : 2 * px + 1].flip(-1))
        middle[..., px + width :].copy_(middle[..., width - 1 : px + width - 1].flip(-1))
    if py:
        out[:, :, :py].copy_(out[:, :, py + 1 : 2 * py + 1].flip(-2))
        out[:, :, py + height :].copy_(out[:, :, height - 1 : py + height - 1].flip(-2))
    return out


def translate(
    images: torch.Tensor,
    dx: torch.Tensor,
    dy: torch.Tensor,
    max_shift: int | Sequence[int] | None = None,
    padding_mode: str = "zeros",
    buffer: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Move image ``n`` by ``dx[n]`` pixels right and ``dy[n]`` pixels down.

    .. math::
        Y_{n,c,i,j} = \tilde X_{n,\,c,\,i - dy_n,\,j - dx_n}

    where :math:`\tilde X` extends the image beyond its border by ``padding_mode``. This
    is exactly "pad by ``s`` on every side, then crop ``(H, W)`` at top ``s_y - dy``,
    left ``s_x - dx``", the per-sample recipe of ``torchvision.transforms.v2.RandomCrop(
    size, padding=s)``; here the whole batch is padded once and cut with one gather.

    Args:
        images: ``(N, C, H, W)``, any dtype, device and memory format.
        dx: ``(N,)`` integer horizontal shifts (positive: right).
        dy: ``(N,)`` integer vertical shifts (positive: down).
        max_shift: ``s`` or ``(s_y, s_x)``, the padding; default ``max(|dy|), max(|dx|)``.
        padding_mode: ``"zeros"``, ``"reflect"`` or ``"replicate"``.
        buffer: optional scratch tensor for the padded batch, ``(M >= N, C, H + 2 s_y,
            W + 2 s_x)`` of the same dtype, device and memory format (see :func:`pad_into`).
    """
    _check_batch(images)
    if dx.shape != (images.shape[0],) or dy.shape != (images.shape[0],):
        raise ValueError(
            f"`dx` and `dy` must have shape ({images.shape[0]},), one shift per image, got {tuple(dx.shape)} and {tuple(dy.shape)}."
        )
    if max_shift is None:
        sy = int(dy.abs().max()) if dy.numel() else 0
        sx = int(dx.abs().max()) if dx.numel() else 0
    else:
        sy, sx = _pair("max_shift", max_shift)
        if dy.numel() and (int(dy.abs().max()) > sy or int(dx.abs().max()) > sx):
            raise ValueError(f"shifts exceed `max_shift`={max_shift!r}.")
    _check_padding(images, (sy, sx), padding_mode)
    return _shift(images, dx, dy, (sy, sx), padding_mode, buffer)


def _shift(
    images: torch.Tensor,
    dx: torch.Tensor,
    dy: torch.Tensor,
    pad: tuple[int, int],
    padding_mode: str,
    buffer: torch.Tensor | None,
) -> torch.Tensor:
    """:func:`translate` without its checks (which read the shifts on the host): pad, then one window gather."""
    sy, sx = pad
    padded = pad_batch(images, pad, padding_mode) if buffer is None else pad_into(images, pad, padding_mode, buffer)
    dy = dy.to(device=images.device, dtype=torch.long)
    dx = dx.to(device=images.device, dtype=torch.long)
    return crop_batch(padded, sy - dy, sx - dx, (images.shape[-2], images.shape[-1]))


class RandomTranslate(nn.Module):
    r"""Shift every image of a batch by its own random integer offset.

    Offsets are uniform on the grid :math:`dx \in \{-s_x, \dots, s_x\}`,
    :math:`dy \in \{-s_y, \dots, s_y\}`, independently per image; with probability
    ``1 - p`` an image keeps offset ``(0, 0)``. Pixels moved in from outside the image are
    filled by ``padding_mode`` (see :func:`translate`). The result equals
    ``v2.RandomCrop((H, W), padding=(s_x, s_y), padding_mode=...)`` applied to each image
    with the corresponding crop corner ``(s_y - dy, s_x - dx)``.

    Args:
        max_shift: ``s`` or ``(s_y, s_x)`` in pixels; 0 leaves images unchanged.
        padding_mode: ``"zeros"``, ``"reflect"`` or ``"replicate"``.
        p: probability that an image is shifted at all.
    """

    def __init__(self, max_shift: int | Sequence[int], padding_mode: str = "zeros", p: float = 1.0) -> None:
        super().__init__()
        self.max_shift = _pair("max_shift", max_shift)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"`padding_mode` must be one of {PADDING_MODES}, got {padding_mode!r}.")
        self.padding_mode = padding_mode
        self.p = _check_probability("p", p)

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

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(images)
        if self.max_shift == (0, 0) or self.p == 0.0:
            return images
        dx, dy = self.sample_offsets(images.shape[0], generator, images.device)
        # the offsets lie in [-s, s] by construction: skip translate's host-side range check
        _check_padding(images, self.max_shift, self.padding_mode)
        return _shift(images, dx, dy, self.max_shift, self.padding_mode, self._scratch(images))

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

    def extra_repr(self) -> str:
        return f"max_shift={self.max_shift}, padding_mode={self.padding_mode!r}, p={self.p}"


class RandomCrop(nn.Module):
    r"""Cut a random ``size`` window out of every image (Krizhevsky's 224 out of 256).

    Corners are uniform: :math:`t \in \{0, \dots, H - h\}`, :math:`l \in \{0, \dots, W - w\}`,
    independently per image. Output ``(N, C, h, w)``.

    Args:
        size: ``h`` or ``(h, w)``.
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__()
        self.size = _pair("size", size, minimum=1)

    def sample_corners(
        self, images_hw: tuple[int, int], n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``(top, left)`` for ``n`` images of size ``images_hw``."""
        (height, width), (h, w) = images_hw, self.size
        if h > height or w > width:
            raise ValueError(f"`size`={self.size} is larger than the images ({height}, {width}).")
        device = torch.device(device)
        return _randint(0, height - h, n, generator, device), _randint(0, width - w, n, generator, device)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(images)
        top, left = self.sample_corners((images.shape[-2], images.shape[-1]), images.shape[0], generator, images.device)
        return crop_batch(images, top, left, self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class CenterCrop(nn.Module):
    r"""Cut the central ``size`` window of every image (evaluation counterpart of :class:`RandomCrop`).

    The corner is :math:`t = \lfloor (H - h) / 2 \rfloor`, :math:`l = \lfloor (W - w) / 2 \rfloor`.
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__()
        self.size = _pair("size", size, minimum=1)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(images)
        (height, width), (h, w) = images.shape[-2:], self.size
        if h > height or w > width:
            raise ValueError(f"`size`={self.size} is larger than the images ({height}, {width}).")
        if (h, w) == (height, width):
            return images
        top, left = (height - h) // 2, (width - w) // 2
        return images[:, :, top : top + h, left : left + w].clone(memory_format=memory_format_of(images))

    def extra_repr(self) -> str:
        return f"size={self.size}"


class RandomHorizontalFlip(nn.Module):
    r"""Mirror each image left-right with probability ``p``: :math:`Y_{n,c,i,j} = X_{n,c,i,W-1-j}`."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = _check_probability("p", p)

    def sample_flags(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """``(n,)`` booleans, True where the image is flipped."""
        return _rand(n, generator, torch.device(device)) < self.p

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(images)
        if self.p == 0.0:
            return images
        flags = self.sample_flags(images.shape[0], generator, images.device).to(images.device)
        return flip_batch(images, flags)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def flip_batch(images: torch.Tensor, flags: torch.Tensor, sync_free: bool | None = None) -> torch.Tensor:
    """Mirror the images where ``flags`` (``(N,)`` bool) is True; the others are copied unchanged.

    ``sync_free`` (default: on every device but the CPU) selects with ``torch.where``, which
    reads every image twice but never waits for the device; otherwise only the flagged
    images are copied, which needs their indices on the host (``nonzero``: a device sync
    off the CPU, the faster choice on the CPU).
    """
    _check_batch(images)
    fmt = memory_format_of(images)
    flags = flags.to(images.device)
    if sync_free is None:
        sync_free = images.device.type != "cpu"
    if sync_free:
        return torch.where(flags.view(-1, 1, 1, 1), images.flip(-1), images).contiguous(memory_format=fmt)
    out = images.clone(memory_format=fmt)
    idx = flags.nonzero().flatten()
    if idx.numel():  # index_select/index_copy_: half the time of out[idx] = images[idx].flip(-1) on CPU
        out.index_copy_(0, idx, images.index_select(0, idx).flip(-1))
    return out


__all__ = [
    "CenterCrop",
    "PADDING_MODES",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomTranslate",
    "crop_batch",
    "memory_format_of",
    "flip_batch",
    "pad_batch",
    "translate",
]
