"""One script for a lent GPU: CUDA correctness, throughput, time-to-accuracy.

    python benchmarks/gpu.py                      # on a GPU machine, < 5 minutes
    python benchmarks/gpu.py --device cpu --quick # the same code paths on a CPU, in seconds

Sections (each prints a table; ``--json`` writes everything):

1. **Correctness on the device**: batched translation on the device equals the CPU
   result for the same offsets (uint8 and float32, three padding modes, channels_last
   kept); ``MaxNormConstraint`` keeps every constrained unit at norm ≤ c after real
   ``bf16-mixed`` steps and leaves under-bound rows untouched; ``DivideLROnPlateau``
   divides by exactly 10; ``FSDPStrategy`` (one GPU): what the model and callbacks do.
2. **Throughput** (images/s, training steps through a Lightning ``Trainer``) of the
   Fashion-MNIST ConvNet and of AlexNet at 224×224, in fp32, ``bf16-mixed``, and
   ``bf16-mixed`` + channels_last.
3. **Time-to-accuracy** of ``configs/fashion_mnist.yaml`` (test accuracy after every
   epoch against training minutes), if the Fashion-MNIST files are found.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch import Callback  # noqa: E402

from lightning_deepfeat import AlexNet, ConvNet, FeatureClassifier  # noqa: E402
from lightning_deepfeat.callbacks import DivideLROnPlateau, MaxNormConstraint  # noqa: E402
from lightning_deepfeat.data import DigitsDataModule, ImageClassificationDataModule  # noqa: E402
from lightning_deepfeat.data.transforms import RandomTranslate, translate  # noqa: E402

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def _accelerator(device: str) -> str:
    return "gpu" if device == "cuda" else "cpu"


def _table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n## {title}")
    if not rows:
        print("(no rows)")
        return
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k]) for k in keys) + " |")


# --------------------------------------------------------------------------- 1. correctness
def check_translate(device: str) -> list[dict[str, Any]]:
    rows = []
    generator = torch.Generator().manual_seed(0)
    for dtype in (torch.uint8, torch.float32):
        for mode in ("zeros", "reflect", "replicate"):
            for channels_last in (False, True):
                x = torch.randint(0, 256, (64, 3, 32, 32), generator=generator).to(dtype)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                dy, dx = RandomTranslate(4).sample_offsets(64, generator)
                ref = translate(x, dy, dx, padding_mode=mode)
                out = translate(x.to(device), dy.to(device), dx.to(device), padding_mode=mode)
                rows.append(
                    {
                        "check": "translate",
                        "dtype": str(dtype).split(".")[-1],
                        "padding": mode,
                        "channels_last": channels_last,
                        "equal_to_cpu": bool(torch.equal(out.cpu(), ref)),
                        "layout_kept": out.is_contiguous(memory_format=torch.channels_last) == channels_last
                        or not channels_last,
                    }
                )
    return rows


def _fit(
    model: pl.LightningModule, device: str, callbacks: list[Callback], precision: str | None = None, **kwargs: Any
) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator=_accelerator(device), devices=1, callbacks=callbacks, precision=precision, **QUIET, **kwargs
    )
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=64))
    return trainer


def check_max_norm(device: str, steps: int) -> dict[str, Any]:
    pl.seed_everything(0)
    c = 0.5
    model = FeatureClassifier(ConvNet(channels=(16, 32), hidden=(64,)), input_shape=(1, 8, 8))
    precision = "bf16-mixed" if device == "cuda" else None
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _fit(model, device, [MaxNormConstraint(max_norm=c)], precision=precision, max_steps=steps, limit_val_batches=0)
    worst, constrained = 0.0, 0
    for name, p in model.named_parameters():
        if name.startswith("head") or p.dim() < 2:
            continue
        norms = p.detach().flatten(1).norm(dim=1)
        worst = max(worst, float(norms.max()))
        constrained += norms.numel()
    # the exact projection, on the device, against torch.renorm
    w = torch.randn(256, 300, device=device) * torch.linspace(0.001, 0.4, 256, device=device)[:, None]
    projected = w.clone()
    MaxNormConstraint(max_norm=3.0).project([(projected, 0)])
    under = w.norm(dim=1) <= 3.0
    exact_rows = bool(torch.equal(projected[under], w[under]))
    renorm_gap = float((projected - torch.renorm(w, 2, 0, 3.0)).abs().max())
    moved = any(not torch.equal(before[n], p.detach().cpu()) for n, p in model.named_parameters())
    return {
        "check": "max_norm",
        "precision": precision or "32",
        "steps": steps,
        "c": c,
        "units": constrained,
        "max_unit_norm": worst,
        "bound_holds": worst <= c * (1 + 1e-6),
        "weights_moved": moved,
        "under_bound_rows_bit_identical": exact_rows,
        "max_abs_diff_vs_renorm": renorm_gap,
    }


class _LRRecorder(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def check_plateau(device: str) -> dict[str, Any]:
    pl.seed_everything(0)
    model = FeatureClassifier(ConvNet(channels=(8,), hidden=(16,)), input_shape=(1, 8, 8))
    recorder = _LRRecorder()
    # threshold_mode="abs" with a threshold of 1: no epoch can improve by 1, so every epoch is a plateau.
    plateau = DivideLROnPlateau(monitor="train_error", patience=0, threshold=1.0, threshold_mode="abs")
    _fit(model, device, [plateau, recorder], max_epochs=3, limit_train_batches=3, limit_val_batches=0)
    expected = [0.01, 0.01 / 10, 0.01 / 100]  # the first epoch sets the best value; each later one drops
    return {
        "check": "plateau",
        "lrs": recorder.lrs,
        "expected": expected,
        "exact": (
            len(recorder.lrs) == 3 and all(abs(a - b) <= 1e-12 * b for a, b in zip(recorder.lrs, expected, strict=True))
        ),
    }


def check_fsdp(device: str) -> list[dict[str, Any]]:
    if device != "cuda":
        return [{"check": "fsdp", "case": "skipped", "outcome": "FSDPStrategy needs a GPU"}]
    rows = []
    for case, callbacks in (
        ("model + DivideLROnPlateau", lambda: [DivideLROnPlateau(monitor="train_error")]),
        ("model + MaxNormConstraint", lambda: [MaxNormConstraint(max_norm=3.0)]),
    ):
        pl.seed_everything(0)
        model = FeatureClassifier(ConvNet(channels=(8,), hidden=(16,)), input_shape=(1, 8, 8))
        try:
            trainer = pl.Trainer(
                accelerator="gpu",
                devices=1,
                strategy="fsdp",
                max_steps=5,
                limit_val_batches=0,
                callbacks=callbacks(),
                **QUIET,
            )
            trainer.fit(model, datamodule=DigitsDataModule(batch_size=64))
            outcome = f"ran {trainer.global_step} steps"
        except Exception as err:  # the refusal message is the result
            outcome = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
        rows.append({"check": "fsdp", "case": case, "outcome": outcome})
    return rows


# --------------------------------------------------------------------------- 2. throughput
class SyntheticDataModule(ImageClassificationDataModule):
    """Random uint8 images held in memory, for throughput only."""

    num_classes = 10

    def __init__(self, image_shape: tuple[int, ...], n: int, channels_last: bool = False, **kwargs: Any) -> None:
        super().__init__(val_fraction=0.0, mean=[127.0] * image_shape[0], std=[64.0] * image_shape[0], **kwargs)
        self.image_shape = image_shape
        self.n = n
        self.channels_last = channels_last

    def load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        images = torch.randint(0, 256, (self.n, *self.image_shape), generator=g, dtype=torch.uint8)
        return images, torch.randint(0, 10, (self.n,), generator=g)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = super().on_after_batch_transfer(batch, dataloader_idx)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels


class StepTimer(Callback):
    """Images/s over the training steps after ``warmup`` (the device synchronised at both ends)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: float | None = None
        self.images = 0
        self.seconds = 0.0

    def _sync(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.warmup:
            self._sync(pl_module)
            self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.start is not None:
            self.images += batch[1].shape[0]

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync(pl_module)
        if self.start is not None:
            self.seconds = time.perf_counter() - self.start


def throughput(device: str, quick: bool) -> list[dict[str, Any]]:
    cases: list[tuple[str, Callable[[], nn.Module], tuple[int, ...], int]] = [
        (
            "ConvNet 1x28x28 (fashion_mnist.yaml net)",
            lambda: ConvNet(channels=(32, 64, 128), hidden=(256,)),
            (1, 28, 28),
            512,
        ),
        ("AlexNet 3x224x224 (width 1)", lambda: AlexNet(), (3, 224, 224), 256),
    ]
    if quick:
        cases = [
            ("ConvNet 1x28x28", lambda: ConvNet(channels=(8, 16), hidden=(32,)), (1, 28, 28), 64),
            ("AlexNet 3x64x64 (width 0.125)", lambda: AlexNet(width=0.125, hidden=64), (3, 64, 64), 16),
        ]
    modes = [
        ("fp32", "32-true", False),
        ("bf16-mixed", "bf16-mixed", False),
        ("bf16-mixed + channels_last", "bf16-mixed", True),
    ]
    if device != "cuda":
        modes = modes[:1] + modes[2:] if not quick else modes[:1]
    warmup, steps = (2, 3) if quick else (10, 40)
    rows = []
    for name, make, shape, batch in cases:
        for mode, precision, channels_last in modes:
            pl.seed_everything(0)
            model = FeatureClassifier(
                make(), input_shape=shape, optimizer=lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9)
            )
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            timer = StepTimer(warmup)
            dm = SyntheticDataModule(shape, n=batch * (warmup + steps), channels_last=channels_last, batch_size=batch)
            trainer = pl.Trainer(
                accelerator=_accelerator(device),
                devices=1,
                precision=precision,
                max_steps=warmup + steps,
                limit_val_batches=0,
                callbacks=[timer],
                **QUIET,
            )
            trainer.fit(model, datamodule=dm)
            rate = timer.images / timer.seconds if timer.seconds else float("nan")
            rows.append({"model": name, "mode": mode, "batch": batch, "images_per_s": rate})
            print(f"[throughput] {name} {mode}: {rate:,.0f} images/s", flush=True)
    return rows


