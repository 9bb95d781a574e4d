"""The layer-wise probe: from the same weights, train one layer at a time and compare the loss decrease."""

from __future__ import annotations

import copy
import csv
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.optim import Optimizer

from lightning_deepfeat.inspection import frozen, set_requires_grad, split_batches
from lightning_deepfeat.probes._layers import parameter_layers
from lightning_deepfeat.validation import check_int


@dataclass
class LayerwiseRun:
    """One run of the probe: which parameters were trained and the loss along the way."""

    name: str
    params: list[str]
    step_losses: list[float] = field(default_factory=list)
    loss_before: float = float("nan")
    loss_after: float = float("nan")

    @property
    def decrease(self) -> float:
        """Full-training-set loss before minus after (eval mode)."""
        return self.loss_before - self.loss_after

    @property
    def relative_decrease(self) -> float:
        """``decrease`` as a fraction of ``loss_before`` (NaN when that loss is zero)."""
        return self.decrease / self.loss_before if self.loss_before else float("nan")


def _first_optimizer(configured: Any) -> Optimizer:
    """The optimizer out of whatever ``configure_optimizers`` returned."""
    if isinstance(configured, Optimizer):
        return configured
    if isinstance(configured, dict):
        return _first_optimizer(configured["optimizer"])
    if isinstance(configured, (list, tuple)) and configured:
        return _first_optimizer(configured[0])
    raise ValueError(
        f"configure_optimizers returned {type(configured).__name__}; the layer-wise probe needs one optimizer."
    )


