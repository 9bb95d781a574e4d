"""Feature nets and FeatureClassifier: shapes, training, checkpoints, bad input."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lightning_deepfeat import MLP, AlexNet, ConvNet, FeatureClassifier
from lightning_deepfeat.data import DigitsDataModule

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


@pytest.mark.parametrize("shape", SHAPES)
def test_mlp_output_shape(shape):
    net = MLP(hidden=(64, 32))
    assert net(torch.randn(4, *shape)).shape == (4, 32)


@pytest.mark.parametrize("shape", SHAPES)
def test_convnet_output_shape(shape):
    net = ConvNet(channels=(8, 16), hidden=(24,))
    assert net(torch.randn(4, *shape)).shape == (4, 24)


def test_convnet_without_dense_layers_flattens_the_last_map():
    net = ConvNet(channels=(8, 16), hidden=(), in_channels=1)
    # 28 -> 14 -> 7 after two 2x2 pools, 16 channels
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 16 * 7 * 7)


@pytest.mark.parametrize("shape", SHAPES)
def test_alexnet_small_inputs(shape):
    net = AlexNet(in_channels=shape[0], width=0.125, hidden=64, stem_kernel=3, stem_stride=1)
    assert net(torch.randn(2, *shape)).shape == (2, 64)


def test_alexnet_224_matches_the_paper_geometry():
    net = AlexNet()
    x = torch.randn(2, 3, 224, 224)
    conv_out = net.conv(x)
    assert conv_out.shape == (2, 256, 6, 6)  # 9216 inputs to fc6, as in Krizhevsky et al.
    assert net.fc(conv_out).shape == (2, 4096)
    assert net.fc[1].in_features == 9216
    lrn = [m for m in net.modules() if isinstance(m, nn.LocalResponseNorm)]
    assert len(lrn) == 2 and lrn[0].size == 5 and lrn[0].k == 2.0 and lrn[0].beta == 0.75
    assert lrn[0].alpha == pytest.approx(5e-4)  # torch divides alpha by n: paper's 1e-4 * 5


def test_alexnet_without_lrn_and_width_multiplier():
    net = AlexNet(width=0.5, lrn=False, hidden=128)
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in net.modules())
    assert net.conv[0].out_channels == 48
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 128)


def test_head_size_is_inferred_from_a_dry_run():
    model = FeatureClassifier(ConvNet(channels=(4,), hidden=()), num_classes=3, input_shape=(1, 12, 12))
    assert model.feature_dim == 4 * 6 * 6
    assert model.head.in_features == 144 and model.head.out_features == 3
    assert model(torch.randn(5, 1, 12, 12)).shape == (5, 3)


def _fit_steps(model: pl.LightningModule, steps: int, tmp_path) -> None:
    trainer = pl.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=64))


def _train_loss(model: FeatureClassifier) -> float:
    dm = DigitsDataModule(batch_size=256)
    dm.setup("fit")
    x, y = dm.splits["train"]
    model.eval()
    with torch.no_grad():
        loss = float(model.compute_loss(model(dm.normalize(x)), y))
    model.train()
    return loss


class TinyNet(nn.Module):
    """A user's own feature net, no recorded arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())

    def forward(self, x):
        return self.body(x)


class MyClassifier(FeatureClassifier):
    """A user's subclass overriding the documented build point."""

    def build_features(self) -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))


@pytest.mark.parametrize(
    "make", [lambda: FeatureClassifier(TinyNet()), lambda: MyClassifier()], ids=["passed-in", "subclass"]
)
def test_user_feature_nets_train(make, tmp_path):
    pl.seed_everything(0)
    model = make()
    before = _train_loss(model)
    _fit_steps(model, 30, tmp_path)
    after = _train_loss(model)
    assert after < before - 0.5, (before, after)


def test_subclass_features_are_used():
    model = MyClassifier()
    assert isinstance(model.features[0], nn.Conv2d)
    assert model.feature_dim == 8 * 4 * 4


def test_default_optimizer_is_krizhevsky_sgd():
    opt = FeatureClassifier(MLP(hidden=(8,))).configure_optimizers()
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.9, 5e-4)


