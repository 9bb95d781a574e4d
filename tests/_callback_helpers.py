"""Tiny modules and recorders shared by the callback tests (importable by spawned DDP workers).

The Trainer these tests build is the ``quiet_trainer`` fixture of ``conftest.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def tiny_loader(n: int = 4, batch_size: int = 2, dim: int = 3) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, dim, generator=g)
    return DataLoader(TensorDataset(x, torch.zeros(n)), batch_size=batch_size)


class ScriptedMetricModule(LightningModule):
    """Logs ``stream[epoch] + rank * rank_offset`` as ``key`` (epoch-level, process-local: no sync_dist).

    ``where`` is ``"train"`` (logged in ``training_step``) or ``"val"`` (in ``validation_step``).
    ``step_stream`` instead logs ``step_stream[global_step]`` every training step (``on_step=True``).
    """

    def __init__(
        self,
        stream: list[float] | None = None,
        key: str = "metric",
        where: str = "train",
        rank_offset: float = 0.0,
        lr: float = 1.0,
        groups: int = 1,
        step_stream: list[float] | None = None,
        with_scheduler: bool = False,
    ) -> None:
        super().__init__()
        self.stream, self.key, self.where = stream, key, where
        self.rank_offset, self.lr, self.groups = rank_offset, lr, groups
        self.step_stream, self.with_scheduler = step_stream, with_scheduler
        self.layers = nn.ModuleList(nn.Linear(3, 1) for _ in range(groups))

    def _value(self) -> torch.Tensor:
        v = self.stream[self.current_epoch] + self.global_rank * self.rank_offset
        return torch.tensor(v, dtype=torch.float32)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        loss = sum((layer(x) ** 2).mean() for layer in self.layers) * 0.0
        if self.step_stream is not None:
            self.log(self.key, float(self.step_stream[self.global_step]), on_step=True, on_epoch=False)
        elif self.where == "train":
            self.log(self.key, self._value(), on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if self.where == "val":
            self.log(self.key, self._value(), on_step=False, on_epoch=True)

    def configure_optimizers(self) -> Any:
        groups = [{"params": layer.parameters(), "lr": self.lr * (i + 1)} for i, layer in enumerate(self.layers)]
        opt = torch.optim.SGD(groups, lr=self.lr)
        if self.with_scheduler:
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1)}
        return opt


class LRRecorder(Callback):
    """Records the learning rates in use during each epoch (``lrs[epoch]``); optionally dumps them per rank."""

    def __init__(self, out_dir: str | None = None) -> None:
        self.lrs: dict[int, list[float]] = {}
        self.out_dir = out_dir

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.lrs[trainer.current_epoch] = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.lrs[trainer.current_epoch] = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
        if self.out_dir is not None:
            path = Path(self.out_dir) / f"rank{trainer.global_rank}.json"
            path.write_text(json.dumps({str(k): v for k, v in self.lrs.items()}))


def row_norms(weight: torch.Tensor, unit_dim: int = 0) -> torch.Tensor:
    other = [d for d in range(weight.dim()) if d != unit_dim]
    return torch.linalg.vector_norm(weight.detach(), 2, dim=other)


def isnan(x: float) -> bool:
    return isinstance(x, float) and math.isnan(x)


class RankDivergentModule(ScriptedMetricModule):
    """Rank 0 logs ``1 - 0.1 e`` (improving), rank 1 logs ``0.1 e`` (worsening), without ``sync_dist``."""

    def __init__(self) -> None:
        super().__init__(stream=[0.0] * 16)

    def _value(self) -> torch.Tensor:
        if self.global_rank == 0:
            return torch.tensor(1.0 - 0.1 * self.current_epoch)
        return torch.tensor(0.1 * self.current_epoch)


class DumpWeights(Callback):
    """At train end, each rank saves its state_dict and the max unit norm of each constrained weight."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        out = Path(self.out_dir)
        rank = trainer.global_rank
        torch.save({k: v.detach().clone() for k, v in pl_module.state_dict().items()}, out / f"rank{rank}.pt")
        cb = next(c for c in trainer.callbacks if type(c).__name__ == "MaxNormConstraint")
        bounds = {n: (d, float(row_norms(w, d).max())) for n, (w, d) in cb.constrained.items()}
        torch.save(bounds, out / f"bounds{rank}.pt")


class StepLRRecorder(Callback):
    """Before every optimizer step, records ``[global_step, [lr of every group of every optimizer]]``.

    With ``out_dir``, each rank dumps its rows to ``rank{r}.json`` at train end (and destroys its
    gloo group at exit, see ``_scaling_helpers.destroy_process_group_at_exit``).
    """

    def __init__(self, out_dir: str | None = None) -> None:
        self.rows: list[list[Any]] = []
        self.out_dir = out_dir

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.out_dir is not None:
            from _scaling_helpers import destroy_process_group_at_exit

            destroy_process_group_at_exit()

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        lrs = [float(g["lr"]) for opt in trainer.optimizers for g in opt.param_groups]
        self.rows.append([trainer.global_step, lrs])

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.out_dir is not None:
            (Path(self.out_dir) / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.rows))
