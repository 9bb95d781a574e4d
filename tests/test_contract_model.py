"""Lightning contracts of FeatureClassifier, tried the way users write them (issue 11: 1, 5, 6, 7, 8, 14).

Each test is the user's pattern: their own subclass, their own Trainer, the public API.
"""

from __future__ import annotations

import ast
import copy
import pickle
import warnings
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.tuner import Tuner
from lightning.pytorch.utilities.model_summary import ModelSummary
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_deepfeat.models
from lightning_deepfeat import MLP, ConvNet, FeatureClassifier
from lightning_deepfeat.data import DigitsDataModule
from lightning_deepfeat.models.classifier import krizhevsky_sgd

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
             enable_model_summary=False)


def _fit(model: pl.LightningModule, tmp_path: Path, steps: int = 3, **trainer_kwargs) -> pl.Trainer:
    options = {**QUIET, "max_steps": steps, "limit_val_batches": 0, "default_root_dir": tmp_path, **trainer_kwargs}
    trainer = pl.Trainer(**options)
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
def test_point01_subclass_that_builds_its_features_reloads_bit_identically(build, tmp_path):
    pl.seed_everything(0)
    model = build()
    _fit(model, tmp_path)
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


YAML_NET = {"class_path": "lightning_deepfeat.models.ConvNet", "init_args": {"channels": [4], "hidden": [16], "dropout": 0.0}}


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
    ids=["features=ConvNet", "build_features", "attribute-before-super", "explicit-signature", "extra-hparams", "yaml-net"],
)
def test_point01_patterns_that_reloaded_before_still_reload(build, tmp_path):
    pl.seed_everything(0)
    model = build()
    _fit(model, tmp_path)
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


def test_point05_adam_and_its_scheduler_are_rebuilt_on_reload_and_resume(tmp_path):
    pl.seed_everything(0)
    model = FeatureClassifier(MLP(hidden=(16,), dropout=0.0), optimizer=partial(torch.optim.Adam, lr=1e-3),
                              lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5))
    trainer = _fit(model, tmp_path, steps=4)
    ckpt = tmp_path / "adam.ckpt"
    trainer.save_checkpoint(ckpt)

    loaded = FeatureClassifier.load_from_checkpoint(ckpt, weights_only=True)
    configured = loaded.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 1e-3
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR) and scheduler.gamma == 0.5 and scheduler.step_size == 1

    # resume the reloaded model: Adam's moments come back from the checkpoint
    record = RecordOptimizer()
    resumed = pl.Trainer(**{**QUIET, "max_steps": 6, "limit_val_batches": 0, "default_root_dir": tmp_path,
                            "callbacks": [record]})
    resumed.fit(loaded, datamodule=DigitsDataModule(batch_size=32), ckpt_path=ckpt)
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
def test_point05_classes_functions_and_partials_are_rebuilt(factory, expected, tmp_path):
    model = FeatureClassifier(MLP(hidden=(8,)), optimizer=factory)
    _fit(model, tmp_path, steps=1)
    model.trainer.save_checkpoint(tmp_path / "m.ckpt")
    optimizer = FeatureClassifier.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True).configure_optimizers()
    cls, lr, momentum = expected
    assert type(optimizer) is cls and optimizer.param_groups[0]["lr"] == lr
    assert optimizer.param_groups[0].get("momentum") == momentum


def test_point05_a_factory_that_cannot_be_rebuilt_is_named_at_reload(tmp_path):
    def local_scheduler(optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=3)

    model = FeatureClassifier(MLP(hidden=(8,)), optimizer=lambda params: torch.optim.SGD(params, lr=0.3),
                              lr_scheduler=local_scheduler)
    _fit(model, tmp_path, steps=1)
    ckpt = tmp_path / "lambda.ckpt"
    model.trainer.save_checkpoint(ckpt)
    expected = _outputs(model)

    # it loads for inference, saying what to pass to train it ...
    with pytest.warns(UserWarning, match=r"`optimizer` cannot be rebuilt: it was a lambda.*load_from_checkpoint\(path, optimizer=\.\.\.\)"):
        loaded = FeatureClassifier.load_from_checkpoint(ckpt, weights_only=True)
    assert torch.equal(_outputs(loaded), expected)
    # ... and training it fails before any step, naming the argument
    trainer = pl.Trainer(**{**QUIET, "max_steps": 1, "limit_val_batches": 0, "default_root_dir": tmp_path})
    with pytest.raises(ValueError, match=r"`optimizer` cannot be rebuilt: it was a lambda.*optimizer=\.\.\."):
        trainer.fit(loaded, datamodule=DigitsDataModule(batch_size=32))
    assert trainer.global_step == 0
    with pytest.warns(UserWarning, match=r"`lr_scheduler` cannot be rebuilt: it was a local function .*lr_scheduler=\.\.\."):
        loaded = FeatureClassifier.load_from_checkpoint(ckpt, optimizer=partial(torch.optim.SGD, lr=0.3))
    with pytest.raises(ValueError, match=r"`lr_scheduler` cannot be rebuilt.*lr_scheduler=\.\.\."):
        loaded.configure_optimizers()

    # passed again, both are used
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*cannot be rebuilt.*")
        loaded = FeatureClassifier.load_from_checkpoint(ckpt, optimizer=partial(torch.optim.SGD, lr=0.3),
                                                        lr_scheduler=local_scheduler, weights_only=True)
    configured = loaded.configure_optimizers()
    assert configured["optimizer"].param_groups[0]["lr"] == 0.3 and configured["lr_scheduler"].step_size == 3


