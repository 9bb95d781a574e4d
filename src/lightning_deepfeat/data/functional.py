r"""Batched image operations: cut windows, pad, translate, flip. The transforms are built on these.

Every function works on a whole batch ``(N, C, H, W)`` at once, on any device, for uint8
and floating tensors, and returns a tensor of the same dtype, device and memory format
(``channels_last`` in, ``channels_last`` out).

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
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F

from lightning_deepfeat.validation import check_choice, check_pair

#: how pixels from outside an image are filled: 0, mirrored without repeating the edge, or the edge repeated
PaddingMode = Literal["zeros", "reflect", "replicate"]
PADDING_MODES: tuple[str, ...] = get_args(PaddingMode)


class Windows(NamedTuple):
    r"""One window per image of a batch, in the batch padded by ``padding``.

    .. math::
        Y_{n,c,i,j} = \tilde X_{n,\,c,\,t_n + i,\,l_n + j}, \qquad 0 \le i < h,\ 0 \le j < w,

    where :math:`\tilde X` is :math:`X` extended by :math:`(p_y, p_x)` pixels on each side,
    filled by ``padding_mode``, and :math:`(t_n, l_n)` = ``(top[n], left[n])`` are in padded
    coordinates: :math:`0 \le t_n \le H + 2 p_y - h`, :math:`0 \le l_n \le W + 2 p_x - w`.

    A crop is a window with no padding; a shift by :math:`(dx_n, dy_n)` of at most
    :math:`(s_x, s_y)` is the ``(H, W)`` window at :math:`(s_y - dy_n, s_x - dx_n)` with padding
    :math:`(s_y, s_x)`. :func:`cut_windows` cuts them out of a batch; a data module holding the
    whole training split cuts them out of the split, padded once, fused with the batch gather
    (``crop_batch(padded_split, top, left, size, index=sample_indices)``).
    """

    top: torch.Tensor
    left: torch.Tensor
    size: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    padding_mode: PaddingMode = "zeros"


def check_batch(images: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``images`` is a 4-D tensor ``(N, C, H, W)``."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"`images` must be a batch tensor (N, C, H, W), got {shape}.")


def check_padding(image_hw: Sequence[int], pad: tuple[int, int], padding_mode: PaddingMode) -> None:
    """Raise ``ValueError`` for an unknown ``padding_mode`` or a reflect padding not smaller than the images."""
    check_choice("padding_mode", padding_mode, PaddingMode)
    height, width = image_hw[-2], image_hw[-1]
    if padding_mode == "reflect" and (pad[0] >= height or pad[1] >= width):
        raise ValueError(
            f"`padding_mode`='reflect' needs the shift {pad} to be smaller than the image "
            f"({height}, {width}); use 'replicate' or 'zeros'."
        )


def memory_format_of(images: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` when a 4-D tensor is stored NHWC (and not also NCHW), else contiguous."""
    if images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


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
    check_batch(images)
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
        raise ValueError(
            "`top`, `left` (and `index`) need one entry per output image, "
            f"got {tuple(top.shape)}, {tuple(left.shape)}, {tuple(rows.shape)}."
        )
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


def pad_batch(images: torch.Tensor, pad: tuple[int, int], padding_mode: PaddingMode = "zeros") -> torch.Tensor:
    """Pad ``pad = (py, px)`` pixels on each side of every image, keeping dtype and memory format.

    ``padding_mode``: ``"zeros"`` (value 0), ``"reflect"`` (mirror without repeating the
    edge, needs ``p < size``) or ``"replicate"`` (repeat the edge pixel).
    """
    check_padding(images.shape, pad, padding_mode)
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


def pad_into(
    images: torch.Tensor, pad: tuple[int, int], padding_mode: PaddingMode, buffer: torch.Tensor
) -> torch.Tensor:
    """Like :func:`pad_batch`, but written into ``buffer``, whose first ``N`` images are returned.

    ``buffer`` holds at least as many images, of the same dtype, device and memory format.
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


def cut_windows(images: torch.Tensor, windows: Windows) -> torch.Tensor:
    """The :class:`Windows` of a batch: pad it by ``windows.padding``, then one :func:`crop_batch`."""
    padded = pad_batch(images, windows.padding, windows.padding_mode)
    return crop_batch(padded, windows.top, windows.left, windows.size)


def translate(
    images: torch.Tensor,
    dx: torch.Tensor,
    dy: torch.Tensor,
    max_shift: int | Sequence[int] | None = None,
    padding_mode: PaddingMode = "zeros",
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
    check_batch(images)
    if dx.shape != (images.shape[0],) or dy.shape != (images.shape[0],):
        raise ValueError(
            f"`dx` and `dy` must have shape ({images.shape[0]},), one shift per image, "
            f"got {tuple(dx.shape)} and {tuple(dy.shape)}."
        )
    if max_shift is None:
        sy = int(dy.abs().max()) if dy.numel() else 0
        sx = int(dx.abs().max()) if dx.numel() else 0
    else:
        sy, sx = check_pair("max_shift", max_shift)
        if dy.numel() and (int(dy.abs().max()) > sy or int(dx.abs().max()) > sx):
            raise ValueError(f"shifts exceed `max_shift`={max_shift!r}.")
    check_padding(images.shape, (sy, sx), padding_mode)
    return shift_batch(images, dx, dy, (sy, sx), padding_mode, buffer)


def shift_batch(
    images: torch.Tensor,
    dx: torch.Tensor,
    dy: torch.Tensor,
    pad: tuple[int, int],
    padding_mode: PaddingMode,
    buffer: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`translate` without its checks (which read the shifts on the host): pad, then one window gather."""
    sy, sx = pad
    padded = pad_batch(images, pad, padding_mode) if buffer is None else pad_into(images, pad, padding_mode, buffer)
    dy = dy.to(device=images.device, dtype=torch.long)
    dx = dx.to(device=images.device, dtype=torch.long)
    return crop_batch(padded, sy - dy, sx - dx, (images.shape[-2], images.shape[-1]))


def flip_batch(images: torch.Tensor, flags: torch.Tensor, sync_free: bool | None = None) -> torch.Tensor:
    """Mirror the images where ``flags`` (``(N,)`` bool) is True; the others are copied unchanged.

    ``sync_free`` (default: on every device but the CPU) selects with ``torch.where``, which
    reads every image twice but never waits for the device; otherwise only the flagged
    images are copied, which needs their indices on the host (``nonzero``: a device sync
    off the CPU, the faster choice on the CPU).
    """
    check_batch(images)
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
    "PADDING_MODES",
    "PaddingMode",
    "Windows",
    "crop_batch",
    "cut_windows",
    "flip_batch",
    "memory_format_of",
    "pad_batch",
    "pad_into",
    "shift_batch",
    "translate",
]
