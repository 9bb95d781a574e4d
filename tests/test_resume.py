"""Kill and resume: a `deepfeat fit` subprocess SIGKILLed mid-epoch and resumed with `--ckpt_path last`
ends exactly where an uninterrupted run ends (weights, learning-rate schedule, metrics)."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback

from _scaling_helpers import ROOT, parse_test_error, run_cli, sigkill_once, subprocess_env

pytestmark = pytest.mark.slow

EVERY = 7  # checkpoint every 7 optimizer steps
BATCHES_PER_EPOCH = 41  # digits: 1294 training images / 32 per batch, rounded up
KILL_AT = 52  # hang before step 53; the last checkpoint is step 49 = epoch 1, batch 8 (mid-epoch)
LAST_CKPT_STEP = (KILL_AT // EVERY) * EVERY


def _config(tmp: Path, name: str, extra_callbacks: list[dict] | None = None) -> Path:
    """digits.yaml with dropout and augmentation on, max-norm, a plateau that fires, step checkpoints."""
    with open(ROOT / "configs" / "digits.yaml") as f:
        config = yaml.safe_load(f)
    config["trainer"].update(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        deterministic=True,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        logger={"class_path": "CSVLogger", "init_args": {"save_dir": str(tmp / "logs"), "name": name}},
    )
    config["trainer"]["callbacks"] = [
        {
            "class_path": "ModelCheckpoint",
            "init_args": {
                "dirpath": str(tmp / f"ckpt_{name}"),
                "every_n_train_steps": EVERY,
                "save_top_k": 0,
                "save_last": True,
            },
        },
        # patience 0 and a 40% relative threshold: the LR drops within the run (twice at most)
        {
            "class_path": "_scaling_helpers.RecordingPlateau",  # DivideLROnPlateau recording what it decides on
            "init_args": {
                "monitor": "train_error",
                "check_every_n_steps": 6,
                "patience": 0,
                "threshold": 0.4,
                "max_drops": 2,
                "verbose": False,
                "record": str(tmp / f"plateau_{name}.pt"),
            },
        },
        {"class_path": "lightning_deepfeat.callbacks.MaxNormConstraint", "init_args": {"max_norm": 1.0}},
        {"class_path": "_scaling_helpers.SaveFinalState", "init_args": {"path": str(tmp / f"final_{name}.pt")}},
        {"class_path": "_scaling_helpers.RecordLRs", "init_args": {"path": str(tmp / f"lrs_{name}.pt")}},
        *(extra_callbacks or []),
    ]
    config["data"]["init_args"].update(translate=1, batch_size=32)  # augmentation on: its RNG must resume
    config["model"]["init_args"]["features"]["init_args"]["dropout"] = 0.5  # dropout on: its RNG must resume
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _csv_rows(tmp: Path, name: str) -> list[dict[str, str]]:
    """Rows of the newest CSVLogger version of run ``name`` (for the resumed run: the resumed process's)."""
    newest = max((tmp / "logs" / name).glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    with open(newest / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _by(rows: list[dict[str, str]], key: str, index: str) -> dict[int, float]:
    return {int(r[index]): float(r[key]) for r in rows if r.get(key) not in (None, "")}


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    # 1. the reference: one uninterrupted run
    ref = run_cli(["fit", "--config", str(_config(tmp_path, "ref"))], cwd=tmp_path)
    ref_error = parse_test_error(ref.stdout)

    # 2. the same run, killed with SIGKILL while it is inside epoch 1
    marker = tmp_path / "hanging"
    killed_cfg = _config(
        tmp_path,
        "run",
        [{"class_path": "_scaling_helpers.BlockAtStep", "init_args": {"step": KILL_AT, "marker": str(marker)}}],
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightning_deepfeat", "fit", "--config", str(killed_cfg)],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    sigkill_once(proc, marker, timeout=240, what="the kill step")
    assert proc.returncode == -signal.SIGKILL
    last = tmp_path / "ckpt_run" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)  # our checkpoints need no pickle
    assert checkpoint["global_step"] == LAST_CKPT_STEP
    assert checkpoint["epoch"] == 1 and 0 < LAST_CKPT_STEP - BATCHES_PER_EPOCH < BATCHES_PER_EPOCH  # mid-epoch
    assert not (tmp_path / "final_run.pt").exists()

    # 3. resume from the last checkpoint
    resumed = run_cli(
        ["fit", "--config", str(_config(tmp_path, "run")), "--ckpt_path", "last", "--weights_only", "true"],
        cwd=tmp_path,
    )  # nothing in our checkpoints needs pickle

    a = torch.load(tmp_path / "final_ref.pt", weights_only=True)
    b = torch.load(tmp_path / "final_run.pt", weights_only=True)
    assert int(a["global_step"]) == int(b["global_step"]) == 2 * BATCHES_PER_EPOCH
    # weights: bitwise
    for key, value in a["weights"].items():
        assert torch.equal(value, b["weights"][key]), (
            f"{key} differs after resume: max |d| = {(value - b['weights'][key]).abs().max()}"
        )
    # learning-rate schedule: the plateau dropped the LR, and at the same steps
    lrs_ref = torch.load(tmp_path / "lrs_ref.pt", weights_only=True)
    lrs_run = torch.load(tmp_path / "lrs_run.pt", weights_only=True)  # only the resumed process's steps
    assert lrs_ref[-1, 1] < lrs_ref[0, 1], "the plateau never fired: the test would not check its state"
    assert lrs_run[0, 0] == LAST_CKPT_STEP
    torch.testing.assert_close(lrs_run, lrs_ref[LAST_CKPT_STEP:], rtol=0, atol=0)
    assert torch.equal(a["lrs"], b["lrs"])
    # the plateau's decisions: the same windowed training error at the same steps, and the same final state
    plateau_ref = torch.load(tmp_path / "plateau_ref.pt", weights_only=True)
    plateau_run = torch.load(tmp_path / "plateau_run.pt", weights_only=True)
    after_ckpt = plateau_ref["values"][plateau_ref["values"][:, 0] > LAST_CKPT_STEP]
    assert len(after_ckpt) >= 3
    torch.testing.assert_close(plateau_run["values"], after_ckpt, rtol=0, atol=0)
    assert plateau_run["state"] == plateau_ref["state"]
    # metrics: the final logged metrics, the per-epoch validation error and the printed test error
    # (train_* of the interrupted epoch included: FeatureClassifier checkpoints its running training metrics)
    assert a["metrics"].keys() == b["metrics"].keys()
    assert {"train_error", "train_loss", "val_error"} <= set(a["metrics"])
    for key in a["metrics"]:
        assert torch.equal(a["metrics"][key], b["metrics"][key]), (
            f"metric {key}: {a['metrics'][key]} != {b['metrics'][key]}"
        )
    ref_rows, run_rows = _csv_rows(tmp_path, "ref"), _csv_rows(tmp_path, "run")
    lr_ref, lr_run = _by(ref_rows, "lr", "step"), _by(run_rows, "lr", "step")  # logged by the plateau callback
    # the resumed log starts at the checkpoint's step with the restored LR, then follows the reference
    assert min(lr_run) == LAST_CKPT_STEP and lr_run.pop(LAST_CKPT_STEP) == float(lrs_ref[LAST_CKPT_STEP, 1])
    assert {s: v for s, v in lr_ref.items() if s > LAST_CKPT_STEP} == lr_run
    for key in ("val_error", "val_loss", "val_acc", "train_error", "train_loss"):
        ref_epochs, run_epochs = _by(ref_rows, key, "epoch"), _by(run_rows, key, "epoch")
        assert ref_epochs[1] == run_epochs[1], f"{key} of the resumed epoch: {ref_epochs[1]} != {run_epochs[1]}"
    assert parse_test_error(resumed.stdout) == ref_error


class _LoaderPosition(Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        (state,) = trainer.fit_loop._combined_loader._state_dicts()
        self.seen.append((batch_idx + 1, state["batches_done"]))


def test_saved_loader_position_counts_consumed_batches_not_prefetched_ones():
    """What Lightning saves mid-epoch is the number of batches trained on, so a resume skips no batch."""
    from lightning.pytorch import Trainer, seed_everything

    from lightning_deepfeat import FeatureClassifier
    from lightning_deepfeat.data import DigitsDataModule

    seed_everything(0)
    probe = _LoaderPosition()
    trainer = Trainer(
        max_steps=5,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[probe],
    )
    trainer.fit(FeatureClassifier(), DigitsDataModule(batch_size=32))
    assert probe.seen == [(i, i) for i in range(1, 6)]


def _sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def _ddp_fit(tmp: Path, name: str, ckpt_path: str | None = None) -> None:
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import DDPStrategy

    from _scaling_helpers import RecordingPlateau, SaveFinalState
    from lightning_deepfeat import FeatureClassifier
    from lightning_deepfeat.callbacks import MaxNormConstraint
    from lightning_deepfeat.data import DigitsDataModule
    from lightning_deepfeat.models import ConvNet

    seed_everything(0)
    model = FeatureClassifier(
        features=ConvNet(channels=[8, 16], hidden=[32], dropout=0.5),
        num_classes=10,
        input_shape=(1, 8, 8),
        optimizer=_sgd,
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(process_group_backend="gloo", start_method="spawn"),
        max_epochs=2,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=[
            ModelCheckpoint(dirpath=tmp / f"ckpt_{name}", every_n_train_steps=EVERY, save_top_k=-1),
            RecordingPlateau(
                monitor="train_error",
                check_every_n_steps=6,
                patience=0,
                threshold=0.4,
                max_drops=2,
                verbose=False,
                record=str(tmp / f"plateau_{name}.pt"),
            ),
            MaxNormConstraint(max_norm=1.0),
            SaveFinalState(str(tmp / f"final_{name}.pt")),
        ],
    )
    trainer.fit(model, DigitsDataModule(batch_size=16, translate=1), ckpt_path=ckpt_path)


@pytest.mark.ddp
def test_ddp_resume_mid_epoch_equals_uninterrupted(tmp_path):
    """2 gloo processes × 16 (41 batches per epoch each): resume from step 49 (epoch 1, batch 8)."""
    _ddp_fit(tmp_path, "ref")
    ckpt = tmp_path / "ckpt_ref" / f"epoch=1-step={LAST_CKPT_STEP}.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    assert (
        saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches_done"]
        == LAST_CKPT_STEP - BATCHES_PER_EPOCH
    )
    # the running training metrics are those of both processes: 2 × 16 samples per batch
    assert int(saved["deepfeat_train_metrics"]["states"]["train_loss"]["weight"]) == 2 * 16 * (
        LAST_CKPT_STEP - BATCHES_PER_EPOCH
    )
    _ddp_fit(tmp_path, "run", ckpt_path=str(ckpt))

    a = torch.load(tmp_path / "final_ref.pt", weights_only=True)
    b = torch.load(tmp_path / "final_run.pt", weights_only=True)
    assert int(a["global_step"]) == int(b["global_step"]) == 2 * BATCHES_PER_EPOCH
    for key, value in a["weights"].items():
        torch.testing.assert_close(b["weights"][key], value, rtol=1e-6, atol=1e-7, msg=lambda m, key=key: f"{key}: {m}")
    assert torch.equal(a["lrs"], b["lrs"]) and a["lrs"][0] < 0.05
    plateau_ref = torch.load(tmp_path / "plateau_ref.pt", weights_only=True)
    plateau_run = torch.load(tmp_path / "plateau_run.pt", weights_only=True)
    after = plateau_ref["values"][plateau_ref["values"][:, 0] > LAST_CKPT_STEP]
    assert len(after) >= 3
    torch.testing.assert_close(plateau_run["values"], after, rtol=1e-12, atol=0)
    for key in ("train_error", "train_loss"):
        torch.testing.assert_close(
            b["metrics"][key], a["metrics"][key], rtol=1e-6, atol=0, msg=lambda m, key=key: f"{key}: {m}"
        )
