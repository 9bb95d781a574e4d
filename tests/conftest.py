"""Fixtures shared by the test files, and where the other shared helpers live.

* ``conftest.py`` (this file): fixtures that several test files need. pytest hands one to
  any test (or fixture) that names it as an argument; nothing imports this file.

  - ``quiet_trainer``: a factory of Trainers that print and save nothing of their own;
  - ``generated_data``: small MNIST, Fashion-MNIST, CIFAR-10/100 and ImageFolder files in
    their real on-disk formats (nothing downloads);
  - ``digits``: the bundled digits data module.

* ``_data_files.py`` (writers of data files in each format), ``_callback_helpers.py`` (tiny
  modules and recording callbacks) and ``_scaling_helpers.py`` (runners of ``deepfeat`` and
  of 2-process runs): plain modules, imported by name (``from _callback_helpers import
  LRRecorder``). They stay modules because processes that a test starts import them too:
  ``ddp_spawn`` workers unpickle their classes, and ``deepfeat`` subprocesses load
  ``class_path: _scaling_helpers.RecordingPlateau`` (``_scaling_helpers.subprocess_env`` puts
  ``tests/`` on their ``PYTHONPATH``; pytest puts it on ``sys.path`` here). A fixture does not
  cross into another process.

* The markers ``slow`` and ``ddp`` are registered in one place, ``[tool.pytest.ini_options]``
  of ``pyproject.toml``, with the suite's warning filters.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch import Trainer

from _data_files import DataRoots, write_every_format
from lightning_deepfeat.data import DigitsDataModule


@pytest.fixture
def quiet_trainer(tmp_path: Path) -> Callable[..., Trainer]:
    """``quiet_trainer(**kwargs)``: a new Trainer that prints and saves nothing of its own.

    One CPU device, no logger, progress bar, model summary or checkpointing, and the test's
    ``tmp_path`` as ``default_root_dir`` (where ``ddp_spawn`` passes its weights back, for
    one). ``kwargs`` add Trainer arguments or override these (``enable_checkpointing=True``,
    ``default_root_dir=tmp_path / "run"``, ``accelerator="gpu"``, ...).
    """

    def make(**kwargs: Any) -> Trainer:
        options: dict[str, Any] = {
            "accelerator": "cpu",
            "devices": 1,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "enable_checkpointing": False,
            "default_root_dir": tmp_path,
        }
        return Trainer(**{**options, **kwargs})

    return make


@pytest.fixture
def generated_data(tmp_path: Path) -> DataRoots:
    """One small data set per on-disk format, written under ``tmp_path / "data"`` for this test.

    The folders, by data set: ``.mnist`` and ``.fashion`` (IDX), ``.cifar10`` and
    ``.cifar100`` (the pickled batches), ``.folder`` (an ImageFolder of JPEG and PNG files);
    see :func:`_data_files.write_every_format`.
    """
    return write_every_format(tmp_path / "data")


@pytest.fixture
def digits() -> DigitsDataModule:
    """``DigitsDataModule(batch_size=32)``, new for each test: the bundled 8×8 digits, nothing to download."""
    return DigitsDataModule(batch_size=32)
