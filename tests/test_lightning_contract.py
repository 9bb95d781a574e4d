"""Lightning's contracts, tried the way users write them (issue 11): one or more tests per numbered point.

Each test uses the public API only, as a user's own code would: their subclass with ``**kw``,
their plain loop over our loaders, their own Trainer and LightningModule with our
callbacks, ``deepfeat`` typed in a shell. Test names carry the point they cover
(``test_point05_...`` is point 5 of the issue).
"""

from __future__ import annotations

import ast
import copy
import json
import os
import pickle
import re
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.tuner import Tuner
from lightning.pytorch.utilities.model_summary import ModelSummary
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_deepfeat.models
from _data_files import DataRoots
from lightning_deepfeat import MLP, ConvNet, FeatureClassifier
from lightning_deepfeat.callbacks import DivideLROnPlateau, MaxNormConstraint
from lightning_deepfeat.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)
from lightning_deepfeat.models.classifier import krizhevsky_sgd

# ====================================================================================================
# the model: reload, optimizer specs, shapes, export, LR finder (points 1, 5, 6, 7, 8, 14)
# ====================================================================================================
ROOT = Path(__file__).resolve().parents[1]


def _fit(quiet_trainer, model: pl.LightningModule, steps: int = 3, **trainer_kwargs) -> pl.Trainer:
    trainer = quiet_trainer(**{"max_steps": steps, "limit_val_batches": 0, **trainer_kwargs})
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32))
    return trainer


def _batch() -> torch.Tensor:
    return torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _outputs(model: nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(_batch())


# ----------------------------------------------------------------- 1. a subclass that builds φ itself reloads
def make(width: int) -> nn.Module:
    """The user's own builder of φ: no recorded arguments."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU())


class WidthNet(FeatureClassifier):
    """Builds φ itself and forwards everything else."""

    def __init__(self, width: int = 16, **kw):
        super().__init__(features=make(width), **kw)


class WidthNetSaving(FeatureClassifier):
    """The same, calling save_hyperparameters itself as the Lightning docs show."""

    def __init__(self, width: int = 16, **kw):
        super().__init__(features=make(width), **kw)
        self.save_hyperparameters()


class DeepNet(FeatureClassifier):
    """Extra hyperparameters of its own, φ built from them, a fixed optimizer passed up."""

    def __init__(self, width: int = 16, depth: int = 2, dropout: float = 0.0, **kw):
        layers = [nn.Flatten(), nn.Linear(64, width), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Dropout(dropout), nn.Linear(width, width), nn.ReLU()]
        super().__init__(features=nn.Sequential(*layers), optimizer=partial(torch.optim.SGD, lr=0.05), **kw)
        self.depth = depth


@pytest.mark.parametrize(
    "build",
    [
        lambda: WidthNet(width=12),
        lambda: WidthNet(width=12, num_classes=10, input_shape=(1, 8, 8), optimizer=partial(torch.optim.Adam, lr=1e-3)),
        lambda: WidthNetSaving(width=12),
        lambda: WidthNetSaving(width=12, lr=0.05),
        lambda: DeepNet(width=12, depth=3, dropout=0.1, num_classes=10),
    ],
    ids=["kwargs", "kwargs-passed-through", "save_hyperparameters", "save_hyperparameters-lr", "extra-hparams"],
)
def test_point01_subclass_that_builds_its_features_reloads_bit_identically(build, tmp_path, quiet_trainer):
    pl.seed_everything(0)
    model = build()
    _fit(quiet_trainer, model)
    path = tmp_path / "model.ckpt"
    model.trainer.save_checkpoint(path)
    expected = _outputs(model)
    cls = type(model)
    for options in ({}, {"map_location": "cpu"}, {"map_location": torch.device("cpu"), "weights_only": True}):
        loaded = cls.load_from_checkpoint(path, **options)
        assert type(loaded) is cls and dict(loaded.hparams) == dict(model.hparams)
        assert torch.equal(_outputs(loaded), expected), options


class OverridesBuild(FeatureClassifier):
    def build_features(self) -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))


class AttributeFirst(FeatureClassifier):
    """build_features reads an attribute set before super().__init__."""

    def __init__(self, channels: int = 4, **kw):
        self.channels = channels
        super().__init__(**kw)

    def build_features(self) -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, self.channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))


class ExplicitSignature(FeatureClassifier):
    """No **kwargs: builds φ itself and fixes what it passes up."""

    def __init__(self, width: int = 16, num_classes: int = 10):
        super().__init__(features=make(width), num_classes=num_classes, input_shape=(1, 8, 8))


class WithExtra(FeatureClassifier):
    """Extra hparams, handed `features=` by its caller."""

    def __init__(self, label_smoothing: float = 0.0, **kw):
        super().__init__(**kw)
        self.label_smoothing = label_smoothing


YAML_NET = {
    "class_path": "lightning_deepfeat.models.ConvNet",
    "init_args": {"channels": [4], "hidden": [16], "dropout": 0.0},
}


@pytest.mark.parametrize(
    "build",
    [
        lambda: FeatureClassifier(features=ConvNet(channels=(4,), hidden=(16,))),
        lambda: OverridesBuild(),
        lambda: AttributeFirst(channels=6, num_classes=10),
        lambda: ExplicitSignature(width=12),
        lambda: WithExtra(label_smoothing=0.1, features=MLP(hidden=(16,), dropout=0.0)),
        lambda: FeatureClassifier(features=YAML_NET),
    ],
    ids=[
        "features=ConvNet",
        "build_features",
        "attribute-before-super",
        "explicit-signature",
        "extra-hparams",
        "yaml-net",
    ],
)
def test_point01_patterns_that_reloaded_before_still_reload(build, tmp_path, quiet_trainer):
    pl.seed_everything(0)
    model = build()
    _fit(quiet_trainer, model)
    path = tmp_path / "model.ckpt"
    model.trainer.save_checkpoint(path)
    expected = _outputs(model)
    loaded = type(model).load_from_checkpoint(path, weights_only=True)
    assert torch.equal(_outputs(loaded), expected)
    assert torch.equal(_outputs(copy.deepcopy(loaded)), expected)
    assert torch.equal(_outputs(pickle.loads(pickle.dumps(loaded))), expected)


# ----------------------------------------------------------------- 5. optimizer and scheduler survive a reload
class RecordOptimizer(Callback):
    def on_train_start(self, trainer, pl_module):
        optimizer = trainer.optimizers[0]
        self.optimizer = type(optimizer)
        self.lrs = [group["lr"] for group in optimizer.param_groups]
        self.state_steps = [float(s["step"]) for s in optimizer.state.values() if "step" in s]
        configs = trainer.lr_scheduler_configs
        self.scheduler = type(configs[0].scheduler) if configs else None


def test_point05_adam_and_its_scheduler_are_rebuilt_on_reload_and_resume(tmp_path, quiet_trainer, digits):
    pl.seed_everything(0)
    model = FeatureClassifier(
        MLP(hidden=(16,), dropout=0.0),
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),
    )
    trainer = _fit(quiet_trainer, model, steps=4)
    ckpt = tmp_path / "adam.ckpt"
    trainer.save_checkpoint(ckpt)

    loaded = FeatureClassifier.load_from_checkpoint(ckpt, weights_only=True)
    configured = loaded.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 1e-3
    assert (
        isinstance(scheduler, torch.optim.lr_scheduler.StepLR) and scheduler.gamma == 0.5 and scheduler.step_size == 1
    )

    # resume the reloaded model: Adam's moments come back from the checkpoint
    record = RecordOptimizer()
    resumed = quiet_trainer(max_steps=6, limit_val_batches=0, callbacks=[record])
    resumed.fit(loaded, datamodule=digits, ckpt_path=ckpt)
    assert record.optimizer is torch.optim.Adam and record.scheduler is torch.optim.lr_scheduler.StepLR
    assert record.state_steps and set(record.state_steps) == {4.0}
    assert resumed.global_step == 6


def my_sgd(params, lr: float = 0.1, momentum: float = 0.0):
    """A user's module-level optimizer function."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


@pytest.mark.parametrize(
    "factory, expected",
    [
        (krizhevsky_sgd, (torch.optim.SGD, 0.01, 0.9)),
        (partial(my_sgd, lr=0.2, momentum=0.5), (torch.optim.SGD, 0.2, 0.5)),
        (my_sgd, (torch.optim.SGD, 0.1, 0.0)),
        (torch.optim.Adagrad, (torch.optim.Adagrad, 0.01, None)),
    ],
    ids=["krizhevsky_sgd", "partial-of-function", "function", "class"],
)
def test_point05_classes_functions_and_partials_are_rebuilt(factory, expected, tmp_path, quiet_trainer):
    model = FeatureClassifier(MLP(hidden=(8,)), optimizer=factory)
    _fit(quiet_trainer, model, steps=1)
    model.trainer.save_checkpoint(tmp_path / "m.ckpt")
    optimizer = FeatureClassifier.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True).configure_optimizers()
    cls, lr, momentum = expected
    assert type(optimizer) is cls and optimizer.param_groups[0]["lr"] == lr
    assert optimizer.param_groups[0].get("momentum") == momentum


