r"""``StreamingImageDataModule``: images prepared once by ``deepfeat prepare``, streamed by litdata to every rank.

What happens to a training batch::

    StreamingDataset (litdata): the rank's share of the shards, shuffled per epoch
      ──► loader workers: JPEG bytes ──► decode_jpeg on the list (CPU)         ──► uint8 (B, 3, S, S)
                          (on a CUDA Trainer: the bytes stay encoded            ──► EncodedJpegBatch)
                          raw shards: the stored uint8 tensors, stacked         ──► uint8 (B, 3, S, S)
      ──► transfer to the device (uint8, or the encoded bytes: labels only)
      ──► on_after_batch_transfer: EncodedJpegBatch ──► decode_jpeg(list, device="cuda") (nvjpeg)
            training:   RandomCrop(crop_size) → [RandomTranslate] → RandomHorizontalFlip(½) → PCALighting(σ=0.1)
            evaluation: CenterCrop(crop_size); test with test_crops="ten": TenCrop ──► (B, 10, C, h, w)
            every stage: (x − μ_c) / σ_c in float32, then the precision's dtype

Sharding, shuffling and resume are litdata's: each process of a DDP run (any number of
nodes) streams its own share of the shards, reshuffled every epoch from ``shuffle_seed``,
and the loader's ``state_dict`` (which Lightning saves in checkpoints) tells a resumed run
where the epoch stopped, so it continues with the next unseen batch. The augmentation
stream is the base class's (``hash(seed, rank, batch)``), restored from the data module's
own state.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch.utils.data import default_collate
from typing_extensions import override

from lightning_deepfeat.data.base import ImageDataModule
from lightning_deepfeat.data.functional import memory_format_of
from lightning_deepfeat.data.imagenet_transforms import PCALighting, TenCrop
from lightning_deepfeat.data.memory import BatchMemory
from lightning_deepfeat.data.prepare import METADATA_FILE, METADATA_FORMAT, require_litdata
from lightning_deepfeat.data.transforms import BatchTransform, RandomCrop, RandomHorizontalFlip
from lightning_deepfeat.validation import check_bool, check_choice, check_number, check_pair, fail

#: how ``test`` batches are evaluated: the centre crop, or the paper's ten patches
TestCrops = Literal["center", "ten"]


# ----------------------------------------------------------------------------- metadata
def _is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _local(uri: str) -> str:
    return os.path.abspath(os.path.expanduser(uri[len("file://") :] if uri.startswith("file://") else uri))


def _child(uri: str, name: str) -> str:
    """``uri/name`` for a local folder or an object-store URI."""
    return f"{uri.rstrip('/')}/{name}" if _is_remote(uri) else os.path.join(_local(uri), name)


def read_metadata(input_dir: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``deepfeat.json`` that ``deepfeat prepare`` wrote in ``input_dir`` (a folder or an ``s3://``, ``gs://`` URI).

    A remote file is fetched with litdata's downloader for that store (the credentials
    litdata uses, ``storage_options`` included). Raises ``FileNotFoundError`` naming the
    folder and the command that writes the file, ``ValueError`` for a file of another kind.
    """
    uri = os.fspath(input_dir)
    where = _child(uri, METADATA_FILE)
    if not _is_remote(uri) and not os.path.isdir(_local(uri)):
        raise FileNotFoundError(
            f"`input_dir` {_local(uri)} does not exist. Prepare the images first: "
            f"`deepfeat prepare <image folder> {uri}` (then copy the folder to an object store if you like)."
        )
    try:
        if _is_remote(uri):
            require_litdata()
            from litdata.streaming.downloader import get_downloader

            with tempfile.TemporaryDirectory(prefix="deepfeat-meta-") as tmp:
                local = os.path.join(tmp, METADATA_FILE)
                get_downloader(uri, tmp, [], storage_options).download_file(where, local)
                with open(local) as f:
                    metadata = json.load(f)
        else:
            with open(where) as f:
                metadata = json.load(f)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{uri} holds no {METADATA_FILE}: it is not a folder written by `deepfeat prepare`. Prepare the images "
            f"first: `deepfeat prepare <image folder> {uri}`."
        ) from err
    except ValueError as err:
        raise ValueError(f"{where} is not valid JSON ({err}); run `deepfeat prepare` again into a new folder.") from err
    if not isinstance(metadata, dict) or metadata.get("format") != METADATA_FORMAT:
        raise ValueError(
            f"{where} is not a `deepfeat prepare` metadata file (its 'format' is not {METADATA_FORMAT!r})."
        )
    return metadata