def test_optimizer_is_overridable_from_python():
    from functools import partial

    model = FeatureClassifier(MLP(hidden=(8,)), optimizer=partial(torch.optim.Adam, lr=3e-4))
    opt = model.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 3e-4


def test_predict_step_returns_probabilities():
    model = FeatureClassifier(MLP(hidden=(8,)))
    probs = model.predict_step((torch.randn(6, 1, 8, 8), torch.zeros(6)), 0)
    assert probs.shape == (6, 10)
    torch.testing.assert_close(probs.sum(1), torch.ones(6))
    assert (probs >= 0).all()


def test_logged_metric_names(tmp_path):
    pl.seed_everything(0)
    model = FeatureClassifier(MLP(hidden=(16,)))
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=2,
        limit_test_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    dm = DigitsDataModule(batch_size=32)
    trainer.fit(model, datamodule=dm)
    keys = set(trainer.callback_metrics)
    assert {"train_loss", "train_error", "val_loss", "val_error", "val_acc", "val_acc_top5"} <= keys
    assert float(trainer.callback_metrics["val_error"]) == pytest.approx(1 - float(trainer.callback_metrics["val_acc"]))
    trainer.test(model, datamodule=dm, verbose=False)
    assert {"test_loss", "test_error", "test_acc", "test_acc_top5"} <= set(trainer.callback_metrics)


def test_no_top5_with_five_classes_or_fewer():
    model = FeatureClassifier(MLP(hidden=(8,)), num_classes=5)
    assert "val_acc_top5" not in model.val_metrics


@pytest.mark.parametrize(
    "features", [lambda: ConvNet(channels=(8,), hidden=(16,)), lambda: MLP(hidden=(16,), input_dropout=0.2)]
)
def test_load_from_checkpoint_round_trip(features, tmp_path):
    pl.seed_everything(0)
    model = FeatureClassifier(features(), num_classes=10, input_shape=(1, 8, 8))
    _fit_steps(model, 5, tmp_path)
    path = tmp_path / "model.ckpt"
    model.trainer.save_checkpoint(path)
    loaded = FeatureClassifier.load_from_checkpoint(path, weights_only=True)
    assert type(loaded.features) is type(model.features)
    x = torch.randn(7, 1, 8, 8)
    model.eval(), loaded.eval()
    torch.testing.assert_close(loaded.predict_step(x, 0), model.predict_step(x, 0), rtol=0, atol=0)


def test_user_module_without_spec_needs_features_on_load(tmp_path):
    model = FeatureClassifier(TinyNet())
    assert model.hparams["features"] is None
    trainer = pl.Trainer(
        max_steps=1,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        limit_val_batches=0,
        enable_checkpointing=False,
    )
    trainer.fit(model, datamodule=DigitsDataModule())
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = FeatureClassifier.load_from_checkpoint(tmp_path / "m.ckpt", features=TinyNet())
    x = torch.randn(3, 1, 8, 8)
    model.eval(), loaded.eval()
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("num_classes", [1, 0, -3, 2.5, True])
def test_num_classes_below_two_is_rejected(num_classes):
    with pytest.raises(ValueError, match=r"`num_classes` must be an int >= 2.*" + str(num_classes).replace(".", r"\.")):
        FeatureClassifier(MLP(hidden=(8,)), num_classes=num_classes)


class ScalarOut(nn.Module):
    def forward(self, x):
        return x.sum()


class BatchMixing(nn.Module):
    def forward(self, x):
        return x.reshape(-1)


@pytest.mark.parametrize("net", [ScalarOut, BatchMixing])
def test_feature_net_that_loses_the_batch_dimension_is_rejected(net):
    with pytest.raises(ValueError, match=r"`features` must map a batch .* returned"):
        FeatureClassifier(net(), input_shape=(1, 8, 8))


