"""`deepfeat prepare` and StreamingImageDataModule: shards, exact statistics, bad input, resume, DDP shares,
PCA lighting and the ten-patch test, on a synthetic image folder written with PIL."""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from _scaling_helpers import sigkill_once, subprocess_env
from lightning_deepfeat import FeatureClassifier
from lightning_deepfeat.cli.core import data_description
from lightning_deepfeat.data import PCALighting, StreamingImageDataModule, TenCrop, memory, prepare_image_folder
from lightning_deepfeat.data.imagenet_transforms import rgb_pca
from lightning_deepfeat.data.prepare import load_image, prepare_main, resize_image
from lightning_deepfeat.data.streaming import EncodedJpegBatch, StreamingCollate
from lightning_deepfeat.models import ConvNet

COLOURS = [(200, 60, 60), (60, 200, 60), (60, 60, 200)]
# the ImageNet-like sizes, and small ones to keep the file fast
SIZES = [(500, 375), (333, 500), (96, 72), (72, 96), (80, 60), (60, 80)]
SIZE, CROP = 40, 32


def write_folder(root: Path, n: int, seed: int = 0, classes: int = 3) -> Path:
    """``n`` images, ``root/class<k>/img<i>.jpg|png``: a class colour plus noise, in the sizes above."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = i % classes
        width, height = SIZES[(i // classes) % len(SIZES)]
        noise = rng.normal(0.0, 45.0, (height // 4 + 1, width // 4 + 1, 3)).repeat(4, 0).repeat(4, 1)[:height, :width]
        pixels = np.clip(np.array(COLOURS[label], dtype=np.float64) + noise, 0, 255).astype(np.uint8)
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / (f"img{i:04d}.png" if i % 5 == 0 else f"img{i:04d}.jpg"), quality=92)
    return root


def fingerprint(image: torch.Tensor) -> str:
    return hashlib.sha1(image.contiguous().numpy().tobytes()).hexdigest()


def raw_fingerprints(dm: StreamingImageDataModule, split: str) -> list[str]:
    """Fingerprints of the stored images of ``split``, in the order the raw (device-side) loader yields them."""
    return [fingerprint(x) for images, _ in dm.loader(split, train=split == "train", device_side=True) for x in images]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("images") / "src", 150)


@pytest.fixture(scope="module")
def prepared(folder, tmp_path_factory) -> dict[str, Path]:
    """The folder prepared twice (JPEG and raw): 120 training and 30 validation images of 3×40×40, small shards."""
    out = {}
    for image_format in ("jpeg", "raw"):
        target = tmp_path_factory.mktemp("shards") / image_format
        prepare_image_folder(
            folder,
            target,
            size=SIZE,
            image_format=image_format,
            val_fraction=0.2,
            num_workers=2,
            chunk_bytes=20_000,
            part_size=64,
            group_size=16,
            progress=False,
        )
        out[image_format] = target
    return out


# ----------------------------------------------------------------------------- prepare
def test_prepare_writes_shards_counts_and_exact_statistics(folder, prepared):
    meta = json.loads((prepared["jpeg"] / "deepfeat.json").read_text())
    assert meta["class_names"] == ["class0", "class1", "class2"] and meta["num_classes"] == 3
    assert meta["image_shape"] == [3, SIZE, SIZE] and meta["image_format"] == "jpeg"
    assert meta["splits"]["train"]["images"] == 120 and meta["splits"]["val"]["images"] == 30
    assert sum(meta["splits"]["train"]["per_class"]) + sum(meta["splits"]["val"]["per_class"]) == 150
    assert [
        a + b for a, b in zip(meta["splits"]["train"]["per_class"], meta["splits"]["val"]["per_class"], strict=True)
    ] == [50] * 3
    assert not (prepared["jpeg"] / ".deepfeat_prepare").exists()  # the resume state is gone once complete

    # the raw shards hold exactly what load_image gives for the training files (as a multiset), every one once
    raw = StreamingImageDataModule(prepared["raw"], crop_size=CROP, batch_size=16)
    stored = raw_fingerprints(raw, "train") + raw_fingerprints(raw, "val")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    references = {fingerprint(torch.from_numpy(np.array(load_image(p, SIZE))).permute(2, 0, 1)): p for p in files}
    assert sorted(stored) == sorted(references)
    train_files = [references[f] for f in raw_fingerprints(raw, "train")]

    # mean, std, covariance and PCA: exact over every pixel of the training images
    pixels = np.concatenate([np.asarray(load_image(p, SIZE), dtype=np.float64).reshape(-1, 3) for p in train_files])
    for m in (meta, json.loads((prepared["raw"] / "deepfeat.json").read_text())):
        np.testing.assert_allclose(m["mean"], pixels.mean(0), rtol=1e-12)
        np.testing.assert_allclose(m["std"], pixels.std(0), rtol=1e-9)
        np.testing.assert_allclose(m["rgb_covariance"], np.cov(pixels.T, bias=True), rtol=1e-9)
        values, vectors = np.asarray(m["pca"]["eigenvalues"]), np.asarray(m["pca"]["eigenvectors"])
        np.testing.assert_allclose(
            vectors @ np.diag(values) @ vectors.T, np.cov(pixels.T / 255.0, bias=True), atol=1e-12
        )
        assert values[0] >= values[1] >= values[2] > 0
    # JPEG shards decode to the same images up to the compression
    jpeg = StreamingImageDataModule(prepared["jpeg"], crop_size=CROP, batch_size=16)
    decoded = torch.cat([images for images, _ in jpeg.loader("val", train=False, device_side=True)])
    assert decoded.shape == (30, 3, SIZE, SIZE) and decoded.dtype == torch.uint8
    assert abs(decoded.double().mean() - torch.tensor(meta["mean"]).mean()) < 10


def test_resize_is_krizhevsky_shorter_side_then_centre_square():
    image = Image.fromarray(np.arange(375 * 500 * 3, dtype=np.uint32).reshape(375, 500, 3).astype(np.uint8))
    assert resize_image(image, 256).size == (256, 256)
    assert resize_image(image, 256, keep_aspect=True).size == (341, 256)  # 500 × 256 / 375 = 341.3
    portrait = image.transpose(Image.Transpose.TRANSPOSE)  # 375 wide, 500 high
    assert resize_image(portrait, 256, keep_aspect=True).size == (256, 341)
    resized = np.asarray(portrait.resize((256, 341), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(np.asarray(resize_image(portrait, 256)), resized[42:298])  # (341 - 256) // 2 = 42


# ----------------------------------------------------------------------------- bad input
def test_an_unreadable_image_is_skipped_with_a_warning_naming_it_and_counted(tmp_path, capsys):
    src = write_folder(tmp_path / "src", 12)
    good = (src / "class1" / "img0001.jpg").read_bytes()
    (src / "class1" / "truncated.jpg").write_bytes(good[:300])
    (src / "class2" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning) as caught:
        meta = prepare_main([str(src), str(tmp_path / "out"), "--size", "16", "--workers", "1", "--no-progress"])
    messages = [str(w.message) for w in caught]
    assert any("truncated.jpg" in m and "skipped" in m for m in messages), messages
    assert any("notes.txt" in m and "skipped" in m for m in messages), messages
    assert "skipped 2 file(s) that could not be read as images" in capsys.readouterr().out
    assert meta["splits"]["train"]["images"] == 12
    assert sorted(Path(f).name for f, _ in meta["splits"]["train"]["skipped"]) == ["notes.txt", "truncated.jpg"]


def test_bad_folders_and_outputs_stop_before_any_work(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=r"image folder .*nowhere does not exist"):
        prepare_image_folder(tmp_path / "nowhere", out, progress=False)
    src = write_folder(tmp_path / "src", 6)
    (src / "class3").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*class3 is empty; every class needs at least one image"):
        prepare_image_folder(src, out, progress=False)
    assert not out.exists()  # nothing was written
    (src / "class3").rmdir()

    prepare_image_folder(src, out, size=16, num_workers=1, progress=False)
    before = sorted(p.name for p in out.rglob("*"))
    other = write_folder(tmp_path / "other", 6, seed=1)
    with pytest.raises(ValueError, match=r"`output` .*out already holds another data set \(prepared from .*src"):
        prepare_image_folder(other, out, size=16, progress=False)
    with pytest.raises(ValueError, match=r"already holds another data set"):
        prepare_image_folder(src, out, size=24, progress=False)  # the same folder, other options: another data set
    assert sorted(p.name for p in out.rglob("*")) == before
    again = prepare_image_folder(src, out, size=16, progress=False)  # the same job: nothing to do
    assert again["splits"]["train"]["images"] == 6

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "index.json").write_text("{}")
    with pytest.raises(ValueError, match=r"is not empty: it holds a litdata data set \(index.json\)"):
        prepare_image_folder(src, foreign, progress=False)
    with pytest.raises(ValueError, match=r"`quality` must be an int in \[1, 100\], got 0"):
        prepare_image_folder(src, tmp_path / "q", quality=0, progress=False)
    with pytest.raises(ValueError, match=r"`image_format` must be one of 'jpeg', 'raw', got 'png'"):
        prepare_image_folder(src, tmp_path / "q", image_format="png", progress=False)


@pytest.mark.slow
def test_prepare_killed_then_run_again_finishes_the_job(tmp_path, capsys):
    src = write_folder(tmp_path / "src", 96, seed=3)
    out, clean = tmp_path / "out", tmp_path / "clean"
    args = ["--size", "24", "--part-size", "16", "--workers", "1", "--format", "raw", "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightning_deepfeat", "prepare", str(src), str(out), *args],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    marker = out / ".deepfeat_prepare" / "train" / "part00001.done"
    sigkill_once(proc, marker, timeout=120, what="the end of the second part")
    assert not (out / "deepfeat.json").exists(), "the run ended before the kill: nothing to resume"

    resumed = prepare_image_folder(src, out, size=24, part_size=16, num_workers=1, image_format="raw")
    assert "resuming the preparation" in capsys.readouterr().err
    reference = prepare_image_folder(
        src, clean, size=24, part_size=16, num_workers=1, image_format="raw", progress=False
    )
    for key in ("splits", "mean", "std", "rgb_covariance", "pca", "class_names"):
        assert resumed[key] == reference[key], key
    a = StreamingImageDataModule(out, crop_size=16, batch_size=8)
    b = StreamingImageDataModule(clean, crop_size=16, batch_size=8)
    assert sorted(raw_fingerprints(a, "train")) == sorted(raw_fingerprints(b, "train"))  # each image once
    assert len(raw_fingerprints(a, "train")) == 96
    assert not (out / ".deepfeat_prepare").exists()


# ----------------------------------------------------------------------------- the data module
def test_metadata_gives_classes_shape_and_statistics_to_the_cli(prepared):
    meta = json.loads((prepared["jpeg"] / "deepfeat.json").read_text())
    assert StreamingImageDataModule.describe(input_dir=str(prepared["jpeg"]), crop_size=CROP) == {
        "num_classes": 3,
        "image_shape": (3, CROP, CROP),
    }
    config = {
        "class_path": "lightning_deepfeat.data.StreamingImageDataModule",
        "init_args": {"input_dir": str(prepared["jpeg"]), "crop_size": None},
    }
    assert data_description(config) == {"num_classes": 3, "image_shape": [3, SIZE, SIZE]}
    dm = StreamingImageDataModule(prepared["jpeg"], crop_size=CROP)
    assert dm.image_shape == (3, CROP, CROP) and dm.class_names == ["class0", "class1", "class2"]
    assert dm.mean.tolist() == pytest.approx(meta["mean"]) and dm.std.tolist() == pytest.approx(meta["std"])
    with pytest.raises(FileNotFoundError, match=r"`input_dir` .*nowhere does not exist. Prepare the images first"):
        StreamingImageDataModule(prepared["jpeg"].parent / "nowhere")
    with pytest.raises(ValueError, match=r"`test_crops` must be one of 'center', 'ten', got 'five'"):
        StreamingImageDataModule(prepared["jpeg"], test_crops="five")
    with pytest.raises(ValueError, match=r"`lighting` must be a finite number >= 0"):
        StreamingImageDataModule(prepared["jpeg"], lighting=-0.1)


def test_importing_the_data_package_does_not_import_litdata_and_a_missing_litdata_names_the_extra(prepared):
    code = "import sys, lightning_deepfeat.data as d; d.StreamingImageDataModule; assert 'litdata' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=subprocess_env())
    code = (
        "import sys; sys.modules['litdata'] = None\n"
        "from lightning_deepfeat.data import StreamingImageDataModule\n"
        f"dm = StreamingImageDataModule({str(prepared['jpeg'])!r}, crop_size={CROP})\n"
        "try:\n    dm.loader('train', True)\nexcept ImportError as e:\n    print(e)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert "pip install 'lightning_deepfeat[streaming]'" in done.stdout, done.stdout + done.stderr


def test_encoded_batches_decoded_after_the_transfer_equal_the_workers_decode(prepared):
    """The nvjpeg path's code on the CPU: bytes kept encoded through `.to()`, decoded in on_after_batch_transfer."""
    from litdata import StreamingDataset

    dm = StreamingImageDataModule(prepared["jpeg"], crop_size=CROP, batch_size=10)
    dm.setup("validate")
    dataset = StreamingDataset(dm.split_dir("val"))
    items = [dataset[i] for i in range(10)]
    decoded = StreamingCollate("jpeg", SIZE, decode=True)(items)  # what the workers do on a CPU Trainer
    encoded = StreamingCollate("jpeg", SIZE, decode=False)(items)  # what they do on a CUDA Trainer
    assert isinstance(encoded, EncodedJpegBatch) and len(encoded) == 10
    moved = encoded.to("cpu")
    assert moved.data is encoded.data and torch.equal(moved.labels, decoded[1])
    images, labels = dm.on_after_batch_transfer(moved, 0)
    expected, _ = dm.on_after_batch_transfer(decoded, 0)
    assert images.dtype == torch.float32 and images.shape == (10, 3, CROP, CROP)
    assert torch.equal(images, expected) and torch.equal(labels, decoded[1])


