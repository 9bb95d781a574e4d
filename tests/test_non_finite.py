"""A non-finite loss stops training with a message naming the step; what was written before stays good."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_deepfeat import FeatureClassifier
from lightning_deepfeat.callbacks import DivideLROnPlateau, MaxNormConstraint
from lightning_deepfeat.data import DigitsDataModule
from lightning_deepfeat.models import ConvNet

pytestmark = pytest.mark.slow

POISON_STEP = 7


class PoisonBatch(Callback):
    """Write NaN into the (already normalised, on-device) batch that would make step ``step + 1``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            batch[0][0].fill_(float("nan"))


def _model(lr: float = 0.05) -> FeatureClassifier:
    return FeatureClassifier(
        features=ConvNet(channels=[8, 16], hidden=[32], dropout=0.5),
        num_classes=10,
        input_shape=(1, 8, 8),
        optimizer=lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9),
    )


def _trainer(tmp_path, callbacks, max_steps=12, recipe=True) -> Trainer:
    return Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        logger=CSVLogger(tmp_path / "logs", name="run", version=0),
        callbacks=[
            ModelCheckpoint(
                dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1, save_last=True, monitor=None
            ),
            *([DivideLROnPlateau(check_every_n_steps=2, verbose=False), MaxNormConstraint()] if recipe else []),
            *callbacks,
        ],
    )


def test_poisoned_batch_stops_at_that_step_and_keeps_checkpoints_and_logs(tmp_path):
    seed_everything(0)
    model = _model()
    trainer = _trainer(tmp_path, [PoisonBatch(POISON_STEP)])
    with pytest.raises(
        FloatingPointError,
        match=rf"Non-finite training loss \(nan\) at global step {POISON_STEP} \(epoch 0, batch {POISON_STEP}\)",
    ):
        trainer.fit(model, DigitsDataModule(batch_size=32))
    assert trainer.global_step == POISON_STEP  # the poisoned step was not taken
    for name, p in model.named_parameters():  # ... nor did any NaN reach the weights
        assert torch.isfinite(p).all(), name

    # every checkpoint written before loads, with weights_only, and holds finite weights
    last = tmp_path / "ckpt" / "last.ckpt"
    steps = sorted(
        torch.load(p, weights_only=True, map_location="cpu")["global_step"]
        for p in (tmp_path / "ckpt").glob("epoch=*.ckpt")
    )
    assert steps == [3, 6]
    good = FeatureClassifier.load_from_checkpoint(last, weights_only=True, map_location="cpu")
    assert torch.load(last, weights_only=True)["global_step"] == 6
    assert all(torch.isfinite(p).all() for p in good.parameters())
    assert good(torch.zeros(2, 1, 8, 8)).shape == (2, 10)

    # the CSV log is readable, finite and stops before the bad step
    with open(tmp_path / "logs" / "run" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    losses = {int(r["step"]): float(r["train_loss_step"]) for r in rows if r.get("train_loss_step")}
    assert sorted(losses) == list(range(POISON_STEP))
    assert all(math.isfinite(v) for v in losses.values())

    # resuming from the last good checkpoint with weights_only=True (and clean data) trains on past the bad step
    seed_everything(0)
    resumed = _trainer(tmp_path / "resume", [])
    resumed.fit(_model(), DigitsDataModule(batch_size=32), ckpt_path=str(last), weights_only=True)
    assert resumed.global_step == 12


def test_huge_learning_rate_diverges_into_a_clear_error(tmp_path):
    seed_everything(0)
    trainer = _trainer(tmp_path, [], max_steps=40, recipe=False)  # (max-norm would keep the features bounded)
    with pytest.raises(FloatingPointError, match=r"at global step (\d+) .*Lower the learning rate") as info:
        trainer.fit(_model(lr=1e30), DigitsDataModule(batch_size=32))
    assert f"global step {trainer.global_step} " in str(info.value)
    assert 0 < trainer.global_step < 40
