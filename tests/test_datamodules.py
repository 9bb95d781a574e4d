"""Data modules on generated files in every real format; augmentation only in training; errors."""

from __future__ import annotations

import gzip
import pickle
import re
from argparse import ArgumentError
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.trainer.states import TrainerStatus

from _data_files import (
    IDX_STEMS,
    make_images,
    write_cifar10,
    write_cifar100,
    write_idx_dataset,
    write_image_folder,
    write_raw_pickle,
)
from lightning_deepfeat.data import (
    BatchTransform,
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    IndexBatch,
    InMemoryBatchLoader,
    MNISTDataModule,
    Windows,
    read_idx,
)
from lightning_deepfeat.data.readers import write_idx


def _attach(dm, training: bool, rank: int = 0, world: int = 1):
    """A stand-in for a running trainer given ``datamodule=dm``: what the data module reads from it."""
    dm.trainer = SimpleNamespace(
        training=training,
        global_rank=rank,
        world_size=world,
        datamodule=dm,
        overfit_batches=0,
        state=SimpleNamespace(status=TrainerStatus.RUNNING),
        precision_plugin=Precision(),
    )
    return dm


def _first_batch(dm, loader):
    images, labels = next(iter(loader))
    return images, labels


# ----------------------------------------------------------------- base behaviour, on digits
def test_digits_shapes_split_and_dtypes():
    dm = DigitsDataModule(batch_size=64, val_fraction=0.1, translate=1)
    dm.setup("fit")
    dm.setup("test")
    n_train, n_val, n_test = (dm.splits[s][0].shape[0] for s in ("train", "val", "test"))
    assert n_train + n_val + n_test == 1797 and n_test == round(0.2 * 1797) and n_val == round(0.1 * (1797 - n_test))
    assert dm.splits["train"][0].dtype == torch.uint8 and dm.image_shape == (1, 8, 8) and dm.num_classes == 10
    batch = next(iter(dm.loader("train", train=True, device_side=True)))  # gathered on the device, after the transfer
    assert isinstance(batch, IndexBatch) and batch.indices.shape == (64,) and batch.indices.dtype == torch.int64
    assert torch.equal(batch.labels, dm.splits["train"][1][batch.indices])
    on_cpu = DigitsDataModule(batch_size=64, val_fraction=0.1, translate=1, gather_on_device=False)
    on_cpu.setup("fit")
    images, labels = _first_batch(on_cpu, on_cpu.loader("train", train=True, device_side=True))
    assert images.shape == (64, 1, 8, 8) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert torch.equal(images, on_cpu.splits["train"][0][batch.indices])  # same shuffle, gathered in the loader


def test_augmentation_only_while_training():
    dm = DigitsDataModule(batch_size=256, translate=2, hflip=True, seed=0)
    dm.setup("fit")
    raw, labels = _first_batch(dm, dm.loader("val", train=False, device_side=True))
    _attach(dm, training=False)
    out_eval, _ = dm.on_after_batch_transfer((raw, labels), 0)
    assert torch.equal(out_eval, dm.normalize(raw))  # validation/test/predict: normalised only
    _attach(dm, training=True)
    out_train, out_labels = dm.on_after_batch_transfer((raw, labels), 0)
    assert torch.equal(out_labels, labels)
    changed = (out_train != dm.normalize(raw)).flatten(1).any(1).float().mean()
    assert changed > 0.8  # nearly every image moved or flipped (p(no change) = 1/25 * 1/2)


def test_normalisation_uses_training_split_statistics():
    dm = DigitsDataModule(batch_size=2000, val_fraction=0.0)
    dm.setup("fit")
    train = dm.splits["train"][0].float()
    assert torch.allclose(dm.mean, train.mean().reshape(1), atol=1e-3)
    assert torch.allclose(dm.std, train.std(unbiased=False).reshape(1), rtol=1e-3)
    _attach(dm, training=False)
    out, _ = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert abs(float(out.mean())) < 1e-3 and abs(float(out.std()) - 1) < 1e-3
    given = DigitsDataModule(mean=[1.0], std=[2.0])
    given.setup("fit")
    assert given.mean.tolist() == [1.0] and given.std.tolist() == [2.0]


def test_augmentation_reproducible_under_seed_and_distinct_per_rank():
    def batches(seed, rank=0, n=3):
        torch.manual_seed(seed)  # what seed_everything does
        dm = _attach(DigitsDataModule(batch_size=128, translate=2, hflip=True), training=True, rank=rank)
        dm.setup("fit")
        raw = dm.splits["train"][0][:128]
        return [dm.augment(raw) for _ in range(n)]

    a, b, c, r1 = batches(0), batches(0), batches(1), batches(0, rank=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], r1[0])
    assert not torch.equal(a[0], a[1])  # each batch draws afresh