def test_point05_a_factory_that_cannot_be_rebuilt_is_named_at_reload(tmp_path, quiet_trainer, digits):
    def local_scheduler(optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=3)

    model = FeatureClassifier(
        MLP(hidden=(8,)), optimizer=lambda params: torch.optim.SGD(params, lr=0.3), lr_scheduler=local_scheduler
    )
    _fit(quiet_trainer, model, steps=1)
    ckpt = tmp_path / "lambda.ckpt"
    model.trainer.save_checkpoint(ckpt)
    expected = _outputs(model)

    # it loads for inference, saying what to pass to train it ...
    with pytest.warns(
        UserWarning,
        match=r"`optimizer` cannot be rebuilt: it was a lambda.*load_from_checkpoint\(path, optimizer=\.\.\.\)",
    ):
        loaded = FeatureClassifier.load_from_checkpoint(ckpt, weights_only=True)
    assert torch.equal(_outputs(loaded), expected)
    # ... and training it fails before any step, naming the argument
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    with pytest.raises(ValueError, match=r"`optimizer` cannot be rebuilt: it was a lambda.*optimizer=\.\.\."):
        trainer.fit(loaded, datamodule=digits)
    assert trainer.global_step == 0
    with pytest.warns(
        UserWarning, match=r"`lr_scheduler` cannot be rebuilt: it was a local function .*lr_scheduler=\.\.\."
    ):
        loaded = FeatureClassifier.load_from_checkpoint(ckpt, optimizer=partial(torch.optim.SGD, lr=0.3))
    with pytest.raises(ValueError, match=r"`lr_scheduler` cannot be rebuilt.*lr_scheduler=\.\.\."):
        loaded.configure_optimizers()

    # passed again, both are used
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*cannot be rebuilt.*")
        loaded = FeatureClassifier.load_from_checkpoint(
            ckpt, optimizer=partial(torch.optim.SGD, lr=0.3), lr_scheduler=local_scheduler, weights_only=True
        )
    configured = loaded.configure_optimizers()
    assert configured["optimizer"].param_groups[0]["lr"] == 0.3 and configured["lr_scheduler"].step_size == 3


