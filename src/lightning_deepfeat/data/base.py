"""``ImageClassificationDataModule``: the base of every data module, in memory and on device."""

from __future__ import annotations

import os
from pathlib import Path

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.trainer.states import TrainerStatus

from lightning_deepfeat.data.loader import IndexBatch, InMemoryBatchLoader
from lightning_deepfeat.data.transforms import (
    PADDING_MODES,
    CenterCrop,
    RandomCrop,
    RandomHorizontalFlip,
    RandomTranslate,
    _pair,
    crop_batch,
    pad_into,
)

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """Hash integers into one 63-bit seed (SplitMix64 steps), so nearby inputs give unrelated streams."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state >> 1


class ImageClassificationDataModule(LightningDataModule):
    r"""Base data module: uint8 images held in memory, augmented and normalised on the device.

    Subclasses implement :meth:`load_split` (return ``(images uint8 (N, C, H, W), labels
    int64 (N,))`` for ``"train"`` or ``"test"``) and set the class attributes
    ``num_classes``, ``image_shape`` (the stored size, before any crop) and
    ``class_names``. Everything else is done here: the seeded train/val split,
    per-channel normalisation from the training split, DDP shares, batching by one index
    gather (:class:`InMemoryBatchLoader`) and augmentation.

    Batches stay uint8 until :meth:`on_after_batch_transfer`, which runs on the
    accelerator. With ``gather_on_device`` (the default) a training batch crosses to the
    accelerator as an :class:`IndexBatch` (sample indices and labels) and is gathered
    there by :meth:`gather_augmented`, out of a copy of the training split kept on that
    device (padded once by ``translate`` pixels), with the first augmentation fused into
    the gather: each output byte is written once. The result is identical to gathering
    first and then calling :meth:`augment`.

    * training only (``trainer.training``): :meth:`augment`, i.e. a random ``crop_size``
      crop (:class:`RandomCrop`), a random shift by up to ``translate`` pixels
      (:class:`RandomTranslate`), then a horizontal flip with probability ½;
    * validation, test and predict: the centre ``crop_size`` crop (:class:`CenterCrop`)
      when ``crop_size`` is set, nothing else;
    * every stage: :math:`x \mapsto (x - \mu_c) / \sigma_c` in float32.

    Override points: :meth:`load_split` (required), :meth:`augment` (a subclass that
    overrides it gets the gathered uint8 batch and does its own augmentation; the fused
    gather is then skipped), :meth:`eval_transform`, :meth:`normalize`.

    Augmentation randomness: batch :math:`k` of process ``rank`` draws from a generator on
    the batch's device seeded with :math:`\mathrm{hash}(s, \mathrm{rank}, k)`, where
    :math:`s` is ``seed`` (default: ``torch.initial_seed()`` at :meth:`setup`, which
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
        gather_on_device: training batches leave the loader as :class:`IndexBatch` and
            are gathered and augmented in one pass on the accelerator, out of a copy of
            the training split held there (its uint8 size, plus the translation padding).
            ``False``: the loader gathers the images on the CPU and they are augmented
            after the transfer (less accelerator memory, more copies and transfer).
    """

    num_classes: int = 0
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
        padding_mode: str = "zeros",
        crop_size: int | tuple[int, int] | None = None,
        seed: int | None = None,
        gather_on_device: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"`num_workers` must be an int >= 0, got {num_workers!r}.")
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"`val_fraction` must be in [0, 1), got {val_fraction!r}.")
        if eval_batch_size is not None and (
            isinstance(eval_batch_size, bool) or not isinstance(eval_batch_size, int) or eval_batch_size <= 0
        ):
            raise ValueError(f"`eval_batch_size` must be a positive int or None, got {eval_batch_size!r}.")
        for name, value in (("mean", mean), ("std", std)):
            if value is not None and (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value):
                raise ValueError(f"`{name}` must be a non-empty sequence of floats (one per channel) or None, got {value!r}.")
        if std is not None and any(s <= 0 for s in std):
            raise ValueError(f"`std` must be positive for every channel, got {list(std)!r}.")
        if not isinstance(hflip, bool):
            raise ValueError(f"`hflip` must be True or False, got {hflip!r}.")
        if not isinstance(gather_on_device, bool):
            raise ValueError(f"`gather_on_device` must be True or False, got {gather_on_device!r}.")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"`padding_mode` must be one of {PADDING_MODES}, got {padding_mode!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an int or None, got {seed!r}.")
        shift = _pair("translate", translate)
        stored = tuple(self.stored_shape())
        if crop_size is not None:
            crop = _pair("crop_size", crop_size, minimum=1)
            if stored and (crop[0] > stored[-2] or crop[1] > stored[-1]):
                raise ValueError(
                    f"`crop_size` must fit in the stored images {stored[-2:]}, got {crop_size!r}."
                )
        else:
            crop = None
        out_hw = crop if crop is not None else tuple(stored[-2:])
        if padding_mode == "reflect" and out_hw and (shift[0] >= out_hw[0] or shift[1] >= out_hw[1]):
            raise ValueError(
                f"`translate`={translate!r} with `padding_mode`='reflect' must be smaller than the image {out_hw}."
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = float(val_fraction)
        self.split_seed = split_seed
        self.eval_batch_size = eval_batch_size or batch_size
        self.shuffle_seed = shuffle_seed
        self.translate = shift
        self.hflip = hflip
        self.padding_mode = padding_mode
        self.crop_size = crop
        self.seed = seed
        self.gather_on_device = gather_on_device
        # the constructor arguments (of the subclass too) go into checkpoints: `deepfeat test --ckpt_path X` rebuilds
        # the data module from them; paths as strings, so that checkpoints stay loadable with weights_only=True
        self.save_hyperparameters()
        for key, value in list(self.hparams.items()):
            if isinstance(value, os.PathLike):
                self.hparams[key] = os.fspath(value)
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32)
        if stored:
            self.image_shape = (stored[0], *crop) if crop is not None else stored
        # the augmentation pipeline, built once
        self.train_transforms: list[torch.nn.Module] = []
        if crop is not None:
            self.train_transforms.append(RandomCrop(crop))
        if shift != (0, 0):
            self.train_transforms.append(RandomTranslate(shift, padding_mode))
        if hflip:
            self.train_transforms.append(RandomHorizontalFlip(0.5))
        self.eval_transforms: list[torch.nn.Module] = [CenterCrop(crop)] if crop is not None else []
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._mean_std_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._augment_seed: int | None = seed
        self._augmented_batches = 0
        self._generators: dict[torch.device, torch.Generator] = {}
        # training split on each device it is gathered on: (source images, (padding, mode), split tensor)
        self._train_sources: dict[torch.device, tuple[torch.Tensor, tuple[tuple[int, int], str], torch.Tensor]] = {}

    # ----------------------------------------------------------------- shapes
    def stored_shape(self) -> tuple[int, ...]:
        """Shape ``(C, H, W)`` of one image as loaded, before crops (the class attribute ``image_shape``)."""
        return tuple(type(self).image_shape)

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
            shape = (shape[0], *_pair("crop_size", crop, minimum=1))
        return {"num_classes": int(cls.num_classes), "image_shape": shape}

    # ----------------------------------------------------------------- override points
    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(images, labels)`` of the ``"train"`` or ``"test"`` split. Subclasses implement this."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_split(split).")

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """Training augmentation of a uint8 batch on its device: crop, translate, flip (as configured)."""
        if not self.train_transforms:
            return images
        generator = self.augment_generator(images.device)
        for transform in self.train_transforms:
            images = transform(images, generator)
        return images

    def gather_augmented(self, indices: torch.Tensor) -> torch.Tensor:
        r"""Training images ``indices`` of the train split, augmented, on ``indices``' device.

        Equal, bit for bit, to ``self.augment(train_images[indices])``, but cheaper: the
        first training transform is fused into the gather. For :class:`RandomTranslate`
        the source is the split padded once by the maximum shift, and the shifted image
        :math:`n` is the window at :math:`(s_y - dy_n, s_x - dx_n)` of padded image
        ``indices[n]``; for :class:`RandomCrop` it is the window at the drawn corner of
        the stored image. Both are one :func:`crop_batch` with ``index=``. The remaining
        transforms (a flip, or a translation after a crop) follow on the gathered batch.
        A subclass that overrides :meth:`augment` gets a plain gather and its own
        :meth:`augment`.
        """
        if "train" not in self.splits:
            raise RuntimeError(f"{type(self).__name__}: the train split is not set up; call setup('fit') first.")
        device = indices.device
        transforms = self.train_transforms
        overridden = type(self).augment is not ImageClassificationDataModule.augment
        first = transforms[0] if transforms and not overridden else None
        fuse_translate = isinstance(first, RandomTranslate) and first.p > 0.0 and first.max_shift != (0, 0)
        pad = first.max_shift if fuse_translate else (0, 0)
        source = self._train_source(device, pad, first.padding_mode if fuse_translate else "zeros")
        if fuse_translate or isinstance(first, RandomCrop):
            generator = self.augment_generator(device)
            height, width = self.splits["train"][0].shape[-2:]
            if fuse_translate:
                dx, dy = first.sample_offsets(indices.numel(), generator, device)
                images = crop_batch(source, pad[0] - dy, pad[1] - dx, (height, width), index=indices)
            else:
                top, left = first.sample_corners((height, width), indices.numel(), generator, device)
                images = crop_batch(source, top, left, first.size, index=indices)
            for transform in transforms[1:]:
                images = transform(images, generator)
            return images
        return self.augment(source.index_select(0, indices))

    def _train_source(self, device: torch.device, pad: tuple[int, int], padding_mode: str) -> torch.Tensor:
        """The training split on ``device``, padded by ``pad``: built on first use, then reused."""
        split = self.splits["train"][0]
        cached = self._train_sources.get(device)
        key = (pad, padding_mode if pad != (0, 0) else "zeros")
        if cached is not None and cached[1] == key and cached[2] is split:
            return cached[0]
        images = split.to(device).contiguous()
        if pad == (0, 0):
            source = images
        else:  # written in place: F.pad would go through float for uint8 reflect
            n, c, height, width = images.shape
            buffer = images.new_empty((n, c, height + 2 * pad[0], width + 2 * pad[1]))
            source = pad_into(images, pad, padding_mode, buffer)
        self._train_sources[device] = (source, key, split)
        return source

    def eval_transform(self, images: torch.Tensor) -> torch.Tensor:
        """Deterministic evaluation transform: the centre crop when ``crop_size`` is set."""
        for transform in self.eval_transforms:
            images = transform(images)
        return images

    # ----------------------------------------------------------------- augmentation RNG
    def _rank(self) -> int:
        trainer = self.trainer
        return int(getattr(trainer, "global_rank", 0)) if trainer is not None else 0

    def augment_generator(self, device: torch.device) -> torch.Generator:
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

    def state_dict(self) -> dict[str, Any]:
        """Augmentation stream position: base seed and number of augmented batches (same on every rank)."""
        return {"augment_seed": self._augment_seed, "augmented_batches": self._augmented_batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the augmentation stream where :meth:`state_dict` left it."""
        if "augment_seed" in state_dict and state_dict["augment_seed"] is not None:
            self._augment_seed = int(state_dict["augment_seed"])
        self._augmented_batches = int(state_dict.get("augmented_batches", 0))

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        if self._augment_seed is None:
            self._augment_seed = int(torch.initial_seed())
        if "train" not in self.splits and stage in (None, "fit", "validate"):
            images, labels = self.load_split("train")
            self._check_split(images, labels, "train")
            n_val = int(round(self.val_fraction * labels.shape[0]))
            order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(self.split_seed))
            train_idx, val_idx = order[n_val:], order[:n_val]
            self.splits["train"] = (images[train_idx], labels[train_idx])
            self.splits["val"] = (images[val_idx], labels[val_idx])
        if "test" not in self.splits and stage in (None, "test", "predict"):
            images, labels = self.load_split("test")
            self._check_split(images, labels, "test")
            self.splits["test"] = (images, labels)
        if self.mean is None or self.std is None:
            if "train" in self.splits:
                train_images = self.splits["train"][0]
            else:  # test-only run without given mean/std: statistics still come from the training split
                train_images, train_labels = self.load_split("train")
                self._check_split(train_images, train_labels, "train")
                n_val = int(round(self.val_fraction * train_labels.shape[0]))
                order = torch.randperm(train_labels.shape[0], generator=torch.Generator().manual_seed(self.split_seed))
                train_images = train_images[order[n_val:]]
            mean, std = self._channel_stats(train_images)
            self.mean = mean if self.mean is None else self.mean
            self.std = std if self.std is None else self.std

    def _check_split(self, images: torch.Tensor, labels: torch.Tensor, split: str) -> None:
        name = type(self).__name__
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"{name}: {split} images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}.")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{name}: {split} has {images.shape[0]} images but {labels.shape[0]} labels.")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"{name}: {split} labels must lie in [0, {self.num_classes}), "
                f"found [{int(labels.min())}, {int(labels.max())}]."
            )

    # kept for subclasses written against the first version
    def _check_labels(self, labels: torch.Tensor, split: str) -> None:
        self._check_split(torch.zeros((labels.shape[0], 1, 1, 1), dtype=torch.uint8), labels, split)

    @staticmethod
    def _channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
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

    def _overfitting(self) -> bool:
        """``Trainer(overfit_batches=...)``: one fixed set of training batches, neither shuffled nor augmented."""
        return self.attached() and bool(getattr(self.trainer, "overfit_batches", 0))

    def loader(self, split: str, train: bool, device_side: bool | None = None) -> Any:
        """The batches of ``split`` (``"train"``, ``"val"`` or ``"test"``), shuffled and augmented when ``train``.

        ``device_side=False``: finished batches ``(images, labels)``: float32 images
        ``(B, *image_shape)``, augmented when ``train``, normalised; any model and any
        loop consume them. ``device_side=True``: raw batches for the fast path, finished
        by :meth:`on_after_batch_transfer` on the accelerator (uint8 images, or, for
        training with ``gather_on_device``, an :class:`IndexBatch` of sample indices).
        ``None`` (what the ``*_dataloader`` hooks use): ``device_side`` exactly when
        :meth:`attached` to a running Trainer.
        """
        if split not in self.splits:
            raise RuntimeError(f"{type(self).__name__}: split {split!r} is not set up; call setup() first.")
        if device_side is None:
            device_side = self.attached()
        images, labels = self.splits[split]
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        fetch = None
        if not device_side:
            if train:
                fetch = self._finished_train_batch
            else:
                def fetch(indices: torch.Tensor) -> torch.Tensor:
                    return self.finish_batch(images.index_select(0, indices), train=False)
        return InMemoryBatchLoader(
            images,
            labels,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train and not self._overfitting(),
            seed=self.shuffle_seed,
            num_replicas=world,
            rank=rank,
            pad_to_equal=train,
            yield_indices=train and device_side and self.gather_on_device,
            fetch=fetch,
        )

    def _finished_train_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self._to_model_dtype(self.normalize(self.gather_augmented(indices)))

    def train_dataloader(self) -> Any:
        """Shuffled training batches; see :meth:`loader` for what they hold on their own and under a Trainer."""
        return self.loader("train", train=True)

    def val_dataloader(self) -> Any:
        """Validation batches, in order; see :meth:`loader`."""
        return self.loader("val", train=False)

    def test_dataloader(self) -> Any:
        """Test batches, in order; see :meth:`loader`."""
        return self.loader("test", train=False)

    def predict_dataloader(self) -> Any:
        """The test split's batches, in order, for ``trainer.predict``; see :meth:`loader`."""
        return self.loader("test", train=False)

    # ----------------------------------------------------------------- on device
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

    def teardown(self, stage: str) -> None:
        """Free the accelerator copies of the training split.

        The CPU copy stays, like the splits themselves, so the next ``fit`` of the same
        data module (e.g. one per chunk of a benchmark, or a resumed run) does not pad the
        split again.
        """
        for device in [d for d in self._train_sources if d.type != "cpu"]:
            del self._train_sources[device]

    def finish_batch(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """A uint8 batch made ready for the model: :meth:`augment` (``train``) or :meth:`eval_transform`, then :meth:`normalize`."""
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
        return trainer.precision_plugin.convert_input(images)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Finish a batch on its device: gather (fast path), augment in training, normalise, cast to the precision."""
        training = self.trainer is not None and self.trainer.training
        if isinstance(batch, IndexBatch):  # a training batch from our own loader
            if self._overfitting():
                images = self._train_source(batch.indices.device, (0, 0), "zeros").index_select(0, batch.indices)
            else:
                images = self.gather_augmented(batch.indices)
            return self._to_model_dtype(self.normalize(images)), batch.labels
        if isinstance(batch, torch.Tensor):  # images alone: the model's example_input_array (summary, graph logging)
            return self._to_model_dtype(batch) if batch.is_floating_point() else self.finish_batch(batch, train=False)
        images, labels = batch
        if images.is_floating_point():  # finished by a loader used on its own: only the precision is left
            return self._to_model_dtype(images), labels
        return self.finish_batch(images, train=training and not self._overfitting()), labels


DATA_ENV = "DEEPFEAT_DATA"


def default_download_root() -> Path:
    """Where ``download=True`` puts files without a ``root``: ``$DEEPFEAT_DATA`` or ``~/.cache/lightning_deepfeat``."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else Path.home() / ".cache" / "lightning_deepfeat"


class FileDataModule(ImageClassificationDataModule):
    """A data module read from files under ``root``, with torchvision's downloader behind ``download=True``.

    Args:
        root: data folder; ``None`` searches the subclass's default places.
        download: fetch the files with torchvision's downloader when they are missing.
        **kwargs: the arguments of :class:`ImageClassificationDataModule`.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, download: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if root is not None and not isinstance(root, (str, os.PathLike)):
            raise ValueError(f"`root` must be a path or None, got {root!r}.")
        if not isinstance(download, bool):
            raise ValueError(f"`download` must be True or False, got {download!r}.")
        self.root = None if root is None else Path(root).expanduser()
        self.download = download
        self.class_names = list(type(self).class_names)