def test_augmentation_stream_resumes_from_state_dict():
    dm = _attach(DigitsDataModule(batch_size=64, translate=2, seed=11), training=True)
    dm.setup("fit")
    raw = dm.splits["train"][0][:64]
    for _ in range(3):
        dm.augment(raw)
    state = dm.state_dict()
    expected = [dm.augment(raw) for _ in range(2)]
    resumed = _attach(DigitsDataModule(batch_size=64, translate=2), training=True)
    resumed.setup("fit")
    resumed.load_state_dict(state)
    assert torch.equal(resumed.augment(raw), expected[0]) and torch.equal(resumed.augment(raw), expected[1])


def test_loader_resumes_mid_epoch():
    images, labels = torch.arange(50).reshape(50, 1, 1, 1).to(torch.uint8), torch.arange(50)
    loader = InMemoryBatchLoader(images, labels, batch_size=8, shuffle=True, seed=3)
    loader.set_epoch(2)
    it = iter(loader)
    first = [next(it)[1] for _ in range(3)]
    state = loader.state_dict()
    rest = [b[1] for b in it]
    again = InMemoryBatchLoader(images, labels, batch_size=8, shuffle=True)
    again.load_state_dict(state)
    resumed = [b[1] for b in again]
    assert len(resumed) == len(rest) == 4 and all(torch.equal(x, y) for x, y in zip(resumed, rest, strict=True))
    assert sorted(torch.cat(first + rest).tolist()) == list(range(50))


def test_crop_size_random_in_training_centre_in_evaluation():
    dm = DigitsDataModule(batch_size=32, crop_size=6, mean=[0.0], std=[1.0])
    assert dm.image_shape == (1, 6, 6) and DigitsDataModule.describe(crop_size=6)["image_shape"] == (1, 6, 6)
    dm.setup("fit")
    raw, labels = _first_batch(dm, dm.loader("val", train=False, device_side=True))
    out, _ = _attach(dm, training=False).on_after_batch_transfer((raw, labels), 0)
    assert torch.equal(out, raw[:, :, 1:7, 1:7].float())
    out, _ = _attach(dm, training=True).on_after_batch_transfer((raw, labels), 0)
    assert out.shape == (32, 1, 6, 6)


def test_describe_matches_the_instance():
    for cls, args in (
        (DigitsDataModule, {}),
        (FashionMNISTDataModule, {"crop_size": (24, 20)}),
        (CIFAR100DataModule, {}),
    ):
        info = cls.describe(**args)
        dm = cls(**args)
        assert info == {"num_classes": dm.num_classes, "image_shape": tuple(dm.image_shape)}


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"translate": -1}, "`translate`"),
        ({"translate": (1, 2, 3)}, "`translate`"),
        ({"padding_mode": "wrap"}, "`padding_mode`"),
        ({"padding_mode": "reflect", "translate": 8}, "`translate`"),
        ({"crop_size": 9}, "`crop_size`"),
        ({"hflip": "yes"}, "`hflip`"),
        ({"batch_size": 0}, "`batch_size`"),
        ({"val_fraction": 1.0}, "`val_fraction`"),
        ({"std": [0.0]}, "`std`"),
        ({"seed": "x"}, "`seed`"),
        ({"test_fraction": 0}, "`test_fraction`"),
        ({"test_views": "five"}, "`test_views` must be one of 'single', 'flip', 'ten', got 'five'"),
    ],
)
def test_bad_arguments_fail_in_init_naming_them(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        DigitsDataModule(**kwargs)


# ----------------------------------------------------------------- IDX: MNIST / Fashion-MNIST
@pytest.mark.parametrize("cls", [MNISTDataModule, FashionMNISTDataModule])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_modules_read_generated_files(tmp_path, cls, gz):
    written = write_idx_dataset(tmp_path, n_train=50, n_test=20, gz=gz)
    dm = cls(root=tmp_path, batch_size=16, val_fraction=0.2, translate=2, hflip=True)
    dm.setup("fit")
    dm.setup("test")
    assert torch.equal(dm.splits["test"][0], written["test"][0]) and torch.equal(
        dm.splits["test"][1], written["test"][1]
    )
    train_and_val = torch.cat([dm.splits["train"][0], dm.splits["val"][0]])
    assert train_and_val.shape == (50, 1, 28, 28)
    assert sorted(train_and_val.flatten(1).sum(1).tolist()) == sorted(written["train"][0].flatten(1).sum(1).tolist())
    out, _ = _attach(dm, training=True).on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert out.shape == (16, 1, 28, 28) and out.dtype == torch.float32


def test_idx_root_resolution_torchvision_layout_via_env(tmp_path, monkeypatch):
    write_idx_dataset(tmp_path / "FashionMNIST" / "raw")
    monkeypatch.setenv("DEEPFEAT_DATA", str(tmp_path))
    dm = FashionMNISTDataModule()
    assert dm.locate() == tmp_path / "FashionMNIST" / "raw"
    write_idx_dataset(tmp_path / "mnist")  # Debian-style sub-folder name
    assert MNISTDataModule().locate() == tmp_path / "mnist"


def test_idx_missing_files_error_lists_places_and_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFEAT_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(FashionMNISTDataModule, "system_dirs", (str(tmp_path / "system"),))
    dm = FashionMNISTDataModule()
    with pytest.raises(FileNotFoundError) as err:
        dm.setup("fit")
    message = str(err.value)
    for place in (tmp_path / "env", tmp_path / "env" / "FashionMNIST" / "raw", tmp_path / "system"):
        assert f"  - {place}\n" in message + "\n"
    assert "apt-get install dataset-fashion-mnist" in message and "download=True" in message
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "given")):
        FashionMNISTDataModule(root=tmp_path / "given").setup("fit")


