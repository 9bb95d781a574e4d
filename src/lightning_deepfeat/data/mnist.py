"""MNIST and Fashion-MNIST from their IDX files, held in memory as uint8."""

from __future__ import annotations

from typing import ClassVar

import torch
from typing_extensions import override

from lightning_deepfeat.data.base import check_labels
from lightning_deepfeat.data.download import Downloadable
from lightning_deepfeat.data.in_memory import InMemoryDataModule
from lightning_deepfeat.data.readers import read_idx


class IDXDataModule(Downloadable, InMemoryDataModule):
    """Base of the MNIST family: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` files.

    Where the files are looked for, in order (the first folder holding all four wins):

    1. ``root`` if given: ``root``, ``root/<TorchvisionName>/raw`` (torchvision's layout),
       ``root/<debian-name>``. Nothing else is searched when ``root`` is given.
    2. ``$DEEPFEAT_DATA``, with the same three sub-locations.
    3. the system folders of :attr:`system_dirs` (Debian's ``dataset-*`` packages).

    For another data set in the IDX format, subclass it and set ``torchvision_name``,
    ``subfolders``, ``system_dirs`` (and ``debian_package``) and ``class_names``.

    Args:
        root: data folder (see above).
        download: fetch the files with torchvision's downloader into ``root`` (or
            ``$DEEPFEAT_DATA`` or ``~/.cache/lightning_deepfeat``) when they are missing.
        **kwargs: the arguments of :class:`~lightning_deepfeat.data.InMemoryDataModule`.
    """

    num_classes = 10
    image_shape = (1, 28, 28)
    file_suffixes = (".gz", "")
    #: the Debian/Ubuntu package that installs the files in ``system_dirs[0]``, if any
    debian_package: ClassVar[str] = ""
    files: ClassVar[dict[str, tuple[str, str]]] = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }

    @override
    def required_files(self) -> list[str]:
        return [stem for pair in self.files.values() for stem in pair]

    @override
    def ways_to_get(self) -> list[str]:
        apt = (
            [f"`apt-get install {self.debian_package}` (installs {self.system_dirs[0]})"] if self.debian_package else []
        )
        return apt + super().ways_to_get()

    @override
    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        folder = self.locate()
        image_path, label_path = (self.find_file(folder, stem) for stem in self.files[split])
        assert image_path is not None and label_path is not None  # locate() found both
        images = read_idx(image_path, ndim=3)
        labels = read_idx(label_path, ndim=1)
        if images.dtype != torch.uint8 or labels.dtype != torch.uint8:
            raise ValueError(
                f"{image_path} / {label_path}: expected uint8 IDX data, got {images.dtype} / {labels.dtype}."
            )
        if tuple(images.shape[1:]) != tuple(self.stored_shape()[1:]):
            raise ValueError(f"{image_path}: images are {tuple(images.shape[1:])}, expected {self.stored_shape()[1:]}.")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{image_path} has {images.shape[0]} images but {label_path} has {labels.shape[0]} labels."
            )
        check_labels(labels, self.num_classes, f"{label_path}:")
        return images.unsqueeze(1).contiguous(), labels.to(torch.int64)


class MNISTDataModule(IDXDataModule):
    """MNIST: 70,000 28×28 grey handwritten digits (60,000 train, 10,000 test). See :class:`IDXDataModule`."""

    torchvision_name = "MNIST"
    subfolders = ("MNIST/raw", "mnist")  # torchvision's layout, then a plain folder
    system_dirs = ("/usr/share/datasets/mnist",)
    class_names = [str(d) for d in range(10)]


class FashionMNISTDataModule(IDXDataModule):
    """Fashion-MNIST: 70,000 28×28 grey Zalando article images in 10 classes. See :class:`IDXDataModule`.

    On Debian/Ubuntu ``apt-get install dataset-fashion-mnist`` installs the four ``.gz``
    files in ``/usr/share/datasets/fashion-mnist``, which is searched last.
    """

    torchvision_name = "FashionMNIST"
    subfolders = ("FashionMNIST/raw", "fashion-mnist")  # torchvision's layout, then Debian's folder name
    debian_package = "dataset-fashion-mnist"
    system_dirs = ("/usr/share/datasets/fashion-mnist",)
    class_names = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]


__all__ = ["FashionMNISTDataModule", "IDXDataModule", "MNISTDataModule"]
