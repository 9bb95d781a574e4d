"""Small data sets in the real on-disk formats (IDX, CIFAR pickle, JPEG folders), for tests."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from lightning_deepfeat.data.readers import write_idx

IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def make_images(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def make_labels(n: int, num_classes: int, seed: int) -> torch.Tensor:
    labels = torch.arange(n) % num_classes
    return labels[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]


def write_idx_dataset(
    folder: Path, n_train: int = 50, n_test: int = 20, gz: bool = True
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Write the four MNIST-style IDX files into ``folder``; return what was written, per split."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for seed, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        images, labels = make_images(n, (28, 28), seed), make_labels(n, 10, seed).to(torch.uint8)
        suffix = ".gz" if gz else ""
        write_idx(folder / (IDX_STEMS[split][0] + suffix), images)
        write_idx(folder / (IDX_STEMS[split][1] + suffix), labels)
        written[split] = (images.unsqueeze(1), labels.long())
    return written


def _dump(path: Path, obj: object) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int = 6, n_test: int = 8) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``; returns images (N,3,32,32) and labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        x, y = make_images(per_batch, (3, 32, 32), i), make_labels(per_batch, 10, i)
        _dump(
            folder / f"data_batch_{i}",
            {b"batch_label": b"training batch", b"labels": y.tolist(), b"data": x.reshape(per_batch, -1).numpy()},
        )
        train_x.append(x)
        train_y.append(y)
    x, y = make_images(n_test, (3, 32, 32), 99), make_labels(n_test, 10, 99)
    _dump(folder / "test_batch", {b"labels": y.tolist(), b"data": x.reshape(n_test, -1).numpy()})
    _dump(folder / "batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072})
    return {"train": (torch.cat(train_x), torch.cat(train_y)), "test": (x, y)}


def write_cifar100(root: Path, n_train: int = 30, n_test: int = 10) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``root/cifar-100-python/{train,test,meta}`` with fine and coarse labels."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for seed, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        x, y = make_images(n, (3, 32, 32), seed), make_labels(n, 100, seed)
        _dump(
            folder / split,
            {b"fine_labels": y.tolist(), b"coarse_labels": (y // 5).tolist(), b"data": x.reshape(n, -1).numpy()},
        )
        out[split] = (x, y)
    _dump(folder / "meta", {b"fine_label_names": [f"fine{i}".encode() for i in range(100)], b"coarse_label_names": []})
    return out


def write_image_folder(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog", "fox"),
    per_class: int = 4,
    splits: tuple[str, ...] = ("train", "val"),
) -> Path:
    """JPEG files ``root/<split>/<class>/<i>.jpg`` of assorted sizes (shorter side >= 40)."""
    from torchvision.io import encode_jpeg, encode_png

    sizes = [(40, 56), (48, 40), (44, 44), (60, 50)]
    for s, split in enumerate(splits):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                h, w = sizes[i % len(sizes)]
                image = make_images(1, (3, h, w), 100 * s + 10 * c + i)[0]
                if i == 1:  # one PNG per class: the check goes by content, not by name
                    (folder / f"{i}.png").write_bytes(bytes(encode_png(image).numpy()))
                else:
                    (folder / f"{i}.jpg").write_bytes(bytes(encode_jpeg(image, quality=90).numpy()))
    return root


def write_raw_pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _dump(path, obj)


class DataRoots(NamedTuple):
    """The folders that :func:`write_every_format` filled, one per data set."""

    mnist: Path  # MNIST IDX files (gzipped), 50 train and 20 test images
    fashion: Path  # the same, for Fashion-MNIST
    cifar10: Path  # cifar-10-batches-py/, 5 x 6 train and 8 test images
    cifar100: Path  # cifar-100-python/, 30 train and 10 test images
    folder: Path  # an ImageFolder: train/ and val/, 3 classes x 4 JPEG/PNG images


def write_every_format(root: Path) -> DataRoots:
    """One small data set per on-disk format we read, each in its own folder under ``root``."""
    roots = DataRoots(*(root / name for name in DataRoots._fields))
    write_idx_dataset(roots.mnist)
    write_idx_dataset(roots.fashion)
    write_cifar10(roots.cifar10)
    write_cifar100(roots.cifar100)
    write_image_folder(roots.folder, per_class=4)
    return roots


__all__ = [
    "IDX_STEMS",
    "DataRoots",
    "make_images",
    "make_labels",
    "np",
    "write_cifar10",
    "write_cifar100",
    "write_every_format",
    "write_idx_dataset",
    "write_image_folder",
    "write_raw_pickle",
]
