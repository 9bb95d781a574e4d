"""``InMemoryBatchLoader``: batches of an in-memory tensor data set by one index gather each.

``IndexBatch`` lives in :mod:`lightning_deepfeat.batches` (models and data both know it); it is re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Sampler, SequentialSampler

from lightning_deepfeat.batches import IndexBatch
from lightning_deepfeat.validation import check_bool, check_callable, check_int


class _ShuffledOrder(Sampler[int]):
    """The loader's ``sampler``: Lightning calls ``loader.sampler.set_epoch`` at every epoch start."""

    def __init__(self, loader: InMemoryBatchLoader) -> None:
        self._loader = loader

    def __iter__(self) -> Iterator[int]:
        return iter(self._loader.indices().tolist())

    def __len__(self) -> int:
        return len(self._loader.indices())

    def set_epoch(self, epoch: int) -> None:
        self._loader.set_epoch(epoch)


class _SequentialOrder(SequentialSampler):
    """The ``sampler`` of an unshuffled loader: a ``SequentialSampler``, so Lightning sees no shuffling."""

    def __init__(self, loader: InMemoryBatchLoader) -> None:
        super().__init__(range(loader.labels.shape[0]))
        self._loader = loader

    def set_epoch(self, epoch: int) -> None:
        self._loader.set_epoch(epoch)


class InMemoryBatchLoader:
    """Iterate over ``(images[idx], labels[idx])`` batches of tensors held in memory.

    A batch costs one gather (``index_select`` along the first dimension, which on CPU is
    several times faster than ``images[idx]``), with no per-sample ``__getitem__`` and no
    collate. Shuffling draws a permutation from ``seed + epoch``, so every process of a
    DDP job draws the same permutation and then takes its own share: ``perm[rank::world]``.

    When ``pad_to_equal`` is set (training), the permutation is extended by wrapping
    around so that every process gets the same number of samples (and of batches, which
    DDP's gradient all-reduce needs); together the shares cover every sample of the epoch.
    Without it (evaluation), the shares are disjoint and cover each sample exactly once,
    so metrics reduced across processes are those of the whole split.

    With ``yield_indices`` the loader yields :class:`IndexBatch` ``(indices, labels)``
    instead of images, and leaves the gather to the consumer (the data module gathers on
    the device, fused with the first augmentation). With ``fetch`` it yields
    ``(fetch(indices), labels)``: the data module passes a function that gathers, augments
    and normalises, so that a loader used on its own gives batches any model consumes.

    The loader is stateful (``state_dict``/``load_state_dict``): Lightning saves it in
    the checkpoint and a run resumed mid-epoch continues with the next unseen batch.

    Args:
        images: ``(N, ...)`` tensor (uint8 for the image data sets).
        labels: ``(N,)`` int64 tensor.
        batch_size: samples per batch on this process.
        shuffle: draw a new permutation each epoch.
        drop_last: drop the last incomplete batch.
        seed: base seed of the permutations.
        num_replicas: number of processes sharing the epoch.
        rank: this process's index in ``[0, num_replicas)``.
        pad_to_equal: wrap around so every process gets the same number of samples.
        yield_indices: yield :class:`IndexBatch` ``(indices, labels)`` instead of
            ``(images, labels)``.
        fetch: ``indices -> images`` used instead of ``images.index_select(0, indices)``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        pad_to_equal: bool = False,
        yield_indices: bool = False,
        fetch: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"images and labels differ in length: {images.shape[0]} != {labels.shape[0]}.")
        self.images = images
        self.labels = labels
        self.batch_size: int = check_int("batch_size", batch_size, low=1)
        self.shuffle = check_bool("shuffle", shuffle)
        self.drop_last = check_bool("drop_last", drop_last)
        self.seed: int = check_int("seed", seed)
        self.num_replicas: int = check_int("num_replicas", num_replicas, low=1)
        self.rank: int = check_int("rank", rank, low=0, high=num_replicas - 1)
        self.pad_to_equal = check_bool("pad_to_equal", pad_to_equal)
        self.yield_indices = check_bool("yield_indices", yield_indices)
        self.fetch = check_callable("fetch", fetch, what="a function indices -> images", allow_none=True)
        self.epoch = 0
        # Lightning reads `sampler`: set_epoch at epoch starts, SequentialSampler to see that nothing is shuffled
        self.sampler: Sampler[int] = _ShuffledOrder(self) if shuffle else _SequentialOrder(self)
        self.batch_sampler = None  # Lightning inspects it; batches are formed here
        self._batches_done = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the permutation of ``epoch`` (Lightning calls this at each epoch start)."""
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        """This process's sample indices for the current epoch, in order."""
        n = self.labels.shape[0]
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        if self.pad_to_equal and n % self.num_replicas:
            extra = self.num_replicas - n % self.num_replicas
            order = torch.cat([order, order[:extra].repeat(extra // max(n, 1) + 1)[:extra]])
        return order[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        n = self.labels.shape[0]
        local = -(-n // self.num_replicas) if self.pad_to_equal else len(range(self.rank, n, self.num_replicas))
        return local // self.batch_size if self.drop_last else -(-local // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor] | IndexBatch]:
        order = self.indices()
        start, self._skip = self._skip, 0
        self._batches_done = start
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            self._batches_done = b + 1
            if self.yield_indices:
                yield IndexBatch(idx, self.labels.index_select(0, idx))
                continue
            if self.fetch is not None:
                yield self.fetch(idx), self.labels.index_select(0, idx)
                continue
            # index_select, not images[idx]: same result, several times faster on CPU
            yield self.images.index_select(0, idx), self.labels.index_select(0, idx)

    def state_dict(self) -> dict[str, Any]:
        """Epoch and number of batches already produced in it."""
        return {"epoch": self.epoch, "batches_done": self._batches_done, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next ``iter()`` continues after the batches already produced."""
        self.epoch = int(state["epoch"])
        self.seed = int(state.get("seed", self.seed))
        self._skip = int(state["batches_done"])


__all__ = ["InMemoryBatchLoader", "IndexBatch"]
