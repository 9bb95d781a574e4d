"""CIFAR-10 and CIFAR-100 from torchvision's python-pickle layout, held in memory as uint8."""

from __future__ import annotations

from typing import ClassVar

import torch
from typing_extensions import override

from lightning_deepfeat.data.base import check_labels
from lightning_deepfeat.data.download import DATA_ENV, Downloadable
from lightning_deepfeat.data.in_memory import InMemoryDataModule
from lightning_deepfeat.data.readers import load_pickle, read_cifar_batch


class _CIFARDataModule(Downloadable, InMemoryDataModule):
    """Shared code of the CIFAR modules: the python pickles of torchvision's layout.

    Files are looked for in ``root`` (or ``$DEEPFEAT_DATA`` when ``root`` is not given),
    directly or in the archive's folder (``cifar-10-batches-py`` / ``cifar-100-python``),
    which is what torchvision's ``CIFAR10(root, download=True)`` leaves behind.

    The pickles are read by a restricted unpickler that only rebuilds numpy arrays and
    builtins, so a tampered file cannot run code.

    Args:
        root: data folder (see above).
        download: fetch the archive with torchvision's downloader when the files are missing.
        **kwargs: the arguments of :class:`~lightning_deepfeat.data.InMemoryDataModule`.
    """

    image_shape = (3, 32, 32)
    archive_name: ClassVar[str] = ""
    split_files: ClassVar[dict[str, tuple[str, ...]]] = {}
    meta_file: ClassVar[str] = ""
    label_key: ClassVar[str] = ""
    names_key: ClassVar[str] = ""

    @override
    def required_files(self) -> list[str]:
        return [name for files in self.split_files.values() for name in files]

    @override
    def ways_to_get(self) -> list[str]:
        return [
            f"pass `download=True` (torchvision downloads {self.archive_name} into root, "
            f"${DATA_ENV} or ~/.cache/lightning_deepfeat)",
            f"unpack {self.archive_name} from https://www.cs.toronto.edu/~kriz/cifar.html and set `root` / "
            f"${DATA_ENV} to the folder above {self.subfolders[0]}/",
        ]

    @override
    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        folder = self.locate()
        parts = [read_cifar_batch(folder / name, self.label_key) for name in self.split_files[split]]
        for (_, labels), name in zip(parts, self.split_files[split], strict=True):
            check_labels(labels, self.num_classes, f"{folder / name}:")
        meta = folder / self.meta_file
        if meta.is_file():
            names = load_pickle(meta).get(self.names_key)
            if isinstance(names, list) and len(names) == self.num_classes:
                self.class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10: 60,000 32×32 colour images in 10 classes (50,000 train in 5 batches, 10,000 test).

    Layout (torchvision's): ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``.
    """

    num_classes = 10
    subfolders = ("cifar-10-batches-py",)
    archive_name = "cifar-10-python.tar.gz"
    torchvision_name = "CIFAR10"
    split_files = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
    meta_file = "batches.meta"
    label_key = "labels"
    names_key = "label_names"
    class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100: 60,000 32×32 colour images in 100 fine classes.

    Layout (torchvision's): ``cifar-100-python/{train, test, meta}``; the fine labels are used.
    ``class_names`` come from ``meta`` at :meth:`setup` (numbers until then).
    """

    num_classes = 100
    subfolders = ("cifar-100-python",)
    archive_name = "cifar-100-python.tar.gz"
    torchvision_name = "CIFAR100"
    split_files = {"train": ("train",), "test": ("test",)}
    meta_file = "meta"
    label_key = "fine_labels"
    names_key = "fine_label_names"
    class_names = [str(i) for i in range(100)]


__all__ = ["CIFAR100DataModule", "CIFAR10DataModule"]
