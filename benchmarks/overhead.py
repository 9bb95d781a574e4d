"""Library overhead: ``FeatureClassifier`` + callbacks + data module under a ``Trainer`` vs a hand-written loop.

    python -m benchmarks.overhead [--quick] [--profile] [--threads N]

Both sides do the same maths on the same data, one process, interleaved:

* the same ConvNet (``channels=(32, 64)``, ``hidden=(256,)``, dropout 0.5) and logistic
  head, built from the same seed, so the initial weights are bit-identical (checked);
* the same batches: a fresh permutation per epoch, ``batch_size`` 128, one index gather
  per batch out of the uint8 images held in memory, padded once by 2 pixels, with the
  random shift of up to 2 pixels (zero fill) fused into the gather (the data module's
  ``gather_augmented``; by hand, ``crop_batch(padded, 2 - dy, 2 - dx, index=idx)``);
* the same rest of the augmentation: a horizontal flip with probability ½ (our batched
  ``RandomHorizontalFlip``), then ``(x - mean) / std`` in float32;
* the same step: cross-entropy, backward, SGD (lr 0.01, momentum 0.9, weight decay
  5e-4), then max-norm ``c = 3`` on every conv/linear weight but the head's;
* the same epoch end: the training error of the epoch decides a ÷10 drop after 10 epochs
  without improvement (``DivideLROnPlateau(monitor="train_error")`` on one side,
  ``torch.optim.lr_scheduler.ReduceLROnPlateau(factor=0.1)`` on the other).

The Lightning side is ``Trainer(logger=False, enable_progress_bar=False,
enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0)``, i.e.
**validation is off on both sides**, with ``DivideLROnPlateau`` and ``MaxNormConstraint``
as callbacks and ``FashionMNISTDataModule(translate=2, hflip=True)`` (falls back to
``DigitsDataModule`` at 8×8 when the Fashion-MNIST files are missing). The hand-written
loop is what a user would write with plain PyTorch: ``torch.randperm``, indexing,
``model(x)``, ``F.cross_entropy``, ``opt.step()``, ``w.renorm_(2, 0, c)``.

One *chunk* is ``epochs`` epochs of ``steps`` steps each; the Lightning chunk is one
``Trainer(...).fit`` (the module and data module persist across chunks, the optimizer is
recreated by each fit, and the hand loop recreates its optimizer per chunk too). Chunks
alternate Lightning / hand / hand / Lightning / ... Three figures per chunk:

* **steady wall**: images per second of wall time from the first ``on_train_epoch_start``
  to ``on_train_end`` (the per-epoch and per-step costs, which is what scales with
  training length);
* **end-to-end wall**: the same including ``Trainer(...)`` construction and ``fit``'s
  set-up and tear-down (a fixed cost per fit, which short chunks exaggerate);
* **steady CPU**: as *steady wall* but counting this process's CPU time
  (``time.process_time``) instead of wall time. On a machine shared with other jobs the
  wall clock also counts the time the scheduler gave to others, which swings by tens of
  percent from one chunk to the next; CPU time does not, so this is the ratio to trust
  there (with 1 torch thread it is the work done; with more, OpenMP spin-waits count too).

Each ratio is the median over rounds of the paired ratio ``t_hand / t_lightning``
(``img/s`` Lightning over ``img/s`` by hand). "Lightning extra ms/step" is the median of
``(t_lightning - t_hand) / steps``: the library's own cost per step, independent of the
net; the ratio for another net follows as ``t / (t + extra)``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks._timing import header, interleave, machine, median, now, paired_ratios, table
from lightning_deepfeat.data import crop_batch

MAX_NORM = 3.0
BATCH_SIZE = 128
TARGET = 0.95


def make_datamodule(prefer_fashion: bool = True) -> Any:
    """``FashionMNISTDataModule(translate=2, hflip=True)``, set up; ``DigitsDataModule`` when the files are missing."""
    from lightning_deepfeat.data import DigitsDataModule, FashionMNISTDataModule

    if prefer_fashion:
        dm = FashionMNISTDataModule(batch_size=BATCH_SIZE, translate=2, hflip=True, seed=0)
        try:
            dm.setup("fit")
            return dm
        except FileNotFoundError:
            pass
    dm = DigitsDataModule(batch_size=BATCH_SIZE, translate=2, hflip=True, seed=0)
    dm.setup("fit")
    return dm


def features() -> nn.Module:
    from lightning_deepfeat.models import ConvNet

    return ConvNet(channels=(32, 64), hidden=(256,), dropout=0.5)


def sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)


def lightning_model(input_shape: tuple[int, ...], seed: int = 0) -> Any:
    from lightning_deepfeat.models import FeatureClassifier

    torch.manual_seed(seed)
    return FeatureClassifier(features=features(), num_classes=10, input_shape=input_shape, optimizer=sgd)


class HandModel(nn.Module):
    """What a user writes by hand: φ, flatten, linear head (same construction order, so same init)."""

    def __init__(self, input_shape: tuple[int, ...], seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = features()
        self.features.eval()
        with torch.no_grad():  # materialise the lazy layers, as FeatureClassifier's dry run does
            dim = torch.flatten(self.features(torch.zeros(2, *input_shape)), 1).shape[1]
        self.features.train()
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class EpochClock:
    """Lightning callback: wall clock from the first ``on_train_epoch_start`` to ``on_train_end``."""

    def __init__(self) -> None:
        from lightning.pytorch import Callback

        clock = self

        class _Clock(Callback):
            def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
                if clock.start is None:
                    clock.start, clock.cpu_start = now(), time.process_time()

            def on_train_end(self, trainer: Any, pl_module: Any) -> None:
                clock.stop, clock.cpu_stop = now(), time.process_time()

        self.callback = _Clock()
        self.start: float | None = None
        self.stop: float | None = None
        self.cpu_start = self.cpu_stop = 0.0

    def reset(self) -> None:
        self.start = self.stop = None

    @property
    def seconds(self) -> float:
        assert self.start is not None and self.stop is not None
        return self.stop - self.start


class Bench:
    """Both contenders, their persistent state, and a chunk runner for each."""

    def __init__(self, steps: int, epochs: int, prefer_fashion: bool = True) -> None:
        self.steps, self.epochs = steps, epochs
        self.dm = make_datamodule(prefer_fashion)
        self.steps = min(steps, self.dm.splits["train"][1].shape[0] // BATCH_SIZE)  # full batches only
        self.dataset = type(self.dm).__name__.removesuffix("DataModule")
        shape = tuple(self.dm.image_shape)
        self.input_shape = shape
        self.pl_model = lightning_model(shape)
        self.hand_model = HandModel(shape)
        pl_state, hand_state = self.pl_model.state_dict(), self.hand_model.state_dict()
        self.same_init = all(torch.equal(pl_state[k], hand_state[k]) for k in hand_state)
        # the hand loop's own copy of the data, mean/std and augmentation
        images, labels = self.dm.splits["train"]
        self.images, self.labels = images.clone(), labels.clone()
        pixels = self.images.float()
        self.mean, self.std = pixels.mean(), pixels.std()
        from lightning_deepfeat.data import RandomHorizontalFlip, RandomTranslate

        self.padded = F.pad(self.images, (2, 2, 2, 2))
        self.translate, self.flip = RandomTranslate(2), RandomHorizontalFlip(0.5)
        self.generator = torch.Generator().manual_seed(1)
        self.hand_epoch = 0
        self.pl_clock = EpochClock()
        self.last: dict[str, tuple[float, float, float]] = {}  # (steady wall, total wall, steady CPU)

    @property
    def images_per_chunk(self) -> int:
        return self.steps * self.epochs * BATCH_SIZE

    # ------------------------------------------------------------------ Lightning
    def trainer(self, extra_callbacks: list[Any] | None = None, **kwargs: Any) -> Any:
        from lightning.pytorch import Trainer

        from lightning_deepfeat.callbacks import DivideLROnPlateau, MaxNormConstraint

        self.pl_clock.reset()
        return Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=self.epochs,
            limit_train_batches=self.steps,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            callbacks=[
                DivideLROnPlateau(monitor="train_error", verbose=False),
                MaxNormConstraint(max_norm=MAX_NORM),
                self.pl_clock.callback,
                *(extra_callbacks or []),
            ],
            **kwargs,
        )

    def lightning_chunk(self) -> float:
        start = now()
        trainer = self.trainer()
        trainer.fit(self.pl_model, datamodule=self.dm)
        total = now() - start
        self.last["lightning"] = (self.pl_clock.seconds, total, self.pl_clock.cpu_stop - self.pl_clock.cpu_start)
        return self.pl_clock.seconds

    # ------------------------------------------------------------------ by hand
    def hand_chunk(self) -> float:
        start = now()
        model, images, labels = self.hand_model, self.images, self.labels
        mean, std, gen = self.mean, self.std, self.generator
        model.train()
        opt = sgd(model.parameters())
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=10)
        constrained = [
            m.weight
            for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and not name.startswith("head")
        ]
        with torch.no_grad():
            for w in constrained:
                w.renorm_(2, 0, MAX_NORM)
        steady, cpu = now(), time.process_time()
        n = labels.shape[0]
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.hand_epoch))
            self.hand_epoch += 1
            errors = torch.zeros((), dtype=torch.long)
            loss_sum = torch.zeros(())
            seen = 0
            for b in range(self.steps):
                idx = order[b * BATCH_SIZE : (b + 1) * BATCH_SIZE]
                dx, dy = self.translate.sample_offsets(idx.numel(), gen)
                x = crop_batch(self.padded, 2 - dy, 2 - dx, images.shape[-2:], index=idx)
                y = labels[idx]
                x = self.flip(x, gen)
                x = (x.float() - mean) / std
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for w in constrained:
                        w.renorm_(2, 0, MAX_NORM)
                    errors += (logits.argmax(1) != y).sum()
                    loss_sum += loss * y.shape[0]
                seen += y.shape[0]
            plateau.step(errors.item() / seen)
        end = now()
        self.last["hand"] = (end - steady, end - start, time.process_time() - cpu)
        return end - steady

    # ------------------------------------------------------------------ both
    def measure(self, rounds: int) -> dict[str, Any]:
        kinds = ("steady wall", "end-to-end wall", "steady CPU")
        seconds: dict[str, dict[str, list[float]]] = {k: {"lightning": [], "hand": []} for k in kinds}

        def record(name: str, fn: Any) -> Any:
            def run() -> float:
                fn()
                for kind, value in zip(kinds, self.last[name], strict=True):
                    seconds[kind][name].append(value)
                return self.last[name][0]

            return run

        interleave(
            {"lightning": record("lightning", self.lightning_chunk), "hand": record("hand", self.hand_chunk)},
            rounds=rounds,
            warmup_rounds=1,
        )
        for d in seconds.values():  # drop the warm-up round
            for k in d:
                del d[k][0]
        ips = self.images_per_chunk
        steps = self.steps * self.epochs
        rows = []
        for kind, d in seconds.items():
            ratios = paired_ratios(d["hand"], d["lightning"])  # time_hand / time_pl = ips_pl / ips_hand
            overheads = [(a - b) / steps for a, b in zip(d["lightning"], d["hand"], strict=True)]
            rows.append(
                {
                    "measure": kind,
                    "lightning_ips": ips / median(d["lightning"]),
                    "hand_ips": ips / median(d["hand"]),
                    "ratio": median(ratios),
                    "ratio_min": min(ratios),
                    "ratio_max": max(ratios),
                    "overhead_ms": 1e3 * median(overheads),
                    "hand_step_ms": 1e3 * median(d["hand"]) / steps,
                }
            )
        return {
            "dataset": self.dataset,
            "input_shape": list(self.input_shape),
            "batch_size": BATCH_SIZE,
            "steps_per_epoch": self.steps,
            "epochs_per_chunk": self.epochs,
            "rounds": rounds,
            "threads": torch.get_num_threads(),
            "same_init": self.same_init,
            "validation": "off on both sides (limit_val_batches=0)",
            "target": TARGET,
            "rows": rows,
            "seconds": seconds,
        }


def run(quick: bool = False) -> dict[str, Any]:
    """Measure, print the table and return the results (``quick``: a few dozen steps per chunk)."""
    if quick:
        bench, rounds = Bench(steps=25, epochs=2), 3
    else:
        bench, rounds = Bench(steps=100, epochs=2), 5
    start = time.perf_counter()
    result = bench.measure(rounds)
    result["wall_seconds"] = time.perf_counter() - start
    print_table(result)
    return result


def print_table(result: dict[str, Any]) -> None:
    print(header("Overhead: Lightning (FeatureClassifier + callbacks + data module) vs a hand-written loop"))
    print(
        f"{result['dataset']} {tuple(result['input_shape'])}, batch {result['batch_size']}, ConvNet(32, 64 | 256), "
        f"translate 2 + hflip, max-norm 3, SGD; {result['rounds']} interleaved rounds of {result['epochs_per_chunk']} "
        f"epochs x {result['steps_per_epoch']} steps per side; torch threads {result['threads']}; "
        "validation off on both sides; "
        f"same initial weights: {result['same_init']}"
    )
    print(
        table(
            result["rows"],
            [
                ("measure", "measure"),
                ("lightning_ips", "Lightning img/s"),
                ("hand_ips", "hand img/s"),
                ("ratio", "ratio (median of rounds)"),
                ("ratio_min", "min"),
                ("ratio_max", "max"),
                ("hand_step_ms", "hand ms/step"),
                ("overhead_ms", "Lightning extra ms/step"),
            ],
        )
    )
    by = {r["measure"]: r["ratio"] for r in result["rows"]}
    print(
        f"target: ratio >= {TARGET}: steady wall {'met' if by['steady wall'] >= TARGET else 'NOT met'} "
        f"({by['steady wall']:.3f}); steady CPU {'met' if by['steady CPU'] >= TARGET else 'NOT met'} "
        f"({by['steady CPU']:.3f})"
    )


def profile(steps: int = 60, top: int = 30) -> None:
    """CProfile one Lightning chunk (after a warm-up chunk) and print the costliest functions."""
    import cProfile
    import pstats

    bench = Bench(steps=steps, epochs=1)
    bench.lightning_chunk()
    bench.hand_chunk()
    for name, fn in (("hand", bench.hand_chunk), ("lightning", bench.lightning_chunk)):
        prof = cProfile.Profile()
        prof.enable()
        fn()
        prof.disable()
        print(
            f"\n==== {name}: {bench.last[name][0]:.2f} s steady, {bench.last[name][1]:.2f} s total "
            f"for {bench.steps} steps"
        )
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile both sides instead of measuring")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine())
    if args.profile:
        profile()
    else:
        run(args.quick)


if __name__ == "__main__":
    main()
