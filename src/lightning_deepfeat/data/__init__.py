"""Data modules and batched, on-device augmentation.

In memory (one uint8 tensor, one index gather per batch): :class:`DigitsDataModule`,
:class:`MNISTDataModule`, :class:`FashionMNISTDataModule`, :class:`CIFAR10DataModule`,
:class:`CIFAR100DataModule`. From files, decoded by workers: :class:`ImageFolderDataModule`.
Batched augmentation modules: :class:`RandomTranslate`, :class:`RandomCrop`,
:class:`CenterCrop`, :class:`RandomHorizontalFlip`.
"""

from lightning_deepfeat.data.base import FileDataModule, ImageClassificationDataModule
from lightning_deepfeat.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from lightning_deepfeat.data.digits import DigitsDataModule
from lightning_deepfeat.data.folder import ImageFolderDataModule
from lightning_deepfeat.data.loader import IndexBatch, InMemoryBatchLoader
from lightning_deepfeat.data.mnist import FashionMNISTDataModule, IDXDataModule, MNISTDataModule
from lightning_deepfeat.data.readers import read_cifar_batch, read_idx
from lightning_deepfeat.data.transforms import (
    CenterCrop,
    RandomCrop,
    RandomHorizontalFlip,
    RandomTranslate,
    crop_batch,
    flip_batch,
    translate,
)

__all__ = [
    "CIFAR100DataModule",
    "CIFAR10DataModule",
    "CenterCrop",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "FileDataModule",
    "IDXDataModule",
    "ImageClassificationDataModule",
    "ImageFolderDataModule",
    "InMemoryBatchLoader",
    "IndexBatch",
    "MNISTDataModule",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomTranslate",
    "crop_batch",
    "flip_batch",
    "read_cifar_batch",
    "read_idx",
    "translate",
]
