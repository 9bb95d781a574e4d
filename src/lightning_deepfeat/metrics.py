"""Metrics shared by the models and the callbacks."""

from __future__ import annotations

import torch
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override


class ClassificationError(MulticlassAccuracy):
    r"""Top-k misclassification rate, :math:`1 - \mathrm{accuracy}`, micro-averaged over samples.

    Its states are those of :class:`~torchmetrics.classification.MulticlassAccuracy`
    (the confusion counts ``tp``, ``fp``, ``tn``, ``fn``), so with ``average="micro"``
    the running error after any number of updates is ``fn.sum() / (tp + fn).sum()``.
    """

    @override
    def compute(self) -> torch.Tensor:
        return 1.0 - super().compute()


__all__ = ["ClassificationError"]