def test_point05_cli_given_optimizer_survives_reload_and_a_second_save(tmp_path, quiet_trainer):
    """`--model.init_args.optimizer` from YAML: the checkpoint, and one saved after reloading it, rebuild Adam."""
    from lightning_deepfeat.cli import main

    config = {
        "model": {
            "class_path": "FeatureClassifier",
            "init_args": {
                "features": {"class_path": "lightning_deepfeat.MLP", "init_args": {"hidden": [8]}},
                "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.002}},
            },
        },
        "data": {"class_path": "DigitsDataModule", "init_args": {"batch_size": 64}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = main(
        [
            "fit",
            "--config",
            str(path),
            "--trainer.fast_dev_run=true",
            "--test_after_fit=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ]
    )
    assert isinstance(cli.trainer.optimizers[0], torch.optim.Adam)
    cli.trainer.save_checkpoint(tmp_path / "cli.ckpt")
    loaded = FeatureClassifier.load_from_checkpoint(tmp_path / "cli.ckpt", weights_only=True)
    optimizer = loaded.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.002
    # the reloaded model, trained and saved again without the CLI
    _fit(quiet_trainer, loaded, steps=1)
    loaded.trainer.save_checkpoint(tmp_path / "again.ckpt")
    optimizer = FeatureClassifier.load_from_checkpoint(
        tmp_path / "again.ckpt", weights_only=True
    ).configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.002


# ----------------------------------------------------------------- 6. a shape mismatch is named at setup
class CountSteps(Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_start(self, *args) -> None:
        self.batches += 1

    def on_validation_batch_start(self, *args) -> None:
        self.batches += 1


@pytest.mark.parametrize("stage", ["fit", "validate"])
def test_point06_input_shape_that_is_not_the_data_is_named_before_any_step(stage, quiet_trainer, digits):
    model = FeatureClassifier(MLP(hidden=(16,)), input_shape=(1, 28, 28))
    counter = CountSteps()
    trainer = quiet_trainer(max_steps=2, callbacks=[counter])
    message = (
        r"`input_shape`=\(1, 28, 28\) but DigitsDataModule has image_shape=\(1, 8, 8\); pass input_shape=\(1, 8, 8\)"
    )
    with pytest.raises(ValueError, match=message):
        getattr(trainer, stage)(model, datamodule=digits)
    assert counter.batches == 0 and trainer.global_step == 0


# ----------------------------------------------------------------- 7. ONNX export and the summary's sizes
def test_point07_to_onnx_without_an_input_matches_torch_with_a_dynamic_batch(tmp_path, quiet_trainer):
    import onnxruntime as ort  # in the `test` extra, with onnx

    pl.seed_everything(0)
    model = FeatureClassifier(ConvNet(channels=(8,), hidden=(16,)), num_classes=10, input_shape=(1, 8, 8))
    _fit(quiet_trainer, model, steps=5)
    assert model.example_input_array.shape == (1, 1, 8, 8)
    path = tmp_path / "m.onnx"
    # torch >= 2.9 exports with dynamo (needs onnxscript) by default; the TorchScript exporter takes dynamic_axes
    model.to_onnx(
        path,
        dynamo=False,
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
    )
    session = ort.InferenceSession(str(path))
    model.eval()
    for n in (1, 7):
        x = torch.randn(n, 1, 8, 8)
        (logits,) = session.run(None, {"images": x.numpy()})
        assert logits.shape == (n, 10)
        torch.testing.assert_close(torch.from_numpy(logits), model(x).detach(), rtol=0, atol=1e-5)


def test_point07_model_summary_shows_input_and_output_sizes(quiet_trainer):
    model = FeatureClassifier(ConvNet(channels=(8,), hidden=(16,)), num_classes=10, input_shape=(1, 8, 8))
    summary = ModelSummary(model, max_depth=1)
    sizes = dict(zip(summary.layer_names, zip(summary.in_sizes, summary.out_sizes, strict=True), strict=True))
    assert sizes["features"] == ([1, 1, 8, 8], [1, 16]) and sizes["head"] == ([1, 16], [1, 10])
    # and with the summary on (Lightning's default), fit runs on our data module
    _fit(quiet_trainer, model, steps=1, enable_model_summary=True)
    assert model.trainer.global_step == 1


@pytest.mark.parametrize("precision", ["bf16-true", "64-true"])
def test_point07_summary_example_follows_a_true_precision(precision, quiet_trainer):
    """Lightning runs the example through the model at fit start; it must be in the model's dtype."""
    model = FeatureClassifier(MLP(hidden=(16,)), num_classes=3, input_shape=(1, 4, 4))
    loader = DataLoader(TensorDataset(torch.randn(16, 1, 4, 4), torch.randint(0, 3, (16,))), batch_size=8)
    trainer = quiet_trainer(max_steps=1, enable_model_summary=True, precision=precision)
    trainer.fit(model, train_dataloaders=loader)
    assert trainer.global_step == 1
    assert model.example_input_array.dtype == next(model.parameters()).dtype


# ----------------------------------------------------------------- 8. the LR finder
class RecordLR(Callback):
    def on_train_start(self, trainer, pl_module):
        self.lrs = [group["lr"] for group in trainer.optimizers[0].param_groups]


def test_point08_lr_find_with_defaults_then_fit_trains_at_the_suggestion(quiet_trainer, digits):
    pl.seed_everything(0)
    model = FeatureClassifier(MLP(hidden=(32,), dropout=0.0))
    record = RecordLR()
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0, callbacks=[record])
    finder = Tuner(trainer).lr_find(model, datamodule=digits)
    suggestion = finder.suggestion()
    assert suggestion is not None and suggestion != 0.01  # 0.01: krizhevsky_sgd's own
    assert model.lr == suggestion and model.hparams["lr"] == suggestion
    trainer.fit(model, datamodule=digits)
    assert record.lrs == [suggestion]


def test_point08_lr_overrides_the_factory_and_is_checked():
    model = FeatureClassifier(MLP(hidden=(8,)), optimizer=partial(torch.optim.Adam, lr=1e-3), lr=0.05)
    assert [g["lr"] for g in model.configure_optimizers().param_groups] == [0.05]
    with pytest.raises(ValueError, match=r"`lr` must be a finite number > 0 or None .* got -1"):
        FeatureClassifier(MLP(hidden=(8,)), lr=-1)


# ----------------------------------------------------------------- 14. public API only
def _private_attributes_of_others(paths: list[Path]) -> list[str]:
    """``x._name`` and ``getattr(x, "_name")`` in ``paths`` whose ``_name`` our own code does not define."""
    trees = {path: ast.parse(path.read_text()) for path in paths}
    ours: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                ours.add(node.name)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
            ):
                ours.add(node.attr)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):  # module and class constants of ours
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                ours.update(t.id for t in targets if isinstance(t, ast.Name))
    found = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                name = node.args[1].value
            if name and name.startswith("_") and not name.startswith("__") and name not in ours:
                found.append(f"{path.name}:{node.lineno}: {name}")
    return sorted(found)


def test_point14_the_package_uses_no_private_attribute_or_module_of_another_library():
    """No ``x._private`` of Lightning, torchmetrics, jsonargparse or torch anywhere in ``src/``.

    And no private module.
    """
    package = Path(lightning_deepfeat.models.__file__).parents[1]
    paths = sorted(package.rglob("*.py"))
    assert _private_attributes_of_others(paths) == []
    private_imports = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            modules = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else ([a.name for a in node.names] if isinstance(node, ast.Import) else [])
            )
            for module in modules:
                if not module.startswith("lightning_deepfeat") and any(
                    part.startswith("_") and not part.startswith("__") for part in module.split(".")
                ):
                    private_imports.append(f"{path.name}:{node.lineno}: {module}")
    assert private_imports == []


