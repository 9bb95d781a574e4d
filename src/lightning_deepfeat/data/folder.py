"""``ImageFolderDataModule``: the ImageNet layout, decoded by worker processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from typing_extensions import override

from lightning_deepfeat.data.file_per_sample import FilePerSampleDataModule, ImageFileDataset, Samples
from lightning_deepfeat.validation import check_bool, check_str

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


def resolve_classes(folder: Path, classes: list[str] | None) -> tuple[list[str], list[str]]:
    """``(class_names, class folders found)`` of ``folder/<class>/``; the names are ``classes`` when given.

    Raises ``ValueError`` naming ``folder`` when it has no class folders, or one whose name is
    not among ``classes`` (a validation or test folder with a class that training lacks).
    """
    found = class_folders(folder)
    if not found:
        raise ValueError(f"{folder} has no class folders (expected {folder}/<class>/<image files>).")
    if classes is None:
        return found, found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{folder}: class folder(s) {unknown} are not among the training classes {classes}.")
    return classes, found


def scan_image_folder(folder: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[Path, int]]]:
    """``(class_names, [(file, label), ...])`` of ``folder/<class>/<image>``, sorted.

    Raises ``FileNotFoundError`` when ``folder`` does not exist and ``ValueError`` naming
    the offender for: no class folders, an empty class folder, a file that is not an
    image, a class that is not among ``classes`` (when given).
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist (expected {folder}/<class>/<image files>).")
    classes, found = resolve_classes(folder, classes)
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


class ImageFolderDataModule(FilePerSampleDataModule):
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
        gather_on_device: ignored (files are decoded by the workers); accepted so that the
            configs and checkpoints of 0.1.0, which recorded it, still load.
        **kwargs: the other arguments of :class:`~lightning_deepfeat.data.ImageDataModule`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        train_dir: str = "train",
        val_dir: str | None = "val",
        test_dir: str | None = None,
        resize: int = 256,
        crop_size: int | tuple[int, int] | None = 224,
        hflip: bool = True,
        stats_samples: int = 512,
        gather_on_device: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            root=root, resize=resize, stats_samples=stats_samples, crop_size=crop_size, hflip=hflip, **kwargs
        )
        check_bool("gather_on_device", gather_on_device)  # accepted, not used: see the docstring
        self.train_dir: str = check_str("train_dir", train_dir)
        self.val_dir: str | None = check_str("val_dir", val_dir, allow_none=True)
        self.test_dir: str | None = check_str("test_dir", test_dir, allow_none=True)
        self.class_names: list[str] = class_folders(self.root / self.train_dir)
        self.num_classes = len(self.class_names)

    @classmethod
    @override
    def describe(cls, **init_args: Any) -> dict[str, Any]:
        """Classes from the training folder's sub-folders; image shape ``(3, crop)`` (or ``resize`` without crop)."""
        root = init_args.get("root")
        if root is None:
            raise ValueError("ImageFolderDataModule needs `root` (the folder holding train/ and val/).")
        train = Path(root).expanduser() / init_args.get("train_dir", "train")
        if not train.is_dir():
            raise FileNotFoundError(f"image folder {train} does not exist (expected {train}/<class>/<image files>).")
        described = super().describe(**{"crop_size": 224, **init_args})
        return {**described, "num_classes": len(class_folders(train))}

    @override
    def sample_files(self, split: str) -> Samples | None:
        """The files under ``root/<train_dir|val_dir|test_dir>/<class>/``; checked by :func:`scan_image_folder`."""
        if split == "train":
            classes, samples = scan_image_folder(self.root / self.train_dir)
            self.class_names, self.num_classes = classes, len(classes)
            return samples
        if split == "val":  # held out of train when the folder is not there
            folder = self.val_dir if self.val_dir and (self.root / self.val_dir).is_dir() else None
        else:  # tested on the validation files unless given
            folder = self.test_dir
        return None if folder is None else scan_image_folder(self.root / folder, self.class_names)[1]


def class_folders(folder: Path) -> list[str]:
    """The sorted names of the sub-folders of ``folder`` (none when it does not exist), hidden ones left out."""
    if not folder.is_dir():
        return []
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


__all__ = ["ImageFileDataset", "ImageFolderDataModule", "is_image_file", "scan_image_folder"]