# ----------------------------------------------------------------------------- batches
class EncodedJpegBatch:
    """A batch whose images are still JPEG bytes: decoded on the accelerator after the transfer (nvjpeg).

    ``to(device)`` (what Lightning's transfer calls) moves the labels only: ``decode_jpeg``
    reads its input from host memory whatever the device it decodes on.
    """

    def __init__(self, data: list[torch.Tensor], labels: torch.Tensor) -> None:
        self.data, self.labels = data, labels

    def to(self, device: torch.device | str, *args: Any, **kwargs: Any) -> EncodedJpegBatch:
        """The same bytes, the labels on ``device``."""
        return EncodedJpegBatch(self.data, self.labels.to(device, *args, **kwargs))

    def pin_memory(self) -> EncodedJpegBatch:
        """Pin the labels (the bytes are read by the decoder, never copied to the device as such)."""
        return EncodedJpegBatch(self.data, self.labels.pin_memory())

    def __len__(self) -> int:
        return len(self.data)


def square(image: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size × size`` part of an image ``(C, H, W)`` whose shorter side is ``size`` (itself if square)."""
    height, width = image.shape[-2:]
    if height == width == size:
        return image
    top, left = (height - size) // 2, (width - size) // 2
    return image[..., top : top + size, left : left + size]


def decode_jpeg_batch(data: Sequence[torch.Tensor], size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Decode a list of JPEG byte tensors in one call (``torchvision.io.decode_jpeg``) into a uint8 ``(B, 3, S, S)``.

    On a CUDA ``device`` the call decodes the whole batch with nvjpeg and the images never
    exist in host memory; on the CPU it decodes them one after the other (libjpeg-turbo).
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    images = [square(image, size) for image in decode_jpeg(list(data), mode=ImageReadMode.RGB, device=device)]
    # default_collate stacks straight into shared memory in a loader worker (no second copy for the transfer)
    if images and images[0].permute(1, 2, 0).is_contiguous():
        # libjpeg-turbo writes pixels interleaved (H, W, C): stacking them as they are is a plain copy
        # (half the cost of a transposing one), and the batch is channels_last, which the finishing
        # step and the convolutions read as fast
        return default_collate([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)
    return default_collate(images)


class StreamingCollate:
    """``collate_fn`` of the streaming loaders, run by the workers: labels, and images decoded or left encoded.

    * ``"jpeg"``, ``decode=True``: ``decode_jpeg`` on the list (CPU) ──► ``(uint8 images, labels)``;
    * ``"jpeg"``, ``decode=False``: ``EncodedJpegBatch`` (decoded on the GPU after the transfer);
    * ``"raw"``: the stored uint8 tensors, stacked (centre square for ``keep_aspect`` sets).
    """

    def __init__(self, image_format: str, size: int, decode: bool = True) -> None:
        self.image_format, self.size, self.decode = image_format, size, decode

    def __call__(self, items: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor] | EncodedJpegBatch:
        """One batch from litdata's samples ``{"image", "label"}``."""
        labels = torch.tensor([int(item["label"]) for item in items], dtype=torch.int64)
        if self.image_format == "raw":
            return default_collate([square(torch.as_tensor(item["image"]), self.size) for item in items]), labels
        # bytearray: a writable copy (litdata hands out read-only views into the shard)
        data = [torch.frombuffer(bytearray(item["image"]), dtype=torch.uint8) for item in items]
        if not self.decode:
            return EncodedJpegBatch(data, labels)
        return decode_jpeg_batch(data, self.size), labels


class FinishedBatches:
    """A streaming loader that yields finished batches ``(float images, labels)``, for use without a Trainer.

    The workers decode; this (main) process augments or crops and normalises each batch, so
    that the augmentation stream is the data module's one, batch for batch. ``len``,
    ``state_dict`` and ``load_state_dict`` are the litdata loader's.
    """

    def __init__(self, loader: Any, datamodule: StreamingImageDataModule, train: bool, views: bool = False) -> None:
        self.loader, self.datamodule, self.train, self.views = loader, datamodule, train, views

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            if self.views:
                yield self.datamodule.ten_crop_batch(images), labels
            else:
                yield self.datamodule.finish_batch(images, train=self.train), labels

    def state_dict(self) -> dict[str, Any]:
        """The litdata loader's state (epoch, samples yielded, worker to resume on)."""
        state: dict[str, Any] = self.loader.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the litdata loader where :meth:`state_dict` left it."""
        self.loader.load_state_dict(state)


class Cuts:
    """Drawn crop corners and flip flags of a batch (:meth:`StreamingImageDataModule.draw_cuts`)."""

    def __init__(self, size: tuple[int, int], tops: list[int], lefts: list[int], flags: list[bool]) -> None:
        self.size, self.tops, self.lefts, self.flags = size, tops, lefts, flags

    def apply(
        self, images: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cut each uint8 image into a float32 batch and normalise it there: ``x * scale + shift``.

        Image by image, so each value is written once and normalised while it is in cache: on a
        CPU that is most of the cost of a 224×224 batch (each whole-batch pass costs memory
        traffic). The arithmetic is the whole-batch ``mul_`` then ``add_``, so the result is the
        same, bit for bit. ``out``: where to write, float32 ``(N, C, h, w)`` in the memory format
        of ``images`` (the data module passes recycled memory, :class:`~.memory.BatchMemory`);
        by default a new tensor.
        """
        n, c = images.shape[:2]
        h, w = self.size
        layout = memory_format_of(images)
        if out is None:
            out = torch.empty((n, c, h, w), dtype=torch.float32, memory_format=layout)
        elif out.shape != (n, c, h, w) or out.dtype != torch.float32 or not out.is_contiguous(memory_format=layout):
            raise ValueError(
                f"Cuts.apply: out is {out.dtype} {tuple(out.shape)}; expected float32 {(n, c, h, w)}, "
                f"contiguous in {layout}."
            )
        per_image = shift.shape[0] > 1
        if layout == torch.channels_last:
            # (h, w·c) rows: the per-channel factors tiled along a row, so every pass is contiguous
            scale_row = scale.reshape(c).repeat(w)
            shift_rows = shift.reshape(-1, c).repeat(1, w)
            for i in range(n):
                window = images[i, :, self.tops[i] : self.tops[i] + h, self.lefts[i] : self.lefts[i] + w]
                target = out[i].permute(1, 2, 0)  # (h, w, c), contiguous
                target.copy_(window.permute(1, 2, 0).flip(1) if self.flags[i] else window.permute(1, 2, 0))
                target.view(h, w * c).mul_(scale_row).add_(shift_rows[i if per_image else 0])
            return out
        scale = scale[0]
        for i in range(n):
            window = images[i, :, self.tops[i] : self.tops[i] + h, self.lefts[i] : self.lefts[i] + w]
            image = out[i]
            image.copy_(window.flip(-1) if self.flags[i] else window)
            image.mul_(scale).add_(shift[i] if per_image else shift[0])
        return out


def _crop_then_flip(transforms: Sequence[BatchTransform]) -> bool:
    """Whether ``transforms`` are a ``RandomCrop``, a ``RandomHorizontalFlip`` (exactly), both or none."""
    kinds = [type(t) for t in transforms]
    return kinds in ([], [RandomCrop], [RandomHorizontalFlip], [RandomCrop, RandomHorizontalFlip])


# ----------------------------------------------------------------------------- the data module
class StreamingImageDataModule(ImageDataModule):
    r"""Images prepared by ``deepfeat prepare``, streamed by litdata from a folder or an object store, to every rank.

    ``input_dir`` is the folder ``deepfeat prepare`` wrote (``train/``, ``val/``, maybe
    ``test/``, and ``deepfeat.json``) or its copy on any store litdata reads
    (``s3://bucket/imagenet``, ``gs://...``). ``num_classes``, ``class_names``, the stored
    image shape and, unless given, ``mean``/``std`` come from ``deepfeat.json``, so the CLI
    links the model's ``num_classes`` and ``input_shape`` as for every other data module.

    Each split is a ``litdata.StreamingDataset`` read by a ``StreamingDataLoader``: under
    DDP each process (on any node) streams a disjoint share of the shards; the training set
    is reshuffled every epoch from ``shuffle_seed`` and, with more than one process, cut to
    equal shares (litdata's ``drop_last``: at most ``world_size - 1`` samples per epoch
    left out, different ones each epoch); evaluation splits are neither shuffled nor cut.
    The loader is stateful: Lightning saves its position in checkpoints and a run resumed
    mid-epoch continues with the next unseen batch.

    Augmentation (training, batched on the device after the transfer): the random
    ``crop_size`` crop, ``translate`` if set, the horizontal flip (``hflip``) and
    Krizhevsky's PCA lighting (:class:`~lightning_deepfeat.data.PCALighting` with the
    eigen-decomposition of the training set's RGB covariance from ``deepfeat.json``,
    :math:`\alpha \sim \mathcal N(0, \texttt{lighting}^2)`), all drawn from the base class's
    seeded augmentation stream. Evaluation: the centre crop; with ``test_crops="ten"`` the
    test batches are the ten patches of each image, ``(B, 10, C, h, w)``: a model averages
    its softmax over dimension 1 (see the docs, "ten-patch test").

    JPEG shards are decoded by ``torchvision.io.decode_jpeg`` on the whole batch's list:
    on a CUDA Trainer (``decode_on_device``) after the transfer, on the GPU (nvjpeg);
    otherwise in the loader workers, on the CPU. Raw shards are not decoded.

    Args:
        input_dir: the prepared folder or its URI.
        crop_size: random crops of this size in training, the centre crop in evaluation (224).
        hflip: random horizontal flips in training.
        lighting: :math:`\sigma_\alpha` of the PCA lighting (0.1 in the paper); 0 turns it off.
        test_crops: ``"center"`` or ``"ten"`` (the four corners, the centre and their mirror images).
        decode_on_device: decode JPEG batches on the GPU when the Trainer runs on CUDA.
        cache_dir: where litdata keeps the shards it downloaded (remote ``input_dir`` only;
            default: litdata's cache folder).
        max_cache_size: size limit of that cache (``"50GB"``, bytes; default: litdata's).
        storage_options: options for the object store (litdata's ``storage_options``).
        **kwargs: the other arguments of :class:`~lightning_deepfeat.data.ImageDataModule`
            (``batch_size``, ``num_workers``, ``eval_batch_size``, ``mean``, ``std``,
            ``shuffle_seed``, ``translate``, ``padding_mode``, ``seed``; ``val_fraction``
            and ``split_seed`` do not apply: ``deepfeat prepare --val-fraction`` holds
            out the validation images once).
    """

    def __init__(
        self,
        input_dir: str | os.PathLike[str],
        crop_size: int | tuple[int, int] | None = 224,
        hflip: bool = True,
        lighting: float = 0.1,
        test_crops: TestCrops = "center",
        decode_on_device: bool = True,
        cache_dir: str | None = None,
        max_cache_size: int | str | None = None,
        storage_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(crop_size=crop_size, hflip=hflip, **kwargs)
        if not isinstance(input_dir, (str, os.PathLike)) or not os.fspath(input_dir):
            raise fail("input_dir", "a folder or a URI (s3://..., gs://...) written by `deepfeat prepare`", input_dir)
        self.input_dir: str = os.fspath(input_dir)
        self.lighting = check_number("lighting", lighting, low=0.0, hint="the std of the PCA lighting's alpha")
        self.test_crops: TestCrops = check_choice("test_crops", test_crops, TestCrops)
        self.decode_on_device = check_bool("decode_on_device", decode_on_device)
        self.cache_dir, self.max_cache_size = cache_dir, max_cache_size
        self.storage_options = dict(storage_options or {})
        self.metadata = read_metadata(self.input_dir, self.storage_options)
        self.class_names: list[str] = list(self.metadata["class_names"])
        self.num_classes = len(self.class_names)
        self.image_format: str = self.metadata["image_format"]
        self.splits: dict[str, Any] = self.metadata["splits"]
        if self.mean is None:
            self.mean = torch.tensor(self.metadata["mean"], dtype=torch.float32)
        if self.std is None:
            self.std = torch.tensor(self.metadata["std"], dtype=torch.float32)
        if self.lighting > 0:
            pca = self.metadata["pca"]
            self.train_transforms.append(
                PCALighting(pca["eigenvalues"], pca["eigenvectors"], alpha_std=self.lighting, scale=pca["scale"])
            )
        self.set_stored_shape(tuple(self.metadata["image_shape"]))
        if self.test_crops == "ten" and self.crop_size is None:
            raise ValueError("`test_crops`='ten' needs a `crop_size` (the size of the ten patches), got None.")
        #: where the CPU finishing step writes training batches: recycled once a batch is released
        self.batch_memory = BatchMemory()

    @classmethod
    @override
    def describe(cls, **init_args: Any) -> dict[str, Any]:
        """``num_classes`` and ``image_shape`` (``(3, crop)``, or the stored shape) from ``deepfeat.json``."""
        input_dir = init_args.get("input_dir")
        if input_dir is None:
            raise ValueError("StreamingImageDataModule needs `input_dir` (the folder `deepfeat prepare` wrote).")
        metadata = read_metadata(input_dir, init_args.get("storage_options"))
        crop = init_args.get("crop_size", 224)
        shape = tuple(metadata["image_shape"])
        if crop is not None:
            shape = (shape[0], *check_pair("crop_size", crop, low=1))
        return {"num_classes": len(metadata["class_names"]), "image_shape": shape}

    # ----------------------------------------------------------------- storage
    def split_dir(self, split: str) -> str:
        """Where the shards of ``split`` are: ``test`` falls back on ``val`` when the data set has no test split."""
        name = "val" if split == "test" and "test" not in self.splits else split
        if name not in self.splits:
            have = ", ".join(sorted(self.splits))
            hint = "prepare a source with a val/ folder, or pass --val-fraction to `deepfeat prepare`"
            raise ValueError(f"{self.input_dir} has no {name!r} split (it has {have}); {hint}.")
        return _child(self.input_dir, name)

    @override
    def setup_splits(self, stage: str | None) -> None:
        """Check that the stage's main split was prepared; the shards themselves are opened by the loaders.

        A data set without a ``val`` split can train (``fit`` with ``limit_val_batches=0``);
        asking for its validation batches raises the error of :meth:`split_dir`.
        """
        self.split_dir({"fit": "train", "validate": "val", "test": "test", "predict": "test"}.get(stage or "", "train"))

    @override
    def images_for_stats(self) -> torch.Tensor:
        raise RuntimeError(
            f"{type(self).__name__}: mean/std come from {METADATA_FILE} (computed by `deepfeat prepare` over every "
            "training pixel); they are never estimated from a sample."
        )

    def _decode_on_device(self) -> bool:
        """Whether JPEG batches travel encoded and are decoded on the GPU (attached to a CUDA Trainer)."""
        if self.image_format != "jpeg" or not self.decode_on_device or not self.attached():
            return False
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    @override
    def make_loader(self, split: str, train: bool, device_side: bool) -> Any:
        """A ``litdata.StreamingDataLoader`` over ``split``; wrapped in :class:`FinishedBatches` unless ``device_side``.

        Created when asked for (after the process group exists): litdata reads the
        distributed environment when the data set is created.
        """
        litdata = require_litdata()
        shuffle = train and not self.overfitting()
        dataset = litdata.StreamingDataset(
            self.split_dir(split),
            cache_dir=self.cache_dir,
            shuffle=shuffle,
            drop_last=None if train else False,  # training: equal shares under DDP; evaluation: every sample once
            seed=self.shuffle_seed,
            max_cache_size=self.max_cache_size,
            storage_options=self.storage_options or None,
        )
        decode_later = device_side and self._decode_on_device()
        loader = litdata.StreamingDataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            num_workers=self.num_workers,
            collate_fn=StreamingCollate(self.image_format, self.stored_shape()[-1], decode=not decode_later),
            pin_memory=device_side and torch.cuda.is_available(),
        )
        return loader if device_side else FinishedBatches(loader, self, train)

    @override
    def test_dataloader(self) -> Any:
        """Test batches, in order; with ``test_crops="ten"`` each image becomes its ten patches ``(10, C, h, w)``."""
        loader = self.loader("test", train=False)
        if isinstance(loader, FinishedBatches) and self.test_crops == "ten":
            loader.views = True
        return loader

    # ----------------------------------------------------------------- finishing batches
    @override
    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """The ``train_transforms`` in order; the batch becomes float32 (pixel units) before :class:`PCALighting`."""
        if not self.train_transforms:
            return images
        generator = self.augment_generator(images.device)
        for transform in self.train_transforms:
            if getattr(transform, "wants_float", False) and not images.is_floating_point():
                images = images.to(torch.float32)
            images = transform(images, generator)
        return images

    @override
    def finish_batch(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        r"""A uint8 batch made ready for the model; in training the PCA lighting is fused into the normalisation.

        :math:`((x + \delta_n) - \mu) / \sigma = x \cdot \sigma^{-1} + (\delta_n - \mu) / \sigma`: one float32
        batch is written instead of three (the conversion, the lighting, the normalisation),
        which on a CPU is most of the cost of finishing a 224×224 batch (each fresh batch-size
        allocation is paid in page faults). On the CPU the recipe's crop and flip are cut
        straight into that float32 batch too, image by image (:meth:`draw_cuts`). The random draws are
        :meth:`augment`'s, in the same order, so the result equals ``normalize(augment(x))``
        up to float rounding. A subclass that overrides :meth:`augment`, or appends a
        transform after the lighting, gets the plain ``augment`` then ``normalize``.
        """
        lighting = self.train_transforms[-1] if self.train_transforms else None
        if not (train and isinstance(lighting, PCALighting) and type(self).augment is StreamingImageDataModule.augment):
            return super().finish_batch(images, train)
        generator = self.augment_generator(images.device)
        geometric = self.train_transforms[:-1]
        if images.device.type == "cpu" and _crop_then_flip(geometric):
            cuts = self.draw_cuts(images, geometric, generator)
            params = lighting.draw_params((images.shape[0], images.shape[1], *cuts.size), generator, images.device)
            offsets = lighting.offsets(params, images.device) if params else None
            scale, shift = self.normalization(offsets, images.device)
            out = self.batch_memory.empty(
                (images.shape[0], images.shape[1], *cuts.size), memory_format=memory_format_of(images)
            )
            return self._to_model_dtype(cuts.apply(images, scale, shift, out=out))
        for transform in geometric:
            images = transform(images, generator)
        params = lighting.draw_params(images.shape, generator, images.device)
        offsets = lighting.offsets(params, images.device) if params else None
        return self._to_model_dtype(self.normalize_shifted(images, offsets))

    @staticmethod
    def draw_cuts(images: torch.Tensor, transforms: Sequence[BatchTransform], generator: torch.Generator) -> Cuts:
        """Draw a ``RandomCrop``'s corners and a ``RandomHorizontalFlip``'s flags (in that order) for ``images``.

        The same draws, from ``generator``, as the transforms' own ``forward``; :meth:`Cuts.apply`
        then cuts them into a new float32 batch.
        """
        n, c, height, width = images.shape
        crop = next((t for t in transforms if isinstance(t, RandomCrop)), None)
        flip = next((t for t in transforms if isinstance(t, RandomHorizontalFlip)), None)
        h, w = crop.size if crop is not None else (height, width)
        tops, lefts, flags = [0] * n, [0] * n, [False] * n
        if crop is not None:
            corners = crop.draw_params(images.shape, generator, images.device)
            tops, lefts = corners["top"].tolist(), corners["left"].tolist()
        if flip is not None:
            flipped = flip.draw_params((n, c, h, w), generator, images.device)
            flags = flipped["flip"].tolist() if flipped else flags
        return Cuts((h, w), tops, lefts, flags)

    def normalization(self, offsets: torch.Tensor | None, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(scale, shift)`` with :math:`(x + \delta_{n,c} - \mu_c) / \sigma_c = x \cdot s_c + t_{n,c}`.

        ``scale`` is ``(1, C, 1, 1)``; ``shift`` is ``(N, C, 1, 1)`` with per-image ``offsets``
        ``(N, C)``, else ``(1, C, 1, 1)``.
        """
        if self.mean is None or self.std is None:
            raise RuntimeError(f"{type(self).__name__}: mean/std unknown; call setup() first.")
        mean = self.mean.to(device).view(1, -1, 1, 1)
        scale = self.std.to(device).reciprocal().view(1, -1, 1, 1)
        shift = -mean * scale if offsets is None else (offsets[:, :, None, None] - mean) * scale
        return scale, shift

    def normalize_shifted(self, images: torch.Tensor, offsets: torch.Tensor | None) -> torch.Tensor:
        r""":math:`(x + \delta_{n,c} - \mu_c) / \sigma_c` into a new float32 batch (``offsets``: ``(N, C)`` or None)."""
        scale, shift = self.normalization(offsets, images.device)
        return images.to(torch.float32, copy=True).mul_(scale).add_(shift)

    def ten_crop_batch(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` ──► the ten normalised patches of each image, ``(B, 10, C, h, w)``."""
        assert self.crop_size is not None
        views = TenCrop(self.crop_size)(images)
        flat = self.normalize(views.flatten(0, 1))
        return self._to_model_dtype(flat.view(*views.shape))

    @override
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Decode an :class:`EncodedJpegBatch` on its device (nvjpeg), then finish as the base class does.

        Test batches with ``test_crops="ten"`` become the ten normalised patches of each
        image, ``(B, 10, C, h, w)``.
        """
        if isinstance(batch, EncodedJpegBatch):
            batch = (decode_jpeg_batch(batch.data, self.stored_shape()[-1], batch.labels.device), batch.labels)
        trainer = self.trainer
        if self.test_crops == "ten" and trainer is not None and trainer.testing and isinstance(batch, (tuple, list)):
            images, labels = batch
            if not images.is_floating_point():
                return self.ten_crop_batch(images), labels
        return super().on_after_batch_transfer(batch, dataloader_idx)


__all__ = [
    "EncodedJpegBatch",
    "FinishedBatches",
    "StreamingCollate",
    "StreamingImageDataModule",
    "decode_jpeg_batch",
    "read_metadata",
    "square",
]