def test_point14_models_use_no_private_attributes_of_lightning_or_torchmetrics():
    package = Path(lightning_deepfeat.models.__file__).parent
    paths = sorted(package.glob("*.py")) + [package.parent / "metrics.py"]
    assert _private_attributes_of_others(paths) == []


class RecordEpochMetrics(Callback):
    def __init__(self) -> None:
        self.epochs: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs[trainer.current_epoch] = {
            k: v.clone() for k, v in trainer.callback_metrics.items() if k.startswith("train_")
        }


def _resume_run(
    quiet_trainer, root: Path, ckpt_path: Path | None = None
) -> tuple[RecordEpochMetrics, dict[str, torch.Tensor]]:
    pl.seed_everything(0)
    model = FeatureClassifier(
        ConvNet(channels=(4,), hidden=(16,), dropout=0.5), optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9)
    )
    record = RecordEpochMetrics()
    trainer = quiet_trainer(
        max_epochs=2,
        limit_train_batches=6,
        limit_val_batches=0,
        deterministic=True,
        default_root_dir=root,
        enable_checkpointing=True,
        callbacks=[record, ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=4, save_top_k=-1)],
    )
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32, translate=1), ckpt_path=ckpt_path)
    return record, {k: v.clone() for k, v in model.state_dict().items()}


def test_point14_mid_epoch_resume_restores_the_running_training_metrics(tmp_path, quiet_trainer):
    reference, weights = _resume_run(quiet_trainer, tmp_path / "ref")
    ckpt = tmp_path / "ref" / "ckpt" / "epoch=1-step=8.ckpt"  # epoch 1, after 2 of its 6 batches
    saved = torch.load(ckpt, weights_only=True)
    assert saved["deepfeat_train_metrics"]["epoch"] == 1  # mid-epoch: the running metrics are in the checkpoint
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*compute.*before the.*update.*")
        resumed, resumed_weights = _resume_run(quiet_trainer, tmp_path / "run", ckpt_path=ckpt)
    assert set(resumed.epochs) == {1}
    assert {"train_loss", "train_error"} <= set(resumed.epochs[1])
    for key, value in reference.epochs[1].items():
        assert torch.equal(resumed.epochs[1][key], value), (key, resumed.epochs[1][key], value)
    for key, value in weights.items():
        assert torch.equal(resumed_weights[key], value), key


# ====================================================================================================
# the data modules and the CLI (points 2, 3, 9, 10)
# ====================================================================================================
def _every_data_module(data: DataRoots) -> dict[str, pl.LightningDataModule]:
    """One of each data module we ship, on the small generated files of ``generated_data`` (nothing downloads)."""
    return {
        "digits": DigitsDataModule(batch_size=16, translate=1),
        "mnist": MNISTDataModule(root=data.mnist, batch_size=16, translate=2),
        "fashion": FashionMNISTDataModule(root=data.fashion, batch_size=16, translate=2, hflip=True),
        "cifar10": CIFAR10DataModule(root=data.cifar10, batch_size=8, translate=4, hflip=True),
        "cifar100": CIFAR100DataModule(root=data.cifar100, batch_size=8, crop_size=28),
        "folder": ImageFolderDataModule(data.folder, resize=40, crop_size=32, batch_size=4),
    }


def _model_for(dm: pl.LightningDataModule) -> FeatureClassifier:
    features = ConvNet(channels=[4], hidden=[16], in_channels=dm.image_shape[0])
    return FeatureClassifier(features, num_classes=dm.num_classes, input_shape=dm.image_shape)


# ----------------------------------------------------------------- 2. the loaders are ordinary loaders
def test_point02_loaders_used_by_hand_yield_normalised_float_batches(generated_data):
    for name, dm in _every_data_module(generated_data).items():
        dm.setup("fit")
        dm.setup("predict")
        for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader(), dm.predict_dataloader()):
            x, y = next(iter(loader))
            assert x.dtype == torch.float32 and tuple(x.shape[1:]) == tuple(dm.image_shape), (name, x.dtype, x.shape)
            assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
            assert int(y.min()) >= 0 and int(y.max()) < dm.num_classes
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


def test_point02_trainer_fit_and_predict_with_our_loaders_passed_by_hand(quiet_trainer):
    dm = DigitsDataModule(batch_size=64, translate=1)
    dm.setup("fit")
    dm.setup("predict")
    model = _model_for(dm)
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(model, train_dataloaders=dm.train_dataloader(), val_dataloaders=dm.val_dataloader())
    assert trainer.callback_metrics["val_error"] < 0.9
    predictions = quiet_trainer().predict(model, dataloaders=dm.predict_dataloader())
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
    [
        ("bf16-true", torch.bfloat16),
        ("64-true", torch.float64),
        ("bf16-mixed", torch.float32),
        ("32-true", torch.float32),
    ],
)
def test_point03_true_and_mixed_precision_fit_on_cpu_with_every_data_module(
    generated_data, quiet_trainer, precision, dtype
):
    for name, dm in _every_data_module(generated_data).items():
        seen = _SeenDtype()
        model = _model_for(dm)
        trainer = quiet_trainer(
            precision=precision, max_steps=2, limit_val_batches=1, num_sanity_val_steps=0, callbacks=[seen]
        )
        trainer.fit(model, datamodule=dm)
        assert seen.dtypes == {dtype}, (name, seen.dtypes)
        assert torch.isfinite(trainer.callback_metrics["train_loss"]).item(), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="16-bit precision needs a GPU")
