"""Readers of the on-disk formats: IDX (MNIST family) and CIFAR's python pickles.

Every reader validates what it reads and raises ``ValueError`` naming the file on
anything malformed (bad magic number, wrong dimensions, truncated data, counts that
disagree), so training never starts on half-read data.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import torch

#: IDX type codes -> (torch dtype, bytes per element); all big-endian on disk
_IDX_TYPES: dict[int, tuple[torch.dtype, int]] = {
    0x08: (torch.uint8, 1),
    0x09: (torch.int8, 1),
    0x0B: (torch.int16, 2),
    0x0C: (torch.int32, 4),
    0x0D: (torch.float32, 4),
    0x0E: (torch.float64, 8),
}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when the name ends in ``.gz``; truncated gzip streams are errors."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, OSError, zlib.error) as err:
        raise ValueError(f"cannot read {path}: {err} (truncated or not gzip?); delete it and fetch it again.") from err


def read_idx(path: str | os.PathLike[str], ndim: int | None = None) -> torch.Tensor:
    """Read an IDX file (the MNIST format), plain or ``.gz``.

    Layout: two zero bytes, a type code (``0x08`` = uint8, ...), the number of
    dimensions ``d``, then ``d`` big-endian int32 sizes, then the data in C order.

    Args:
        path: the file.
        ndim: required number of dimensions (3 for images, 1 for labels), or ``None``.

    Raises:
        ValueError: naming ``path``, on a bad magic number, unexpected dimensions or
            fewer (or more) data bytes than the header announces.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(
            f"{path} is not an IDX file: bad magic number {data[:4].hex() or '(empty)'} (expected 0000TTDD)."
        )
    dtype, size = _IDX_TYPES[data[2]]
    dims = data[3]
    if ndim is not None and dims != ndim:
        raise ValueError(f"{path}: expected an IDX file with {ndim} dimension(s), found {dims}.")
    header = 4 + 4 * dims
    if len(data) < header:
        raise ValueError(f"{path} is truncated: header needs {header} bytes, file has {len(data)}.")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    count = 1
    for s in shape:
        count *= s
    expected = header + count * size
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise ValueError(f"{path} is {state}: header {shape} needs {expected} bytes, file has {len(data)}.")
    tensor = torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8)
    if dtype != torch.uint8:
        tensor = tensor.view(torch.uint8).reshape(-1, size).flip(-1).reshape(-1).view(dtype)  # big-endian -> native
        # the flip assumes a little-endian host, as every platform torch supports
    return tensor.reshape(shape)


def write_idx(path: str | os.PathLike[str], tensor: torch.Tensor) -> None:
    """Write a uint8 tensor as an IDX file (gzipped when ``path`` ends in ``.gz``). For tests and tools."""
    if tensor.dtype != torch.uint8:
        raise ValueError(f"write_idx writes uint8 tensors only, got {tensor.dtype}.")
    header = bytes([0, 0, 0x08, tensor.dim()]) + b"".join(int(s).to_bytes(4, "big") for s in tensor.shape)
    payload = header + tensor.contiguous().numpy().tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds builtins containers and numpy arrays: no arbitrary code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays and builtins are allowed)")


def load_pickle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load one CIFAR python pickle safely; keys come back as ``str``.

    Uses a restricted unpickler (numpy arrays and builtins only) with ``latin1``
    decoding, which reads both the original Python 2 files and Python 3 pickles.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise ValueError(f"cannot read {path}: {err} (truncated or not a CIFAR pickle?).") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}.")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar_batch(path: str | os.PathLike[str], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 of one CIFAR pickle.

    ``data`` is ``(N, 3072)`` uint8 (row-major 1024 red, 1024 green, 1024 blue);
    ``label_key`` is ``"labels"`` (CIFAR-10) or ``"fine_labels"`` (CIFAR-100).
    """
    import numpy as np

    path = Path(path)
    batch = load_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise ValueError(f"{path}: expected keys 'data' and {label_key!r}, found {sorted(batch)}.")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}.")
    labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    if labels.shape[0] != data.shape[0]:
        raise ValueError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels.")
    images = torch.from_numpy(np.ascontiguousarray(data)).reshape(-1, 3, 32, 32)
    return images, torch.from_numpy(labels.copy())


__all__ = ["load_pickle", "read_cifar_batch", "read_idx", "write_idx"]