def test_truncated_idx_file_is_named(tmp_path):
    write_idx_dataset(tmp_path, gz=False)
    path = tmp_path / (IDX_STEMS["train"][0])
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=f"{path}.*truncated"):
        MNISTDataModule(root=tmp_path).setup("fit")


def test_truncated_gzip_is_named(tmp_path):
    write_idx_dataset(tmp_path, gz=True)
    path = tmp_path / (IDX_STEMS["test"][0] + ".gz")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=str(path)):
        MNISTDataModule(root=tmp_path).setup("test")


def test_idx_count_mismatch_and_bad_magic_are_named(tmp_path):
    write_idx_dataset(tmp_path, n_train=50, gz=True)
    labels_path = tmp_path / (IDX_STEMS["train"][1] + ".gz")
    write_idx(labels_path, torch.zeros(49, dtype=torch.uint8))
    with pytest.raises(ValueError, match="50 images but .*train-labels-idx1-ubyte.gz has 49 labels"):
        FashionMNISTDataModule(root=tmp_path).setup("fit")
    with gzip.open(labels_path, "wb") as f:
        f.write(b"\x01\x02\x08\x01" + (50).to_bytes(4, "big") + bytes(50))
    with pytest.raises(ValueError, match=f"{labels_path} is not an IDX file"):
        FashionMNISTDataModule(root=tmp_path).setup("fit")
    with pytest.raises(ValueError, match="expected an IDX file with 3 dimension"):
        read_idx(labels_path.with_name("t10k-labels-idx1-ubyte.gz"), ndim=3)


def test_idx_labels_out_of_range_are_named(tmp_path):
    write_idx_dataset(tmp_path, n_train=50, gz=False)
    path = tmp_path / IDX_STEMS["train"][1]
    write_idx(path, torch.full((50,), 12, dtype=torch.uint8))
    with pytest.raises(ValueError, match=f"{path}: labels must lie in"):
        MNISTDataModule(root=tmp_path).setup("fit")


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file(),
    reason="dataset-fashion-mnist not installed",
)
def test_installed_fashion_mnist_is_found_without_root(monkeypatch):
    monkeypatch.delenv("DEEPFEAT_DATA", raising=False)
    dm = FashionMNISTDataModule(val_fraction=0.0)
    dm.setup("test")
    assert dm.locate() == Path("/usr/share/datasets/fashion-mnist")
    images, labels = dm.splits["test"]
    assert images.shape == (10_000, 1, 28, 28) and torch.bincount(labels).tolist() == [1000] * 10


# ----------------------------------------------------------------- CIFAR
def test_cifar10_reads_generated_pickles(tmp_path):
    written = write_cifar10(tmp_path, per_batch=6, n_test=8)
    dm = CIFAR10DataModule(
        root=tmp_path, batch_size=8, val_fraction=0.0, translate=4, hflip=True, padding_mode="reflect"
    )
    dm.setup("fit")
    dm.setup("test")
    assert torch.equal(dm.splits["test"][0], written["test"][0]) and torch.equal(
        dm.splits["test"][1], written["test"][1]
    )
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(0))
    assert torch.equal(dm.splits["train"][0], written["train"][0][perm])
    assert dm.class_names == [f"class{i}" for i in range(10)] and dm.image_shape == (3, 32, 32)
    out, _ = _attach(dm, training=True).on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert out.shape == (8, 3, 32, 32)