def test_feature_net_that_fails_on_the_input_shape_is_named():
    with pytest.raises(ValueError, match=r"`features` \(MLP\) failed on a dry run with input_shape=\(3, 8, 8\)"):
        FeatureClassifier(MLP(hidden=(8,), in_features=64), input_shape=(3, 8, 8))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: MLP(dropout=-0.1), r"`dropout` must be a dropout probability in \[0, 1\), got -0.1"),
        (lambda: MLP(input_dropout=1.0), r"`input_dropout` .* got 1.0"),
        (lambda: ConvNet(dropout=-0.5), r"`dropout` .* got -0.5"),
        (lambda: AlexNet(dropout=-1), r"`dropout` .* got -1"),
        (lambda: ConvNet(kernel_size=4), r"`kernel_size` must be odd"),
        (
            lambda: ConvNet(channels=()),
            r"`channels` must be a non-empty sequence of positive ints \(one width per conv stage\), got \(\)",
        ),
        (lambda: MLP(hidden=(8, 0)), r"`hidden` must be a non-empty sequence of positive ints .*got \(8, 0\)"),
        (lambda: MLP(activation="swishy"), r"`activation` must be one of .* got 'swishy'"),
        (
            lambda: AlexNet(width=0),
            r"`width` must be a finite number > 0 \(a multiplier on the channel counts\), got 0",
        ),
        (lambda: FeatureClassifier(MLP(), input_shape=(1, 0, 8)), r"`input_shape` must be"),
    ],
)
def test_bad_arguments_name_the_culprit(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_deepcopy_and_hparams_do_not_hold_the_module():
    model = FeatureClassifier(MLP(hidden=(8,)))
    assert not any(isinstance(v, nn.Module) for v in model.hparams.values())
    copy.deepcopy(model)


# ------------------------------------------------------------------ what checkpoints record
def _make(width: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU())


class _Forwarding(FeatureClassifier):
    def __init__(self, width: int = 8, **kw):
        super().__init__(features=_make(width), **kw)


class _FixesClasses(FeatureClassifier):
    """Passes num_classes up itself, forwards the rest."""

    def __init__(self, width: int = 8, **kw):
        super().__init__(features=_make(width), num_classes=3, **kw)


class _Middle(FeatureClassifier):
    def __init__(self, depth: int = 1, **kw):
        super().__init__(**kw)


class _Outer(_Middle):
    def __init__(self, **kw):
        super().__init__(depth=2, **kw)


class _Positional(FeatureClassifier):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)


def test_hparams_hold_what_the_outermost_constructor_received():
    from functools import partial

    assert dict(_Forwarding(width=12).hparams) == {"width": 12}
    assert dict(_Forwarding(width=12, num_classes=4, lr=0.1).hparams) == {"width": 12, "num_classes": 4, "lr": 0.1}
    assert dict(_FixesClasses().hparams) == {"width": 8}  # num_classes=3 is the subclass's own
    assert "depth" not in _Outer(features=MLP(hidden=(8,))).hparams  # given by _Outer itself
    assert _Outer(features=MLP(hidden=(8,))).hparams["features"]["class_path"].endswith("MLP")
    # positional arguments have no names: everything FeatureClassifier saw is recorded, as before
    positional = _Positional(MLP(hidden=(8,)), 5, optimizer=partial(torch.optim.Adam, lr=0.01))
    assert positional.hparams["features"]["class_path"].endswith("MLP") and positional.hparams["num_classes"] == 5
    assert positional.hparams["optimizer"] == {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}}
    # plain data only, so that weights_only=True loads it
    default = FeatureClassifier(MLP(hidden=(8,)))
    assert default.hparams["optimizer"] == "lightning_deepfeat.models.classifier.krizhevsky_sgd"
    assert not any(callable(v) or isinstance(v, nn.Module) for v in default.hparams.values())


def test_factory_specs():
    from functools import partial

    from lightning_deepfeat.models._rebuild import factory_spec

    assert factory_spec(partial(torch.optim.Adam, lr=1e-3, betas=(0.9, 0.99))) == {
        "class_path": "torch.optim.Adam",
        "init_args": {"lr": 1e-3, "betas": (0.9, 0.99)},
    }
    assert factory_spec(torch.optim.SGD) == {"class_path": "torch.optim.SGD", "init_args": {}}
    assert factory_spec(partial(torch.optim.lr_scheduler.StepLR, step_size=2)) == {
        "class_path": "torch.optim.lr_scheduler.StepLR",
        "init_args": {"step_size": 2},
    }
    assert "a lambda" in factory_spec(lambda p: torch.optim.SGD(p, 0.1))["unrebuildable"]
    assert "positional" in factory_spec(partial(torch.optim.SGD, [], 0.1))["unrebuildable"]
    assert "not plain data" in factory_spec(partial(torch.optim.SGD, lr=torch.tensor(0.1)))["unrebuildable"]