# --------------------------------------------------------------------------- 3. time to accuracy
def fashion_time_to_accuracy(
    device: str, data_root: str | None, config: str, extra: list[str]
) -> dict[str, Any] | None:
    from benchmarks.time_to_accuracy import run as run_tta

    root = data_root or os.environ.get("DEEPFEAT_DATA")
    args = list(extra)
    if root:
        args.append(f"--data.init_args.root={root}")
    try:
        return run_tta(config, _accelerator(device), args)
    except Exception as err:
        print(f"[time-to-accuracy] skipped: {type(err).__name__}: {err}", flush=True)
        return {"skipped": f"{type(err).__name__}: {err}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every code path")
    parser.add_argument("--data-root", default=None, help="folder with the Fashion-MNIST IDX .gz files")
    parser.add_argument("--config", default=str(ROOT / "configs" / "fashion_mnist.yaml"))
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: correctness,throughput,accuracy")
    parser.add_argument("--json", default=None)
    parser.add_argument("extra", nargs="*", help="extra deepfeat CLI arguments for the time-to-accuracy run, after --")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    report: dict[str, Any] = {"device": args.device, "torch": torch.__version__, "lightning": pl.__version__}
    if args.device == "cuda":
        report["gpu"] = torch.cuda.get_device_name(0)
    print(
        f"# benchmarks/gpu.py on {report.get('gpu', 'CPU')} (torch {torch.__version__}, lightning {pl.__version__})",
        flush=True,
    )
    start = time.perf_counter()

    def section(name: str, fn: Callable[[], Any]) -> Any:
        if name in skip:
            return None
        t = time.perf_counter()
        try:
            result = fn()
        except Exception:
            traceback.print_exc()
            result = {"error": traceback.format_exc(limit=3)}
        print(f"[{name}] {time.perf_counter() - t:.1f} s", flush=True)
        report[name] = result
        return result

    def correctness() -> list[dict[str, Any]]:
        rows = check_translate(args.device)
        _table("translation on the device vs CPU", rows)
        checks = [check_max_norm(args.device, 5 if args.quick else 50), check_plateau(args.device)]
        for row in checks:
            print(f"\n{row}")
        fsdp = check_fsdp(args.device)
        _table("FSDPStrategy", fsdp)
        return rows + checks + fsdp

    section("correctness", correctness)
    tp = section("throughput", lambda: throughput(args.device, args.quick))
    if tp and isinstance(tp, list):
        _table("throughput (training steps, Lightning Trainer)", tp)
    if not args.quick:
        section("accuracy", lambda: fashion_time_to_accuracy(args.device, args.data_root, args.config, args.extra))
    report["total_seconds"] = time.perf_counter() - start
    print(f"\ntotal {report['total_seconds']:.0f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
