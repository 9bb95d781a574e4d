"""``ImageClassificationDataModule``: the base of every data module, in memory and on device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule

from lightning_deepfeat.data.loader import InMemoryBatchLoader


class ImageClassificationDataModule(LightningDataModule):
    """Base data module: uint8 images held in memory, normalised on the device.

    Subclasses implement :meth:`load_split` (return ``(images uint8 (N, C, H, W), labels
    int64 (N,))`` for ``"train"`` or ``"test"``) and set the class attributes
    ``num_classes``, ``image_shape`` and ``class_names``. Everything else (the seeded
    train/val split, per-channel normalisation from the training split, DDP shares,
    batching by index gather) is done here.

    Batches stay uint8 until :meth:`on_after_batch_transfer`, which runs on the
    accelerator: training augmentation first (:meth:`augment`, training only), then
    conversion to float and normalisation (every stage).

    Args:
        batch_size: samples per batch and process.
        num_workers: worker processes (for data sets read from files per sample).
        val_fraction: fraction of the training split held out for validation, in [0, 1).
        split_seed: seed of the train/val split (fixed, so every run uses the same split).
        mean: per-channel mean in raw pixel units; ``None`` computes it on the train split.
        std: per-channel std in raw pixel units; ``None`` computes it on the train split.
        eval_batch_size: batch size for val/test/predict (default: ``batch_size``).
        shuffle_seed: base seed of the per-epoch shuffling.
    """

    num_classes: int = 0
    image_shape: tuple[int, ...] = ()
    class_names: list[str] = []

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        eval_batch_size: int | None = None,
        shuffle_seed: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"`num_workers` must be an int >= 0, got {num_workers!r}.")
        if not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"`val_fraction` must be in [0, 1), got {val_fraction!r}.")
        if eval_batch_size is not None and (not isinstance(eval_batch_size, int) or eval_batch_size <= 0):
            raise ValueError(f"`eval_batch_size` must be a positive int or None, got {eval_batch_size!r}.")
        for name, value in (("mean", mean), ("std", std)):
            if value is not None and (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value):
                raise ValueError(f"`{name}` must be a non-empty sequence of floats (one per channel) or None, got {value!r}.")
        if std is not None and any(s <= 0 for s in std):
            raise ValueError(f"`std` must be positive for every channel, got {list(std)!r}.")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = float(val_fraction)
        self.split_seed = split_seed
        self.eval_batch_size = eval_batch_size or batch_size
        self.shuffle_seed = shuffle_seed
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._mean_std_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    # ----------------------------------------------------------------- override points
    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(images, labels)`` of the ``"train"`` or ``"test"`` split. Subclasses implement this."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_split(split).")

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """Training augmentation of a uint8 batch on the device; the base applies none."""
        return images

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        if "train" not in self.splits and stage in (None, "fit", "validate"):
            images, labels = self.load_split("train")
            self._check_labels(labels, "train")
            n_val = int(round(self.val_fraction * labels.shape[0]))
            order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(self.split_seed))
            train_idx, val_idx = order[n_val:], order[:n_val]
            self.splits["train"] = (images[train_idx], labels[train_idx])
            self.splits["val"] = (images[val_idx], labels[val_idx])
        if "test" not in self.splits and stage in (None, "test", "predict"):
            images, labels = self.load_split("test")
            self._check_labels(labels, "test")
            self.splits["test"] = (images, labels)
        if self.mean is None or self.std is None:
            if "train" not in self.splits:
                images, labels = self.load_split("train")
                self.splits["train"] = (images, labels)
            mean, std = self._channel_stats(self.splits["train"][0])
            self.mean = mean if self.mean is None else self.mean
            self.std = std if self.std is None else self.std

    def _check_labels(self, labels: torch.Tensor, split: str) -> None:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"{type(self).__name__}: {split} labels must lie in [0, {self.num_classes}), "
                f"found [{int(labels.min())}, {int(labels.max())}]."
            )

    @staticmethod
    def _channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float().transpose(0, 1).reshape(images.shape[1], -1)
        return x.mean(dim=1), x.std(dim=1).clamp_min(1e-6)

    # ----------------------------------------------------------------- loaders
    def _loader(self, split: str, train: bool) -> InMemoryBatchLoader:
        if split not in self.splits:
            raise RuntimeError(f"{type(self).__name__}: split {split!r} is not set up; call setup() first.")
        images, labels = self.splits[split]
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        return InMemoryBatchLoader(
            images,
            labels,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            seed=self.shuffle_seed,
            num_replicas=world,
            rank=rank,
            pad_to_equal=train,
        )

    def train_dataloader(self) -> Any:
        return self._loader("train", train=True)

    def val_dataloader(self) -> Any:
        return self._loader("val", train=False)

    def test_dataloader(self) -> Any:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> Any:
        return self._loader("test", train=False)

    # ----------------------------------------------------------------- on device
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel, in float32, on the batch's device."""
        if self.mean is None or self.std is None:
            raise RuntimeError(f"{type(self).__name__}: mean/std unknown; call setup() first.")
        device = images.device
        if device not in self._mean_std_cache:
            shape = (1, -1) + (1,) * (images.dim() - 2)
            self._mean_std_cache[device] = (self.mean.to(device).view(shape), self.std.to(device).view(shape))
        mean, std = self._mean_std_cache[device]
        return (images.float() - mean) / std

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        trainer = self.trainer
        if trainer is not None and trainer.training:
            images = self.augment(images)
        return self.normalize(images), labels