def test_cifar100_reads_fine_labels_from_cifar_root_itself(tmp_path):
    written = write_cifar100(tmp_path)
    dm = CIFAR100DataModule(root=tmp_path / "cifar-100-python", val_fraction=0.0, crop_size=28)
    dm.setup("test")
    assert torch.equal(dm.splits["test"][1], written["test"][1]) and dm.num_classes == 100
    assert dm.class_names[:2] == ["fine0", "fine1"] and dm.image_shape == (3, 28, 28)


def test_cifar_missing_files_error(tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPFEAT_DATA", raising=False)
    with pytest.raises(FileNotFoundError) as err:
        CIFAR10DataModule(root=tmp_path).setup("fit")
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in message and "download=True" in message and "data_batch_1" in message
    with pytest.raises(FileNotFoundError, match="neither `root` nor \\$DEEPFEAT_DATA"):
        CIFAR100DataModule().setup("fit")


def test_cifar_corruption_is_named(tmp_path):
    write_cifar10(tmp_path, per_batch=6)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    write_raw_pickle(bad, {b"labels": [1] * 5, b"data": make_images(6, (3072,), 0).numpy()})
    with pytest.raises(ValueError, match=f"{bad}: 6 images but 5 labels"):
        CIFAR10DataModule(root=tmp_path).setup("fit")
    bad.write_bytes(pickle.dumps({b"labels": [1] * 6, b"data": make_images(6, (3072,), 0).numpy()}, protocol=2)[:-30])
    with pytest.raises(ValueError, match=f"cannot read {bad}"):
        CIFAR10DataModule(root=tmp_path).setup("fit")


def test_cifar_pickle_cannot_run_code(tmp_path):
    write_cifar10(tmp_path, per_batch=6)
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    write_raw_pickle(bad, {"data": SimpleNamespace(x=1)})  # a class outside the allow-list
    with pytest.raises(ValueError, match=f"cannot read {bad}.*refusing to load types.SimpleNamespace"):
        CIFAR10DataModule(root=tmp_path).setup("test")


# ----------------------------------------------------------------- ImageFolder
def test_image_folder_reads_jpeg_and_png_and_crops_on_device(tmp_path):
    write_image_folder(tmp_path, per_class=4)
    dm = ImageFolderDataModule(tmp_path, resize=40, crop_size=32, batch_size=5, mean=[0, 0, 0], std=[1, 1, 1])
    assert dm.num_classes == 3 and dm.image_shape == (3, 32, 32)
    assert ImageFolderDataModule.describe(root=tmp_path, resize=40, crop_size=32) == {
        "num_classes": 3,
        "image_shape": (3, 32, 32),
    }
    dm.setup("fit")
    assert dm.class_names == ["cat", "dog", "fox"] and len(dm.samples["train"]) == 12 and len(dm.samples["val"]) == 12
    raw, labels = next(iter(dm.loader("train", train=True, device_side=True)))
    assert raw.shape == (5, 3, 40, 40) and raw.dtype == torch.uint8
    train, _ = _attach(dm, training=True).on_after_batch_transfer((raw, labels), 0)
    evaluation, _ = _attach(dm, training=False).on_after_batch_transfer((raw, labels), 0)
    assert train.shape == evaluation.shape == (5, 3, 32, 32)
    assert torch.equal(evaluation, raw[:, :, 4:36, 4:36].float())
    val_labels = torch.cat([b[1] for b in dm.val_dataloader()])
    assert val_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_image_folder_without_val_dir_holds_out_a_fraction(tmp_path):
    write_image_folder(tmp_path, per_class=4, splits=("train",))
    dm = ImageFolderDataModule(tmp_path, resize=40, crop_size=32, val_fraction=0.25)
    dm.setup("fit")
    train, val = dm.samples["train"], dm.samples["val"]
    assert len(val) == 3 and not set(train) & set(val) and len(train) + len(val) == 12
    assert dm.mean.shape == (3,) and (dm.std > 0).all()


def test_image_folder_empty_class_folder_is_named(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "train" / "emu").mkdir()
    with pytest.raises(ValueError, match=f"class folder {tmp_path / 'train' / 'emu'} is empty"):
        ImageFolderDataModule(tmp_path, resize=40, crop_size=32).setup("fit")


def test_image_folder_non_image_file_is_named(tmp_path):
    write_image_folder(tmp_path)
    bad = tmp_path / "val" / "dog" / "notes.jpg"
    bad.write_text("not a picture")
    with pytest.raises(ValueError, match=f"{bad} is not an image"):
        ImageFolderDataModule(tmp_path, resize=40, crop_size=32).setup("fit")


def test_image_folder_corrupt_jpeg_body_is_named_when_decoded(tmp_path):
    write_image_folder(tmp_path, per_class=2)
    bad = tmp_path / "train" / "cat" / "0.jpg"
    bad.write_bytes(bad.read_bytes()[:30])
    with pytest.raises(ValueError, match=f"cannot decode {bad}"):
        ImageFolderDataModule(tmp_path, resize=40, crop_size=32).setup("fit")  # mean/std pass decodes it


def test_image_folder_missing_root_and_bad_args(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope" / "train")):
        ImageFolderDataModule(tmp_path / "nope").setup("fit")
    with pytest.raises(ValueError, match="`crop_size`"):
        ImageFolderDataModule(tmp_path, resize=40, crop_size=64)
    with pytest.raises(ValueError, match="`resize`"):
        ImageFolderDataModule(tmp_path, resize=0)


@pytest.mark.slow
def test_image_folder_worker_processes(tmp_path):
    write_image_folder(tmp_path, per_class=4)
    dm = ImageFolderDataModule(
        tmp_path, resize=40, crop_size=32, batch_size=4, num_workers=2, mean=[0, 0, 0], std=[1, 1, 1]
    )
    dm.setup("fit")
    batches = list(dm.loader("val", train=False, device_side=True))
    assert sum(b[0].shape[0] for b in batches) == 12 and all(b[0].dtype == torch.uint8 for b in batches)
    finished = list(dm.val_dataloader())  # used on its own: the workers' batches come out centre-cropped, as floats
    assert all(b[0].dtype == torch.float32 and b[0].shape[1:] == (3, 32, 32) for b in finished)
    assert torch.equal(
        torch.cat([b[0] for b in finished]), torch.cat([b[0][:, :, 4:36, 4:36].float() for b in batches])
    )


# ----------------------------------------------------------------- with a real Trainer
@pytest.mark.slow
def test_trainer_fit_augments_training_batches_only(quiet_trainer):
    import lightning as L

    seen: dict[str, list[torch.Tensor]] = {"train": [], "val": []}

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, _):
            seen["train"].append(batch[0])
            return (self.w * batch[0].mean()).sum()

        def validation_step(self, batch, _):
            seen["val"].append(batch[0])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    dm = DigitsDataModule(batch_size=100, val_fraction=0.1, translate=2, mean=[0.0], std=[1.0], shuffle_seed=0)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=3, num_sanity_val_steps=0)
    trainer.fit(Model(), datamodule=dm)
    val_raw = torch.cat([b[0] for b in InMemoryBatchLoader(*dm.splits["val"], batch_size=100)]).float()
    assert torch.equal(torch.cat(seen["val"]), val_raw)
    loader = dm.loader("train", train=True, device_side=True)
    loader.set_epoch(0)
    train_raw = [dm.splits["train"][0][b.indices].float() for b in loader][:3]
    assert len(seen["train"]) == 3
    assert all(not torch.equal(a, b) for a, b in zip(seen["train"], train_raw, strict=True))
    assert dm.state_dict()["augmented_batches"] == 3