@pytest.mark.parametrize("precision", ["16-true", "16-mixed"])
def test_point03_half_precision_fits_on_gpu(quiet_trainer, precision):
    dm = DigitsDataModule(batch_size=32, translate=1)
    trainer = quiet_trainer(accelerator="gpu", precision=precision, max_steps=3, limit_val_batches=1)
    trainer.fit(_model_for(dm), datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["train_loss"]).item()


# ----------------------------------------------------------------- 9. overfit_batches repeats one batch
class _Batches(pl.Callback):
    def __init__(self) -> None:
        self.train: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append((batch[0].clone(), batch[1].clone()))


def test_point09_overfit_batches_repeats_one_fixed_batch(quiet_trainer):
    seen = _Batches()
    dm = DigitsDataModule(batch_size=32, translate=1, hflip=True)
    trainer = quiet_trainer(max_epochs=4, overfit_batches=1, callbacks=[seen])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(_model_for(dm), datamodule=dm)
    assert len(seen.train) == 4
    first_images, first_labels = seen.train[0]
    for images, labels in seen.train[1:]:
        assert torch.equal(labels, first_labels) and torch.equal(images, first_images)
    assert not [w for w in caught if "shuffling" in str(w.message)]


# ----------------------------------------------------------------- 10. deepfeat takes any LightningModule
USER_MODULE = """
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
"""


def _deepfeat(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "lightning_deepfeat", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_point10_deepfeat_fit_with_a_plain_lightning_module(tmp_path):
    (tmp_path / "mymod.py").write_text(USER_MODULE)
    common = ["--data", "DigitsDataModule", "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"]
    done = _deepfeat(
        [
            "fit",
            "--model",
            "mymod.MyModule",
            *common,
            "--trainer.callbacks+=DivideLROnPlateau",
            "--trainer.callbacks.monitor=train_loss",
            "--trainer.callbacks+=MaxNormConstraint",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    config = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "config.yaml").read_text())
    assert config["model"]["class_path"] == "mymod.MyModule"
    assert config["model"]["init_args"]["num_classes"] == 10 and config["model"]["init_args"]["input_shape"] == [
        1,
        8,
        8,
    ]
    assert [c["class_path"].rsplit(".", 1)[1] for c in config["trainer"]["callbacks"]] == [
        "DivideLROnPlateau",
        "MaxNormConstraint",
    ]
    assert "deepfeat: test_acc=" in done.stdout
    # a module that takes neither name gets neither
    done = _deepfeat(["fit", "--model", "mymod.NoShapes", *common], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # and the default is still FeatureClassifier
    done = _deepfeat(["fit", "--data", "DigitsDataModule", "--print_config"], tmp_path)
    printed = yaml.safe_load(done.stdout)
    assert printed["model"]["class_path"].rsplit(".", 1)[1] == "FeatureClassifier"
    assert printed["model"]["init_args"]["input_shape"] == [1, 8, 8]


# ====================================================================================================
# the callbacks: max-norm resume, plateau messages, warm-up (points 4, 11, 12, 14)
# ====================================================================================================
SRC = Path(__file__).resolve().parents[1] / "src" / "lightning_deepfeat"


# ----------------------------------------------------------------- a user's module and data
def _loader(n: int = 16, batch_size: int = 4, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


class Regression(LightningModule):
    """A user's module: linear regression, SGD with momentum, two parameter groups.

    ``train_loss`` is logged per epoch (or per step with ``per_step=True``), ``val_loss`` by validation.
    """

    def __init__(self, lrs: tuple[float, float] = (0.1, 0.02), per_step: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(3, 1)
        self.lrs, self.per_step = lrs, per_step

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x).squeeze(1), y)
        self.log("train_loss", loss, on_step=self.per_step, on_epoch=not self.per_step)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x).squeeze(1), y))

    def configure_optimizers(self):
        return torch.optim.SGD(
            [{"params": [self.net.weight], "lr": self.lrs[0]}, {"params": [self.net.bias], "lr": self.lrs[1]}],
            momentum=0.9,
        )


class ConstantMetric(Regression):
    """Logs ``metric = 1.0`` at every step: a plateau from the first check on."""

    def training_step(self, batch, batch_idx):
        self.log("metric", 1.0, on_step=True, on_epoch=False)
        return super().training_step(batch, batch_idx)


class LRsBeforeEachStep(Callback):
    """The learning rates each optimizer step uses: ``{global_step: [lr of every group]}``."""

    def __init__(self) -> None:
        self.lrs: dict[int, list[float]] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs[trainer.global_step] = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]


@pytest.fixture
def no_val_trainer(quiet_trainer):
    """``quiet_trainer`` without validation or sanity check, and deterministic: these sections' Trainer."""
    return partial(quiet_trainer, num_sanity_val_steps=0, limit_val_batches=0, deterministic=True)


def _unit_norms(weight: torch.Tensor, unit_dim: int = 0) -> torch.Tensor:
    """Norm of each unit, computed in float64 (exact to ~1e-16 for float32 weights)."""
    w = weight.detach().double()
    return torch.linalg.vector_norm(w, 2, dim=[d for d in range(w.dim()) if d != unit_dim])


# ----------------------------------------------------------------- 4. exact resume on the max-norm bound
SHAPES = [(64, 9216), (32, 1, 3, 3), (64, 32, 3, 3), (256, 3136), (100, 7), (128, 1031)]


