"""``DigitsDataModule``: scikit-learn's 8×8 handwritten digits, shipped with the package."""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import override

from lightning_deepfeat.data.base import seeded_split
from lightning_deepfeat.data.in_memory import InMemoryDataModule
from lightning_deepfeat.validation import check_choice, check_int, check_number


class DigitsDataModule(InMemoryDataModule):
    """The embedded default data set: 1,797 8×8 grey images of the digits 0–9.

    The images come from ``sklearn.datasets.load_digits`` (files inside the installed
    scikit-learn; nothing downloads). Pixels are integers 0–16, kept as uint8. A fixed
    seeded permutation (``test_seed``) holds out ``test_fraction`` as the test split;
    ``val_fraction`` of the rest is the validation split.

    ``translate=1`` (random shifts of ±1 pixel, zero-filled) with dropout in the model is
    the augmentation that takes a ConvNet to about 99.7% test accuracy here.

    Args:
        test_fraction: fraction of the 1,797 images held out for testing, in (0, 1).
        test_seed: seed of the test hold-out.
        **kwargs: the arguments of :class:`~lightning_deepfeat.data.InMemoryDataModule`
            (``translate``, ``hflip``, ``batch_size``, ...). Flips are off by default and
            make little sense for digits.
    """

    num_classes = 10
    image_shape = (1, 8, 8)
    class_names = [str(d) for d in range(10)]

    def __init__(self, test_fraction: float = 0.2, test_seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.test_fraction: float = check_number(
            "test_fraction", test_fraction, low=0, high=1, low_open=True, high_open=True
        )
        self.test_seed: int = check_int("test_seed", test_seed)

    @override
    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        check_choice("split", split, ("train", "test"))
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.uint8).unsqueeze(1)
        labels = torch.as_tensor(digits.target, dtype=torch.int64)
        train, test = seeded_split(labels.shape[0], self.test_fraction, self.test_seed)
        idx = test if split == "test" else train
        return images[idx].contiguous(), labels[idx].contiguous()
