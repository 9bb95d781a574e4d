"""Data modules and batched, on-device augmentation.

Bases, by job: :class:`ImageDataModule` (what every data module shares: splits,
normalisation, loaders, augmentation and its seeded stream, checkpointed state);
:class:`InMemoryDataModule` (uint8 tensors in memory, batched by one index gather, the
fused on-device gather; a new data set implements ``load_split``);
:class:`FilePerSampleDataModule` (one image file per sample, decoded by loader workers; a
new data set implements ``sample_files``); :class:`Downloadable` (a mixin: files found
under ``root`` and other places, or downloaded).

Data sets: in memory, :class:`DigitsDataModule`, :class:`MNISTDataModule`,
:class:`FashionMNISTDataModule`, :class:`CIFAR10DataModule`, :class:`CIFAR100DataModule`;
from files, :class:`ImageFolderDataModule`; streamed from shards that ``deepfeat prepare``
(:func:`prepare_image_folder`) wrote, :class:`StreamingImageDataModule` (litdata, an extra:
``pip install lightning_deepfeat[streaming]``; imported only when used). Batched
augmentation: the :class:`BatchTransform` protocol (draw the parameters, then apply them) and
:class:`RandomTranslate`, :class:`RandomCrop`, :class:`CenterCrop`, :class:`RandomHorizontalFlip`,
:class:`PCALighting`, :class:`TenCrop`, :class:`ShiftFlipViews` (test-time views).
:class:`BatchMemory`: recycled host memory for the batches a data module writes itself.
"""

from lightning_deepfeat.batches import IndexBatch
from lightning_deepfeat.data.base import ImageDataModule
from lightning_deepfeat.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from lightning_deepfeat.data.digits import DigitsDataModule
from lightning_deepfeat.data.download import Downloadable, FileDataModule
from lightning_deepfeat.data.file_per_sample import FilePerSampleDataModule
from lightning_deepfeat.data.folder import ImageFolderDataModule
from lightning_deepfeat.data.functional import Windows, crop_batch, flip_batch, translate
from lightning_deepfeat.data.imagenet_transforms import PCALighting, TenCrop
from lightning_deepfeat.data.in_memory import ImageClassificationDataModule, InMemoryDataModule
from lightning_deepfeat.data.loader import InMemoryBatchLoader
from lightning_deepfeat.data.memory import BatchMemory
from lightning_deepfeat.data.mnist import FashionMNISTDataModule, IDXDataModule, MNISTDataModule
from lightning_deepfeat.data.prepare import prepare_image_folder
from lightning_deepfeat.data.readers import read_cifar_batch, read_idx
from lightning_deepfeat.data.streaming import Cuts, StreamingImageDataModule
from lightning_deepfeat.data.transforms import (
    BatchTransform,
    CenterCrop,
    RandomCrop,
    RandomHorizontalFlip,
    RandomTranslate,
    ShiftFlipViews,
)

__all__ = [
    "BatchMemory",
    "BatchTransform",
    "CIFAR100DataModule",
    "CIFAR10DataModule",
    "CenterCrop",
    "Cuts",
    "DigitsDataModule",
    "Downloadable",
    "FashionMNISTDataModule",
    "FileDataModule",
    "FilePerSampleDataModule",
    "IDXDataModule",
    "ImageClassificationDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "InMemoryBatchLoader",
    "InMemoryDataModule",
    "IndexBatch",
    "MNISTDataModule",
    "PCALighting",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomTranslate",
    "ShiftFlipViews",
    "StreamingImageDataModule",
    "TenCrop",
    "Windows",
    "crop_batch",
    "flip_batch",
    "prepare_image_folder",
    "read_cifar_batch",
    "read_idx",
    "translate",
]
