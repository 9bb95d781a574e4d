"""DDP equivalence: 2 gloo processes × batch b train exactly as 1 process × batch 2b.

The in-memory loader gives rank r the samples ``perm[r::2]``, so rank r's batch i of size b
is ``perm[2ib + r : 2(i+1)b : 2]`` and the union over ranks is the single-process batch i of
size 2b. With dropout and augmentation off, the averaged DDP gradient is the gradient of
the big batch, so the weights agree to float32 round-off; max-norm and a plateau that
really drops the learning rate are included, which checks that their decisions are taken
on reduced values and identically on every rank.
"""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.strategies import DDPStrategy

from _scaling_helpers import RecordLRs, SaveFinalState, assert_state_close
from lightning_deepfeat import FeatureClassifier
from lightning_deepfeat.callbacks import DivideLROnPlateau, MaxNormConstraint
from lightning_deepfeat.data import DigitsDataModule
from lightning_deepfeat.models import ConvNet

pytestmark = [pytest.mark.slow, pytest.mark.ddp]

B = 16  # per-process batch
STEPS = 12


def _sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)


def _train(tmp_path, name: str, devices: int, batch_size: int) -> dict:
    seed_everything(0)
    model = FeatureClassifier(
        features=ConvNet(channels=[8, 16], hidden=[32], dropout=0.0),
        num_classes=10,
        input_shape=(1, 8, 8),
        optimizer=_sgd,
    )
    data = DigitsDataModule(batch_size=batch_size, translate=0, hflip=False)
    plateau = DivideLROnPlateau(
        monitor="train_error", check_every_n_steps=3, patience=0, threshold=0.5, max_drops=2, verbose=False
    )
    strategy = DDPStrategy(process_group_backend="gloo", start_method="spawn") if devices > 1 else "auto"
    trainer = Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        max_steps=STEPS,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=[
            MaxNormConstraint(max_norm=0.5),
            plateau,
            SaveFinalState(str(tmp_path / f"{name}.pt")),
            RecordLRs(str(tmp_path / f"{name}_lrs.pt")),
        ],
    )
    trainer.fit(model, data)
    return torch.load(tmp_path / f"{name}.pt", weights_only=True) | {
        "lr_trace": torch.load(tmp_path / f"{name}_lrs.pt", weights_only=True)
    }


def test_two_processes_batch_b_equal_one_process_batch_2b(tmp_path):
    single = _train(tmp_path, "single", devices=1, batch_size=2 * B)
    ddp = _train(tmp_path, "ddp", devices=2, batch_size=B)

    assert int(single["global_step"]) == int(ddp["global_step"]) == STEPS
    # the plateau fired (the LR was divided by 10 at least once) at the same steps in both runs
    assert single["lrs"][0] <= 0.01 * (1 + 1e-9) and single["lr_trace"][0, 1] == 0.1
    torch.testing.assert_close(ddp["lr_trace"], single["lr_trace"], rtol=0, atol=0)
    # max-norm bound holds and is active in both (some feature unit sits on the bound)
    conv_keys = [
        k for k, v in ddp["weights"].items() if k.startswith("features") and k.endswith("weight") and v.dim() > 1
    ]
    assert conv_keys
    on_bound = 0
    for key in conv_keys:
        norms = ddp["weights"][key].flatten(1).norm(dim=1)
        assert bool((norms <= 0.5 * (1 + 1e-5)).all()), key
        on_bound += int((norms > 0.5 * (1 - 1e-4)).sum())
    assert on_bound > 0, "max-norm never bound: the test would not check it"
    # the weights: 1e-5 relative
    assert_state_close(ddp["weights"], single["weights"], rtol=1e-5)
    # and they really moved away from the initialisation (guards against a no-op run)
    seed_everything(0)
    init = FeatureClassifier(
        features=ConvNet(channels=[8, 16], hidden=[32], dropout=0.0), num_classes=10, input_shape=(1, 8, 8)
    ).state_dict()
    moved = max((single["weights"][k].double() - init[k].double()).norm().item() for k in conv_keys)
    assert moved > 1e-2
