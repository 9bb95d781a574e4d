r"""Host memory for the batches a data module writes itself: recycled, and on huge pages.

A 64-image 224×224 float32 batch is 38 MiB. glibc maps an allocation that large anew every
time (its ``mmap`` threshold stops at 32 MiB), so the first write of each new batch takes
one page fault per 4 KiB page, about 9,400 per batch, each page zeroed by the kernel; on a
CPU that is a large part of finishing the batch (``benchmarks/imagenet_pipeline.py``,
docs/benchmarks.md §3b). :class:`BatchMemory` removes it:

* **recycled**: a batch is written into memory that held an earlier batch once nothing
  refers to that batch any more (no tensor, view or storage of it): the pages are already
  there, and nothing that is still in use is ever overwritten;
* **huge pages**: new memory is an anonymous mapping advised ``MADV_HUGEPAGE``, which
  Linux backs with 2 MiB pages where it can (transparent huge pages in ``always`` or
  ``madvise`` mode): 512 times fewer faults when it has to be new.

Elsewhere than on Linux, and for batches under :data:`HUGE_PAGE_MIN_BYTES`, a batch is a
plain ``torch.empty``. PyTorch advises every CPU allocation of 2 MiB or more with the
environment variable ``THP_MEM_ALLOC_ENABLE=1``, read at start-up; this module needs no
setting, and recycles as well.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import sys
import weakref
from typing import Any

import torch

#: batches smaller than this are ``torch.empty`` (glibc recycles those itself)
HUGE_PAGE_MIN_BYTES = 8 * 2**20

_LINUX = sys.platform.startswith("linux")
_MADV_HUGEPAGE: int | None = getattr(mmap, "MADV_HUGEPAGE", None) if _LINUX else None


def _check_layout(shape: tuple[int, ...], memory_format: torch.memory_format) -> None:
    if len(shape) != 4:
        raise ValueError(f"BatchMemory: shape={tuple(shape)} is not (N, C, H, W).")
    if memory_format not in (torch.contiguous_format, torch.channels_last):
        raise ValueError(
            f"BatchMemory: memory_format={memory_format} is not supported; "
            "expected torch.contiguous_format or torch.channels_last."
        )


def _new_mapping(nbytes: int) -> mmap.mmap:
    """An anonymous private mapping of ``nbytes``, advised to use huge pages."""
    # private: a shared anonymous mapping is shmem, whose huge-page setting is separate (and usually off)
    mapping = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
    if _MADV_HUGEPAGE is not None:
        # a kernel without transparent huge pages refuses: ordinary pages, nothing lost
        with contextlib.suppress(OSError):
            mapping.madvise(_MADV_HUGEPAGE)
    return mapping


def _tensor_on(
    buffer: Any, shape: tuple[int, int, int, int], dtype: torch.dtype, memory_format: torch.memory_format
) -> torch.Tensor:
    """``buffer`` seen as an ``(N, C, H, W)`` tensor in ``memory_format`` (the tensor holds ``buffer``)."""
    flat = torch.frombuffer(buffer, dtype=dtype)
    n, c, h, w = shape
    if memory_format == torch.channels_last:
        return flat.view(n, h, w, c).permute(0, 3, 1, 2)
    return flat.view(n, c, h, w)


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


class BatchMemory:
    r"""Uninitialised CPU batches written into recycled memory: the memory of a batch nothing refers to any more.

    Args:
        keep: how many batch-sized mappings it keeps for reuse (at least 1). A training
            loop needs two (the batch in use and the next one); each kept mapping is one
            batch's worth of memory, held while the data module lives.

    :meth:`empty` returns an ordinary tensor. Every tensor it returns holds a token (a
    ``memoryview`` of its mapping) through its storage; the pool keeps only a weak reference
    to it. When the batch, its views and its storage are all gone, the token dies with them,
    and that mapping is free to take the next batch. A batch the user keeps (in a list, as
    autograd's saved input, in another thread) keeps its token alive, so its memory is never
    written again while it lives: the pool makes a new mapping instead and lets the oldest
    go when it holds more than ``keep``.

    The contents are undefined: for writers that write every element (the data modules'
    finishing steps). It pickles and copies empty (its mappings are this process's).
    """

    def __init__(self, keep: int = 2) -> None:
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise ValueError(f"BatchMemory: keep={keep!r} must be an integer >= 1.")
        self.keep = keep
        self._mappings: list[tuple[mmap.mmap, weakref.ref[memoryview]]] = []

    def empty(
        self,
        shape: tuple[int, int, int, int],
        dtype: torch.dtype = torch.float32,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> torch.Tensor:
        """An uninitialised ``(N, C, H, W)`` CPU tensor: in a free kept mapping of its size, else in a new one."""
        _check_layout(shape, memory_format)
        nbytes = _nbytes(shape, dtype)
        if not _LINUX or nbytes < HUGE_PAGE_MIN_BYTES:
            return torch.empty(shape, dtype=dtype, memory_format=memory_format)
        # the most recently used free mapping: its pages are the likeliest to be in cache
        free = next(
            (
                i
                for i in reversed(range(len(self._mappings)))
                if len(self._mappings[i][0]) == nbytes and self._mappings[i][1]() is None
            ),
            None,
        )
        if free is not None:
            mapping = self._mappings.pop(free)[0]
        else:
            mapping = _new_mapping(nbytes)
            if len(self._mappings) >= self.keep:
                # the least recently used goes; if a batch still uses it, its token keeps it alive until then
                self._mappings.pop(0)
        token = memoryview(mapping)
        self._mappings.append((mapping, weakref.ref(token)))  # the list stays in order of use
        return _tensor_on(token, shape, dtype, memory_format)

    def __len__(self) -> int:
        """How many mappings it keeps now."""
        return len(self._mappings)

    def __getstate__(self) -> dict[str, Any]:
        return {"keep": self.keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.keep = state["keep"]
        self._mappings = []

    def __repr__(self) -> str:
        return f"BatchMemory(keep={self.keep})"


__all__ = ["HUGE_PAGE_MIN_BYTES", "BatchMemory"]