def _matrix(shape: tuple[int, ...], c: float, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Units with norms spread over [0.05 c, 4 c], some within 1e-7 of c, one zero unit."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    units = shape[0]
    norms = c * torch.exp(torch.empty(units, dtype=torch.float64).uniform_(-3.0, 1.4, generator=g))
    norms[: units // 8] = c * (1 + 1e-7 * torch.randn(units // 8, generator=g, dtype=torch.float64))  # at the bound
    view = (units,) + (1,) * (len(shape) - 1)
    w = w / _unit_norms(w).view(view) * norms.view(view)
    w[-1] = 0.0
    return w.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_point04_projection_is_idempotent_bit_for_bit(shape, dtype):
    for seed, c in enumerate([1e-3, 0.3, 3.5, 1e3]):  # weights scaled with c: 1e-3 .. 1e3
        w = _matrix(shape, c, dtype, seed)
        before = w.clone()
        constraint = MaxNormConstraint(max_norm=c)
        constraint.project([(w, 0)])
        n_before, n_after = _unit_norms(before), _unit_norms(w)
        inside = n_before <= c * (1 - 1e-3)
        outside = n_before > c * (1 + 1e-3)
        assert inside.sum() >= 4 and outside.sum() >= 4
        assert torch.equal(w[inside], before[inside])  # under the bound: bit-identical
        tol = 2e-2 if dtype == torch.bfloat16 else 2e-4
        assert (n_after[outside] <= c).all() and (n_after[outside] >= c * (1 - tol)).all()  # onto the bound
        assert (n_after <= c * (1 + 1e-6)).all(), f"max norm {float(n_after.max() / c)} c"  # c up to rounding
        projected = w.clone()
        for _ in range(3):  # projecting projected weights changes no bit
            constraint.project([(w, 0)])
            assert torch.equal(w, projected), (c, int((w != projected).any(dim=1).sum()))


def test_point04_transposed_conv_units_idempotent():
    layer = nn.ConvTranspose2d(16, 24, 3)  # weight (in, out, k, k): units on dim 1
    with torch.no_grad():
        layer.weight.mul_(torch.linspace(0.1, 30.0, 24).view(1, 24, 1, 1))
    constraint = MaxNormConstraint(max_norm=0.5, module_types=["ConvTranspose2d"])
    weights = list(constraint.select(nn.Sequential(layer)).values())
    constraint.project(weights)
    once = layer.weight.detach().clone()
    constraint.project(weights)
    assert torch.equal(layer.weight, once)
    assert (_unit_norms(once, 1) <= 0.5).all()


def _digits_fit(
    quiet_trainer,
    max_epochs: int = 3,
    max_steps: int = -1,
    ckpt_dir: Path | None = None,
    ckpt_path: str | None = None,
) -> tuple[LightningModule, MaxNormConstraint, Trainer]:
    from lightning_deepfeat import ConvNet, FeatureClassifier
    from lightning_deepfeat.data import DigitsDataModule

    seed_everything(0)
    model = FeatureClassifier(
        features=ConvNet(channels=[32], convs_per_stage=2, hidden=[256], dropout=0.5),
        optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4),
    )
    constraint = MaxNormConstraint(max_norm=0.3)
    callbacks: list[Callback] = [constraint]
    if ckpt_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=30, save_top_k=-1))
    trainer = quiet_trainer(
        max_epochs=max_epochs,
        max_steps=max_steps,
        deterministic=True,
        enable_checkpointing=ckpt_dir is not None,
        callbacks=callbacks,
    )
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=128, translate=1), ckpt_path=ckpt_path)
    return model, constraint, trainer


@pytest.mark.slow
def test_point04_resume_with_units_on_the_bound_is_bit_exact(tmp_path, quiet_trainer):
    full, full_constraint, full_trainer = _digits_fit(quiet_trainer)
    _digits_fit(quiet_trainer, max_steps=30, ckpt_dir=tmp_path)  # interrupted at step 30 (mid-epoch 2)
    (ckpt,) = tmp_path.glob("*step=30.ckpt")
    resumed, constraint, trainer = _digits_fit(quiet_trainer, ckpt_path=str(ckpt))

    assert trainer.global_step == full_trainer.global_step == 33
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ after resume: {differ}"
    # units really sit on the bound (so the resume exercised the re-projection), none above it
    for name, (weight, unit_dim) in constraint.constrained.items():
        norms = _unit_norms(weight, unit_dim)
        assert (norms <= 0.3).all(), name
        assert int((norms >= 0.3 * (1 - 1e-4)).sum()) >= 8, name
    # one projection at fit start plus one per optimizer step, in both runs
    assert constraint.num_applications == full_constraint.num_applications == 33 + 1


# ----------------------------------------------------------------- 11. DivideLROnPlateau's messages
TIMING = "ModelCheckpoint saves at the end of validation"


def _fit_with_checkpoint(no_val_trainer, checkpoint: ModelCheckpoint, **trainer_kwargs) -> list[str]:
    """Fit with a training-metric plateau and ``checkpoint``; the messages of the warnings raised."""
    trainer = no_val_trainer(
        enable_checkpointing=True,
        callbacks=[DivideLROnPlateau(monitor="train_loss", patience=1, verbose=False), checkpoint],
        **trainer_kwargs,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Regression(), _loader(), _loader(n=8))
    return [str(w.message) for w in caught]


@pytest.mark.parametrize(
    "trainer_kwargs",
    [dict(val_check_interval=0.5), dict(check_val_every_n_epoch=2)],
    ids=["val_check_interval=0.5", "check_val_every_n_epoch=2"],
)
def test_point11_resume_timing_warning_fires(tmp_path, no_val_trainer, trainer_kwargs):
    messages = _fit_with_checkpoint(
        no_val_trainer,
        ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True),
        max_epochs=3,
        limit_val_batches=1,
        **trainer_kwargs,
    )
    timing = [m for m in messages if TIMING in m]
    assert len(timing) == 1, messages  # once
    assert "'train_loss'" in timing[0] and "save_on_train_epoch_end=True" in timing[0]


@pytest.mark.parametrize(
    "checkpoint_kwargs, trainer_kwargs",
    [
        (dict(), dict()),  # Lightning's defaults: validation every epoch, saved at the training epoch end
        (dict(save_on_train_epoch_end=True), dict(val_check_interval=0.5)),
        (dict(save_on_train_epoch_end=True), dict(check_val_every_n_epoch=2)),
    ],
    ids=["defaults", "save_on_train_epoch_end+val_check_interval", "save_on_train_epoch_end+every_2"],
)
def test_point11_no_timing_warning_when_checkpoints_follow_the_decision(
    tmp_path, no_val_trainer, checkpoint_kwargs, trainer_kwargs
):
    messages = _fit_with_checkpoint(
        no_val_trainer,
        ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, **checkpoint_kwargs),
        max_epochs=3,
        limit_val_batches=1,
        **trainer_kwargs,
    )
    assert not [m for m in messages if TIMING in m]


