"""MNIST and Fashion-MNIST from their IDX files, held in memory as uint8."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lightning_deepfeat.data.base import DATA_ENV, FileDataModule, default_download_root
from lightning_deepfeat.data.readers import read_idx


class IDXDataModule(FileDataModule):
    """Base of the MNIST family: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` files.

    Where the files are looked for, in order (the first folder holding all four wins):

    1. ``root`` if given: ``root``, ``root/<TorchvisionName>/raw`` (torchvision's layout),
       ``root/<debian-name>``. Nothing else is searched when ``root`` is given.
    2. ``$DEEPFEAT_DATA``, with the same three sub-locations.
    3. the system folders of :attr:`system_dirs` (Debian's ``dataset-*`` packages).

    Args:
        root: data folder (see above).
        download: fetch the files with torchvision's downloader into ``root`` (or
            ``$DEEPFEAT_DATA`` or ``~/.cache/lightning_deepfeat``) when they are missing.
        **kwargs: the arguments of :class:`ImageClassificationDataModule`.
    """

    num_classes = 10
    image_shape = (1, 28, 28)
    torchvision_name = ""
    debian_name = ""
    debian_package = ""
    system_dirs: tuple[str, ...] = ()
    files = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }

    # ----------------------------------------------------------------- locating files
    def candidate_dirs(self) -> list[Path]:
        """Every folder searched, in order."""
        def under(base: Path) -> list[Path]:
            return [base, base / self.torchvision_name / "raw", base / self.debian_name]

        if self.root is not None:
            return under(self.root)
        dirs: list[Path] = []
        env = os.environ.get(DATA_ENV)
        if env:
            dirs += under(Path(env).expanduser())
        dirs += [Path(d) for d in self.system_dirs]
        return dirs

    @staticmethod
    def _find(folder: Path, stem: str) -> Path | None:
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
        return None

    def locate(self) -> Path:
        """The first candidate folder holding all four files; downloads if asked; else ``FileNotFoundError``."""
        stems = [s for pair in self.files.values() for s in pair]
        for folder in self.candidate_dirs():
            if all(self._find(folder, s) is not None for s in stems):
                return folder
        if self.download:
            target = self.root if self.root is not None else default_download_root()
            self._download(target)
            folder = target / self.torchvision_name / "raw"
            if all(self._find(folder, s) is not None for s in stems):
                return folder
        looked = "\n".join(f"  - {d}" for d in self.candidate_dirs())
        how = [f"pass `download=True` (torchvision downloads them into root, ${DATA_ENV} or ~/.cache/lightning_deepfeat)"]
        if self.debian_package:
            how.insert(0, f"`apt-get install {self.debian_package}` (installs {self.system_dirs[0]})")
        raise FileNotFoundError(
            f"{type(self).__name__}: no folder holds all of {', '.join(s + '[.gz]' for s in stems)}. Looked in:\n"
            f"{looked}\nTo get them: " + "; or ".join(how) + f"; or set `root` / ${DATA_ENV} to a folder that has them."
        )

    def _download(self, root: Path) -> None:
        import torchvision.datasets as tvd

        getattr(tvd, self.torchvision_name)(str(root), train=True, download=True)

    # ----------------------------------------------------------------- reading
    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        folder = self.locate()
        image_stem, label_stem = self.files[split]
        image_path, label_path = self._find(folder, image_stem), self._find(folder, label_stem)
        assert image_path is not None and label_path is not None
        images = read_idx(image_path, ndim=3)
        labels = read_idx(label_path, ndim=1)
        if images.dtype != torch.uint8 or labels.dtype != torch.uint8:
            raise ValueError(f"{image_path} / {label_path}: expected uint8 IDX data, got {images.dtype} / {labels.dtype}.")
        if tuple(images.shape[1:]) != tuple(self.stored_shape()[1:]):
            raise ValueError(f"{image_path}: images are {tuple(images.shape[1:])}, expected {self.stored_shape()[1:]}.")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{image_path} has {images.shape[0]} images but {label_path} has {labels.shape[0]} labels."
            )
        if labels.numel() and int(labels.max()) >= self.num_classes:
            raise ValueError(f"{label_path}: labels must lie in [0, {self.num_classes}), found {int(labels.max())}.")
        return images.unsqueeze(1).contiguous(), labels.to(torch.int64)


class MNISTDataModule(IDXDataModule):
    """MNIST: 70,000 28×28 grey handwritten digits (60,000 train, 10,000 test). See :class:`IDXDataModule`."""

    torchvision_name = "MNIST"
    debian_name = "mnist"
    system_dirs = ("/usr/share/datasets/mnist",)
    class_names = [str(d) for d in range(10)]


class FashionMNISTDataModule(IDXDataModule):
    """Fashion-MNIST: 70,000 28×28 grey Zalando article images in 10 classes. See :class:`IDXDataModule`.

    On Debian/Ubuntu ``apt-get install dataset-fashion-mnist`` installs the four ``.gz``
    files in ``/usr/share/datasets/fashion-mnist``, which is searched last.
    """

    torchvision_name = "FashionMNIST"
    debian_name = "fashion-mnist"
    debian_package = "dataset-fashion-mnist"
    system_dirs = ("/usr/share/datasets/fashion-mnist",)
    class_names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


__all__ = ["FashionMNISTDataModule", "IDXDataModule", "MNISTDataModule"]