# ----------------------------------------------------------------------------- PCA lighting
def test_pca_lighting_matches_a_per_image_reference():
    g = torch.Generator().manual_seed(0)
    covariance = torch.randn(3, 3, generator=g, dtype=torch.float64)
    values, vectors = rgb_pca(covariance @ covariance.T / 50)
    lighting = PCALighting(values, vectors, alpha_std=0.1)
    images = torch.randint(0, 256, (64, 3, 9, 7), generator=g, dtype=torch.uint8)
    params = lighting.draw_params(images.shape, torch.Generator().manual_seed(1))
    alpha = params["alpha"].double()
    reference = images.double().clone()
    for n in range(images.shape[0]):  # I + s Σ_i p_i α_i λ_i, one image at a time
        offset = sum(255.0 * vectors[:, i] * alpha[n, i] * values[i] for i in range(3))
        reference[n] += offset.view(3, 1, 1)
    out = lighting.apply_params(images.float(), params)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference, rtol=0, atol=1e-4)
    assert (out - images.float()).abs().amax() > 1  # it does move the colours
    as_uint8 = lighting.apply_params(images, params)
    assert as_uint8.dtype == torch.uint8
    assert (as_uint8.double() - reference.round().clamp(0, 255)).abs().max() <= 1
    # forward draws from the generator: the same seed, the same batch
    torch.testing.assert_close(lighting(images.float(), torch.Generator().manual_seed(1)), out)
    # α ~ N(0, 0.1²)
    many = lighting.draw_params((20_000, 3, 1, 1), torch.Generator().manual_seed(2))["alpha"]
    assert abs(float(many.std()) - 0.1) < 0.003 and abs(float(many.mean())) < 0.003
    with pytest.raises(ValueError, match=r"`eigenvectors` must be a finite 3×3 matrix"):
        PCALighting(values, vectors[:2])
    with pytest.raises(ValueError, match=r"`alpha_std` must be a finite number >= 0, got -1"):
        PCALighting(values, vectors, alpha_std=-1)


