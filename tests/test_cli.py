"""The `deepfeat` LightningCLI: linking, configs, the summary line, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import lightning_deepfeat
from lightning_deepfeat import FeatureClassifier
from lightning_deepfeat.cli import main

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "configs" / "digits.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def test_version_and_help_in_a_subprocess():
    out = subprocess.run(
        [sys.executable, "-m", "lightning_deepfeat", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"deepfeat {lightning_deepfeat.__version__}"
    out = subprocess.run(
        [sys.executable, "-m", "lightning_deepfeat", "fit", "--help"], capture_output=True, text=True, check=True
    )
    assert "--config" in out.stdout and "--model" in out.stdout and "--data" in out.stdout


def test_print_config_shows_linked_shapes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", DIGITS, "--print_config"])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    init_args = config["model"]["init_args"]
    assert init_args["num_classes"] == 10
    assert init_args["input_shape"] == [1, 8, 8]
    assert config["data"]["class_path"].endswith("DigitsDataModule")


def test_print_config_links_shapes_of_other_data_modules(capsys):
    # Fashion-MNIST differs from the model's defaults, so this shows the link, not the default.
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / "configs" / "fashion_mnist.yaml"), "--print_config"])
    init_args = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert init_args["input_shape"] == [1, 28, 28] and init_args["num_classes"] == 10
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "--config",
                str(ROOT / "configs" / "cifar10_convnet.yaml"),
                "--data.class_path=CIFAR100DataModule",
                "--print_config",
            ]
        )
    init_args = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert init_args["input_shape"] == [3, 32, 32] and init_args["num_classes"] == 100


def test_fast_dev_run(tmp_path, capsys):
    cli = main(
        ["fit", "--config", DIGITS, "--trainer.fast_dev_run=true", f"--trainer.default_root_dir={tmp_path}", *QUIET]
    )
    assert isinstance(cli.model, FeatureClassifier)
    assert cli.model.num_classes == 10 and cli.model.input_shape == (1, 8, 8)
    assert cli.trainer.global_step == 1
    assert "deepfeat: test_error=" in capsys.readouterr().out


@pytest.mark.slow
def test_tiny_fit_on_digits_tests_the_best_checkpoint(tmp_path, capsys):
    cli = main(
        [
            "fit",
            "--config",
            DIGITS,
            "--trainer.max_epochs=3",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
            *QUIET,
        ]
    )
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if s.startswith("deepfeat: test_error="))
    error = float(line.split("test_error=")[1].split()[0])
    assert 0.0 <= error < 0.5  # three epochs of SGD beat chance (0.9) by far
    best = cli.trainer.checkpoint_callback.best_model_path
    assert best and best in line
    # The checkpoint written by the CLI rebuilds the model from YAML-given init args.
    loaded = FeatureClassifier.load_from_checkpoint(best, weights_only=True)
    x = torch.randn(4, 1, 8, 8)
    cli.model.eval(), loaded.eval()
    reference = FeatureClassifier.load_from_checkpoint(best, weights_only=True)
    reference.eval()
    torch.testing.assert_close(loaded(x), reference(x), rtol=0, atol=0)
    assert loaded.hparams["features"]["class_path"].endswith("ConvNet")


def test_optimizer_from_the_command_line(tmp_path):
    cli = main(
        [
            "fit",
            "--config",
            DIGITS,
            "--optimizer=Adam",
            "--optimizer.lr=0.002",
            "--trainer.fast_dev_run=true",
            "--test_after_fit=false",
            f"--trainer.default_root_dir={tmp_path}",
            *QUIET,
        ]
    )
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.002


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_unknown_class_name_in_yaml_is_reported(tmp_path, capsys):
    config = _write(
        tmp_path,
        "model:\n  class_path: FeatureClassifier\n  init_args:\n    features:\n      class_path: NoSuchNet\n"
        "data:\n  class_path: DigitsDataModule\n",
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", config])
    assert exit_info.value.code != 0
    assert "NoSuchNet" in capsys.readouterr().err


def test_negative_dropout_in_yaml_is_reported_before_training(tmp_path, capsys):
    config = _write(
        tmp_path,
        "model:\n  class_path: FeatureClassifier\n  init_args:\n    features:\n      class_path: ConvNet\n"
        "      init_args:\n        dropout: -0.5\ndata:\n  class_path: DigitsDataModule\n",
    )
    with pytest.raises(ValueError, match=r"`dropout` must be a dropout probability in \[0, 1\), got -0.5"):
        main(["fit", "--config", config, f"--trainer.default_root_dir={tmp_path}"])
    assert not (tmp_path / "lightning_logs").exists() or not list((tmp_path / "lightning_logs").rglob("*.ckpt"))
