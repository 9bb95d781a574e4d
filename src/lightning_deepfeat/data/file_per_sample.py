r"""``FilePerSampleDataModule``: data stored one image file per sample, decoded by loader workers.

Workers read and decode each file (``torchvision.io.decode_image``, RGB), resize the
shorter side to ``resize`` and take the central ``resize × resize`` square, so that every
sample has the same shape and a batch collates into one uint8 tensor. Crops, shifts and
flips then run batched on the device, as for the in-memory data sets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from typing_extensions import override

from lightning_deepfeat.data.base import ImageDataModule, check_labels
from lightning_deepfeat.validation import check_int, check_pair, check_path

#: what :meth:`FilePerSampleDataModule.sample_files` returns: ``(file, label)`` per sample
Samples = list[tuple[Path, int]]


class ImageFileDataset(Dataset):
    r"""Decodes one file per item: RGB uint8, shorter side resized to ``resize``, centre ``resize``² crop.

    The square crop gives every item the same shape, so batches collate into one uint8
    tensor ``(B, 3, resize, resize)``; the random ``crop_size`` crop and the flip then run
    batched on the device (Krizhevsky et al.: 256×256 images, random 224×224 patches).
    """

    def __init__(self, samples: Samples, resize: int) -> None:
        self.samples = samples
        self.resize = resize

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from torchvision.io import ImageReadMode, decode_image, read_file
        from torchvision.transforms.v2 import functional as TF

        path, label = self.samples[index]
        try:
            image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"cannot decode {path}: {err}") from err
        image = TF.resize(image, [self.resize], antialias=True)
        image = TF.center_crop(image, [self.resize, self.resize])
        return image.contiguous(), label


class FilePerSampleDataModule(ImageDataModule):
    r"""Base of the data sets stored one image file per sample under ``root``.

    A new data set is a subclass with one method, :meth:`sample_files`, and the class
    attributes ``num_classes`` and ``class_names``::

        class MyFiles(FilePerSampleDataModule):
            num_classes = 2
            class_names = ["cat", "dog"]

            def sample_files(self, split):     # "train", "val" or "test"
                if split == "val":
                    return None                # held out of "train" (val_fraction)
                return [(path, label), ...]    # files under self.root

    Split rules: ``"train"`` is required; ``None`` for ``"val"`` holds out ``val_fraction``
    of the training samples (seeded by ``split_seed``); ``None`` for ``"test"`` tests on the
    validation samples. Files are decoded as :class:`ImageFileDataset` describes; the
    stored image shape is ``(3, resize, resize)``. Mean/std default to statistics of up to
    ``stats_samples`` evenly spaced training images.

    Args:
        root: the data folder (``self.root``, a :class:`~pathlib.Path`).
        resize: length of the shorter side after decoding; every sample is then the
            central ``resize × resize`` square (256 in Krizhevsky et al.).
        stats_samples: training images decoded to estimate mean/std when not given.
        **kwargs: the arguments of :class:`ImageDataModule`.
    """

    def __init__(
        self, root: str | os.PathLike[str], resize: int = 256, stats_samples: int = 512, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.root: Path = check_path("root", root).expanduser()
        self.resize: int = check_int("resize", resize, low=1)
        self.stats_samples: int = check_int("stats_samples", stats_samples, low=1)
        self.set_stored_shape((3, self.resize, self.resize))
        self.samples: dict[str, Samples] = {}

    @classmethod
    @override
    def describe(cls, **init_args: Any) -> dict[str, Any]:
        """``image_shape`` is ``(3, crop)``, or ``(3, resize, resize)`` without a crop."""
        crop = init_args.get("crop_size")
        size = check_pair("crop_size", crop, low=1) if crop is not None else (init_args.get("resize", 256),) * 2
        return {"num_classes": int(cls.num_classes), "image_shape": (3, *size)}

    # ----------------------------------------------------------------- the data set's part
    def sample_files(self, split: str) -> Samples | None:
        """``[(file, label), ...]`` of ``"train"``, ``"val"`` or ``"test"``; ``None``: not a split of its own."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample_files(split).")

    # ----------------------------------------------------------------- storage
    @override
    def setup_splits(self, stage: str | None) -> None:
        """List (and check) the files of every split once; reading them is the loaders' job."""
        if self.samples:
            return
        train = self.sample_files("train")
        if train is None:
            raise ValueError(
                f"{type(self).__name__}.sample_files('train') returned None; the training split is required."
            )
        val = self.sample_files("val")
        if val is None:
            kept, held = self.split_train_val(len(train))
            val = [train[i] for i in held.tolist()]
            train = [train[i] for i in sorted(kept.tolist())]
        test = self.sample_files("test")
        self.samples = {"train": train, "val": val, "test": val if test is None else test}
        for split, samples in self.samples.items():
            check_labels(
                torch.tensor([label for _, label in samples], dtype=torch.int64),
                self.num_classes,
                f"{type(self).__name__}: {split}",
            )

    @override
    def images_for_stats(self) -> torch.Tensor:
        train = self.samples["train"]
        step = max(1, len(train) // self.stats_samples)
        dataset = ImageFileDataset(train[::step][: self.stats_samples], self.resize)
        return torch.stack([dataset[i][0] for i in range(len(dataset))])

    @override
    def make_loader(self, split: str, train: bool, device_side: bool) -> DataLoader:
        """A ``DataLoader`` over the files of ``split``: workers decode, the batch is finished as in the base class.

        ``device_side``: uint8 batches finished on the device by ``on_after_batch_transfer``;
        otherwise each collated batch is augmented (``train``) or centre-cropped, and
        normalised, in the loader. Under DDP Lightning gives each process a
        ``DistributedSampler`` share.
        """
        if split not in self.samples:
            raise RuntimeError(f"{type(self).__name__}: split {split!r} is not set up; call setup() first.")
        shuffle = train and not self.overfitting()
        return DataLoader(
            ImageFileDataset(self.samples[split], self.resize),
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.shuffle_seed) if shuffle else None,
            collate_fn=None if device_side else _FinishedBatches(self, train),
        )


class _FinishedBatches:
    """``collate_fn`` of a loader used on its own: stack the uint8 images, then finish them as the module would."""

    def __init__(self, datamodule: ImageDataModule, train: bool) -> None:
        self.datamodule, self.train = datamodule, train

    def __call__(self, samples: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([image for image, _ in samples])
        labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
        return self.datamodule.finish_batch(images, train=self.train), labels


__all__ = ["FilePerSampleDataModule", "ImageFileDataset", "Samples"]