def test_the_data_module_draws_lighting_from_its_augmentation_stream_in_float(prepared):
    dm = StreamingImageDataModule(prepared["raw"], crop_size=CROP, batch_size=8, seed=4)
    assert isinstance(dm.train_transforms[-1], PCALighting)
    images = next(iter(dm.loader("train", train=True, device_side=True)))[0]
    first = dm.augment(images)
    assert first.dtype == torch.float32 and not torch.equal(first, first.round())  # lighting added in float
    dm.load_state_dict({"augment_seed": 4, "augmented_batches": 0})
    torch.testing.assert_close(dm.augment(images), first, rtol=0, atol=0)  # the stream, replayed
    assert not torch.equal(dm.augment(images), first)  # the next batch draws anew
    # finishing a training batch fuses the lighting into the normalisation: the same draws, the same numbers,
    # for raw shards (NCHW batches) and JPEG shards (decoded interleaved: channels_last batches)
    jpeg = StreamingImageDataModule(prepared["jpeg"], crop_size=CROP, batch_size=8)
    jpeg_images = next(iter(jpeg.loader("train", train=True, device_side=True)))[0]
    assert jpeg_images.is_contiguous(memory_format=torch.channels_last) and not jpeg_images.is_contiguous()
    assert images.is_contiguous()
    for batch in (images, jpeg_images):
        for kwargs in ({}, {"translate": 2}, {"hflip": False}):
            dm = StreamingImageDataModule(prepared["raw"], crop_size=CROP, batch_size=8, seed=4, **kwargs)
            dm.load_state_dict({"augment_seed": 4, "augmented_batches": 0})
            finished = dm.finish_batch(batch, train=True)
            assert finished.shape == (8, 3, CROP, CROP) and finished.dtype == torch.float32
            dm.load_state_dict({"augment_seed": 4, "augmented_batches": 0})
            torch.testing.assert_close(finished, dm.normalize(dm.augment(batch)), rtol=1e-5, atol=1e-5)
        # the layout of the batch does not change a value: the same pixels in NCHW give the same batch
        dm.load_state_dict({"augment_seed": 4, "augmented_batches": 0})
        finished = dm.finish_batch(batch, train=True)
        dm.load_state_dict({"augment_seed": 4, "augmented_batches": 0})
        assert torch.equal(dm.finish_batch(batch.contiguous(), train=True), finished)
    off = StreamingImageDataModule(prepared["raw"], crop_size=CROP, lighting=0.0)
    assert not any(isinstance(t, PCALighting) for t in off.train_transforms)


