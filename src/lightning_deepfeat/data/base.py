r"""``ImageDataModule``: what every data module shares, whatever holds the images.

The seeded train/val split, per-channel normalisation, loaders that hand out either raw
batches (finished on the device) or finished ones, the augmentation pipeline and its
seeded stream, the checkpointed state, and :meth:`~ImageDataModule.on_after_batch_transfer`.
Where the images live is the job of a storage base: :class:`~lightning_deepfeat.data.InMemoryDataModule`
(uint8 tensors in memory) or :class:`~lightning_deepfeat.data.FilePerSampleDataModule`
(one file per sample, decoded by workers).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.trainer.states import TrainerStatus
from typing_extensions import override

from lightning_deepfeat.data.functional import PaddingMode
from lightning_deepfeat.data.seeding import mix_seed
from lightning_deepfeat.data.transforms import (
    BatchTransform,
    CenterCrop,
    RandomCrop,
    RandomHorizontalFlip,
    RandomTranslate,
)
from lightning_deepfeat.validation import (
    check_bool,
    check_choice,
    check_each,
    check_int,
    check_number,
    check_pair,
    fail,
)


def seeded_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(kept, held)`` indices of ``n`` samples: ``held`` is a seeded random ``fraction`` of them.

    With :math:`\pi` the permutation drawn from ``seed`` and :math:`m = \mathrm{round}(f n)`:
    ``held`` :math:`= \pi_{0..m-1}`, ``kept`` :math:`= \pi_{m..n-1}`. The same seed gives the same
    split in every run and on every process.
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_held = int(round(fraction * n))
    return order[n_held:], order[:n_held]


def check_labels(labels: torch.Tensor, num_classes: int, where: str) -> None:
    """Raise ``ValueError`` (``"<where> labels must lie in [0, K), found [lo, hi]."``) for a label out of range."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{where} labels must lie in [0, {num_classes}), found [{int(labels.min())}, {int(labels.max())}]."
        )


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-channel mean :math:`\mu_c` and std :math:`\sigma_c = \sqrt{E[x^2] - \mu_c^2}` over all pixels, in chunks."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.float64).transpose(0, 1).reshape(channels, -1)
        total += x.sum(dim=1)
        total_sq += (x * x).sum(dim=1)
        count += x.shape[1]
    mean = total / max(count, 1)
    var = (total_sq / max(count, 1) - mean * mean).clamp_min(0.0)
    return mean.float(), var.sqrt().float().clamp_min(1e-6)


