r"""``InMemoryDataModule``: uint8 images held in memory, batched by one index gather, augmented on the device.

The fast path: the training loader yields :class:`~lightning_deepfeat.batches.IndexBatch`
(sample indices and labels, a few bytes per sample); after the transfer,
:meth:`InMemoryDataModule.gather_augmented` cuts each batch out of a copy of the training
split kept on the device, with the first training transform fused into the gather when it
is a window transform (see :class:`~lightning_deepfeat.data.BatchTransform`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from typing_extensions import override

from lightning_deepfeat.batches import IndexBatch
from lightning_deepfeat.data.base import ImageDataModule, check_labels
from lightning_deepfeat.data.functional import PaddingMode, check_padding, crop_batch, pad_into
from lightning_deepfeat.data.loader import InMemoryBatchLoader
from lightning_deepfeat.data.transforms import BatchTransform, ShiftFlipViews
from lightning_deepfeat.validation import check_bool, check_choice

#: what ``InMemoryDataModule(test_views=...)`` shows the model of each test image
TestViews = Literal["single", "flip", "ten"]


class InMemoryDataModule(ImageDataModule):
    r"""Base of the data sets held in memory as one uint8 tensor per split.

    A new data set is a subclass with :meth:`load_split` and three class attributes::

        class MyData(InMemoryDataModule):
            num_classes = 10
            image_shape = (3, 32, 32)        # as stored, before crops
            class_names = [...]

            def load_split(self, split):    # "train" or "test"
                return images_uint8_NCHW, labels_int64_N

    Everything else comes from :class:`ImageDataModule`: the seeded train/val split of
    ``"train"``, normalisation, augmentation (``translate``, ``hflip``, ``crop_size``, ...),
    DDP shares and the checkpointed state. Batches come from :class:`InMemoryBatchLoader`
    (one ``index_select`` per batch, no per-sample ``__getitem__``, no collate).

    With ``gather_on_device`` (the default) a training batch crosses to the accelerator as
    an :class:`~lightning_deepfeat.batches.IndexBatch` and is gathered there by
    :meth:`gather_augmented`, out of a copy of the training split kept on that device, with
    the first training transform fused into the gather when it describes its output as
    :meth:`~lightning_deepfeat.data.BatchTransform.windows` (crops and shifts do): each
    output byte is written once, and the batch is bit-identical to gathering first and then
    calling :meth:`augment`.

    A subclass that overrides :meth:`augment` sets ``fuse_train_transforms = False`` (as a
    LightningModule that optimises by hand sets ``automatic_optimization = False``): its
    ``augment`` then gets every gathered training batch. The fused path only ever applies
    ``train_transforms``.

    Args:
        gather_on_device: training batches leave the loader as ``IndexBatch`` and are
            gathered and augmented in one pass on the accelerator, out of a copy of the
            training split held there (its uint8 size, plus the translation padding).
            ``False``: the loader gathers the images on the CPU and they are augmented
            after the transfer (less accelerator memory, more copies and transfer).
        test_views: how the model sees each *test* image (``trainer.test`` and
            ``trainer.predict``, and the test loader used on its own): ``"single"`` as
            stored (after the centre crop); ``"flip"`` or ``"ten"``: a batch
            ``(B, V, C, H, W)`` of :class:`~lightning_deepfeat.data.ShiftFlipViews` (the image
            and its mirror image; or those and the image moved one pixel up, down, left and
            right, filled by ``padding_mode``), over which ``FeatureClassifier`` averages its
            softmax. Validation batches stay single, so the validation metrics (and the
            callbacks watching them) cost one forward pass per image.
        **kwargs: the arguments of :class:`ImageDataModule`.
    """

    #: the on-device gather applies ``train_transforms`` itself (fused); ``False``: gather, then :meth:`augment`
    fuse_train_transforms: bool = True

    def __init__(self, gather_on_device: bool = True, test_views: TestViews = "single", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gather_on_device: bool = check_bool("gather_on_device", gather_on_device)
        self.test_views: TestViews = check_choice("test_views", test_views, TestViews)
        self.test_view_transform = (
            None if self.test_views == "single" else ShiftFlipViews(self.test_views, padding_mode=self.padding_mode)
        )
        self.set_stored_shape(type(self).image_shape)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        # the training split on each device it is gathered on: (source images, (padding, mode), split tensor)
        self._train_sources: dict[torch.device, tuple[torch.Tensor, tuple[tuple[int, int], str], torch.Tensor]] = {}

    # ----------------------------------------------------------------- the data set's part
    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images uint8 (N, C, H, W), labels int64 (N,))`` of ``"train"`` or ``"test"``; subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_split(split).")

    # ----------------------------------------------------------------- storage
    @override
    def setup_splits(self, stage: str | None) -> None:
        if "train" not in self.splits and stage in (None, "fit", "validate"):
            images, labels = self._load_checked("train")
            train_idx, val_idx = self.split_train_val(labels.shape[0])
            self.splits["train"] = (images[train_idx], labels[train_idx])
            self.splits["val"] = (images[val_idx], labels[val_idx])
        if "test" not in self.splits and stage in (None, "test", "predict"):
            self.splits["test"] = self._load_checked("test")

    @override
    def images_for_stats(self) -> torch.Tensor:
        if "train" in self.splits:
            return self.splits["train"][0]
        # a test-only run without given mean/std: the statistics still come from the training split
        images, labels = self._load_checked("train")
        return images[self.split_train_val(labels.shape[0])[0]]

    def _load_checked(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`load_split`, checked: uint8 ``(N, C, H, W)``, as many labels as images, labels in range."""
        images, labels = self.load_split(split)
        name = type(self).__name__
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"{name}: {split} images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}."
            )
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{name}: {split} has {images.shape[0]} images but {labels.shape[0]} labels.")
        check_labels(labels, self.num_classes, f"{name}: {split}")
        return images, labels

    @override
    def make_loader(self, split: str, train: bool, device_side: bool) -> InMemoryBatchLoader:
        if split not in self.splits:
            raise RuntimeError(f"{type(self).__name__}: split {split!r} is not set up; call setup() first.")
        images, labels = self.splits[split]
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        fetch: Callable[[torch.Tensor], torch.Tensor] | None = None
        if not device_side:  # finished batches, for a loader used on its own
            if train:
                fetch = self._finished_train_batch
            elif split == "test" and self.test_view_transform is not None:

                def fetch(indices: torch.Tensor) -> torch.Tensor:
                    return self.finish_test_views(images.index_select(0, indices))

            else:

                def fetch(indices: torch.Tensor) -> torch.Tensor:
                    return self.finish_batch(images.index_select(0, indices), train=False)

        return InMemoryBatchLoader(
            images,
            labels,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train and not self.overfitting(),
            seed=self.shuffle_seed,
            num_replicas=world,
            rank=rank,
            pad_to_equal=train,
            yield_indices=train and device_side and self.gather_on_device,
            fetch=fetch,
        )

    def finish_test_views(self, images: torch.Tensor) -> torch.Tensor:
        """A uint8 test batch ``(B, C, H, W)`` as its ``test_views``, normalised: ``(B, V, C, h, w)``."""
        if self.test_view_transform is None:
            return self.finish_batch(images, train=False).unsqueeze(1)
        views = self.test_view_transform(self.eval_transform(images))
        return self._to_model_dtype(self.normalize(views.flatten(0, 1)).view(views.shape))

    def _finished_train_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self._to_model_dtype(self.normalize(self.gather_augmented(indices)))

    # ----------------------------------------------------------------- the fused gather
    def gather_augmented(self, indices: torch.Tensor) -> torch.Tensor:
        r"""Training images ``indices`` of the train split, augmented, on ``indices``' device.

        Equal, bit for bit, to ``self.augment(train_images[indices])``, but cheaper: the
        first of ``train_transforms``, :math:`T`, draws its parameters :math:`\theta` for the
        batch shape (:meth:`~lightning_deepfeat.data.BatchTransform.draw_params`); when it
        describes its output as windows :math:`(t_n, l_n, h, w)` of its input padded by
        :math:`(p_y, p_x)`, the batch is

        .. math::
            Y_{n,c,i,j} = \tilde S_{\mathrm{idx}_n,\,c,\,t_n + i,\,l_n + j},

        one :func:`~lightning_deepfeat.data.crop_batch` with ``index=`` over the split
        :math:`\tilde S` padded once (:meth:`train_source`). Otherwise the batch is gathered
        and :math:`T` applied. The remaining transforms follow on the gathered batch, all
        drawing from the same :meth:`augment_generator`. With ``fuse_train_transforms =
        False`` this is a plain gather followed by :meth:`augment`.
        """
        if "train" not in self.splits:
            raise RuntimeError(f"{type(self).__name__}: the train split is not set up; call setup('fit') first.")
        device = indices.device
        transforms = self.train_transforms
        first = transforms[0] if transforms and self.fuse_train_transforms else None
        if not isinstance(first, BatchTransform):  # nothing to fuse (or fusion off): gather, then augment
            return self.augment(self.train_source(device).index_select(0, indices))
        generator = self.augment_generator(device)
        shape = (indices.numel(), *self.splits["train"][0].shape[1:])
        params = first.draw_params(shape, generator, device)
        windows = first.windows(params, shape)
        if windows is None:
            images = first.apply_params(self.train_source(device).index_select(0, indices), params)
        else:
            source = self.train_source(device, windows.padding, windows.padding_mode)
            images = crop_batch(source, windows.top, windows.left, windows.size, index=indices)
        for transform in transforms[1:]:
            images = transform(images, generator)
        return images

    def train_source(
        self, device: torch.device | str, padding: tuple[int, int] = (0, 0), padding_mode: PaddingMode = "zeros"
    ) -> torch.Tensor:
        """The training split on ``device``, padded by ``padding``: built on first use, then reused.

        One copy per device is kept (the last padding asked for), rebuilt when the split
        changes; :meth:`teardown` frees the accelerator copies.
        """
        device = torch.device(device)
        split = self.splits["train"][0]
        padding = (int(padding[0]), int(padding[1]))
        key: tuple[tuple[int, int], str] = (padding, padding_mode if padding != (0, 0) else "zeros")
        cached = self._train_sources.get(device)
        if cached is not None and cached[1] == key and cached[2] is split:
            return cached[0]
        images = split.to(device).contiguous()
        if key[0] == (0, 0):
            source = images
        else:  # written in place: F.pad would go through float for uint8 reflect
            check_padding(images.shape, padding, padding_mode)
            n, c, height, width = images.shape
            buffer = images.new_empty((n, c, height + 2 * padding[0], width + 2 * padding[1]))
            source = pad_into(images, padding, padding_mode, buffer)
        self._train_sources[device] = (source, key, split)
        return source

    @override
    def teardown(self, stage: str) -> None:
        """Free the accelerator copies of the training split.

        The CPU copy stays, like the splits themselves, so the next ``fit`` of the same
        data module (e.g. one per chunk of a benchmark, or a resumed run) does not pad the
        split again.
        """
        for device in [d for d in self._train_sources if d.type != "cpu"]:
            del self._train_sources[device]

    @override
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """An ``IndexBatch`` is gathered (and augmented in training) here; other batches as in the base class."""
        if isinstance(batch, IndexBatch):  # a training batch from our own loader
            if self.overfitting():
                images = self.train_source(batch.indices.device).index_select(0, batch.indices)
            else:
                images = self.gather_augmented(batch.indices)
            return self._to_model_dtype(self.normalize(images)), batch.labels
        trainer = self.trainer
        if (
            self.test_view_transform is not None
            and trainer is not None
            and (trainer.testing or trainer.predicting)
            and isinstance(batch, (tuple, list))
            and isinstance(batch[0], torch.Tensor)
            and not batch[0].is_floating_point()
        ):
            return self.finish_test_views(batch[0]), batch[1]
        return super().on_after_batch_transfer(batch, dataloader_idx)


#: the 0.1.0 name of :class:`InMemoryDataModule`, kept importable
ImageClassificationDataModule = InMemoryDataModule

__all__ = ["ImageClassificationDataModule", "InMemoryDataModule"]
