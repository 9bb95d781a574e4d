"""Bad input fails early and clearly: each case raises before any training step, naming the culprit.

Cases span the CLI, YAML files, modules, callbacks, data modules, data files and checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from _scaling_helpers import cli_error
from lightning_deepfeat import FeatureClassifier
from lightning_deepfeat.callbacks import DivideLROnPlateau, MaxNormConstraint
from lightning_deepfeat.cli import main
from lightning_deepfeat.data import DigitsDataModule, ImageClassificationDataModule, MNISTDataModule
from lightning_deepfeat.data.readers import load_pickle
from lightning_deepfeat.models import ConvNet

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "configs" / "digits.yaml")


class _NoStep(Callback):
    """Fails the test if a training step starts."""

    def on_train_batch_start(self, *args, **kwargs):
        raise AssertionError("a training step started before the bad input was reported")


def _fit(quiet_trainer, data, model=None, callbacks=(), **trainer_kwargs):
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[*callbacks, _NoStep()], **trainer_kwargs)
    try:
        trainer.fit(model if model is not None else FeatureClassifier(), data)
    finally:
        assert trainer.global_step == 0


# --------------------------------------------------------------------------- modules
@pytest.mark.parametrize(
    ("make", "match"),
    [
        pytest.param(
            lambda: FeatureClassifier(num_classes=1), r"`num_classes` must be an int >= 2.*got 1", id="num_classes=1"
        ),
        pytest.param(
            lambda: FeatureClassifier(num_classes="10"), r"`num_classes` must be an int.*got '10'", id="num_classes-str"
        ),
        pytest.param(
            lambda: FeatureClassifier(input_shape=(1, 0, 8)),
            r"`input_shape` must be .*positive ints.*\(1, 0, 8\)",
            id="input_shape-zero",
        ),
        pytest.param(
            lambda: FeatureClassifier(features="ConvNet"),
            r"`features` must be an nn.Module, got str",
            id="features-str",
        ),
        pytest.param(
            lambda: FeatureClassifier(features=ConvNet(channels=[4], hidden=[8], in_channels=1), input_shape=(3, 8, 8)),
            r"`features` \(ConvNet\) failed on a dry run with input_shape=\(3, 8, 8\)",
            id="features-vs-input_shape",
        ),
        pytest.param(
            lambda: FeatureClassifier(optimizer=0.01), r"`optimizer` must be a callable.*got 0.01", id="optimizer-float"
        ),
        pytest.param(lambda: ConvNet(dropout=1.5), r"dropout.*1.5", id="convnet-dropout"),
        pytest.param(lambda: ConvNet(channels=[]), r"`channels`", id="convnet-no-channels"),
        pytest.param(lambda: ConvNet(kernel_size=4), r"kernel_size.*4", id="convnet-even-kernel"),
    ],
)
def test_module_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# --------------------------------------------------------------------------- callbacks
@pytest.mark.parametrize(
    ("make", "match"),
    [
        pytest.param(
            lambda: DivideLROnPlateau(divisor=1), r"`divisor` must be a finite number > 1, got 1", id="divisor=1"
        ),
        pytest.param(
            lambda: DivideLROnPlateau(mode="mean"), r"`mode` must be one of 'min', 'max', got 'mean'", id="mode"
        ),
        pytest.param(lambda: DivideLROnPlateau(patience=-1), r"`patience` must be an int >= 0, got -1", id="patience"),
        pytest.param(
            lambda: DivideLROnPlateau(threshold=float("nan")), r"`threshold` must be .*got nan", id="threshold-nan"
        ),
        pytest.param(
            lambda: MaxNormConstraint(max_norm=0), r"`max_norm` must be a finite number > 0, got 0", id="max_norm=0"
        ),
        pytest.param(
            lambda: MaxNormConstraint(module_types="Linear"),
            r"`module_types` must be a non-empty list.*'Linear'",
            id="module_types-str",
        ),
    ],
)
def test_callback_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_max_norm_pattern_matching_nothing_fails_at_setup(quiet_trainer, digits):
    with pytest.raises(ValueError, match=r"`include` pattern 'featurez\.\*' matches no parameter of FeatureClassifier"):
        _fit(quiet_trainer, digits, callbacks=[MaxNormConstraint(include=["featurez.*"])])


def test_plateau_refuses_a_second_owner_of_the_learning_rate_at_fit_start(quiet_trainer, digits):
    model = FeatureClassifier(lr_scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1))
    with pytest.raises(
        MisconfigurationException, match=r"DivideLROnPlateau.*also returns a learning-rate scheduler \(StepLR\)"
    ):
        _fit(quiet_trainer, digits, model=model, callbacks=[DivideLROnPlateau()])


# --------------------------------------------------------------------------- data
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"batch_size": 0}, r"`batch_size` must be a positive int, got 0", id="batch_size=0"),
        pytest.param({"batch_size": 2.5}, r"`batch_size` must be a positive int, got 2.5", id="batch_size-float"),
        pytest.param(
            {"val_fraction": 1.0}, r"`val_fraction` must be a finite number in \[0, 1\), got 1.0", id="val_fraction=1"
        ),
        pytest.param(
            {"test_fraction": 0}, r"`test_fraction` must be a finite number in \(0, 1\), got 0", id="test_fraction=0"
        ),
        pytest.param({"padding_mode": "wrap"}, r"`padding_mode` must be one of .*got 'wrap'", id="padding_mode"),
        pytest.param(
            {"crop_size": 9}, r"`crop_size` must fit in the stored images \(8, 8\), got 9", id="crop_size-too-big"
        ),
        pytest.param({"std": [0.0]}, r"`std` must be positive.*\[0.0\]", id="std-zero"),
    ],
)
def test_data_module_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kwargs)


class _BadLabels(ImageClassificationDataModule):
    num_classes = 3
    image_shape = (1, 4, 4)

    def load_split(self, split):
        return torch.zeros(6, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 2, 3, 0, 1])


def test_labels_outside_num_classes_fail_at_setup(quiet_trainer):
    model = FeatureClassifier(features=ConvNet(channels=[4], hidden=[8]), num_classes=3, input_shape=(1, 4, 4))
    with pytest.raises(ValueError, match=r"_BadLabels: train labels must lie in \[0, 3\), found \[0, 3\]"):
        _fit(quiet_trainer, _BadLabels(batch_size=2, val_fraction=0.0), model=model)


def test_data_and_model_disagree_on_num_classes(quiet_trainer, digits):
    """A 5-class model on 10-class data: caught at setup, not by a wrong loss."""
    model = FeatureClassifier(features=ConvNet(channels=[4], hidden=[8]), num_classes=5, input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"`num_classes`=5.*DigitsDataModule has num_classes=10"):
        _fit(quiet_trainer, digits, model=model)


def test_missing_data_files_name_the_folders(tmp_path):
    data = MNISTDataModule(root=tmp_path / "nowhere")
    with pytest.raises(
        FileNotFoundError,
        match=r"(?s)MNISTDataModule: no folder holds all of train-images-idx3-ubyte.*Looked in:.*nowhere",
    ):
        data.setup("fit")


def test_corrupt_idx_file_names_the_file(tmp_path):
    for stem in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (tmp_path / stem).write_bytes(b"this is not an IDX file")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte is not an IDX file: bad magic number"):
        MNISTDataModule(root=tmp_path).setup("fit")


def test_untrusted_pickle_is_refused(tmp_path):
    """CIFAR batches are pickles; only numpy arrays and builtins may come out of them."""
    import pickle

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Path("/etc/passwd")}))
    with pytest.raises(ValueError, match=r"cannot read .*data_batch_1: refusing to load pathlib.PosixPath"):
        load_pickle(path)


# --------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def ten_class_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "ten.ckpt"
    model = FeatureClassifier(features=ConvNet(channels=[4], hidden=[8]), num_classes=10, input_shape=(1, 8, 8))
    trainer = Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, DigitsDataModule(batch_size=32))
    trainer.save_checkpoint(path)
    return path


def test_checkpoint_with_other_num_classes_is_refused_by_name(ten_class_checkpoint):
    with pytest.raises(
        ValueError, match=r"trained with `num_classes`=10, but this FeatureClassifier has `num_classes`=5"
    ):
        FeatureClassifier.load_from_checkpoint(ten_class_checkpoint, num_classes=5, weights_only=True)


def test_resuming_a_checkpoint_of_other_num_classes_fails_before_training(ten_class_checkpoint, quiet_trainer):
    class FiveDigits(DigitsDataModule):
        num_classes = 5

        def load_split(self, split):
            images, labels = super().load_split(split)
            return images, labels % 5

    model = FeatureClassifier(features=ConvNet(channels=[4], hidden=[8]), num_classes=5, input_shape=(1, 8, 8))
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[_NoStep()])
    with pytest.raises(ValueError, match=r"`num_classes`=10.*`num_classes`=5"):
        trainer.fit(model, FiveDigits(batch_size=32), ckpt_path=str(ten_class_checkpoint), weights_only=True)
    assert trainer.global_step == 0


def test_checkpoint_loads_with_weights_only(ten_class_checkpoint):
    model = FeatureClassifier.load_from_checkpoint(ten_class_checkpoint, weights_only=True)
    assert model.num_classes == 10


def test_checkpoint_holding_arbitrary_objects_is_not_unpickled(tmp_path, ten_class_checkpoint):
    checkpoint = torch.load(ten_class_checkpoint, weights_only=True)
    checkpoint["payload"] = Path("/etc/passwd")  # an arbitrary object: weights_only must refuse to build it
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    with pytest.raises(Exception, match=r"(?s)Weights only load failed.*Unsupported global: GLOBAL pathlib.PosixPath"):
        FeatureClassifier.load_from_checkpoint(tmp_path / "evil.ckpt", weights_only=True)


def test_corrupt_checkpoint_file(tmp_path):
    bad = tmp_path / "corrupt.ckpt"
    bad.write_bytes(b"\x00not a checkpoint" * 8)
    with pytest.raises(Exception) as info:
        FeatureClassifier.load_from_checkpoint(bad, weights_only=True)
    assert isinstance(info.value, (RuntimeError, ValueError, EOFError)) or "Unpickling" in type(info.value).__name__


def test_missing_checkpoint_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        FeatureClassifier.load_from_checkpoint(tmp_path / "missing.ckpt", weights_only=True)


# --------------------------------------------------------------------------- CLI and YAML
def test_cli_unknown_key():
    err = cli_error(["fit", "--config", DIGITS, "--model.init_args.num_clases=3"])
    assert "unknown argument 'num_clases' of FeatureClassifier. Did you mean num_classes?" in err


def test_cli_wrong_type():
    err = cli_error(["fit", "--config", DIGITS, "--data.init_args.batch_size=abc"])
    assert "`--data.batch_size` must be an int, got 'abc'" in err


def test_cli_out_of_range_value_names_the_argument():
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive int, got 0"):
        main(["fit", "--config", DIGITS, "--data.init_args.batch_size=0"])


def test_cli_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml.*neither a file nor a packaged recipe.*digits"):
        main(["fit", "--config", str(tmp_path / "nope.yaml")])


def test_cli_unknown_class():
    err = cli_error(["fit", "--config", DIGITS, "--model.init_args.features=NoSuchNet"])
    assert "NoSuchNet" in err


def test_yaml_unknown_key_in_a_file(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("data:\n  class_path: DigitsDataModule\n  init_args:\n    batch_sise: 32\n")
    assert "batch_sise" in cli_error(["fit", "--config", str(config)])


def test_yaml_corrupt_file(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("trainer: {max_epochs: [1,\nmodel: :\n")
    err = cli_error(["fit", "--config", str(config)])
    assert "Problem in parsing config" in err or "while parsing" in err
    assert "line 2, column 8" in err  # (jsonargparse names the position, not the file: the file is the one given)


def test_cli_missing_checkpoint_fails_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        main(
            [
                "fit",
                "--config",
                DIGITS,
                "--ckpt_path",
                str(tmp_path / "missing.ckpt"),
                "--trainer.logger=false",
                f"--trainer.default_root_dir={tmp_path}",
                "--trainer.enable_progress_bar=false",
                "--trainer.callbacks+=test_bad_input._NoStep",
            ]
        )