def _check_channels(name: str, value: Any) -> list[float] | None:
    """``mean`` / ``std``: ``None`` or a non-empty sequence of finite numbers, one per channel."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise fail(name, "a non-empty sequence of floats (one per channel) or None", value)
    return check_each(name, value, check_number)


class ImageDataModule(LightningDataModule):
    r"""The base of every data module: splits, normalisation, loaders, augmentation and its state.

    A storage base derives from it and implements four methods:
    :meth:`setup_splits` (read what a stage needs), :meth:`images_for_stats` (training
    images for mean/std), :meth:`make_loader` (the batches of a split) and calls
    :meth:`set_stored_shape` at the end of its ``__init__``. Data sets derive from a storage
    base, not from this class.

    Batches stay uint8 until :meth:`on_after_batch_transfer`, which runs on the accelerator:

    * training only (``trainer.training``): :meth:`augment`: the ``train_transforms`` in
      order: a random ``crop_size`` crop (:class:`~lightning_deepfeat.data.RandomCrop`), a
      random shift by up to ``translate`` pixels (:class:`~lightning_deepfeat.data.RandomTranslate`),
      a horizontal flip with probability ½ (``hflip``);
    * validation, test and predict: :meth:`eval_transform`: the centre ``crop_size`` crop
      when ``crop_size`` is set, nothing else;
    * every stage: :math:`x \mapsto (x - \mu_c) / \sigma_c` in float32, then the dtype of
      the Trainer's precision.

    ``train_transforms`` is a plain list of :class:`~lightning_deepfeat.data.BatchTransform`;
    a subclass may append its own after ``super().__init__()``.

    Augmentation randomness: batch :math:`k` of process ``rank`` draws from a generator on
    the batch's device seeded with :math:`\mathrm{hash}(s, \mathrm{rank}, k)` (:func:`mix_seed`),
    where :math:`s` is ``seed`` (default: ``torch.initial_seed()`` at :meth:`setup`, which
    ``seed_everything`` sets). So a seeded run is reproducible, each DDP process draws a
    different stream, and :meth:`state_dict` (saved in checkpoints) only needs
    :math:`(s, k)` to resume the stream exactly, on every rank.

    Args:
        batch_size: samples per batch and process.
        num_workers: worker processes (for data sets read from files per sample).
        val_fraction: fraction of the training split held out for validation, in [0, 1).
        split_seed: seed of the train/val split (fixed, so every run uses the same split).
        mean: per-channel mean in raw pixel units; ``None`` computes it on the train split.
        std: per-channel std in raw pixel units; ``None`` computes it on the train split.
        eval_batch_size: batch size for val/test/predict (default: ``batch_size``).
        shuffle_seed: base seed of the per-epoch shuffling.
        translate: maximum shift ``s`` (or ``(s_y, s_x)``) in pixels of the training
            translation; 0 turns it off.
        hflip: flip training images left-right with probability ½.
        padding_mode: how translation fills pixels moved in from outside: ``"zeros"``,
            ``"reflect"`` or ``"replicate"``.
        crop_size: ``h`` or ``(h, w)``: random crops of this size in training, the centre
            crop in evaluation; ``None`` keeps the stored size.
        seed: base seed of the augmentation; ``None`` takes ``torch.initial_seed()``.
    """

    num_classes: int = 0
    #: shape ``(C, H, W)`` of one image as stored, before any crop (the instance's is after the crop)
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
        translate: int | tuple[int, int] = 0,
        hflip: bool = False,
        padding_mode: PaddingMode = "zeros",
        crop_size: int | tuple[int, int] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.batch_size: int = check_int("batch_size", batch_size, low=1)
        self.num_workers: int = check_int("num_workers", num_workers, low=0)
        self.val_fraction: float = check_number("val_fraction", val_fraction, low=0, high=1, high_open=True)
        self.split_seed: int = check_int("split_seed", split_seed)
        self.eval_batch_size: int = check_int("eval_batch_size", eval_batch_size, low=1, allow_none=True) or batch_size
        mean, std = _check_channels("mean", mean), _check_channels("std", std)
        if std is not None and any(s <= 0 for s in std):
            raise fail("std", "positive for every channel", std)
        self.shuffle_seed: int = check_int("shuffle_seed", shuffle_seed)
        self.translate = check_pair("translate", translate)
        self.hflip: bool = check_bool("hflip", hflip)
        self.padding_mode: PaddingMode = check_choice("padding_mode", padding_mode, PaddingMode)
        self.crop_size = None if crop_size is None else check_pair("crop_size", crop_size, low=1)
        self.seed: int | None = check_int("seed", seed, allow_none=True)
        # the constructor arguments (of the subclass too) go into checkpoints: `deepfeat test --ckpt_path X` rebuilds
        # the data module from them; paths as strings, so that checkpoints stay loadable with weights_only=True
        self.save_hyperparameters()
        for key, value in list(self.hparams.items()):
            if isinstance(value, os.PathLike):
                self.hparams[key] = os.fspath(value)
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32)
        self._stored_shape: tuple[int, ...] = ()
        # the augmentation pipeline, built once
        self.train_transforms: list[BatchTransform] = []
        if self.crop_size is not None:
            self.train_transforms.append(RandomCrop(self.crop_size))
        if self.translate != (0, 0):
            self.train_transforms.append(RandomTranslate(self.translate, self.padding_mode))
        if self.hflip:
            self.train_transforms.append(RandomHorizontalFlip(0.5))
        self.eval_transforms: list[BatchTransform] = [CenterCrop(self.crop_size)] if self.crop_size is not None else []
        self._mean_std_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._augment_seed: int | None = self.seed
        self._augmented_batches = 0
        self._generators: dict[torch.device, torch.Generator] = {}

    # ----------------------------------------------------------------- shapes
    def set_stored_shape(self, stored: Sequence[int]) -> None:
        """Record the shape ``(C, H, W)`` of one image as stored, before crops; storage bases call it in ``__init__``.

        Checks ``crop_size`` and a reflect-padded ``translate`` against it and sets the
        instance's ``image_shape`` (after the crop). An empty shape (not known before the
        data is read) skips the checks that need it.
        """
        stored = tuple(int(d) for d in stored)
        self._stored_shape = stored
        crop = self.crop_size
        if crop is not None and stored and (crop[0] > stored[-2] or crop[1] > stored[-1]):
            given = self.hparams.get("crop_size", crop)
            raise ValueError(f"`crop_size` must fit in the stored images {stored[-2:]}, got {given!r}.")
        out_hw = crop if crop is not None else stored[-2:]
        shift = self.translate
        if self.padding_mode == "reflect" and out_hw and (shift[0] >= out_hw[0] or shift[1] >= out_hw[1]):
            raise ValueError(
                f"`translate`={self.hparams.get('translate', shift)!r} with `padding_mode`='reflect' must be smaller "
                f"than the image {tuple(out_hw)}."
            )
        if stored:
            self.image_shape = (stored[0], *crop) if crop is not None else stored

    def stored_shape(self) -> tuple[int, ...]:
        """Shape ``(C, H, W)`` of one image as loaded, before crops (see :meth:`set_stored_shape`)."""
        return self._stored_shape

    @classmethod
    def describe(cls, **init_args: Any) -> dict[str, Any]:
        """``{"num_classes", "image_shape"}`` that an instance built with ``init_args`` will have.

        The CLI calls it at parse time to link the model's ``num_classes`` and
        ``input_shape``; unknown arguments are ignored. With ``crop_size`` the image
        shape is ``(C, h, w)`` of the crop.
        """
        shape = tuple(cls.image_shape)
        crop = init_args.get("crop_size")
        if crop is not None and shape:
            shape = (shape[0], *check_pair("crop_size", crop, low=1))
        return {"num_classes": int(cls.num_classes), "image_shape": shape}

    # ----------------------------------------------------------------- what a storage base implements
    def setup_splits(self, stage: str | None) -> None:
        """Read what ``stage`` needs (``"fit"``/``"validate"``: train and val; ``"test"``/``"predict"``: test)."""
        raise NotImplementedError(f"{type(self).__name__} must implement setup_splits(stage).")

    def images_for_stats(self) -> torch.Tensor:
        """uint8 training images ``(N, C, H, W)`` to estimate the per-channel mean and std from."""
        raise NotImplementedError(f"{type(self).__name__} must implement images_for_stats().")

    def make_loader(self, split: str, train: bool, device_side: bool) -> Any:
        """The batches of ``split``: raw for the device when ``device_side``, else finished (see :meth:`loader`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_loader(split, train, device_side).")

    # ----------------------------------------------------------------- override points of a data set
    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """Training augmentation of a uint8 batch on its device: the ``train_transforms`` in order.

        All of them draw from :meth:`augment_generator` (one seeding per batch).
        """
        if not self.train_transforms:
            return images
        generator = self.augment_generator(images.device)
        for transform in self.train_transforms:
            images = transform(images, generator)
        return images

    def eval_transform(self, images: torch.Tensor) -> torch.Tensor:
        """Deterministic evaluation transform: the centre crop when ``crop_size`` is set."""
        for transform in self.eval_transforms:
            images = transform(images)
        return images

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        r"""``(x - mean) / std`` per channel, in float32, on the batch's device: :math:`(x - \mu_c) / \sigma_c`."""
        if self.mean is None or self.std is None:
            raise RuntimeError(f"{type(self).__name__}: mean/std unknown; call setup() first.")
        device = images.device
        if device not in self._mean_std_cache:
            shape = (1, -1) + (1,) * (images.dim() - 2)
            self._mean_std_cache[device] = (self.mean.to(device).view(shape), self.std.to(device).view(shape))
        mean, std = self._mean_std_cache[device]
        return images.to(torch.float32, copy=True).sub_(mean).div_(std)

    # ----------------------------------------------------------------- augmentation stream and state
    def _rank(self) -> int:
        trainer = self.trainer
        return int(getattr(trainer, "global_rank", 0)) if trainer is not None else 0

    def augment_generator(self, device: torch.device | str) -> torch.Generator:
        """The generator for the next training batch on ``device``, seeded with ``hash(seed, rank, batch)``.

        Each call advances the batch counter (part of :meth:`state_dict`).
        """
        if self._augment_seed is None:
            self._augment_seed = int(torch.initial_seed())
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        generator = self._generators.get(device)
        if generator is None:
            generator = self._generators[device] = torch.Generator(device=device)
        generator.manual_seed(mix_seed(self._augment_seed, self._rank(), self._augmented_batches))
        self._augmented_batches += 1
        return generator

    @override
    def state_dict(self) -> dict[str, Any]:
        """Augmentation stream position: base seed and number of augmented batches (same on every rank)."""
        return {"augment_seed": self._augment_seed, "augmented_batches": self._augmented_batches}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the augmentation stream where :meth:`state_dict` left it."""
        if "augment_seed" in state_dict and state_dict["augment_seed"] is not None:
            self._augment_seed = int(state_dict["augment_seed"])
        self._augmented_batches = int(state_dict.get("augmented_batches", 0))

    # ----------------------------------------------------------------- setup
    @override
    def setup(self, stage: str | None = None) -> None:
        """Read what ``stage`` needs (:meth:`setup_splits`); mean/std from :meth:`images_for_stats` unless given."""
        if self._augment_seed is None:
            self._augment_seed = int(torch.initial_seed())
        self.setup_splits(stage)
        if self.mean is None or self.std is None:
            mean, std = channel_stats(self.images_for_stats())
            self.mean = mean if self.mean is None else self.mean
            self.std = std if self.std is None else self.std

    def split_train_val(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(train, val)`` indices of ``n`` training samples: ``val_fraction`` held out, seeded by ``split_seed``."""
        return seeded_split(n, self.val_fraction, self.split_seed)

    # ----------------------------------------------------------------- loaders
    def attached(self) -> bool:
        """Whether a running Trainer was given this data module (``trainer.fit(model, datamodule=dm)``).

        Only then does Lightning call this module's :meth:`on_after_batch_transfer`, which
        finishes the batches on the device; otherwise the loaders finish them themselves.
        """
        trainer = self.trainer
        if trainer is None or getattr(trainer, "datamodule", None) is not self:
            return False
        return trainer.state.status == TrainerStatus.RUNNING

    def overfitting(self) -> bool:
        """``Trainer(overfit_batches=...)``: one fixed set of training batches, neither shuffled nor augmented."""
        return self.attached() and bool(getattr(self.trainer, "overfit_batches", 0))

    def loader(self, split: str, train: bool, device_side: bool | None = None) -> Any:
        """The batches of ``split`` (``"train"``, ``"val"`` or ``"test"``), shuffled and augmented when ``train``.

        ``device_side=False``: finished batches ``(images, labels)``: float32 images
        ``(B, *image_shape)``, augmented when ``train``, normalised; any model and any
        loop consume them. ``device_side=True``: raw batches for the fast path, finished
        by :meth:`on_after_batch_transfer` on the accelerator (uint8 images, or an
        ``IndexBatch`` of sample indices for an in-memory training split).
        ``None`` (what the ``*_dataloader`` hooks use): ``device_side`` exactly when
        :meth:`attached` to a running Trainer.
        """
        return self.make_loader(split, train, self.attached() if device_side is None else device_side)

    @override
    def train_dataloader(self) -> Any:
        """Shuffled training batches; see :meth:`loader` for what they hold on their own and under a Trainer."""
        return self.loader("train", train=True)

    @override
    def val_dataloader(self) -> Any:
        """Validation batches, in order; see :meth:`loader`."""
        return self.loader("val", train=False)

    @override
    def test_dataloader(self) -> Any:
        """Test batches, in order; see :meth:`loader`."""
        return self.loader("test", train=False)

    @override
    def predict_dataloader(self) -> Any:
        """The test split's batches, in order, for ``trainer.predict``; see :meth:`loader`."""
        return self.loader("test", train=False)

    # ----------------------------------------------------------------- finishing batches
    def finish_batch(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """A uint8 batch made ready for the model: :meth:`augment` (``train``) or :meth:`eval_transform`, normalised."""
        images = self.augment(images) if train else self.eval_transform(images)
        return self._to_model_dtype(self.normalize(images))

    def _to_model_dtype(self, images: torch.Tensor) -> torch.Tensor:
        """The dtype the Trainer's precision feeds the model (``bf16-true``: bfloat16, ``64-true``: float64).

        Lightning converts a batch before the transfer, so a batch normalised after it
        must be converted here, through the precision plugin's public ``convert_input``.
        """
        trainer = self.trainer
        if trainer is None or not self.attached():
            return images
        converted: torch.Tensor = trainer.precision_plugin.convert_input(images)
        return converted

    @override
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Finish a batch on its device: augment in training, normalise, cast to the precision.

        Handles ``(uint8 images, labels)`` from the loaders, ``(float images, labels)``
        already finished by a loader used on its own (only the precision is left), and a
        bare image tensor (the model's ``example_input_array``, for summaries and graphs).
        """
        training = self.trainer is not None and self.trainer.training
        if isinstance(batch, torch.Tensor):
            return self._to_model_dtype(batch) if batch.is_floating_point() else self.finish_batch(batch, train=False)
        images, labels = batch
        if images.is_floating_point():
            return self._to_model_dtype(images), labels
        return self.finish_batch(images, train=training and not self.overfitting()), labels


__all__ = ["ImageDataModule", "channel_stats", "check_labels", "seeded_split"]
