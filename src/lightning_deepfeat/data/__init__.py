"""Data modules and batched augmentation."""

from lightning_deepfeat.data.base import ImageClassificationDataModule
from lightning_deepfeat.data.digits import DigitsDataModule
from lightning_deepfeat.data.loader import InMemoryBatchLoader

__all__ = ["DigitsDataModule", "ImageClassificationDataModule", "InMemoryBatchLoader"]