def test_point05_cli_given_optimizer_survives_reload_and_a_second_save(tmp_path):
    """`--model.init_args.optimizer` from YAML: the checkpoint, and one saved after reloading it, rebuild Adam."""
    from lightning_deepfeat.cli import main

    config = {
        "model": {"class_path": "FeatureClassifier", "init_args": {
            "features": {"class_path": "lightning_deepfeat.MLP", "init_args": {"hidden": [8]}},
            "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.002}}}},
        "data": {"class_path": "DigitsDataModule", "init_args": {"batch_size": 64}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = main(["fit", "--config", str(path), "--trainer.fast_dev_run=true", "--test_after_fit=false",
                f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false"])
    assert isinstance(cli.trainer.optimizers[0], torch.optim.Adam)
    cli.trainer.save_checkpoint(tmp_path / "cli.ckpt")
    loaded = FeatureClassifier.load_from_checkpoint(tmp_path / "cli.ckpt", weights_only=True)
    optimizer = loaded.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.002
    # the reloaded model, trained and saved again without the CLI
    _fit(loaded, tmp_path, steps=1)
    loaded.trainer.save_checkpoint(tmp_path / "again.ckpt")
    optimizer = FeatureClassifier.load_from_checkpoint(tmp_path / "again.ckpt", weights_only=True).configure_optimizers()
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
def test_point06_input_shape_that_is_not_the_data_is_named_before_any_step(stage, tmp_path):
    model = FeatureClassifier(MLP(hidden=(16,)), input_shape=(1, 28, 28))
    counter = CountSteps()
    trainer = pl.Trainer(**{**QUIET, "max_steps": 2, "default_root_dir": tmp_path, "callbacks": [counter]})
    message = r"`input_shape`=\(1, 28, 28\) but DigitsDataModule has image_shape=\(1, 8, 8\); pass input_shape=\(1, 8, 8\)"
    with pytest.raises(ValueError, match=message):
        getattr(trainer, stage)(model, datamodule=DigitsDataModule(batch_size=32))
    assert counter.batches == 0 and trainer.global_step == 0


# ----------------------------------------------------------------- 7. ONNX export and the summary's sizes
def test_point07_to_onnx_without_an_input_matches_torch_with_a_dynamic_batch(tmp_path):
    import onnxruntime as ort  # in the `test` extra, with onnx

    pl.seed_everything(0)
    model = FeatureClassifier(ConvNet(channels=(8,), hidden=(16,)), num_classes=10, input_shape=(1, 8, 8))
    _fit(model, tmp_path, steps=5)
    assert model.example_input_array.shape == (1, 1, 8, 8)
    path = tmp_path / "m.onnx"
    # torch >= 2.9 exports with dynamo (needs onnxscript) by default; the TorchScript exporter takes dynamic_axes
    model.to_onnx(path, dynamo=False, input_names=["images"], output_names=["logits"],
                  dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    session = ort.InferenceSession(str(path))
    model.eval()
    for n in (1, 7):
        x = torch.randn(n, 1, 8, 8)
        (logits,) = session.run(None, {"images": x.numpy()})
        assert logits.shape == (n, 10)
        torch.testing.assert_close(torch.from_numpy(logits), model(x).detach(), rtol=0, atol=1e-5)


def test_point07_model_summary_shows_input_and_output_sizes(tmp_path):
    model = FeatureClassifier(ConvNet(channels=(8,), hidden=(16,)), num_classes=10, input_shape=(1, 8, 8))
    summary = ModelSummary(model, max_depth=1)
    sizes = dict(zip(summary.layer_names, zip(summary.in_sizes, summary.out_sizes)))
    assert sizes["features"] == ([1, 1, 8, 8], [1, 16]) and sizes["head"] == ([1, 16], [1, 10])
    # and with the summary on (Lightning's default), fit runs on our data module
    _fit(model, tmp_path, steps=1, enable_model_summary=True)
    assert model.trainer.global_step == 1


@pytest.mark.parametrize("precision", ["bf16-true", "64-true"])
def test_point07_summary_example_follows_a_true_precision(precision, tmp_path):
    """Lightning runs the example through the model at fit start; it must be in the model's dtype."""
    model = FeatureClassifier(MLP(hidden=(16,)), num_classes=3, input_shape=(1, 4, 4))
    loader = DataLoader(TensorDataset(torch.randn(16, 1, 4, 4), torch.randint(0, 3, (16,))), batch_size=8)
    trainer = pl.Trainer(**{**QUIET, "max_steps": 1, "enable_model_summary": True, "precision": precision,
                            "default_root_dir": tmp_path})
    trainer.fit(model, train_dataloaders=loader)
    assert trainer.global_step == 1
    assert model.example_input_array.dtype == next(model.parameters()).dtype


# ----------------------------------------------------------------- 8. the LR finder
class RecordLR(Callback):
    def on_train_start(self, trainer, pl_module):
        self.lrs = [group["lr"] for group in trainer.optimizers[0].param_groups]


def test_point08_lr_find_with_defaults_then_fit_trains_at_the_suggestion(tmp_path):
    pl.seed_everything(0)
    model = FeatureClassifier(MLP(hidden=(32,), dropout=0.0))
    record = RecordLR()
    trainer = pl.Trainer(**{**QUIET, "max_epochs": 1, "limit_val_batches": 0, "default_root_dir": tmp_path,
                            "callbacks": [record]})
    dm = DigitsDataModule(batch_size=32)
    finder = Tuner(trainer).lr_find(model, datamodule=dm)
    suggestion = finder.suggestion()
    assert suggestion is not None and suggestion != 0.01  # 0.01: krizhevsky_sgd's own
    assert model.lr == suggestion and model.hparams["lr"] == suggestion
    trainer.fit(model, datamodule=dm)
    assert record.lrs == [suggestion]


def test_point08_lr_overrides_the_factory_and_is_checked():
    model = FeatureClassifier(MLP(hidden=(8,)), optimizer=partial(torch.optim.Adam, lr=1e-3), lr=0.05)
    assert [g["lr"] for g in model.configure_optimizers().param_groups] == [0.05]
    with pytest.raises(ValueError, match=r"`lr` must be a positive finite float or None .* got -1"):
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
            elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                  and isinstance(node.value, ast.Name) and node.value.id == "self"):
                ours.add(node.attr)
    found = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr", "hasattr")
                  and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
                name = node.args[1].value
            if name and name.startswith("_") and not name.startswith("__") and name not in ours:
                found.append(f"{path.name}:{node.lineno}: {name}")
    return sorted(found)


def test_point14_models_use_no_private_attributes_of_lightning_or_torchmetrics():
    package = Path(lightning_deepfeat.models.__file__).parent
    paths = sorted(package.glob("*.py")) + [package.parent / "metrics.py"]
    assert _private_attributes_of_others(paths) == []


class RecordEpochMetrics(Callback):
    def __init__(self) -> None:
        self.epochs: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs[trainer.current_epoch] = {k: v.clone() for k, v in trainer.callback_metrics.items() if k.startswith("train_")}


def _resume_run(tmp_path: Path, ckpt_path: Path | None = None) -> tuple[RecordEpochMetrics, dict[str, torch.Tensor]]:
    pl.seed_everything(0)
    model = FeatureClassifier(ConvNet(channels=(4,), hidden=(16,), dropout=0.5), optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9))
    record = RecordEpochMetrics()
    trainer = pl.Trainer(**{**QUIET, "max_epochs": 2, "limit_train_batches": 6, "limit_val_batches": 0, "deterministic": True,
                            "default_root_dir": tmp_path, "enable_checkpointing": True,
                            "callbacks": [record, ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)]})
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32, translate=1), ckpt_path=ckpt_path)
    return record, {k: v.clone() for k, v in model.state_dict().items()}


def test_point14_mid_epoch_resume_restores_the_running_training_metrics(tmp_path):
    reference, weights = _resume_run(tmp_path / "ref")
    ckpt = tmp_path / "ref" / "ckpt" / "epoch=1-step=8.ckpt"  # epoch 1, after 2 of its 6 batches
    saved = torch.load(ckpt, weights_only=True)
    assert saved["deepfeat_train_metrics"]["epoch"] == 1  # mid-epoch: the running metrics are in the checkpoint
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*compute.*before the.*update.*")
        resumed, resumed_weights = _resume_run(tmp_path / "run", ckpt_path=ckpt)
    assert set(resumed.epochs) == {1}
    assert {"train_loss", "train_error"} <= set(resumed.epochs[1])
    for key, value in reference.epochs[1].items():
        assert torch.equal(resumed.epochs[1][key], value), (key, resumed.epochs[1][key], value)
    for key, value in weights.items():
        assert torch.equal(resumed_weights[key], value), key