def test_point11_step_checks_on_an_epoch_only_metric_say_so(no_val_trainer):
    plateau = DivideLROnPlateau(monitor="train_loss", check_every_n_steps=2)
    with pytest.raises(RuntimeError) as err:
        no_val_trainer(max_epochs=2, callbacks=[plateau]).fit(Regression(per_step=False), _loader())
    msg = str(err.value)
    assert "logged per epoch only" in msg
    assert "on_step=True" in msg and "check_every_n_steps" in msg  # how to fix it
    assert "Available keys: (none)" not in msg


def test_point11_step_checks_on_an_epoch_only_metric_seen_after_an_epoch(no_val_trainer):
    # non-strict: warned and skipped in epoch 0; once the epoch's value exists the message is definite
    plateau = DivideLROnPlateau(monitor="train_loss", check_every_n_steps=2, strict=False)
    with pytest.warns(UserWarning, match="logged per epoch only") as caught:
        no_val_trainer(max_epochs=2, callbacks=[plateau]).fit(Regression(per_step=False), _loader())
    assert plateau.num_checks == 0
    assert any("but 'train_loss' is logged per epoch only" in str(w.message) for w in caught)


# ----------------------------------------------------------------- 12. warm-up, then the plateau rule
def test_point12_warmup_follows_linear_lr_then_plateau_rule(no_val_trainer):
    n, f = 6, 0.25
    rec = LRsBeforeEachStep()
    plateau = DivideLROnPlateau(
        monitor="train_loss", patience=100, warmup_steps=n, warmup_start_factor=f, verbose=False
    )
    no_val_trainer(max_epochs=3, callbacks=[plateau, rec]).fit(Regression(lrs=(0.1, 0.02)), _loader())
    assert sorted(rec.lrs) == list(range(12))
    bases = [0.1, 0.02]
    # the closed form, bit for bit
    for t, lrs in rec.lrs.items():
        assert lrs == [base * (f + (1 - f) * min(t, n) / n) if t < n else base for base in bases], t
    # and torch's LinearLR on the same base rates
    opt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": b} for b in bases])
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=f, total_iters=n)
    for t in range(12):
        assert rec.lrs[t] == pytest.approx([g["lr"] for g in opt.param_groups], rel=1e-12, abs=0), t
        opt.step()
        sched.step()


def test_point12_no_plateau_counted_during_warmup_then_one_drop_by_10(no_val_trainer):
    # "metric" is 1.0 at every step. Checks every 2 steps: at global steps 2, 4 (warm-up, ignored),
    # 6 (the first counted: sets the best), 8 (no improvement, patience 0: divide by 10).
    rec = LRsBeforeEachStep()
    plateau = DivideLROnPlateau(
        monitor="metric", check_every_n_steps=2, patience=0, warmup_steps=4, warmup_start_factor=0.5, verbose=False
    )
    no_val_trainer(max_steps=9, callbacks=[plateau, rec]).fit(ConstantMetric(lrs=(0.1, 0.02)), _loader())
    assert plateau.num_checks == 2 and plateau.num_drops == 1
    for t in range(9):
        expected = [b * (0.5 + 0.5 * t / 4) if t < 4 else (b if t < 8 else b / 10) for b in (0.1, 0.02)]
        assert rec.lrs[t] == expected, t
    # without the warm-up the same stream drops at steps 4 and 6 already
    plain = DivideLROnPlateau(monitor="metric", check_every_n_steps=2, patience=0, verbose=False)
    no_val_trainer(max_steps=9, callbacks=[plain]).fit(ConstantMetric(), _loader())
    assert plain.num_drops == 3


def _warmup_fit(no_val_trainer, tmp_path: Path, max_epochs: int, ckpt_path: str | None = None, save: bool = False):
    rec = LRsBeforeEachStep()
    plateau = DivideLROnPlateau(
        monitor="train_loss", patience=0, threshold=0.9, warmup_steps=10, warmup_start_factor=0.1, verbose=False
    )
    callbacks: list[Callback] = [plateau, rec]
    if save:
        callbacks.append(
            ModelCheckpoint(
                dirpath=tmp_path, filename="{epoch}", every_n_epochs=1, save_top_k=-1, save_on_train_epoch_end=True
            )
        )
    model = Regression(lrs=(0.05, 0.05))
    no_val_trainer(max_epochs=max_epochs, enable_checkpointing=save, callbacks=callbacks).fit(
        model, _loader(), ckpt_path=ckpt_path
    )
    return model, plateau, rec


def test_point12_resume_mid_warmup_equals_uninterrupted(tmp_path, no_val_trainer):
    full, full_plateau, full_rec = _warmup_fit(no_val_trainer, tmp_path, max_epochs=6)
    _warmup_fit(no_val_trainer, tmp_path, max_epochs=1, save=True)  # stops after step 4 of a 10-step warm-up
    resumed, plateau, rec = _warmup_fit(
        no_val_trainer, tmp_path, max_epochs=6, ckpt_path=str(tmp_path / "epoch=0.ckpt")
    )
    assert sorted(rec.lrs) == list(range(4, 24))
    assert rec.lrs == {t: full_rec.lrs[t] for t in range(4, 24)}  # learning rates, bit for bit
    assert full_rec.lrs[4][0] < 0.05 and full_plateau.num_drops >= 1  # resumed mid-warm-up, then dropped
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert plateau.state_dict() == full_plateau.state_dict()


