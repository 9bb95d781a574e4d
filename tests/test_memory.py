"""BatchMemory: batches written into recycled host memory, never into a batch someone still holds."""

from __future__ import annotations

import copy
import pickle
import sys

import pytest
import torch

from lightning_deepfeat.data import memory
from lightning_deepfeat.data.memory import HUGE_PAGE_MIN_BYTES, BatchMemory

LINUX = sys.platform.startswith("linux")
# a 224×224 float32 batch of 16: 9.6 MB, over the threshold where the pool takes over from torch.empty
BIG = (16, 3, 224, 224)


def test_batches_have_the_asked_shape_dtype_and_layout_and_hold_what_is_written():
    pool = BatchMemory()
    for layout in (torch.contiguous_format, torch.channels_last):
        for shape in (BIG, (2, 3, 8, 8)):
            x = pool.empty(shape, torch.float32, layout)
            assert x.shape == shape and x.dtype == torch.float32 and x.device.type == "cpu"
            assert x.is_contiguous(memory_format=layout)
            x.copy_(torch.arange(x.numel(), dtype=torch.float32).view(shape))
            assert torch.equal(x, torch.arange(x.numel(), dtype=torch.float32).view(shape))
    assert pool.empty((4, 3, 64, 64), torch.uint8).dtype == torch.uint8


@pytest.mark.skipif(not LINUX, reason="the pool recycles anonymous mappings on Linux only; elsewhere torch.empty")
def test_memory_is_recycled_once_the_batch_is_gone_and_only_then():
    pool = BatchMemory(keep=2)
    first = pool.empty(BIG)
    address = first.data_ptr()
    first.fill_(7.0)
    view = first[3, 1:2]  # a view of the batch keeps its memory in use
    del first
    second = pool.empty(BIG)
    second.fill_(-1.0)
    second_address = second.data_ptr()
    assert second_address != address
    assert torch.all(view == 7.0)  # not overwritten
    del second  # the second batch is gone: its memory is the next batch's
    third = pool.empty(BIG)
    assert third.data_ptr() == second_address and len(pool) == 2
    storage = view.untyped_storage()
    del view
    fourth = pool.empty(BIG)  # a storage of the first batch still lives: not that memory either
    assert fourth.data_ptr() != address
    del storage, third, fourth
    addresses = {pool.empty(BIG).data_ptr() for _ in range(5)}  # each batch dropped at once: the same memory
    assert len(addresses) == 1


@pytest.mark.skipif(not LINUX, reason="the pool recycles anonymous mappings on Linux only; elsewhere torch.empty")
def test_a_pool_keeps_at_most_keep_mappings_and_batches_held_by_the_user_stay_intact():
    pool = BatchMemory(keep=2)
    held = []
    for value in range(6):
        batch = pool.empty(BIG)
        batch.fill_(float(value))
        held.append(batch)
        assert len(pool) <= 2
    assert len({b.data_ptr() for b in held}) == 6
    assert [b.unique().tolist() for b in held] == [[float(v)] for v in range(6)]


def test_a_pool_copies_and_pickles_empty_and_checks_its_arguments():
    pool = BatchMemory(keep=3)
    batch = pool.empty(BIG)
    for clone in (copy.deepcopy(pool), pickle.loads(pickle.dumps(pool))):
        assert clone.keep == 3 and len(clone) == 0
        assert clone.empty(BIG).shape == BIG
    del batch
    for keep in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=rf"keep={keep!r}"):
            BatchMemory(keep=keep)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="memory_format"):
        pool.empty(BIG, memory_format=torch.preserve_format)
    with pytest.raises(ValueError, match=r"shape=\(3, 224, 224\)"):
        pool.empty((3, 224, 224))  # type: ignore[arg-type]


def test_small_batches_are_plain_tensors(monkeypatch):
    assert HUGE_PAGE_MIN_BYTES > 2 * 3 * 8 * 8 * 4
    pool = BatchMemory()
    pool.empty((2, 3, 8, 8))
    assert len(pool) == 0
    monkeypatch.setattr(memory, "HUGE_PAGE_MIN_BYTES", 0)
    pool.empty((2, 3, 8, 8))
    assert len(pool) == (1 if LINUX else 0)


def test_cuts_write_into_a_given_batch_or_name_what_is_wrong_with_it():
    from lightning_deepfeat.data import Cuts

    images = torch.randint(0, 256, (2, 3, 10, 10), dtype=torch.uint8)
    cuts = Cuts((8, 8), tops=[0, 2], lefts=[1, 0], flags=[True, False])
    scale, shift = torch.full((1, 3, 1, 1), 0.5), torch.zeros(1, 3, 1, 1)
    out = BatchMemory().empty((2, 3, 8, 8))
    written = cuts.apply(images, scale, shift, out=out)
    assert written is out
    assert torch.equal(out[0], images[0, :, 0:8, 1:9].flip(-1).float() * 0.5)
    assert torch.equal(out[1], images[1, :, 2:10, 0:8].float() * 0.5)
    for wrong in (torch.empty(2, 3, 9, 8), torch.empty(2, 3, 8, 8, dtype=torch.float64)):
        with pytest.raises(ValueError, match=r"Cuts.apply: out is .*expected float32 \(2, 3, 8, 8\)"):
            cuts.apply(images, scale, shift, out=wrong)