def test_finished_batches_kept_in_a_list_equal_batches_copied_one_by_one(prepared, monkeypatch):
    """The CPU finishing step writes into recycled memory (BatchMemory): a batch the user keeps is never reused."""
    monkeypatch.setattr(memory, "HUGE_PAGE_MIN_BYTES", 0)  # let the pool take these small batches too

    def train_batches(keep: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        dm = StreamingImageDataModule(prepared["jpeg"], crop_size=CROP, batch_size=8, seed=3, shuffle_seed=5)
        dm.setup("fit")
        if keep:
            return list(dm.train_dataloader())  # the user's pattern: every batch alive at once
        addresses, copies = [], []
        for images, labels in dm.train_dataloader():
            addresses.append(images.data_ptr())
            copies.append((images.clone(), labels))
        if sys.platform.startswith("linux"):
            assert len(set(addresses)) == 2  # the batch in the loop variable, and the one being written
        return copies

    kept, copied = train_batches(keep=True), train_batches(keep=False)
    assert len(kept) == len(copied) == 15
    assert len({images.data_ptr() for images, _ in kept}) == 15
    for (images, labels), (expected, expected_labels) in zip(kept, copied, strict=True):
        assert torch.equal(labels, expected_labels) and torch.equal(images, expected)


# ----------------------------------------------------------------------------- ten-patch test
def test_ten_crop_matches_torchvision_per_image():
    images = torch.randint(0, 256, (5, 3, 40, 36), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    views = TenCrop((32, 30))(images)
    assert views.shape == (5, 10, 3, 32, 30)
    for n in range(5):
        expected = TF.ten_crop(images[n], [32, 30])  # even margins: torchvision's centre rounding agrees
        for v in range(10):
            assert torch.equal(views[n, v], expected[v]), (n, v)


class _TenCropModel(LightningModule):
    """A user's model whose test step averages the softmax over the ten patches (dimension 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * CROP * CROP, 3))
        self.probabilities: list[torch.Tensor] = []

    def test_step(self, batch, batch_idx):
        views, labels = batch
        assert views.shape[1:] == (10, 3, CROP, CROP)
        p = torch.softmax(self.net(views.flatten(0, 1)), dim=1).view(views.shape[0], 10, -1).mean(1)
        self.probabilities.append(p)


def test_ten_patch_test_averages_softmax_over_the_ten_views(prepared, quiet_trainer):
    torch.manual_seed(0)
    model = _TenCropModel()
    dm = StreamingImageDataModule(prepared["jpeg"], crop_size=CROP, batch_size=8, eval_batch_size=7, test_crops="ten")
    quiet_trainer().test(model, datamodule=dm)
    under_trainer = torch.cat(model.probabilities)
    dm.setup("test")
    views = torch.cat([v for v, _ in dm.test_dataloader()])  # on its own: the same views, finished in the loader
    assert views.shape == (30, 10, 3, CROP, CROP)
    with torch.no_grad():
        manual = torch.softmax(model.net(views.flatten(0, 1)), dim=1).view(30, 10, -1).mean(1)
    torch.testing.assert_close(under_trainer, manual)
    # the centre view is what the centre crop gives
    centre = StreamingImageDataModule(prepared["jpeg"], crop_size=CROP, eval_batch_size=7)
    centre.setup("test")
    torch.testing.assert_close(torch.cat([x for x, _ in centre.test_dataloader()]), views[:, 4])


def test_feature_classifier_tests_on_ten_patches_by_averaging_their_softmax(prepared, quiet_trainer):
    """Our own model's test step: a batch of views (B, 10, C, h, w) is scored by its averaged softmax."""
    torch.manual_seed(0)
    features = ConvNet(in_channels=3, channels=[4], hidden=[8], dropout=0.0)
    model = FeatureClassifier(features=features, num_classes=3, input_shape=(3, CROP, CROP))
    dm = StreamingImageDataModule(prepared["jpeg"], crop_size=CROP, eval_batch_size=7, test_crops="ten")
    result = quiet_trainer().test(model, datamodule=dm, verbose=False)[0]
    dm.setup("test")
    views, labels = (torch.cat(part) for part in zip(*dm.test_dataloader(), strict=True))
    model.eval()
    with torch.no_grad():
        averaged = torch.softmax(model(views.flatten(0, 1)), dim=1).view(len(labels), 10, -1).mean(1)
        single = torch.softmax(model(views[:, 4]), dim=1)
        predicted = torch.cat([model.predict_step(v, 0) for v in views.split(7)])
    torch.testing.assert_close(predicted, averaged)
    assert result["test_acc"] == pytest.approx(float((averaged.argmax(1) == labels).float().mean()))
    nll = -averaged[torch.arange(len(labels)), labels].log().mean()
    assert result["test_loss"] == pytest.approx(float(nll), rel=1e-5)
    assert not torch.allclose(averaged, single)  # the ten views do change the prediction


# ----------------------------------------------------------------------------- training, resume
class _Record(Callback):
    """Per optimizer step: a fingerprint of the finished batch; per epoch: the training loss."""

    def __init__(self) -> None:
        self.batches: dict[int, tuple[float, list[int]]] = {}
        self.losses: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        images, labels = batch
        self.batches[trainer.global_step] = (float(images.double().sum()), labels.tolist())

    def on_train_epoch_end(self, trainer, pl_module):
        self.losses.append(float(trainer.callback_metrics["train_loss"]))


def _fit(input_dir: Path, root: Path, ckpt_path: str | None = None) -> tuple[_Record, FeatureClassifier]:
    seed_everything(0)
    model = FeatureClassifier(
        features=ConvNet(in_channels=3, channels=[8], hidden=[16], dropout=0.0),
        num_classes=3,
        input_shape=(3, CROP, CROP),
        optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9),
    )
    dm = StreamingImageDataModule(input_dir, crop_size=CROP, batch_size=8, num_workers=2, seed=0)
    record = _Record()
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        default_root_dir=root,
        callbacks=[ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=5, save_top_k=-1), record],
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return record, model