# ----------------------------------------------------------------- the fused gather on the device
FUSED_CASES = [
    dict(translate=2),
    dict(translate=(1, 3), padding_mode="reflect", hflip=True),
    dict(translate=3, padding_mode="replicate"),
    dict(crop_size=6),
    dict(crop_size=(5, 7), translate=1, hflip=True),
    dict(hflip=True),
    dict(),
]


@pytest.mark.parametrize("config", FUSED_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "none")
def test_fused_gather_equals_gather_then_augment(config):
    """Every training batch of the fused path is bit-identical to gather-on-CPU followed by ``augment``."""
    fused = _attach(DigitsDataModule(batch_size=50, seed=7, **config), training=True)
    plain = _attach(DigitsDataModule(batch_size=50, seed=7, gather_on_device=False, **config), training=True)
    fused.setup("fit")
    plain.setup("fit")
    moved = 0
    for epoch in (0, 1):
        a_loader, b_loader = fused.train_dataloader(), plain.train_dataloader()
        a_loader.set_epoch(epoch)
        b_loader.set_epoch(epoch)
        for a, b in zip(a_loader, b_loader, strict=True):
            assert isinstance(a, IndexBatch) and not isinstance(b, IndexBatch)
            xa, ya = fused.on_after_batch_transfer(a, 0)
            xb, yb = plain.on_after_batch_transfer(b, 0)
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
            moved += int((xa != plain.normalize(plain.eval_transform(b[0]))).any())
    assert fused.state_dict() == plain.state_dict()
    if config:  # the augmentation did act, on most batches
        assert moved >= 0.8 * 2 * len(a_loader)


