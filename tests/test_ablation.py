"""``deepfeat ablate``: outputs, skipping finished runs, what each arm really changes, bad input."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from lightning_deepfeat.callbacks import DivideLROnPlateau, MaxNormConstraint
from lightning_deepfeat.cli import DeepFeatCLI
from lightning_deepfeat.models import MLP
from lightning_deepfeat.probes import TrainOnly
from lightning_deepfeat.probes.ablation import (
    ABLATION_ARMS,
    ArmChangesNothing,
    ablate_main,
    applicable_arms,
    build_arm,
    load_config,
)


def _digits_with_flips() -> dict:
    """The digits recipe with flips on, so that every arm (no_flip too) changes something."""
    _, config = load_config("digits")
    config["data"]["init_args"]["hflip"] = True
    return config


def _instantiate(config: dict, tmp_path: Path, *extra: str) -> DeepFeatCLI:
    """Model, data module and trainer (with its callbacks) of a fit config.

    Built as `deepfeat fit` builds them, not run.
    """
    config = dict(config)
    config["trainer"] = dict(config.get("trainer") or {}, default_root_dir=str(tmp_path / "run"))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return DeepFeatCLI(args=["--config", str(path), *extra], run=False)


def _ingredients(cli: DeepFeatCLI) -> dict[str, bool]:
    """Which ingredient of the recipe the built model, data module and callbacks have."""
    features, callbacks, dm = cli.model.features, cli.trainer.callbacks, cli.datamodule

    def has(kind: type) -> bool:
        return any(isinstance(m, kind) for m in features.modules())

    return {
        "dropout": any(isinstance(m, nn.Dropout) and m.p > 0 for m in cli.model.modules()),
        "maxnorm": any(isinstance(c, MaxNormConstraint) for c in callbacks),
        "plateau": any(isinstance(c, DivideLROnPlateau) for c in callbacks),
        "translate": tuple(dm.translate) != (0, 0) or dm.crop_size is not None,
        "hflip": dm.hflip,
        "test_views": dm.test_views != "single",
        "relu": has(nn.ReLU),
        "tanh": has(nn.Tanh),
        "maxpool": has(nn.MaxPool2d),
        "avgpool": has(nn.AvgPool2d),
        "conv": has(nn.Conv2d),
        "dense": has(nn.Linear),
        "mlp": isinstance(features, MLP),
        "train_only_head": any(isinstance(c, TrainOnly) for c in callbacks),
    }


FULL = {
    "dropout": True,
    "maxnorm": True,
    "plateau": True,
    "translate": True,
    "hflip": True,
    "relu": True,
    "tanh": False,
    "maxpool": True,
    "avgpool": False,
    "conv": True,
    "dense": True,
    "mlp": False,
    "train_only_head": False,
}
#: what each arm changes with respect to the full recipe, and nothing else
EXPECTED = {
    "full": {},
    "no_dropout": {"dropout": False},
    "no_maxnorm": {"maxnorm": False},
    "no_dropout_maxnorm": {"dropout": False, "maxnorm": False},
    "no_translate": {"translate": False, "test_views": False},
    "no_flip": {"hflip": False, "test_views": False},
    "no_augment": {"translate": False, "hflip": False, "test_views": False},
    "constant_lr": {"plateau": False},
    "tanh": {"relu": False, "tanh": True},
    "no_maxpool": {"maxpool": False, "avgpool": True},
    "frozen_features": {"train_only_head": True},
    "logreg_pixels": {
        "dropout": False,
        "maxnorm": False,
        "relu": False,
        "maxpool": False,
        "conv": False,
        "dense": False,
    },
    "mlp": {"dropout": False, "maxnorm": False, "maxpool": False, "conv": False, "mlp": True},
    "mlp_dropout": {"maxnorm": False, "maxpool": False, "conv": False, "mlp": True},
    "mlp_dropout_maxnorm": {"maxpool": False, "conv": False, "mlp": True},
}


def test_every_arm_is_tested():
    assert list(EXPECTED) == list(ABLATION_ARMS)


@pytest.mark.parametrize("recipe", ["digits", "fashion_mnist"])
@pytest.mark.parametrize("arm", list(ABLATION_ARMS))
def test_arm_changes_its_ingredient_and_nothing_else(arm, recipe, tmp_path):
    base = _digits_with_flips() if recipe == "digits" else load_config(recipe)[1]
    cli = _instantiate(build_arm(base, arm), tmp_path)
    # Fashion-MNIST's recipe tests on ten views (shifts and flips); an augmentation arm tests on single images
    tested_on_views = recipe == "fashion_mnist"
    assert _instantiate(base, tmp_path).datamodule.test_views == ("ten" if tested_on_views else "single")
    assert _ingredients(cli) == {**FULL, "test_views": tested_on_views, **EXPECTED[arm]}
    # the same budget: epochs, batch size, data and optimizer untouched
    full = _instantiate(base, tmp_path)
    assert cli.trainer.max_epochs == full.trainer.max_epochs
    assert cli.datamodule.batch_size == full.datamodule.batch_size
    assert type(cli.datamodule) is type(full.datamodule)
    assert cli.config["optimizer"] == full.config["optimizer"]


def test_arm_details(tmp_path):
    base = _digits_with_flips()
    # logistic regression on pixels: φ has no parameters, the head sees every pixel
    pixels = _instantiate(build_arm(base, "logreg_pixels"), tmp_path).model
    assert list(pixels.features.parameters()) == [] and pixels.feature_dim == 64
    # MLP rows: the dropout rates named, max-norm at the config's radius
    mlp = _instantiate(build_arm(base, "mlp_dropout_maxnorm"), tmp_path)
    assert sorted(m.p for m in mlp.model.features.modules() if isinstance(m, nn.Dropout)) == [0.2, 0.5, 0.5]
    assert [c.max_norm for c in mlp.trainer.callbacks if isinstance(c, MaxNormConstraint)] == [3.0]
    assert [m.out_features for m in mlp.model.features.modules() if isinstance(m, nn.Linear)] == [1024, 1024]
    # no max-norm in the config: the MLP row adds c = 3
    no_maxnorm = build_arm(base, "no_maxnorm")
    added = _instantiate(build_arm(no_maxnorm, "mlp_dropout_maxnorm"), tmp_path)
    assert [c.max_norm for c in added.trainer.callbacks if isinstance(c, MaxNormConstraint)] == [3.0]
    # constant LR: no scheduler either, the optimizer keeps its initial LR
    constant = _instantiate(build_arm(base, "constant_lr"), tmp_path).model
    optimizer = constant.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD) and [g["lr"] for g in optimizer.param_groups] == [0.05]
    # no translation also removes random crops
    cropped = _digits_with_flips()
    cropped["data"]["init_args"]["crop_size"] = 6
    assert _instantiate(cropped, tmp_path).datamodule.crop_size == (6, 6)
    uncropped = _instantiate(build_arm(cropped, "no_translate"), tmp_path)
    assert uncropped.datamodule.crop_size is None and uncropped.model.input_shape == (1, 8, 8)


@pytest.mark.slow
def test_frozen_features_trains_only_the_head(tmp_path):
    cli = _instantiate(
        build_arm(_digits_with_flips(), "frozen_features"),
        tmp_path,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    )
    model = cli.model
    train_only = next(c for c in cli.trainer.callbacks if isinstance(c, TrainOnly))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_only.on_fit_start(cli.trainer, model)
    assert not any(p.requires_grad for p in model.features.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    train_only.on_fit_end(cli.trainer, model)

    cli.trainer.fit(model, datamodule=cli.datamodule)
    after = model.state_dict()
    assert cli.trainer.global_step == 3
    for name, value in before.items():
        if name.startswith("features."):
            assert torch.equal(after[name], value), name  # φ at its random initialisation, bit for bit
    assert not torch.equal(after["head.weight"], before["head.weight"])


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_ablate_digits_writes_outputs_and_skips_finished_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "ablation"
    argv = ["--config", "digits", "--arms", "full,no_dropout", "--seeds", "0", "--max_epochs", "1", "--out", str(out)]

    first = ablate_main(argv)
    printed = capsys.readouterr().out
    assert first["ran"] == [("full", 0), ("no_dropout", 0)] and first["skipped"] == []
    rows = _read_csv(out / "ablation.csv")
    assert [(r["arm"], r["seed"], r["epochs"]) for r in rows] == [("full", "0", "1"), ("no_dropout", "0", "1")]
    for row in rows:
        assert 0.0 <= float(row["test_error"]) <= 1.0 and 0.0 <= float(row["train_error"]) <= 1.0
        assert float(row["wall_seconds"]) > 0
    # the test error of the best checkpoint: what `deepfeat fit` printed for each run
    fit_lines = re.findall(r"deepfeat: test_error=([0-9.]+) .*checkpoint: (\S+)\)", printed)
    assert [f"{float(r['test_error']):.4f}" for r in rows] == [value for value, _ in fit_lines]
    assert all(Path(ckpt).name.startswith("epoch=0") for _, ckpt in fit_lines)
    # each run is the arm's config, in its own folder
    assert (
        yaml.safe_load((out / "no_dropout/seed0/config.yaml").read_text())["model"]["init_args"]["features"][
            "init_args"
        ]["dropout"]
        == 0.0
    )
    assert yaml.safe_load((out / "full/seed0/config.yaml").read_text())["trainer"]["max_epochs"] == 1
    table = (out / "ablation.md").read_text()
    assert "max_epochs=1" in table and "| full |" in table and "| no_dropout |" in table
    assert f"{100 * float(rows[0]['test_error']):.2f}" in table
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| arm |" in printed  # the table, printed at the end
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ablation"]  # nothing written outside --out

    # run again: nothing is trained, nothing in the folder changes
    files = _files(out)
    second = ablate_main(argv)
    assert second["ran"] == [] and second["skipped"] == [("full", 0), ("no_dropout", 0)]
    after = _files(out)
    runs = {k: v for k, v in after.items() if "/seed" in k}
    assert runs == {k: v for k, v in files.items() if "/seed" in k}
    assert _read_csv(out / "ablation.csv") == rows

    # a run killed before it finished (no result marker): only that one is trained again, from scratch
    (out / "no_dropout/seed0/result.json").unlink()
    third = ablate_main(argv)
    assert third["ran"] == [("no_dropout", 0)] and third["skipped"] == [("full", 0)]
    assert [p.name for p in (out / "no_dropout/seed0/lightning_logs").iterdir()] == ["version_0"]
    rerun = _read_csv(out / "ablation.csv")
    assert rerun[0] == rows[0]
    # in-process runs share no state: the seeded rerun, after other runs, repeats the first one
    assert rerun[1]["test_error"] == rows[1]["test_error"] and rerun[1]["train_error"] == rows[1]["train_error"]
    assert json.loads((out / "no_dropout/seed0/result.json").read_text())["test_error"] == float(rows[1]["test_error"])

    # the same --out with another budget would mix two ablations: refused before training
    with pytest.raises(ValueError, match="--max_epochs"):
        ablate_main([*argv[:-4], "--max_epochs", "2", "--out", str(out)])


def test_unknown_arm_is_refused_with_the_list(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(
        ValueError, match=r"'no_dropuot'. Did you mean no_dropout.*The arms are: full, no_dropout, no_maxnorm"
    ):
        ablate_main(["--config", "digits", "--arms", "full,no_dropuot", "--out", str(out)])
    with pytest.raises(ValueError, match=r"unknown ablation arm 'relu'.*mlp_dropout_maxnorm"):
        build_arm(load_config("digits")[1], "relu")
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--seeds", "0,x"], r"`--seeds` must be a comma-separated list of ints >= 0"),
        (["--seeds", "0,0"], r"`seeds` must be a list of distinct seeds"),
        (["--arms", "full,,tanh"], r"`--arms` must be a comma-separated list without empty items"),
        (["--max_epochs", "0"], r"`--max_epochs` must be a positive int .*got 0"),
        (["--config", "no_such_recipe"], r"'no_such_recipe' is neither a file nor a packaged recipe"),
    ],
)
def test_bad_arguments_are_refused_before_training(argv, match, tmp_path):
    out = tmp_path / "out"
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        ablate_main(["--config", "digits", *argv, "--out", str(out)])
    assert not out.exists()


def test_arm_that_cannot_apply_names_the_arm(tmp_path):
    _, config = load_config("digits")
    config["model"]["init_args"]["features"] = {"class_path": "MLP", "init_args": {"hidden": [64]}}
    with pytest.raises(ValueError, match=r"arm 'no_maxpool' .*'MLP', not a ConvNet"):
        build_arm(config, "no_maxpool")
    path = tmp_path / "mlp.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=r"arm 'no_maxpool'"):
        ablate_main(["--config", str(path), "--arms", "full,no_maxpool", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    # the default arm list leaves it out and says why
    arms, left_out = applicable_arms(config)
    assert "no_maxpool" not in arms and "tanh" in arms and "not a ConvNet" in left_out["no_maxpool"]

    other = {"model": {"class_path": "lightning.pytorch.demos.boring_classes.BoringModel"}, "data": config["data"]}
    for arm in ("no_dropout", "tanh", "frozen_features", "logreg_pixels", "mlp"):
        with pytest.raises(ValueError, match=rf"arm '{arm}' needs a FeatureClassifier model.*BoringModel"):
            build_arm(other, arm)
    with pytest.raises(ValueError, match=r"arm 'no_flip' .*image data module"):
        build_arm(
            {
                "model": config["model"],
                "data": {"class_path": "lightning.pytorch.demos.boring_classes.BoringDataModule"},
            },
            "no_flip",
        )


def test_arm_that_changes_nothing_is_refused_or_left_out():
    _, digits = load_config("digits")  # no flips in the digits recipe
    with pytest.raises(ArmChangesNothing, match=r"arm 'no_flip' .*changes nothing"):
        build_arm(digits, "no_flip")
    arms, left_out = applicable_arms(digits)
    assert arms == [a for a in ABLATION_ARMS if a != "no_flip"] and list(left_out) == ["no_flip"]
    assert build_arm(digits, "no_augment")["data"]["init_args"]["translate"] == 0
    without_maxnorm = build_arm(digits, "no_maxnorm")
    with pytest.raises(ArmChangesNothing, match="'no_maxnorm'"):
        build_arm(without_maxnorm, "no_maxnorm")
    # the config given is never modified
    assert load_config("digits")[1] == digits