@pytest.mark.slow
def test_fit_two_epochs_loss_goes_down_and_a_mid_epoch_resume_continues_with_the_next_unseen_batch(
    prepared, tmp_path, monkeypatch
):
    # the training batches are finished into recycled memory (BatchMemory), as 224×224 batches are
    monkeypatch.setattr(memory, "HUGE_PAGE_MIN_BYTES", 0)
    ref, ref_model = _fit(prepared["jpeg"], tmp_path / "ref")
    assert len(ref.batches) == 30  # 120 training images, batches of 8, 2 epochs
    assert ref.losses[1] < ref.losses[0] < 1.2, ref.losses  # ln 3 = 1.10 at chance
    # epoch 2 is another shuffle of the same images
    assert sorted(sum((ref.batches[s][1] for s in range(15)), [])) == sorted(
        sum((ref.batches[s][1] for s in range(15, 30)), [])
    )
    assert [ref.batches[s][1] for s in range(15)] != [ref.batches[s][1] for s in range(15, 30)]

    ckpt = tmp_path / "ref" / "ckpt" / "epoch=1-step=20.ckpt"  # epoch 1, 5 of its 15 batches done
    resumed, model = _fit(prepared["jpeg"], tmp_path / "run", ckpt_path=str(ckpt))
    assert sorted(resumed.batches) == list(range(20, 30))
    for step in range(20, 30):  # the next unseen batches, augmented as in the uninterrupted run
        assert resumed.batches[step] == ref.batches[step], step
    for (name, a), b in zip(ref_model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name

    # recycling the batches' memory changes nothing: the same run with a new tensor per batch
    monkeypatch.setattr(memory, "HUGE_PAGE_MIN_BYTES", 2**62)
    fresh, fresh_model = _fit(prepared["jpeg"], tmp_path / "fresh")
    assert fresh.batches == ref.batches
    for (name, a), b in zip(ref_model.state_dict().items(), fresh_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


# ----------------------------------------------------------------------------- DDP shares
class _RecordingStream(StreamingImageDataModule):
    """A user's subclass: saves, per rank, the stored images (before augmentation) of every batch it is handed."""

    def __init__(self, out_dir: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.out_dir = out_dir
        self.seen: dict[str, list[str]] = {}

    def setup(self, stage: str) -> None:
        # mp.spawn (DDPStrategy start_method="spawn") makes "spawn" the default of the ranks; forked loader workers,
        # as under torchrun or Lightning's default launcher, start in milliseconds instead of seconds
        multiprocessing.set_start_method("fork", force=True)
        super().setup(stage)

    def on_before_batch_transfer(self, batch, dataloader_idx):
        trainer = self.trainer
        if not trainer.sanity_checking:
            stage = "train" if trainer.training else "val"
            self.seen.setdefault(f"{stage}{trainer.current_epoch}", []).extend(fingerprint(x) for x in batch[0])
        return batch

    def teardown(self, stage: str) -> None:
        torch.save(self.seen, Path(self.out_dir) / f"rank{self.trainer.global_rank}.pt")


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_ranks_stream_disjoint_shares_that_cover_the_epoch(prepared, tmp_path):
    """2 gloo processes × 2 loader workers: each epoch's training samples and the validation samples are split."""
    from lightning.pytorch.strategies import DDPStrategy

    seed_everything(0)
    model = FeatureClassifier(
        features=ConvNet(in_channels=3, channels=[4], hidden=[8], dropout=0.0),
        num_classes=3,
        input_shape=(3, CROP, CROP),
    )
    dm = _RecordingStream(
        str(tmp_path), input_dir=str(prepared["raw"]), crop_size=CROP, batch_size=4, eval_batch_size=4, num_workers=2
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(process_group_backend="gloo", start_method="spawn"),
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    single = StreamingImageDataModule(prepared["raw"], crop_size=CROP, batch_size=4)
    train, val = set(raw_fingerprints(single, "train")), raw_fingerprints(single, "val")
    for epoch in (0, 1):
        a, b = rank0[f"train{epoch}"], rank1[f"train{epoch}"]
        assert len(a) == len(b) == 60  # equal shares: DDP's all-reduce needs the same number of batches
        assert not set(a) & set(b)  # disjoint
        assert set(a) | set(b) == train  # together: the whole epoch
        assert sorted(rank0[f"val{epoch}"] + rank1[f"val{epoch}"]) == sorted(val)  # every validation image once
    assert rank0["train0"] != rank0["train1"]  # reshuffled for the second epoch
