"""``deepfeat`` as a user meets it: typed in a shell, in an empty folder, outside the checkout (issue 12).

Every test runs the command in a subprocess and checks what the user sees: the message,
the exit code and the files written.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import torch

from _data_files import DataRoots
from lightning_deepfeat.cli.recipes import recipe_names
from lightning_deepfeat.data import prepare_image_folder

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def deepfeat(
    *args: str, cwd: Path, python: str = sys.executable, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``python -m lightning_deepfeat ARGS`` in ``cwd``, as typed in a shell."""
    return subprocess.run(
        [python, "-m", "lightning_deepfeat", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def short_error(done: subprocess.CompletedProcess, code: int = 2, max_lines: int = 4) -> str:
    """The command failed with ``code``, without a traceback, in at most ``max_lines`` lines of stderr.

    Warnings aside.
    """
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if "error" in line.lower() or line.startswith("  (")]
    assert 1 <= len(lines) <= max_lines, done.stderr
    return "\n".join(lines)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A ``deepfeat fit --config digits`` run of 2 epochs, in an empty folder of its own; returns that folder."""
    folder = tmp_path_factory.mktemp("run")
    done = deepfeat("fit", "--config", "digits", "--trainer.max_epochs", "2", *QUICK, cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder.parent / f"{folder.name}.stdout").write_text(done.stdout)
    return folder


def last_ckpt(run: Path) -> Path:
    return run / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


# ----------------------------------------------------------------- 1. recipes ship inside the package
def test_recipes_are_listed_with_their_purpose(tmp_path):
    done = deepfeat("recipes", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name in ("digits", "fashion_mnist", "mnist_dropout_maxnorm", "cifar10_convnet", "imagenet_alexnet"):
        line = next(line for line in done.stdout.splitlines() if line.strip().startswith(name + " "))
        assert len(line.split(maxsplit=1)[1]) > 20  # a purpose, not just the name
    assert set(recipe_names()) == {
        p.stem for p in (REPO / "configs").glob("*.yaml")
    }  # one copy: configs/ is the package's
    assert (REPO / "configs").resolve() == (REPO / "src" / "lightning_deepfeat" / "recipes").resolve()


@pytest.mark.slow
def test_recipe_by_name_from_an_empty_folder(trained_run):
    assert "deepfeat: test_error=" in (trained_run.parent / f"{trained_run.name}.stdout").read_text()
    assert sorted(os.listdir(trained_run)) == ["lightning_logs"]
    config = (trained_run / "lightning_logs" / "version_0" / "config.yaml").read_text()
    assert "DigitsDataModule" in config and "DivideLROnPlateau" in config and "MaxNormConstraint" in config


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_venv_runs_the_first_command(tmp_path):
    """Build the wheel, install it into a new venv, run the README's first command from an empty folder.

    The venv sees the system's site-packages for torch & co. (installing torch again would
    copy gigabytes); the test checks that ``lightning_deepfeat`` itself comes from the venv.
    """
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-w", str(wheels), "-q"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("lightning_deepfeat-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    installed = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    empty = tmp_path / "empty"
    empty.mkdir()
    where = subprocess.run(
        [python, "-c", "import lightning_deepfeat; print(lightning_deepfeat.__file__)"],
        cwd=empty,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.stdout.strip().startswith(str(env_dir)), where.stdout + where.stderr
    done = subprocess.run(
        [str(env_dir / "bin" / "deepfeat"), "fit", "--config", "digits", "--trainer.max_epochs", "1", *QUICK],
        cwd=empty,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "deepfeat: test_error=" in done.stdout
    assert sorted(os.listdir(empty)) == ["lightning_logs"]


# ----------------------------------------------------------------- 2. predict writes its predictions
@pytest.mark.slow
def test_predict_writes_a_csv_into_the_run_folder_and_prints_its_path(trained_run):
    done = deepfeat("predict", "--ckpt_path", str(last_ckpt(trained_run)), *QUICK, cwd=trained_run)
    assert done.returncode == 0, done.stderr[-3000:]
    written = sorted(trained_run.glob("lightning_logs/version_*/predictions.csv"))
    assert len(written) == 1 and str(written[0]) in done.stdout + done.stderr
    rows = list(csv.DictReader(written[0].open()))
    assert len(rows) == 359  # the digits test split
    assert list(rows[0])[:3] == ["index", "predicted", "class_name"] and list(rows[0])[3:] == [
        f"p_{k}" for k in range(10)
    ]
    assert [int(r["index"]) for r in rows] == list(range(359))
    for row in rows[:20]:
        p = [float(row[f"p_{k}"]) for k in range(10)]
        assert abs(sum(p) - 1) < 1e-4 and int(row["predicted"]) == max(range(10), key=p.__getitem__)
        assert row["class_name"] == row["predicted"]  # digits are named "0".."9"


def test_prediction_writer_from_python(tmp_path, quiet_trainer):
    from lightning_deepfeat import ConvNet, FeatureClassifier
    from lightning_deepfeat.callbacks import PredictionWriter
    from lightning_deepfeat.data import DigitsDataModule

    model = FeatureClassifier(ConvNet(channels=[4], hidden=[8], in_channels=1), num_classes=10, input_shape=(1, 8, 8))
    out = tmp_path / "p.csv"
    trainer = quiet_trainer(callbacks=[PredictionWriter(out)])
    returned = trainer.predict(model, datamodule=DigitsDataModule(batch_size=100))
    rows = list(csv.DictReader(out.open()))
    expected = torch.cat(returned)
    assert len(rows) == expected.shape[0] == 359
    assert torch.allclose(torch.tensor([[float(r[f"p_{k}"]) for k in range(10)] for r in rows]), expected, atol=1e-5)
    with pytest.raises(ValueError, match="`output` must be a file path"):
        PredictionWriter(output=3)


# ----------------------------------------------------------------- 3. a checkpoint is enough
@pytest.mark.slow
@pytest.mark.parametrize("command", ["test", "validate"])
def test_checkpoint_alone_finds_the_runs_config(trained_run, command):
    done = deepfeat(command, "--ckpt_path", str(last_ckpt(trained_run)), *QUICK, cwd=trained_run)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{command if command == 'test' else 'val'}_acc" in done.stdout


@pytest.mark.slow
def test_checkpoint_moved_away_from_its_run_is_rebuilt_from_its_hyperparameters(trained_run, tmp_path):
    moved = tmp_path / "elsewhere.ckpt"
    moved.write_bytes(last_ckpt(trained_run).read_bytes())
    done = deepfeat("test", "--ckpt_path", str(moved), *QUICK, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test_acc" in done.stdout


def test_checkpoint_without_config_or_classes_says_what_to_pass(tmp_path, quiet_trainer, digits):
    from lightning_deepfeat import ConvNet, FeatureClassifier

    model = FeatureClassifier(ConvNet(channels=[4], hidden=[8], in_channels=1), num_classes=10, input_shape=(1, 8, 8))
    trainer = quiet_trainer(max_steps=1)
    trainer.fit(model, datamodule=digits)
    trainer.save_checkpoint(tmp_path / "python.ckpt")
    message = short_error(deepfeat("test", "--ckpt_path", "python.ckpt", cwd=tmp_path))
    assert "--config" in message and "python.ckpt" in message


# ----------------------------------------------------------------- 4. checkpoint errors name the file and the problem
def test_checkpoint_errors_name_the_file_and_the_problem(tmp_path, trained_run, quiet_trainer, digits):
    (tmp_path / "random.ckpt").write_bytes(os.urandom(4096))
    (tmp_path / "truncated.ckpt").write_bytes(last_ckpt(trained_run).read_bytes()[:5000])
    state = torch.load(last_ckpt(trained_run), map_location="cpu", weights_only=True)
    torch.save({**state, "lightning_deepfeat_version": "99.0.0"}, tmp_path / "future.ckpt")
    cases = {
        "missing.ckpt": "does not exist",
        "random.ckpt": "is not a checkpoint",
        "truncated.ckpt": "is not a checkpoint",
        "future.ckpt": "newer than the installed",
    }
    for name, problem in cases.items():
        for command in ("test", "visualize"):
            message = short_error(deepfeat(command, "--config", "digits", "--ckpt_path", name, cwd=tmp_path))
            assert name in message and problem in message, (command, message)
            assert "weights_only" not in message
    from lightning_deepfeat import MLP, FeatureClassifier

    mlp = FeatureClassifier(MLP(hidden=[16]), num_classes=10, input_shape=(1, 8, 8))
    trainer = quiet_trainer(max_steps=1)
    trainer.fit(mlp, datamodule=digits)
    trainer.save_checkpoint(tmp_path / "mlp.ckpt")
    saved = torch.load(tmp_path / "mlp.ckpt", weights_only=True)
    del saved["hyper_parameters"]  # as a module that does not save them writes it: nothing to rebuild the MLP from
    torch.save(saved, tmp_path / "mlp.ckpt")
    other = short_error(deepfeat("test", "--config", "digits", "--ckpt_path", "mlp.ckpt", cwd=tmp_path))
    assert "mlp.ckpt" in other and "another model" in other


# ----------------------------------------------------------------- 5. help shows everything
def test_help_lists_every_subcommand_with_its_purpose(tmp_path):
    done = deepfeat("--help", cwd=tmp_path)
    assert done.returncode == 0
    for command in ("fit", "validate", "test", "predict", "probe", "visualize", "recipes"):
        line = next(line for line in done.stdout.splitlines() if line.strip().startswith(command + " "))
        assert len(line.split(maxsplit=1)[1]) > 15
    assert done.stdout.startswith("usage: deepfeat")
    console = subprocess.run(["deepfeat", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert console.stdout == done.stdout  # `deepfeat` and `python -m lightning_deepfeat` are the same command
    for command in ("fit", "visualize"):
        sub = deepfeat(command, "--help", cwd=tmp_path)
        assert (
            sub.returncode == 0
            and sub.stdout.startswith(f"usage: deepfeat {command}")
            or (sub.stdout.startswith("usage: deepfeat [options] fit"))
        ), sub.stdout[:200]
    assert "__main__" not in deepfeat("fit", "--help", cwd=tmp_path).stdout


# ----------------------------------------------------------------- 6. short errors
def test_errors_are_one_short_message_with_exit_code_2(tmp_path):
    cases = [
        (
            ["fit", "--config", "digits", "--data.init_args.batch_size", "-1"],
            "`batch_size` must be a positive int, got -1",
        ),
        (["fit", "--config", "digits", "--model.init_args.features.class_path", "ConvNett"], "Did you mean ConvNet?"),
        (["fit", "--config", "digits", "--optimizer.lr", "abc"], "must be a float, got 'abc'"),
        (["fit", "--config", "fashion_mnist", "--data.init_args.root", str(tmp_path / "nowhere")], "Looked in"),
        (
            ["fit", "--config", "imagenet_alexnet", "--data.init_args.input_dir", str(tmp_path / "nowhere")],
            "does not exist. Prepare the images first: `deepfeat prepare",
        ),
        (["fit", "--config", "no_such_recipe"], "neither a file nor a packaged recipe"),
        (["fitt"], "Did you mean fit?"),
    ]
    for args, expected in cases:
        message = short_error(deepfeat(*args, cwd=tmp_path))
        assert expected in message, (args, message)
    assert sorted(os.listdir(tmp_path)) in ([], ["lightning_logs"])


def test_debug_shows_the_traceback(tmp_path):
    done = deepfeat("fit", "--config", "digits", "--data.init_args.batch_size", "-1", "--debug", cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" in done.stderr
    done = deepfeat(
        "fit", "--config", "digits", "--data.init_args.batch_size", "-1", cwd=tmp_path, env={"DEEPFEAT_DEBUG": "1"}
    )
    assert "Traceback" in done.stderr


# ----------------------------------------------------------------- 7. nothing written outside the run's log folder
def _data_args(data: DataRoots, shards: Path) -> dict[str, list[str]]:
    """Per recipe, the options that point it at the files of ``generated_data`` (AlexNet: small, on one CPU).

    AlexNet streams ``shards``, which ``deepfeat prepare`` writes here from the generated image folder.
    """
    prepare_image_folder(data.folder, shards, num_workers=1, progress=False)
    return {
        "fashion_mnist": ["--data.init_args.root", str(data.fashion)],
        "mnist_dropout_maxnorm": ["--data.init_args.root", str(data.mnist)],
        "cifar10_convnet": ["--data.init_args.root", str(data.cifar10)],
        "imagenet_alexnet": [
            "--data.init_args.input_dir",
            str(shards),
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "1",
            "--trainer.strategy",
            "auto",
            "--trainer.precision",
            "32-true",
            "--data.init_args.batch_size",
            "2",
            "--data.init_args.num_workers",
            "0",
            "--model.init_args.features.init_args.width",
            "0.125",
            "--model.init_args.features.init_args.hidden",
            "32",
        ],
    }


@pytest.mark.slow
def test_every_recipe_with_fast_dev_run_writes_only_into_the_log_folder(tmp_path, generated_data):
    extra = _data_args(generated_data, tmp_path / "shards")
    for name in recipe_names():
        folder = tmp_path / f"run_{name}"
        folder.mkdir()
        if name.startswith("probe_layerwise"):
            done = deepfeat("probe", "layerwise", "--config", name, "--steps", "1", cwd=folder)
        else:
            done = deepfeat(
                "fit", "--config", name, "--trainer.fast_dev_run", "true", *extra.get(name, []), *QUICK, cwd=folder
            )
        assert done.returncode == 0, (name, done.stderr[-3000:])
        assert sorted(os.listdir(folder)) == ["lightning_logs"], (name, os.listdir(folder))


@pytest.mark.slow
def test_picture_callbacks_write_into_the_log_folder(tmp_path):
    done = deepfeat(
        "fit",
        "--config",
        "digits",
        "--trainer.max_epochs",
        "1",
        "--trainer.callbacks+=LearningCurves",
        "--trainer.callbacks+=ConfusionMatrixPlot",
        "--trainer.callbacks+=FilterGallery",
        *QUICK,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["lightning_logs"]
    pictures = {p.name for p in (tmp_path / "lightning_logs").rglob("*.png")}
    assert {"learning_curves.png", "confusion_matrix.png"} <= pictures and any(
        p.startswith("filters") for p in pictures
    )


# (The README's code blocks, Python and shell, are run by tests/test_docs.py.)
