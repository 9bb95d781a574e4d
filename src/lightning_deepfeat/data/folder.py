"""``ImageFolderDataModule``: the ImageNet layout, decoded by worker processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from lightning_deepfeat.data.base import ImageClassificationDataModule
from lightning_deepfeat.data.transforms import _pair

#: leading bytes of the formats torchvision.io.decode_image reads
_MAGIC: tuple[tuple[bytes, int], ...] = (
    (b"\xff\xd8\xff", 0),  # JPEG
    (b"\x89PNG\r\n\x1a\n", 0),  # PNG
    (b"GIF87a", 0),
    (b"GIF89a", 0),
    (b"WEBP", 8),  # RIFF....WEBP
)


def is_image_file(path: Path) -> bool:
    """True when the file starts like a JPEG, PNG, GIF or WebP (checked by content, not by name)."""
    with path.open("rb") as f:
        head = f.read(16)
    return any(head[offset : offset + len(magic)] == magic for magic, offset in _MAGIC)


def scan_image_folder(folder: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[Path, int]]]:
    """``(class_names, [(file, label), ...])`` of ``folder/<class>/<image>``, sorted.

    Raises ``FileNotFoundError`` when ``folder`` does not exist and ``ValueError`` naming
    the offender for: no class folders, an empty class folder, a file that is not an
    image, a class that is not among ``classes`` (when given).
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist (expected {folder}/<class>/<image files>).")
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise ValueError(f"{folder} has no class folders (expected {folder}/<class>/<image files>).")
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise ValueError(f"{folder}: class folder(s) {unknown} do not exist in the training folder {classes}.")
    index = {name: i for i, name in enumerate(classes)}
    samples: list[tuple[Path, int]] = []
    for name in found:
        files = sorted(p for p in (folder / name).iterdir() if not p.name.startswith("."))
        if not files:
            raise ValueError(f"class folder {folder / name} is empty; every class needs at least one image.")
        for path in files:
            if not path.is_file() or not is_image_file(path):
                raise ValueError(f"{path} is not an image (JPEG, PNG, GIF or WebP); remove it from {folder / name}.")
            samples.append((path, index[name]))
    return classes, samples


class ImageFileDataset(Dataset):
    r"""Decodes one file per item: RGB uint8, shorter side resized to ``resize``, centre ``resize``² crop.

    The square crop gives every item the same shape, so batches collate into one uint8
    tensor ``(B, 3, resize, resize)``; the random ``crop_size`` crop and the flip then run
    batched on the device (Krizhevsky et al.: 256×256 images, random 224×224 patches).
    """

    def __init__(self, samples: list[tuple[Path, int]], resize: int) -> None:
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