def _train_batches(datamodule: Any, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless training batches, exactly as the Trainer would see them (``on_after_batch_transfer``)."""
    loader = datamodule.train_dataloader()
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for batch in loader:
            batch = move_data_to_device(batch, device)  # keeps the batch type (e.g. IndexBatch)
            x, y = datamodule.on_after_batch_transfer(batch, 0)[:2]
            yield x, y
        epoch += 1


@torch.no_grad()
def full_train_loss(model: nn.Module, datamodule: Any) -> float:
    """Mean training loss over the whole training split, eval mode (no dropout)."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in split_batches(datamodule, "train", device=next(model.parameters()).device):
        total += float(cast(Any, model).compute_loss(model(x), y)) * y.shape[0]
        count += y.shape[0]
    model.train(was)
    return total / max(count, 1)


def layerwise_probe(
    model: nn.Module,
    datamodule: Any,
    steps: int = 100,
    optimizer: Callable[[Iterable[Any]], Optimizer] | None = None,
    include_head: bool = True,
    include_all: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> list[LayerwiseRun]:
    r"""For each layer k, train only W_k for ``steps`` optimizer steps from the same weights.

    Every run starts from a copy of ``model``'s current weights (initial or loaded from a
    checkpoint) with a fresh optimizer, sees the same sequence of training minibatches
    (the data module's ``train_dataloader`` passed through ``on_after_batch_transfer``,
    no augmentation) and the same dropout masks (``seed``). Runs: ``W_1 … W_L`` (each
    parameterised leaf of ``features``), ``head only`` and ``all layers``.

    For run S the probe minimises :math:`\mathcal L(θ_S, θ_{\bar S}^{(0)})` by SGD
    on θ_S and records the minibatch loss of each step and the full-training-set loss
    :math:`\mathcal L_{train}` (eval mode) before and after.

    Args:
        model: a :class:`FeatureClassifier` (needs ``compute_loss``); its weights and
            ``requires_grad`` flags are restored afterwards.
        datamodule: its data module, already ``setup("fit")``.
        steps: optimizer steps per run (≥ 1).
        optimizer: ``params -> Optimizer``; default ``model.configure_optimizers`` (so
            the CLI's ``optimizer:`` section applies). Frozen parameters get no gradient,
            so the optimizer never moves them.
        include_head: add the "head only" run.
        include_all: add the "all layers" run.
        seed: seed of the dropout masks (the same for every run).
        progress: report each run's losses as it ends (``rank_zero_info``).
    """
    check_int("steps", steps, low=1, hint="optimizer steps per layer")
    layers = parameter_layers(model)
    runs = [LayerwiseRun(f"W_{i + 1} ({name})", names) for i, (name, names) in enumerate(layers) if name != "head"]
    if include_head:
        runs.append(LayerwiseRun("head only", [n for name, names in layers if name == "head" for n in names]))
    if include_all:
        runs.append(LayerwiseRun("all layers", [n for n, _ in model.named_parameters()]))
    initial = copy.deepcopy(model.state_dict())
    was_training = model.training
    device = next(model.parameters()).device
    loss0 = full_train_loss(model, datamodule)
    with frozen(model):  # each run turns on its own parameters; the flags on entry come back at the end
        try:
            for run in runs:
                # every run: the same weights, a fresh optimizer built on *this* module's parameters
                model.load_state_dict(initial)
                trainable = set(run.params)
                set_requires_grad(model, {name: name in trainable for name, _ in model.named_parameters()})
                model.zero_grad(set_to_none=True)
                opt = (
                    optimizer(model.parameters())
                    if optimizer is not None
                    else _first_optimizer(cast(Any, model).configure_optimizers())
                )
                model.train()
                torch.manual_seed(seed)
                batches = _train_batches(datamodule, device)
                run.loss_before = loss0
                for _ in range(steps):
                    x, y = next(batches)
                    opt.zero_grad(set_to_none=True)
                    loss = cast(Any, model).compute_loss(model(x), y)
                    loss.backward()
                    opt.step()
                    run.step_losses.append(float(loss.detach()))
                run.loss_after = full_train_loss(model, datamodule)
                if progress:
                    rank_zero_info(f"layerwise: {run.name:<28} loss {run.loss_before:.4f} -> {run.loss_after:.4f}")
        finally:
            model.load_state_dict(initial)
            model.zero_grad(set_to_none=True)
            model.train(was_training)
    return runs


def format_table(runs: Sequence[LayerwiseRun]) -> str:
    """Markdown table of the loss decrease per run."""
    lines = [
        "| run | trained tensors | train loss before | after | decrease | relative |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r.name} | {len(r.params)} | {r.loss_before:.4f} | {r.loss_after:.4f} | {r.decrease:.4f} "
            f"| {100 * r.relative_decrease:.1f}% |"
        )
    return "\n".join(lines)


def write_layerwise_outputs(runs: Sequence[LayerwiseRun], out_dir: str, title: str = "") -> dict[str, str]:
    """Write the probe's files into ``out_dir``.

    They are ``layerwise_losses.csv`` (step, run, loss), ``layerwise_summary.csv``,
    ``layerwise_table.md`` and ``layerwise_losses.png`` (640×400).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "csv": os.path.join(out_dir, "layerwise_losses.csv"),
        "summary": os.path.join(out_dir, "layerwise_summary.csv"),
        "table": os.path.join(out_dir, "layerwise_table.md"),
        "png": os.path.join(out_dir, "layerwise_losses.png"),
    }
    with open(paths["csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "run", "loss"])
        for r in runs:
            for step, loss in enumerate(r.step_losses, start=1):
                w.writerow([step, r.name, f"{loss:.6f}"])
    with open(paths["summary"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "trained_tensors", "loss_before", "loss_after", "decrease", "relative_decrease"])
        for r in runs:
            w.writerow(
                [
                    r.name,
                    len(r.params),
                    f"{r.loss_before:.6f}",
                    f"{r.loss_after:.6f}",
                    f"{r.decrease:.6f}",
                    f"{r.relative_decrease:.6f}",
                ]
            )
    with open(paths["table"], "w") as f:
        f.write(format_table(runs) + "\n")
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for r in runs:
        ax.plot(
            range(1, len(r.step_losses) + 1),
            r.step_losses,
            label=r.name,
            lw=1.2,
            ls="--" if r.name == "all layers" else "-",
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("minibatch training loss")
    ax.set_title(title or "Training only one layer at a time")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(paths["png"], dpi=100)
    plt.close(fig)
    return paths
