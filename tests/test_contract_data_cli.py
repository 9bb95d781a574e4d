"""Lightning contracts of the data modules and the CLI, tried the way users write them (issue 11: 2, 3, 9, 10)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
import yaml
from _data_files import write_cifar10, write_cifar100, write_idx_dataset, write_image_folder

from lightning_deepfeat import ConvNet, FeatureClassifier
from lightning_deepfeat.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def _every_data_module(root: Path) -> dict[str, pl.LightningDataModule]:
    """One of each data module we ship, on small generated files (nothing downloads)."""
    write_idx_dataset(root / "mnist")
    write_idx_dataset(root / "fashion")
    write_cifar10(root / "cifar10")
    write_cifar100(root / "cifar100")
    write_image_folder(root / "folder", per_class=4)
    return {
        "digits": DigitsDataModule(batch_size=16, translate=1),
        "mnist": MNISTDataModule(root=root / "mnist", batch_size=16, translate=2),
        "fashion": FashionMNISTDataModule(root=root / "fashion", batch_size=16, translate=2, hflip=True),
        "cifar10": CIFAR10DataModule(root=root / "cifar10", batch_size=8, translate=4, hflip=True),
        "cifar100": CIFAR100DataModule(root=root / "cifar100", batch_size=8, crop_size=28),
        "folder": ImageFolderDataModule(root / "folder", resize=40, crop_size=32, batch_size=4),
    }


def _model_for(dm: pl.LightningDataModule) -> FeatureClassifier:
    features = ConvNet(channels=[4], hidden=[16], in_channels=dm.image_shape[0])
    return FeatureClassifier(features, num_classes=dm.num_classes, input_shape=dm.image_shape)


# ----------------------------------------------------------------- 2. the loaders are ordinary loaders
def test_point02_loaders_used_by_hand_yield_normalised_float_batches(tmp_path):
    for name, dm in _every_data_module(tmp_path).items():
        dm.setup("fit")
        dm.setup("predict")
        for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader(), dm.predict_dataloader()):
            x, y = next(iter(loader))
            assert x.dtype == torch.float32 and tuple(x.shape[1:]) == tuple(dm.image_shape), (name, x.dtype, x.shape)
            assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
            assert 0 <= int(y.min()) and int(y.max()) < dm.num_classes
    # normalised: over the whole digits validation split, mean ~0 and std ~1 (raw pixels are 0..16)
    dm = DigitsDataModule(batch_size=500, val_fraction=0.5)
    dm.setup("fit")
    x = torch.cat([x for x, _ in dm.val_dataloader()])
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1.0) < 0.1


def test_point02_training_loader_used_by_hand_is_augmented():
    plain = DigitsDataModule(batch_size=128, shuffle_seed=3)
    shifted = DigitsDataModule(batch_size=128, shuffle_seed=3, translate=2, hflip=True, seed=0)
    for dm in (plain, shifted):
        dm.setup("fit")
    (x0, y0), (x1, y1) = next(iter(plain.train_dataloader())), next(iter(shifted.train_dataloader()))
    assert torch.equal(y0, y1)  # the same samples, in the same order
    changed = (x0 != x1).flatten(1).any(1).float().mean()
    assert changed > 0.8  # moved or flipped: P(neither) = 1/25 * 1/2
    again = next(iter(shifted.train_dataloader()))[0]
    assert not torch.equal(again, x1)  # every batch draws new offsets


def test_point02_plain_pytorch_loop_over_our_loaders():
    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=64, translate=1)
    dm.setup("fit")
    model = FeatureClassifier(ConvNet(channels=[8], hidden=[32], in_channels=1), num_classes=10, input_shape=(1, 8, 8))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def val_loss() -> float:
        model.eval()
        with torch.no_grad():
            losses = [F.cross_entropy(model(x), y, reduction="sum") for x, y in dm.val_dataloader()]
        model.train()
        return float(sum(losses)) / len(dm.splits["val"][1])

    before = val_loss()
    for _ in range(6):
        for x, y in dm.train_dataloader():
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    assert val_loss() < 0.5 * before


def test_point02_trainer_fit_and_predict_with_our_loaders_passed_by_hand(tmp_path):
    dm = DigitsDataModule(batch_size=64, translate=1)
    dm.setup("fit")
    dm.setup("predict")
    model = _model_for(dm)
    trainer = pl.Trainer(max_epochs=2, default_root_dir=tmp_path, **QUIET)
    trainer.fit(model, train_dataloaders=dm.train_dataloader(), val_dataloaders=dm.val_dataloader())
    assert trainer.callback_metrics["val_error"] < 0.9
    predictions = pl.Trainer(**QUIET).predict(model, dataloaders=dm.predict_dataloader())
    probabilities = torch.cat(predictions)
    assert probabilities.shape == (len(dm.splits["test"][1]), 10)
    assert torch.allclose(probabilities.sum(1), torch.ones(len(probabilities)), atol=1e-5)


# ----------------------------------------------------------------- 3. every precision, every data module
class _SeenDtype(pl.Callback):
    def __init__(self) -> None:
        self.dtypes: set[torch.dtype] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.dtypes.add(batch[0].dtype)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.dtypes.add(batch[0].dtype)


@pytest.mark.slow
@pytest.mark.parametrize(
    "precision, dtype",
    [("bf16-true", torch.bfloat16), ("64-true", torch.float64), ("bf16-mixed", torch.float32), ("32-true", torch.float32)],
)
def test_point03_true_and_mixed_precision_fit_on_cpu_with_every_data_module(tmp_path, precision, dtype):
    for name, dm in _every_data_module(tmp_path).items():
        seen = _SeenDtype()
        model = _model_for(dm)
        trainer = pl.Trainer(accelerator="cpu", precision=precision, max_steps=2, limit_val_batches=1,
                             num_sanity_val_steps=0, callbacks=[seen], default_root_dir=tmp_path, **QUIET)
        trainer.fit(model, datamodule=dm)
        assert seen.dtypes == {dtype}, (name, seen.dtypes)
        assert torch.isfinite(trainer.callback_metrics["train_loss"]).item(), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="16-bit precision needs a GPU")
@pytest.mark.parametrize("precision", ["16-true", "16-mixed"])
def test_point03_half_precision_fits_on_gpu(tmp_path, precision):
    dm = DigitsDataModule(batch_size=32, translate=1)
    trainer = pl.Trainer(accelerator="gpu", devices=1, precision=precision, max_steps=3, limit_val_batches=1,
                         default_root_dir=tmp_path, **QUIET)
    trainer.fit(_model_for(dm), datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["train_loss"]).item()


# ----------------------------------------------------------------- 9. overfit_batches repeats one batch
class _Batches(pl.Callback):
    def __init__(self) -> None:
        self.train: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append((batch[0].clone(), batch[1].clone()))


def test_point09_overfit_batches_repeats_one_fixed_batch(tmp_path):
    seen = _Batches()
    dm = DigitsDataModule(batch_size=32, translate=1, hflip=True)
    trainer = pl.Trainer(max_epochs=4, overfit_batches=1, callbacks=[seen], default_root_dir=tmp_path, **QUIET)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(_model_for(dm), datamodule=dm)
    assert len(seen.train) == 4
    first_images, first_labels = seen.train[0]
    for images, labels in seen.train[1:]:
        assert torch.equal(labels, first_labels) and torch.equal(images, first_images)
    assert not [w for w in caught if "shuffling" in str(w.message)]


# ----------------------------------------------------------------- 10. deepfeat takes any LightningModule
USER_MODULE = '''
import torch
import lightning.pytorch as pl
from torch import nn


class MyModule(pl.LightningModule):
    def __init__(self, num_classes: int = 3, input_shape: tuple = (1, 2, 2), hidden: int = 16):
        super().__init__()
        self.save_hyperparameters()
        inputs = 1
        for d in input_shape:
            inputs *= d
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class NoShapes(pl.LightningModule):
    def __init__(self, hidden: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.LazyLinear(10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
'''


def _deepfeat(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "lightning_deepfeat", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_point10_deepfeat_fit_with_a_plain_lightning_module(tmp_path):
    (tmp_path / "mymod.py").write_text(USER_MODULE)
    common = ["--data", "DigitsDataModule", "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"]
    done = _deepfeat(["fit", "--model", "mymod.MyModule", *common, "--trainer.callbacks+=DivideLROnPlateau",
                      "--trainer.callbacks.monitor=train_loss", "--trainer.callbacks+=MaxNormConstraint"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    config = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "config.yaml").read_text())
    assert config["model"]["class_path"] == "mymod.MyModule"
    assert config["model"]["init_args"]["num_classes"] == 10 and config["model"]["init_args"]["input_shape"] == [1, 8, 8]
    assert [c["class_path"].rsplit(".", 1)[1] for c in config["trainer"]["callbacks"]] == ["DivideLROnPlateau", "MaxNormConstraint"]
    assert "deepfeat: test_acc=" in done.stdout
    # a module that takes neither name gets neither
    done = _deepfeat(["fit", "--model", "mymod.NoShapes", *common], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # and the default is still FeatureClassifier
    done = _deepfeat(["fit", "--data", "DigitsDataModule", "--print_config"], tmp_path)
    printed = yaml.safe_load(done.stdout)
    assert printed["model"]["class_path"].rsplit(".", 1)[1] == "FeatureClassifier"
    assert printed["model"]["init_args"]["input_shape"] == [1, 8, 8]