def test_fused_translate_moves_pixels_by_the_drawn_offsets():
    """The fused window of padded image ``i`` at (s - dy, s - dx) is image ``i`` moved by (dx, dy)."""
    dm = _attach(DigitsDataModule(batch_size=64, translate=2, seed=1), training=True)
    dm.setup("fit")
    indices = torch.arange(64)
    state = dm.state_dict()
    out = dm.gather_augmented(indices)
    dm.load_state_dict(state)  # redraw the same offsets
    dx, dy = dm.train_transforms[0].sample_offsets(64, dm.augment_generator(torch.device("cpu")))
    raw = dm.splits["train"][0][indices]
    for n in range(64):
        expected = torch.zeros_like(raw[n])
        x, y = int(dx[n]), int(dy[n])
        src = raw[n][:, max(0, -y) : 8 - max(0, y), max(0, -x) : 8 - max(0, x)]
        expected[:, max(0, y) : max(0, y) + src.shape[1], max(0, x) : max(0, x) + src.shape[2]] = src
        assert torch.equal(out[n], expected), (n, x, y)
    assert {(int(a), int(b)) for a, b in zip(dx, dy, strict=True)} != {(0, 0)}


def test_device_copy_is_padded_once_and_reused():
    dm = DigitsDataModule(batch_size=32, translate=2)
    dm.setup("fit")
    cpu = torch.device("cpu")
    dm.gather_augmented(torch.arange(32))
    source = dm.train_source(cpu, (2, 2), "zeros")
    assert source.shape == (dm.splits["train"][0].shape[0], 1, 12, 12)
    assert torch.equal(source[:, :, 2:10, 2:10], dm.splits["train"][0]) and int(source[:, :, :2].sum()) == 0
    dm.gather_augmented(torch.arange(32, 64))
    assert dm.train_source(cpu, (2, 2), "zeros") is source  # padded once, reused
    dm.teardown("fit")  # frees accelerator copies only; the CPU copy serves the next fit
    dm.gather_augmented(torch.arange(32))
    assert dm.train_source(cpu, (2, 2), "zeros") is source
    dm.splits["train"] = (dm.splits["train"][0][:100].clone(), dm.splits["train"][1][:100].clone())
    dm.gather_augmented(torch.arange(32))  # a new split is padded afresh
    assert dm.train_source(cpu, (2, 2), "zeros").shape[0] == 100


def test_an_overridden_augment_gets_the_gathered_batch():
    class Inverted(DigitsDataModule):
        fuse_train_transforms = False  # the documented opt-out: every gathered batch goes through augment

        def augment(self, images):
            return 16 - images

    dm = _attach(Inverted(batch_size=40, translate=2, mean=[0.0], std=[1.0]), training=True)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    out, _ = dm.on_after_batch_transfer(batch, 0)
    assert torch.equal(out, (16 - dm.splits["train"][0][batch.indices]).float())


class RandomVerticalShift(BatchTransform):
    """A user's transform: move each image up or down by up to ``s`` rows, edge rows repeated.

    It only says where its output lies in the padded input (``windows``), so the data module
    can fuse it with the gather; ``apply_params`` is the base's (cut the windows out of the
    batch), wrapped to count its calls.
    """

    def __init__(self, s: int):
        super().__init__()
        self.s = s
        self.calls = {"draw_params": 0, "windows": 0, "apply_params": 0}

    def draw_params(self, shape, generator=None, device=None):
        self.calls["draw_params"] += 1
        device = generator.device if generator is not None else device
        return {"dy": torch.randint(-self.s, self.s + 1, (shape[0],), generator=generator, device=device)}

    def windows(self, params, shape):
        self.calls["windows"] += 1
        top, left = self.s - params["dy"], torch.zeros_like(params["dy"])
        return Windows(top, left, (shape[-2], shape[-1]), padding=(self.s, 0), padding_mode="replicate")

    def apply_params(self, images, params):
        self.calls["apply_params"] += 1
        return super().apply_params(images, params)