@pytest.mark.slow
@pytest.mark.ddp
def test_point12_warmup_identical_on_every_rank(tmp_path, no_val_trainer):
    from _callback_helpers import ScriptedMetricModule, StepLRRecorder

    # 2 processes x 2 batches per epoch; "metric" 1.0 every epoch: checks at steps 2, 4 (warm-up),
    # 6 (best), 8 and 10 (bad, patience 0: each divides by 10)
    plateau = DivideLROnPlateau(monitor="metric", patience=0, warmup_steps=5, warmup_start_factor=0.2, verbose=False)
    trainer = no_val_trainer(
        max_epochs=5,
        devices=2,
        strategy="ddp_spawn",
        deterministic=False,
        callbacks=[plateau, StepLRRecorder(out_dir=str(tmp_path))],
    )
    loader = DataLoader(TensorDataset(torch.randn(8, 3), torch.zeros(8)), batch_size=2)
    trainer.fit(ScriptedMetricModule(stream=[1.0] * 5, lr=0.1), loader)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0 == r1
    expected = [[t, [0.1 * (0.2 + (1 - 0.2) * t / 5) if t < 5 else (0.1 if t < 8 else 0.1 / 10)]] for t in range(10)]
    assert r0 == expected


# ----------------------------------------------------------------- 14. no private attributes
PRIVATE = {
    "Lightning's private result collection": re.compile(r"\._results\b|[\"']_results[\"']"),
    "ModelCheckpoint's private save-time rule": re.compile(r"_should_save_on_train_epoch_end"),
    "a class-name string match": re.compile(r"\.__name__\s*==|==\s*[\w.()]*\.__name__"),
}


def test_point14_no_private_lightning_access_in_the_package():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for what, pattern in PRIVATE.items():
                if pattern.search(line):
                    found.append(f"{path.relative_to(SRC)}:{lineno}: {what}: {line.strip()}")
    assert not found, "\n".join(found)


def test_point14_callback_metrics_keep_the_storage_of_a_value_not_logged_again(no_val_trainer):
    """What DivideLROnPlateau relies on to tell a new value from an old one, with public API only."""

    class EveryOtherEpoch(Regression):
        def training_step(self, batch, batch_idx):
            if self.current_epoch % 2 == 0:
                self.log("sometimes", float(self.current_epoch), on_step=False, on_epoch=True)
            return super().training_step(batch, batch_idx)

    class Probe(Callback):
        def __init__(self) -> None:
            self.reads: list[tuple[torch.Tensor, torch.Tensor]] = []

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.reads.append((trainer.callback_metrics["sometimes"], trainer.callback_metrics["sometimes"]))

    probe = Probe()
    no_val_trainer(max_epochs=4, callbacks=[probe]).fit(EveryOtherEpoch(), _loader())
    ptr = [(a.untyped_storage().data_ptr(), b.untyped_storage().data_ptr()) for a, b in probe.reads]
    assert all(p == q for p, q in ptr)  # two reads of one value: one storage (the tensors may differ)
    assert ptr[1][0] == ptr[0][0] and ptr[3][0] == ptr[2][0]  # not logged again: the same storage
    assert ptr[2][0] != ptr[0][0]  # logged again: a new tensor
    assert [float(a) for a, _ in probe.reads] == [0.0, 0.0, 2.0, 2.0]


def test_point14_epoch_checks_use_only_values_logged_since_the_last_check(no_val_trainer):
    class EveryOtherEpoch(Regression):
        def training_step(self, batch, batch_idx):
            if self.current_epoch % 2 == 0:
                self.log("sometimes", 1.0, on_step=False, on_epoch=True)
            return super().training_step(batch, batch_idx)

    plateau = DivideLROnPlateau(monitor="sometimes", patience=0, verbose=False)
    no_val_trainer(max_epochs=6, callbacks=[plateau]).fit(EveryOtherEpoch(), _loader())
    assert plateau.num_checks == 3  # epochs 0, 2, 4: the value of epoch 0 is not checked again at epoch 1
    assert plateau.num_drops == 2


def test_point14_step_checks_read_a_classification_error_subclass_by_isinstance(no_val_trainer):
    from torchmetrics import MetricCollection

    from lightning_deepfeat.metrics import ClassificationError

    class Top1Error(ClassificationError):
        """A user's own subclass: its class name is not 'ClassificationError'."""

    class Classifier(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Linear(4, 3)
            self.train_metrics = MetricCollection({"error": Top1Error(num_classes=3, average="micro")}, prefix="train_")

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self.net(x)
            self.train_metrics.update(logits, y)
            self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
            return F.cross_entropy(logits, y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)  # fixed model: exact window errors known

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    model = Classifier()
    seen: list[float] = []

    class Recording(DivideLROnPlateau):
        def step(self, current, optimizers):
            seen.append(current)
            return super().step(current, optimizers)

    no_val_trainer(max_steps=4, callbacks=[Recording(monitor="train_error", check_every_n_steps=2, verbose=False)]).fit(
        model, DataLoader(TensorDataset(x, y), batch_size=4)
    )
    with torch.no_grad():
        wrong = (model.net(x).argmax(1) != y).double()
    assert seen == pytest.approx([wrong[:8].mean().item(), wrong[8:].mean().item()], abs=1e-12)


# ====================================================================================================
# the dependency range we declare (point 13)
# ====================================================================================================
def _floors_in_pyproject() -> dict[str, str]:
    import tomllib

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {}
    for requirement in dependencies:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)", requirement.strip())
        assert match, f"every dependency declares a floor with >=, got {requirement!r}"
        floors[match.group(1).lower()] = match.group(2)
    return floors


def test_point13_ci_tests_the_floors_we_declare():
    """Every floor of pyproject.toml is pinned in .ci/floor-constraints.txt, and .ci/run runs the suite there too."""
    pins = {}
    for line in (ROOT / ".ci" / "floor-constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    floors = _floors_in_pyproject()
    assert {name: pins.get(name) for name in floors} == floors
    script = (ROOT / ".ci" / "run").read_text()
    assert "-c .ci/floor-constraints.txt" in script and script.count("python -m pytest -q") == 2


def test_point13_installed_versions_satisfy_the_declared_floors():
    from importlib.metadata import version

    def release(text: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.match(r"\d+(?:\.\d+)*", text).group(0).split("."))

    for name, floor in _floors_in_pyproject().items():
        assert release(version(name)) >= release(floor), (name, version(name), floor)
