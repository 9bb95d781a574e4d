"""Time-to-accuracy of a YAML recipe: test accuracy after every epoch against training time.

    python -m benchmarks.time_to_accuracy --config configs/fashion_mnist.yaml [--device cpu|cuda] [-- extra CLI args]
    python -m benchmarks.time_to_accuracy --plot curve.png seed0.json seed1.json

The recipe runs through the ``deepfeat`` CLI exactly as a user runs it. A callback
evaluates the *test* split after every training epoch with the clock stopped, so the
minutes reported are training (and validation) time only. Prints one line per epoch
and a summary table (with the epochs after which the learning rate dropped); writes JSON
with ``--json``. ``--plot`` draws the test accuracy of one or more such JSON files against
the training minutes, each LR drop marked.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

THRESHOLDS = (0.90, 0.92, 0.93, 0.935, 0.94, 0.95)


class TestAccuracyClock(Callback):
    """Record ``(training seconds, epoch, test accuracy)`` after every epoch (rank 0 evaluates).

    Evaluation uses the data module's test split and its normalisation, in eval mode,
    with the training clock paused while it runs.
    """

    def __init__(self, eval_batch_size: int = 1000) -> None:
        self.eval_batch_size = eval_batch_size
        self.history: list[dict[str, float]] = []
        self._elapsed = 0.0
        self._started: float | None = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._started is None:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self._elapsed += time.perf_counter() - self._started
        self._started = None
        if not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        if "test" not in dm.splits:
            dm.setup("test")
        images, labels = dm.splits["test"]
        was_training = pl_module.training
        pl_module.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, labels.shape[0], self.eval_batch_size):
                x = images[start : start + self.eval_batch_size].to(pl_module.device, non_blocking=True)
                y = labels[start : start + self.eval_batch_size].to(pl_module.device, non_blocking=True)
                x = dm.prepare_eval_batch(x) if hasattr(dm, "prepare_eval_batch") else dm.normalize(x)
                with torch.autocast(
                    pl_module.device.type, dtype=torch.bfloat16, enabled=pl_module.device.type == "cuda"
                ):
                    correct += int((pl_module(x).argmax(1) == y).sum())
        pl_module.train(was_training)
        acc = correct / labels.shape[0]
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        self.history.append({"epoch": trainer.current_epoch, "seconds": self._elapsed, "test_acc": acc, "lr": lr})
        print(
            f"[time-to-accuracy] epoch {trainer.current_epoch:3d}  {self._elapsed / 60:7.2f} min  "
            f"test_acc {acc:.4f}  lr {lr:.2e}",
            flush=True,
        )


def minutes_to(history: list[dict[str, float]], threshold: float) -> float | None:
    """Training minutes until test accuracy first reached ``threshold`` (None if never)."""
    for row in history:
        if row["test_acc"] >= threshold:
            return row["seconds"] / 60
    return None


def lr_drops(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """The epochs after which the learning rate fell: ``{"after_epoch", "minutes", "lr"}`` each.

    Each history row holds the rate at the *end* of its epoch, after the plateau decision, so
    a row whose rate is below the previous row's is the epoch the drop came after.
    """
    drops = []
    for before, row in zip(history, history[1:], strict=False):
        if row["lr"] < before["lr"] * (1 - 1e-6):
            drops.append({"after_epoch": before["epoch"], "minutes": before["seconds"] / 60, "lr": row["lr"]})
    return drops


def run(config: str, device: str = "cpu", extra: list[str] | None = None) -> dict[str, Any]:
    """Fit ``config`` through the CLI and return the per-epoch history and the summary."""
    from lightning_deepfeat.cli import main

    clock = TestAccuracyClock()
    args = [
        "fit",
        "--config",
        config,
        f"--trainer.accelerator={device}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        *(extra or []),
    ]
    start = time.perf_counter()
    cli = main(args, trainer_defaults={"callbacks": [clock]})
    wall = time.perf_counter() - start
    history = clock.history
    summary = {
        "config": config,
        "device": device,
        "extra": extra or [],
        "threads": torch.get_num_threads(),
        "seed": torch.initial_seed(),  # what seed_everything set (drawn at random when the config has none)
        "epochs": len(history),
        "wall_minutes": wall / 60,
        "final_test_acc": history[-1]["test_acc"] if history else None,
        "best_test_acc": max((r["test_acc"] for r in history), default=None),
        "minutes_to": {f"{t:.1%}": minutes_to(history, t) for t in THRESHOLDS},
        "params": sum(p.numel() for p in cli.model.parameters()),
        "lr_drops": lr_drops(history),
        "history": history,
    }
    print_summary(summary)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print(
        f"\nTime to accuracy: {summary['config']} on {summary['device']} ({summary['threads']} threads), "
        f"{summary['params'] / 1e6:.2f} M parameters, {summary['epochs']} epochs, "
        f"{summary['wall_minutes']:.1f} min wall"
    )
    print("| target | minutes |")
    print("|---|---|")
    for target, minutes in summary["minutes_to"].items():
        print(f"| {target} | {'not reached' if minutes is None else f'{minutes:.1f}'} |")
    print(f"| final test accuracy (last epoch) | {summary['final_test_acc']:.4f} |")
    print(f"| best epoch's test accuracy | {summary['best_test_acc']:.4f} |")
    drops = ", ".join(f"after epoch {d['after_epoch']} ({d['minutes']:.1f} min)" for d in summary.get("lr_drops", []))
    print(f"| LR ÷10 drops | {drops or 'none'} |")


def plot(summaries: list[dict[str, Any]], path: str, labels: list[str] | None = None) -> str:
    """Test accuracy against training minutes, one line per run, each LR drop a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=110)
    for i, summary in enumerate(summaries):
        history = summary["history"]
        label = labels[i] if labels else f"run {i}"
        (line,) = ax.plot(
            [r["seconds"] / 60 for r in history], [100 * r["test_acc"] for r in history], "o-", ms=2.5, label=label
        )
        drops = lr_drops(history)
        epochs = ", ".join(str(d["after_epoch"]) for d in drops)
        for j, drop in enumerate(drops):
            ax.axvline(
                drop["minutes"],
                color=line.get_color(),
                ls="--",
                lw=0.9,
                label=f"{label}: LR ÷10 after epoch {epochs}" if j == 0 else None,
            )
    for target in (90, 92, 93, 94):
        ax.axhline(target, color="0.6", lw=0.6, ls=":")
    low = min(100 * r["test_acc"] for s in summaries for r in s["history"])
    ax.set_ylim(max(low - 0.5, 85.0), 95.5)
    ax.set_xlabel("training minutes (test evaluation not counted)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/fashion_mnist.yaml")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "gpu"])
    parser.add_argument("--json", default=None, help="write the summary and history here")
    parser.add_argument("--plot", default=None, help="draw the JSON files given as arguments into this PNG")
    parser.add_argument("extra", nargs="*", help="more deepfeat CLI arguments, after -- (with --plot: JSON files)")
    args = parser.parse_args()
    if args.plot:
        summaries = []
        for name in args.extra:
            with open(name) as f:
                summaries.append(json.load(f))
        pairs = zip(summaries, args.extra, strict=True)
        labels = [f"seed {s['seed']}" if "seed" in s else Path(n).stem for s, n in pairs]
        print(plot(summaries, args.plot, labels))
        return
    summary = run(args.config, "gpu" if args.device == "cuda" else args.device, args.extra)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
