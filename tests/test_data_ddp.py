"""Under DDP each process gets a disjoint share of the epoch and its own augmentation stream (2-process gloo)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_deepfeat.data import InMemoryBatchLoader, InMemoryDataModule


class _NumberedData(InMemoryDataModule):
    """Sample ``i`` has label ``i``, so a batch's labels say which samples it holds."""

    num_classes = 1000
    image_shape = (1, 4, 4)

    def __init__(self, n: int, **kwargs):
        super().__init__(**kwargs)
        self.n = n

    def load_split(self, split):
        images = torch.randint(0, 256, (self.n, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        return images, torch.arange(self.n)


SIZES = (101, 100)  # an odd and an even training split (81 and 80 samples)


def _worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        shares = {}
        for n in SIZES:
            dm = _NumberedData(n, batch_size=8, val_fraction=0.2, translate=1, seed=5, mean=[0.0], std=[1.0])
            dm.trainer = SimpleNamespace(global_rank=rank, world_size=world, training=True)
            dm.setup("fit")
            share = shares[n] = {}
            for epoch in (0, 1):
                loader = dm.train_dataloader()
                loader.set_epoch(epoch)
                share[epoch] = torch.cat([labels for _, labels in loader]).tolist()
                share[f"batches{epoch}"] = len(loader)
            share["val"] = torch.cat([labels for _, labels in dm.val_dataloader()]).tolist()
            share["augmented"] = dm.augment(dm.splits["train"][0][:64])
        gathered = [None] * world
        dist.all_gather_object(gathered, shares)
        if rank == 0:
            torch.save(gathered, out_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.ddp
def test_two_gloo_processes_get_disjoint_covering_shares(tmp_path):
    out_file = tmp_path / "shares.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out_file)), nprocs=2, join=True)
    gathered = torch.load(out_file, weights_only=False)
    for n in SIZES:
        _check_shares(n, gathered[0][n], gathered[1][n])


def _check_shares(n, rank0, rank1):
    n_val = round(0.2 * n)
    n_train = n - n_val
    for epoch in (0, 1):
        a, b = rank0[epoch], rank1[epoch]
        assert len(a) == len(b) == -(-n_train // 2)  # equal shares: DDP's all-reduce needs equal batch counts
        assert rank0[f"batches{epoch}"] == rank1[f"batches{epoch}"]
        union = a + b
        train_ids = set(union)
        assert len(train_ids) == n_train  # together they cover the whole training split
        duplicates = len(union) - len(train_ids)
        assert duplicates == n_train % 2  # disjoint, except the one wrap-around pad when the split is odd
        if n_train % 2 == 0:
            assert not set(a) & set(b)
    assert rank0[0] != rank0[1]  # a new permutation each epoch
    # validation: disjoint and exactly the split, no padding
    assert not set(rank0["val"]) & set(rank1["val"]) and len(rank0["val"]) + len(rank1["val"]) == n_val
    assert set(rank0["val"]).isdisjoint(rank0[0] + rank1[0])
    # each process draws its own augmentation stream from the same seed
    assert not torch.equal(rank0["augmented"], rank1["augmented"])


def test_loader_shares_without_processes():
    """The same arithmetic, checked directly for several world sizes (fast)."""
    images, labels = torch.zeros(23, 1, 1, 1, dtype=torch.uint8), torch.arange(23)
    for world in (1, 2, 3, 4):
        train = [
            InMemoryBatchLoader(images, labels, 4, shuffle=True, num_replicas=world, rank=r, pad_to_equal=True)
            for r in range(world)
        ]
        shares = [torch.cat([b[1] for b in loader]).tolist() for loader in train]
        assert len({len(s) for s in shares}) == 1 and set(sum(shares, [])) == set(range(23))
        assert len(sum(shares, [])) - 23 == (-23) % world
        assert len({len(loader) for loader in train}) == 1
        evaluation = [InMemoryBatchLoader(images, labels, 4, num_replicas=world, rank=r) for r in range(world)]
        flat = sorted(sum((torch.cat([b[1] for b in loader]).tolist() for loader in evaluation), []))
        assert flat == list(range(23))
    with pytest.raises(ValueError, match="`rank`"):
        InMemoryBatchLoader(images, labels, 4, num_replicas=2, rank=2)
