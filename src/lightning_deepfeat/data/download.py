"""``Downloadable``: a data set whose files are found under ``root`` (or elsewhere) or fetched by torchvision.

Where the files come from is a concern of its own, independent of how the samples are
stored and batched: the mixin adds ``root`` and ``download`` to a storage base, e.g.
``class MNISTDataModule(Downloadable, InMemoryDataModule)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from lightning_deepfeat.data.in_memory import InMemoryDataModule
from lightning_deepfeat.validation import check_bool, check_path

DATA_ENV = "DEEPFEAT_DATA"


def default_download_root() -> Path:
    """Where ``download=True`` puts files without a ``root``: ``$DEEPFEAT_DATA`` or ``~/.cache/lightning_deepfeat``."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else Path.home() / ".cache" / "lightning_deepfeat"


class Downloadable:
    """Mixin: find the data set's files, or download them with torchvision's downloader.

    Folders searched, in order; the first that holds every file of :meth:`required_files` wins:

    1. ``root`` if given, then its :attr:`subfolders`. Nothing else is searched when
       ``root`` is given.
    2. ``$DEEPFEAT_DATA``, then its :attr:`subfolders`.
    3. :attr:`system_dirs` (e.g. what Debian's ``dataset-*`` packages install).

    With ``download=True`` and no folder found, ``torchvision.datasets.<torchvision_name>``
    downloads into ``root`` (or ``$DEEPFEAT_DATA`` or ``~/.cache/lightning_deepfeat``), which
    leaves the files in the first of :attr:`subfolders`. Otherwise :meth:`locate` raises
    ``FileNotFoundError`` listing every folder searched and :meth:`ways_to_get` the files.

    Args:
        root: data folder (see above); ``None`` searches the other places.
        download: fetch the files with torchvision's downloader when they are missing.
        **kwargs: the arguments of the storage base it is mixed into.
    """

    #: the ``torchvision.datasets`` class whose ``download=True`` fetches the files
    torchvision_name: ClassVar[str] = ""
    #: sub-folders of ``root`` / ``$DEEPFEAT_DATA`` searched after the folder itself; the downloader fills the first
    subfolders: ClassVar[tuple[str, ...]] = ()
    #: folders searched last, when ``root`` is not given
    system_dirs: ClassVar[tuple[str, ...]] = ()
    #: name endings tried for each required file, in order (``""``: the name itself)
    file_suffixes: ClassVar[tuple[str, ...]] = ("",)

    def __init__(self, root: str | os.PathLike[str] | None = None, download: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        path = check_path("root", root, allow_none=True)
        self.root: Path | None = None if path is None else path.expanduser()
        self.download: bool = check_bool("download", download)

    def required_files(self) -> list[str]:
        """Names of the files a folder must hold (each with one of :attr:`file_suffixes`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement required_files().")

    def ways_to_get(self) -> list[str]:
        """How a user gets the files, for the ``FileNotFoundError`` message."""
        return [
            f"pass `download=True` (torchvision downloads them into root, ${DATA_ENV} or ~/.cache/lightning_deepfeat)",
            f"set `root` / ${DATA_ENV} to a folder that has them",
        ]

    def candidate_dirs(self) -> list[Path]:
        """Every folder searched, in order."""
        if self.root is not None:
            bases = [self.root]
        else:
            env = os.environ.get(DATA_ENV)
            bases = [Path(env).expanduser()] if env else []
        dirs = [d for base in bases for d in (base, *(base / sub for sub in self.subfolders))]
        return dirs if self.root is not None else dirs + [Path(d) for d in self.system_dirs]

    def find_file(self, folder: Path, name: str) -> Path | None:
        """``folder/name`` with the first of :attr:`file_suffixes` that exists, else ``None``."""
        for suffix in self.file_suffixes:
            if (folder / (name + suffix)).is_file():
                return folder / (name + suffix)
        return None

    def _holds_all(self, folder: Path) -> bool:
        return all(self.find_file(folder, name) is not None for name in self.required_files())

    def locate(self) -> Path:
        """The first candidate folder holding every required file; downloads if asked; else ``FileNotFoundError``."""
        for folder in self.candidate_dirs():
            if self._holds_all(folder):
                return folder
        if self.download:
            target = self.root if self.root is not None else default_download_root()
            import torchvision.datasets as tvd

            getattr(tvd, self.torchvision_name)(str(target), train=True, download=True)
            folder = target / self.subfolders[0] if self.subfolders else target
            if self._holds_all(folder):
                return folder
        suffixes = [s for s in self.file_suffixes if s]
        shown = ", ".join(name + (f"[{'|'.join(suffixes)}]" if suffixes else "") for name in self.required_files())
        looked = "\n".join(f"  - {d}" for d in self.candidate_dirs())
        raise FileNotFoundError(
            f"{type(self).__name__}: no folder holds all of {shown}. Looked in:\n"
            f"{looked or f'  (nowhere: neither `root` nor ${DATA_ENV} is set)'}\n"
            f"To get them: {'; or '.join(self.ways_to_get())}."
        )


class FileDataModule(Downloadable, InMemoryDataModule):
    """Deprecated: the 0.1.0 name of ``Downloadable`` mixed into :class:`InMemoryDataModule`; kept importable."""


__all__ = ["DATA_ENV", "Downloadable", "FileDataModule", "default_download_root"]