def test_factory_spec_of_a_jsonargparse_class_path():
    """jsonargparse's form of `class_path: torch.optim.Adam` (LightningCLI's YAML) is read back as a spec.

    This reads how jsonargparse builds the callable; if an upgrade changes it, this fails
    (and reloading such a checkpoint warns that the optimizer must be passed again).
    """
    from collections.abc import Callable, Iterable
    from typing import Any

    from jsonargparse import ArgumentParser

    from lightning_deepfeat.models._rebuild import factory_spec

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--optimizer", type=Callable[[Iterable[Any]], torch.optim.Optimizer])
    config = parser.parse_object({"optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.002}}})
    factory = parser.instantiate_classes(config).optimizer
    spec = factory_spec(factory)
    assert spec["class_path"] == "torch.optim.Adam" and spec["init_args"]["lr"] == 0.002


def test_checkpoint_specs_import_nothing_new_and_no_standard_library():
    import sys

    with pytest.raises(
        ValueError, match=r"`optimizer` names 'not_a_real_module_xyz.Opt', whose module is not imported"
    ):
        FeatureClassifier(MLP(hidden=(8,)), optimizer={"class_path": "not_a_real_module_xyz.Opt"})
    assert "not_a_real_module_xyz" not in sys.modules
    with pytest.raises(ValueError, match=r"`optimizer` names 'os.system', a standard-library callable"):
        FeatureClassifier(MLP(hidden=(8,)), optimizer="os.system")
    with pytest.raises(ValueError, match=r"`lr_scheduler` names 'torch.optim.NoSuchScheduler', which does not exist"):
        FeatureClassifier(MLP(hidden=(8,)), lr_scheduler={"class_path": "torch.optim.NoSuchScheduler"})
    with pytest.raises(ValueError, match=r"`features` class_path 'torch.optim.SGD' does not name an nn.Module"):
        FeatureClassifier({"class_path": "torch.optim.SGD"})
    with pytest.raises(ValueError, match=r"`optimizer` must be a callable taking the parameters .* got 3"):
        FeatureClassifier(MLP(hidden=(8,)), optimizer=3)


def test_example_input_array_follows_the_parameters_and_can_be_set():
    model = FeatureClassifier(MLP(hidden=(8,)), input_shape=(1, 8, 8))
    assert model.example_input_array.shape == (1, 1, 8, 8) and model.example_input_array.dtype == torch.float32
    assert model.double().example_input_array.dtype == torch.float64
    mine = torch.ones(2, 1, 8, 8)
    model.example_input_array = mine
    assert model.example_input_array is mine


def test_numpy_scalars_are_not_plain_data():
    """weights_only=True cannot unpickle them: such a partial is recorded as unrebuildable, not saved broken."""
    from functools import partial

    import numpy as np

    from lightning_deepfeat.models._rebuild import factory_spec

    assert "not plain data" in factory_spec(partial(torch.optim.SGD, lr=np.float64(0.1)))["unrebuildable"]


def test_channels_last_gives_the_same_logits_and_trains(tmp_path):
    """``channels_last=True`` stores φ's conv weights NHWC; the function computed is the same."""
    torch.manual_seed(0)
    plain = FeatureClassifier(ConvNet(channels=(8, 16), hidden=(32,)), num_classes=10, input_shape=(1, 8, 8)).eval()
    fast = FeatureClassifier(
        ConvNet(channels=(8, 16), hidden=(32,)), num_classes=10, input_shape=(1, 8, 8), channels_last=True
    ).eval()
    fast.load_state_dict(plain.state_dict())
    conv = next(m for m in fast.features.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(16, 1, 8, 8)
    assert torch.allclose(fast(x), plain(x), atol=1e-5)
    _fit_steps(fast.train(), 3, tmp_path)
    assert fast.hparams["channels_last"] is True
    with pytest.raises(ValueError, match="`channels_last` must be True or False"):
        FeatureClassifier(channels_last="yes")
