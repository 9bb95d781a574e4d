"""CIFAR-10 and CIFAR-100 from torchvision's python-pickle layout, held in memory as uint8."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lightning_deepfeat.data.base import DATA_ENV, FileDataModule, default_download_root
from lightning_deepfeat.data.readers import load_pickle, read_cifar_batch


class _CIFARDataModule(FileDataModule):
    """Shared code of the CIFAR modules. Files are looked for in ``root`` (or
    ``$DEEPFEAT_DATA`` when ``root`` is not given), directly or in the archive's folder
    (``cifar-10-batches-py`` / ``cifar-100-python``), which is what torchvision's
    ``CIFAR10(root, download=True)`` leaves behind.

    The pickles are read by a restricted unpickler that only rebuilds numpy arrays and
    builtins, so a tampered file cannot run code.

    Args:
        root: data folder (see above).
        download: fetch the archive with torchvision's downloader when the files are missing.
        **kwargs: the arguments of :class:`ImageClassificationDataModule`.
    """

    image_shape = (3, 32, 32)
    folder = ""
    archive_name = ""
    torchvision_name = ""
    split_files: dict[str, tuple[str, ...]] = {}
    meta_file = ""
    label_key = ""
    names_key = ""

    def candidate_dirs(self) -> list[Path]:
        """Every folder searched, in order."""
        if self.root is not None:
            bases = [self.root]
        else:
            env = os.environ.get(DATA_ENV)
            bases = [Path(env).expanduser()] if env else []
        return [d for base in bases for d in (base, base / self.folder)]

    def _needed(self) -> list[str]:
        return [name for files in self.split_files.values() for name in files]

    def locate(self) -> Path:
        """The first candidate folder holding every batch file; downloads if asked; else ``FileNotFoundError``."""
        for folder in self.candidate_dirs():
            if all((folder / name).is_file() for name in self._needed()):
                return folder
        if self.download:
            target = self.root if self.root is not None else default_download_root()
            import torchvision.datasets as tvd

            getattr(tvd, self.torchvision_name)(str(target), train=True, download=True)
            if all((target / self.folder / name).is_file() for name in self._needed()):
                return target / self.folder
        looked = "\n".join(f"  - {d}" for d in self.candidate_dirs()) or f"  (nowhere: neither `root` nor ${DATA_ENV} is set)"
        raise FileNotFoundError(
            f"{type(self).__name__}: no folder holds all of {', '.join(self._needed())}. Looked in:\n{looked}\n"
            f"To get them: pass `download=True` (torchvision downloads {self.archive_name} into root, "
            f"${DATA_ENV} or ~/.cache/lightning_deepfeat), or unpack {self.archive_name} from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html and set `root` / ${DATA_ENV} to the folder above {self.folder}/."
        )

    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        folder = self.locate()
        parts = [read_cifar_batch(folder / name, self.label_key) for name in self.split_files[split]]
        for (_, labels), name in zip(parts, self.split_files[split]):
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ValueError(
                    f"{folder / name}: labels must lie in [0, {self.num_classes}), found [{int(labels.min())}, {int(labels.max())}]."
                )
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
    folder = "cifar-10-batches-py"
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
    folder = "cifar-100-python"
    archive_name = "cifar-100-python.tar.gz"
    torchvision_name = "CIFAR100"
    split_files = {"train": ("train",), "test": ("test",)}
    meta_file = "meta"
    label_key = "fine_labels"
    names_key = "fine_label_names"
    class_names = [str(i) for i in range(100)]


__all__ = ["CIFAR100DataModule", "CIFAR10DataModule"]