class ImageFolderDataModule(ImageClassificationDataModule):
    """Images in the ImageNet layout, ``root/<split>/<class>/<image>``, decoded per sample by workers.

    Training reads ``root/train_dir``; validation ``root/val_dir`` when it exists, else
    ``val_fraction`` of the training files (seeded by ``split_seed``); test ``root/test_dir``
    when given, else the validation files. Class names are the sorted training folder names.

    Workers decode (``torchvision.io.decode_image``, RGB), resize the shorter side to
    ``resize`` and cut the centre ``resize × resize`` square; on the device, training
    batches get a random ``crop_size`` crop (+ translation / flip as configured: ``hflip``
    defaults to True here), evaluation batches the centre ``crop_size`` crop. Every file is
    checked at :meth:`setup` (empty class folders and non-images are errors naming the
    path); mean/std default to statistics of up to ``stats_samples`` training images.

    Args:
        root: the data folder.
        train_dir: training sub-folder.
        val_dir: validation sub-folder (used when it exists).
        test_dir: test sub-folder, ``None`` uses the validation files.
        resize: length of the shorter side after resizing (256 in Krizhevsky et al.).
        crop_size: crop size (224 in Krizhevsky et al.).
        hflip: random horizontal flips in training.
        stats_samples: training images decoded to estimate mean/std when not given.
        **kwargs: the other arguments of :class:`ImageClassificationDataModule`.
    """

    image_shape = (3, 256, 256)

    def __init__(
        self,
        root: str | os.PathLike[str],
        train_dir: str = "train",
        val_dir: str = "val",
        test_dir: str | None = None,
        resize: int = 256,
        crop_size: int | tuple[int, int] | None = 224,
        hflip: bool = True,
        stats_samples: int = 512,
        **kwargs: Any,
    ) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise ValueError(f"`root` must be a path, got {root!r}.")
        if isinstance(resize, bool) or not isinstance(resize, int) or resize <= 0:
            raise ValueError(f"`resize` must be a positive int, got {resize!r}.")
        if isinstance(stats_samples, bool) or not isinstance(stats_samples, int) or stats_samples <= 0:
            raise ValueError(f"`stats_samples` must be a positive int, got {stats_samples!r}.")
        self.resize = resize
        super().__init__(crop_size=crop_size, hflip=hflip, **kwargs)
        self.root = Path(root).expanduser()
        self.train_dir, self.val_dir, self.test_dir = train_dir, val_dir, test_dir
        self.stats_samples = stats_samples
        train_folder = self.root / train_dir
        self.class_names: list[str] = (
            sorted(d.name for d in train_folder.iterdir() if d.is_dir() and not d.name.startswith("."))
            if train_folder.is_dir()
            else []
        )
        self.num_classes = len(self.class_names)
        self.samples: dict[str, list[tuple[Path, int]]] = {}

    def stored_shape(self) -> tuple[int, ...]:
        return (3, self.resize, self.resize)

    @classmethod
    def describe(cls, **init_args: Any) -> dict[str, Any]:
        """Classes from the training folder's sub-folders; image shape ``(3, crop)`` (or ``resize`` without crop)."""
        root = init_args.get("root")
        if root is None:
            raise ValueError("ImageFolderDataModule needs `root` (the folder holding train/ and val/).")
        train = Path(root).expanduser() / init_args.get("train_dir", "train")
        if not train.is_dir():
            raise FileNotFoundError(f"image folder {train} does not exist (expected {train}/<class>/<image files>).")
        classes = [d for d in train.iterdir() if d.is_dir() and not d.name.startswith(".")]
        crop = init_args.get("crop_size", 224)
        size = _pair("crop_size", crop, minimum=1) if crop is not None else (init_args.get("resize", 256),) * 2
        return {"num_classes": len(classes), "image_shape": (3, *size)}

    def setup(self, stage: str | None = None) -> None:
        if self._augment_seed is None:
            self._augment_seed = int(torch.initial_seed())
        if not self.samples:
            classes, train = scan_image_folder(self.root / self.train_dir)
            val_folder = self.root / self.val_dir if self.val_dir else None
            if val_folder is not None and val_folder.is_dir():
                _, val = scan_image_folder(val_folder, classes)
            else:
                n_val = int(round(self.val_fraction * len(train)))
                order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.split_seed)).tolist()
                val = [train[i] for i in order[:n_val]]
                train = [train[i] for i in sorted(order[n_val:])]
            test = val
            if self.test_dir is not None:
                _, test = scan_image_folder(self.root / self.test_dir, classes)
            self.class_names, self.num_classes = classes, len(classes)
            self.samples = {"train": train, "val": val, "test": test}
        if self.mean is None or self.std is None:
            train = self.samples["train"]
            step = max(1, len(train) // self.stats_samples)
            dataset = ImageFileDataset(train[::step][: self.stats_samples], self.resize)
            images = torch.stack([dataset[i][0] for i in range(len(dataset))])
            mean, std = self._channel_stats(images)
            self.mean = mean if self.mean is None else self.mean
            self.std = std if self.std is None else self.std

    def loader(self, split: str, train: bool, device_side: bool | None = None) -> DataLoader:
        """A ``DataLoader`` over the files of ``split``: workers decode, the batch is finished as in the base class.

        ``device_side``: uint8 batches finished on the device by :meth:`on_after_batch_transfer`
        (default while attached to a running Trainer); otherwise each collated batch is
        augmented (``train``) or centre-cropped, and normalised, in the loader.
        """
        if split not in self.samples:
            raise RuntimeError(f"{type(self).__name__}: split {split!r} is not set up; call setup() first.")
        if device_side is None:
            device_side = self.attached()
        shuffle = train and not self._overfitting()
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

    def __init__(self, datamodule: ImageClassificationDataModule, train: bool) -> None:
        self.datamodule, self.train = datamodule, train

    def __call__(self, samples: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([image for image, _ in samples])
        labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
        return self.datamodule.finish_batch(images, train=self.train), labels


__all__ = ["ImageFileDataset", "ImageFolderDataModule", "is_image_file", "scan_image_folder"]
