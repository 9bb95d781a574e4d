"""FSDP on CPU: what can be checked without a GPU (see docs/scaling.md for the GPU smoke check).

* Lightning's ``FSDPStrategy`` needs a GPU: ``accelerator="cpu"`` is refused by Lightning itself.
* ``MaxNormConstraint`` refuses FSDP (1) at setup: flat parameters shard units across ranks.
* With DTensor parameters (FSDP2 ``fully_shard`` / ``ModelParallelStrategy``) sharded on the unit
  dimension the projection is local and exact; any other placement is refused.
* ``DivideLROnPlateau`` and ``FeatureClassifier`` have nothing FSDP-specific to refuse.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from lightning.pytorch import Trainer
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_deepfeat import FeatureClassifier
from lightning_deepfeat.callbacks import DivideLROnPlateau, MaxNormConstraint
from lightning_deepfeat.callbacks.max_norm import _check_placement
from lightning_deepfeat.models import ConvNet


def _model() -> FeatureClassifier:
    return FeatureClassifier(features=ConvNet(channels=[4], hidden=[8]), num_classes=10, input_shape=(1, 8, 8))


def test_lightning_refuses_fsdp_on_cpu():
    with pytest.raises(ValueError, match=r"The strategy `fsdp` requires a GPU accelerator"):
        Trainer(accelerator="cpu", strategy="fsdp", devices=1)


def test_max_norm_refuses_fsdp_strategy_at_setup():
    trainer = SimpleNamespace(strategy=FSDPStrategy())
    with pytest.raises(
        MisconfigurationException, match=r"MaxNormConstraint cannot run under FSDPStrategy.*partial row norms"
    ):
        MaxNormConstraint().setup(trainer, _model(), stage="fit")


def test_max_norm_accepts_ddp_and_single_device_at_setup():
    for strategy in (DDPStrategy(), SimpleNamespace()):
        MaxNormConstraint().setup(SimpleNamespace(strategy=strategy), _model(), stage="fit")


def test_plateau_has_no_fsdp_restriction():
    """It only rewrites ``param_group["lr"]`` and reduces one scalar: nothing that FSDP shards."""
    plateau = DivideLROnPlateau()
    plateau.setup(SimpleNamespace(strategy=FSDPStrategy()), _model(), stage="fit")
    opt = torch.optim.SGD(_model().parameters(), lr=0.1)
    for value in (0.5, 0.5, 0.5):
        plateau.patience = 1
        plateau.step(value, [opt])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_dtensor_placements_unit_sharded_is_exact_other_is_refused(one_process_group):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (1,))
    weight = torch.randn(6, 5, generator=torch.Generator().manual_seed(0)) * 3
    rows = distribute_tensor(weight.clone(), mesh, [Shard(0)])
    _check_placement("w", rows, 0)  # accepted
    _check_placement("w", distribute_tensor(weight.clone(), mesh, [Replicate()]), 0)
    with pytest.raises(
        MisconfigurationException,
        match=r"MaxNormConstraint: w is a DTensor with placements .*Shard\(dim=1\).*Only Shard\(0\) or Replicate",
    ):
        _check_placement("w", distribute_tensor(weight.clone(), mesh, [Shard(1)]), 0)

    callback = MaxNormConstraint(max_norm=1.0)
    plain = weight.clone()
    callback.project([(plain, 0)])
    callback.project([(rows, 0)])
    torch.testing.assert_close(rows.full_tensor(), plain, rtol=0, atol=0)
    assert torch.linalg.vector_norm(plain, dim=1).max() <= 1.0 + 1e-6