class _VerticallyShifted(DigitsDataModule):
    """The user's data module: their transform first, then the configured ones (a flip)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.train_transforms.insert(0, RandomVerticalShift(2))


def test_a_users_window_transform_joins_the_fused_gather():
    fused = _attach(_VerticallyShifted(batch_size=50, seed=3, hflip=True), training=True)
    plain = _attach(_VerticallyShifted(batch_size=50, seed=3, hflip=True, gather_on_device=False), training=True)
    fused.setup("fit")
    plain.setup("fit")
    batches = 0
    for a, b in zip(fused.train_dataloader(), plain.train_dataloader(), strict=True):
        xa, _ = fused.on_after_batch_transfer(a, 0)
        xb, _ = plain.on_after_batch_transfer(b, 0)
        assert torch.equal(xa, xb)  # fused == gather, then apply the transforms, bit for bit
        batches += 1
    fused_calls, plain_calls = fused.train_transforms[0].calls, plain.train_transforms[0].calls
    # the fused path cut the windows out of the padded split and never applied the transform to a batch
    assert fused_calls == {"draw_params": batches, "windows": batches, "apply_params": 0}
    assert plain_calls["apply_params"] == batches and plain_calls["draw_params"] == batches
    raw = fused.splits["train"][0]
    padded = fused.train_source(torch.device("cpu"), (2, 0), "replicate")
    assert torch.equal(padded[:, :, :2], raw[:, :, :1].expand(-1, -1, 2, -1))  # the split, padded once for it
    # the rows did move: row sums ignore the flip, so they differ from the unshifted images' where dy != 0
    rows_out, rows_raw = xa.sum((1, 3)), fused.normalize(raw[a.indices]).sum((1, 3))
    assert (rows_out != rows_raw).any(1).float().mean() > 0.6  # P(dy != 0) = 4/5


def test_index_batch_given_straight_to_the_model_is_a_clear_error(quiet_trainer):
    from lightning_deepfeat.models import ConvNet, FeatureClassifier

    dm = DigitsDataModule(batch_size=32, translate=1)
    dm.setup("fit")
    model = FeatureClassifier(
        features=ConvNet(in_channels=1, channels=[4], hidden=[8]), num_classes=10, input_shape=(1, 8, 8)
    )
    trainer = quiet_trainer(max_steps=1)
    with pytest.raises(TypeError, match="IndexBatch.*datamodule=dm"):
        trainer.fit(model, train_dataloaders=dm.loader("train", train=True, device_side=True))


def test_gather_on_device_must_be_bool():
    with pytest.raises(ValueError, match="`gather_on_device` must be True or False, got 'yes'"):
        DigitsDataModule(gather_on_device="yes")


# ----------------------------------------------------------------- adding a data set: the documented examples
DOCS = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"


def _examples() -> dict[str, str]:
    """The python blocks of CONTRIBUTING.md that start with ``# Example: <title>``, by title (the data sets)."""
    blocks = re.findall(r"```python\n(# Example: ([^\n]+)\n.*?)```", DOCS.read_text(), flags=re.S)
    return {title: code for code, title in blocks if title.endswith("data set")}


@pytest.mark.slow
def test_the_documented_new_data_sets_run_and_train(quiet_trainer):
    from lightning_deepfeat.models import ConvNet, FeatureClassifier

    examples = _examples()
    assert sorted(examples) == ["a new file-per-sample data set", "a new in-memory data set"]
    expected = {"a new in-memory data set": ((64, 3, 16, 16), 4), "a new file-per-sample data set": ((4, 3, 28, 28), 3)}
    for title, code in examples.items():
        scope: dict = {}
        exec(compile(code, f"{DOCS}:{title}", "exec"), scope)
        dm, images, labels = scope["dm"], scope["images"], scope["labels"]
        shape, classes = expected[title]
        assert images.dtype == torch.float32 and images.shape == shape and labels.dtype == torch.int64
        assert int(labels.min()) >= 0 and int(labels.max()) < classes == dm.num_classes
        assert dm.image_shape == shape[1:] and type(dm).describe()["num_classes"] == classes
        # and under a Trainer, through the fast path (an IndexBatch for the in-memory one)
        augmented = dm.state_dict()["augmented_batches"]  # 1: the example's own batch
        model = FeatureClassifier(
            features=ConvNet(in_channels=3, channels=[4], hidden=[8]), num_classes=classes, input_shape=dm.image_shape
        )
        trainer = quiet_trainer(max_steps=2, limit_val_batches=1)
        trainer.fit(model, datamodule=dm)
        assert trainer.global_step == 2 and dm.state_dict()["augmented_batches"] == augmented + 2


