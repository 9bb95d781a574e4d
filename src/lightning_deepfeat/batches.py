"""Batch types shared by the data modules and the models (a neutral module: it imports neither)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class IndexBatch(NamedTuple):
    """A training batch whose images are not gathered yet: indices into the split, and their labels.

    ``InMemoryBatchLoader`` yields these on the fast path. Lightning moves both tensors to
    the device like any tuple; the data module's ``on_after_batch_transfer`` then gathers and
    augments the images there in one pass (``InMemoryDataModule.gather_augmented``), so only a
    few bytes per sample cross to the accelerator. A model never sees one when the Trainer was
    given the data module (``trainer.fit(model, datamodule=dm)``).
    """

    indices: torch.Tensor
    labels: torch.Tensor


__all__ = ["IndexBatch"]