@pytest.mark.parametrize(
    ("cls", "option", "good", "bad", "choices"),
    [
        (DigitsDataModule, "padding_mode", "reflect", "wrap", "'zeros', 'reflect', 'replicate'"),
        # test_views is InMemoryDataModule's own argument: reached through the subclasses' **kwargs
        (FashionMNISTDataModule, "test_views", "ten", "five", "'single', 'flip', 'ten'"),
    ],
)
def test_bad_choices_are_rejected_when_the_command_line_is_parsed(cls, option, good, bad, choices):
    """Choices typed as a Literal: jsonargparse refuses a bad value before anything is built."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "data")
    assert getattr(parser.parse_args([f"--data.{option}", good]).data, option) == good
    with pytest.raises(ArgumentError, match=rf"(?s)data\.{option}.*{choices}.*{bad}"):
        parser.parse_args([f"--data.{option}", bad])


def test_the_0_1_0_names_still_work(tmp_path):
    """``ImageClassificationDataModule`` (now ``InMemoryDataModule``) and ``FileDataModule`` subclasses of 0.1.0."""
    from lightning_deepfeat.data import FileDataModule, ImageClassificationDataModule

    class Old(ImageClassificationDataModule):
        num_classes, image_shape, class_names = 2, (1, 4, 4), ["a", "b"]

        def load_split(self, split):
            return torch.full((10, 1, 4, 4), 3, dtype=torch.uint8), torch.arange(10) % 2

    class OldFiles(FileDataModule):
        num_classes, image_shape, class_names = 2, (1, 4, 4), ["a", "b"]

        def required_files(self):
            return ["data.pt"]

        def load_split(self, split):
            return torch.load(self.locate() / "data.pt")

    torch.save((torch.full((10, 1, 4, 4), 3, dtype=torch.uint8), torch.arange(10) % 2), tmp_path / "data.pt")
    for dm in (Old(batch_size=4, val_fraction=0.2), OldFiles(root=tmp_path, batch_size=4, val_fraction=0.2)):
        dm.setup("fit")
        images, labels = next(iter(dm.train_dataloader()))
        assert images.shape == (4, 1, 4, 4) and images.dtype == torch.float32 and float(dm.mean) == 3.0
    with pytest.raises(FileNotFoundError, match=r"OldFiles: no folder holds all of data\.pt"):
        OldFiles(root=tmp_path / "elsewhere").setup("fit")


# ----------------------------------------------------------------------------- test-time views
class _RecordingClassifier:
    """Builds a FeatureClassifier subclass, as a user would, that records what its steps are given."""

    @staticmethod
    def make():
        from lightning_deepfeat.models import ConvNet, FeatureClassifier

        class Recording(FeatureClassifier):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.shapes: dict[str, set[tuple[int, ...]]] = {"val": set(), "test": set()}

            def validation_step(self, batch, batch_idx):
                self.shapes["val"].add(tuple(batch[0].shape[1:]))
                return super().validation_step(batch, batch_idx)

            def test_step(self, batch, batch_idx):
                self.shapes["test"].add(tuple(batch[0].shape[1:]))
                return super().test_step(batch, batch_idx)

        torch.manual_seed(0)
        return Recording(
            features=ConvNet(in_channels=1, channels=[4], hidden=[16], dropout=0.5),
            num_classes=10,
            input_shape=(1, 8, 8),
        )


@pytest.mark.parametrize(("views", "count"), [("flip", 2), ("ten", 10)])
def test_test_views_average_the_softmax_over_each_test_image_views(quiet_trainer, views, count):
    """``test_views``: test and predict see (B, V, C, H, W), validation single images; the metrics are those
    of the averaged softmax, which a plain loop over the test loader reproduces."""
    model = _RecordingClassifier.make()
    dm = DigitsDataModule(batch_size=64, eval_batch_size=50, test_views=views)
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(model, datamodule=dm)
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert model.shapes == {"val": {(1, 8, 8)}, "test": {(count, 1, 8, 8)}}
    predicted = torch.cat(trainer.predict(model, datamodule=dm))

    dm.setup("test")
    batches = list(dm.test_dataloader())  # the loader on its own finishes the same views
    views_, labels = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    assert views_.shape == (len(labels), count, 1, 8, 8)
    single = DigitsDataModule(eval_batch_size=50)
    single.setup("test")
    plain = torch.cat([x for x, _ in single.test_dataloader()])
    torch.testing.assert_close(views_[:, 0], plain)
    torch.testing.assert_close(views_[:, count // 2], plain.flip(-1))
    model.eval()
    with torch.no_grad():
        averaged = torch.softmax(model(views_.flatten(0, 1)), dim=1).view(len(labels), count, -1).mean(1)
        alone = torch.softmax(model(plain), dim=1)
    torch.testing.assert_close(predicted, averaged)
    assert result["test_acc"] == pytest.approx(float((averaged.argmax(1) == labels).float().mean()))
    nll = -averaged[torch.arange(len(labels)), labels].log().mean()
    assert result["test_loss"] == pytest.approx(float(nll), rel=1e-5)
    assert not torch.allclose(averaged, alone)
