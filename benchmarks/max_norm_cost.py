"""Cost of the max-norm constraint per training step, ours against what users write by hand.

    python -m benchmarks.max_norm_cost [--quick] [--threads N]

Two nets, each a ``FeatureClassifier`` trained on a fixed random batch (no data
pipeline, so the step is forward + backward + SGD and nothing else):

* the Fashion-MNIST ConvNet: ``ConvNet(channels=(32, 64), hidden=(256,))``, batch
  128 × 1×28×28 (0.82 M parameters);
* AlexNet at 64×64: ``AlexNet(in_channels=3, width=0.25, hidden=1024, stem_kernel=5,
  stem_stride=2)``, batch 64 × 3×64×64 (conv 24-64-96-96-64, fc 576→1024→1024;
  1.9 M parameters, 1.8 M of them constrained).

Variants, each applied after every ``optimizer.step()`` to every conv/linear weight but
the head's (the layers ``MaxNormConstraint`` selects by default):

* ``none``: no constraint (the baseline);
* ``MaxNormConstraint``: our callback's own step post-hook, registered on the optimizer
  by its ``on_fit_start`` exactly as under a ``Trainer``;
* ``renorm loop``: the naive per-layer Python loop a user writes,
  ``for name, p in model.named_parameters(): ... p.data = torch.renorm(p.data, 2, 0, c)``;
* ``Keras-style``: ``w *= clip(n, 0, c) / (n + 1e-7)`` per unit (shrinks every unit a
  little at every step, so it is not the same maths; for information).

Each variant has its own SGD optimizer over the same parameters. Rounds alternate the
variants' order; each round times ``steps`` steps per variant. Two overhead figures:

* **A/B**: median over rounds of ``t_variant / t_none - 1`` (paired within a round), with
  ``t`` the process CPU time per step (``time.process_time``: the time the scheduler gives
  other jobs on a shared machine does not count); its noise is still a few percent,
  larger than the effect;
* **direct**: the median CPU time of the projection alone (many calls) divided by the
  median CPU step time of ``none``: the same quantity, measured with far less noise.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks._timing import header, interleave, machine, median, paired_ratios, table, time_call

MAX_NORM = 3.0
TARGET = 0.01


def nets() -> dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int]]:
    """``name -> (factory of the feature net, input shape, batch size)``."""
    from lightning_deepfeat.models import AlexNet, ConvNet

    return {
        "Fashion ConvNet 1x28x28": (lambda: ConvNet(channels=(32, 64), hidden=(256,)), (1, 28, 28), 128),
        "AlexNet(w=0.25, fc 1024) 3x64x64": (
            lambda: AlexNet(in_channels=3, width=0.25, hidden=1024, stem_kernel=5, stem_stride=2),
            (3, 64, 64),
            64,
        ),
    }


class _FakeTrainer:
    """The one attribute ``MaxNormConstraint.on_fit_start`` reads from the trainer: its optimizers."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers


def constrained_weights(model: nn.Module) -> list[torch.Tensor]:
    return [
        m.weight
        for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d)) and not name.startswith("head")
    ]


def measure_net(
    name: str, factory: Callable[[], nn.Module], shape: tuple[int, ...], batch: int, steps: int, rounds: int
) -> dict[str, Any]:
    from lightning_deepfeat.callbacks import MaxNormConstraint
    from lightning_deepfeat.models import FeatureClassifier

    torch.manual_seed(0)
    model = FeatureClassifier(features=factory(), num_classes=10, input_shape=shape)
    model.train()
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    weights = constrained_weights(model)

    def sgd() -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    callback = MaxNormConstraint(max_norm=MAX_NORM)
    opt_ours = sgd()
    callback.on_fit_start(_FakeTrainer([opt_ours]), model)  # registers the step post-hook, as under a Trainer
    assert len(callback.constrained) == len(weights)

    def renorm_loop() -> None:
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if pname.endswith("weight") and p.dim() > 1 and not pname.startswith("head"):
                    p.data = torch.renorm(p.data, 2, 0, MAX_NORM)

    def keras() -> None:
        with torch.no_grad():
            for w in weights:
                n = torch.linalg.vector_norm(w, 2, dim=list(range(1, w.dim())), keepdim=True)
                w.mul_(n.clamp(0, MAX_NORM) / (n + 1e-7))

    variants: dict[str, tuple[torch.optim.Optimizer, Callable[[], None] | None]] = {
        "none": (sgd(), None),
        "MaxNormConstraint": (opt_ours, None),
        "renorm loop": (sgd(), renorm_loop),
        "Keras-style": (sgd(), keras),
    }
    direct_fns = {
        "MaxNormConstraint": lambda: callback.project([(w, d) for w, d in callback.constrained.values()]),
        "renorm loop": renorm_loop,
        "Keras-style": keras,
    }

    def chunk(opt: torch.optim.Optimizer, after: Callable[[], None] | None) -> Callable[[], float]:
        def run() -> float:
            start = time.process_time()
            for _ in range(steps):
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if after is not None:
                    after()
            return (time.process_time() - start) / steps

        return run

    per_step = interleave({k: chunk(*v) for k, v in variants.items()}, rounds=rounds, warmup_rounds=1)
    callback.teardown(_FakeTrainer([opt_ours]), model, "fit")
    base = median(per_step["none"])
    rows = []
    for variant, times in per_step.items():
        row: dict[str, Any] = {"net": name, "variant": variant, "step_ms": 1e3 * median(times)}
        if variant != "none":
            ratios = paired_ratios(times, per_step["none"])
            row["ab_overhead_pct"] = 100 * (median(ratios) - 1)
            proj = median(time_call(direct_fns[variant], repeats=7, warmup=2, number=10, clock=time.process_time))
            row["projection_ms"] = 1e3 * proj
            row["direct_overhead_pct"] = 100 * proj / base
        rows.append(row)
    return {
        "net": name,
        "input_shape": list(shape),
        "batch_size": batch,
        "params": sum(p.numel() for p in model.parameters()),
        "constrained_params": sum(w.numel() for w in weights),
        "steps_per_round": steps,
        "rounds": rounds,
        "rows": rows,
        "step_seconds": per_step,
    }


def run(quick: bool = False) -> dict[str, Any]:
    steps, rounds = (4, 3) if quick else (10, 7)
    start = time.perf_counter()
    results = [measure_net(name, f, shape, batch, steps, rounds) for name, (f, shape, batch) in nets().items()]
    out = {
        "max_norm": MAX_NORM,
        "target_pct": 100 * TARGET,
        "nets": results,
        "wall_seconds": time.perf_counter() - start,
    }
    print_table(out)
    return out


def print_table(out: dict[str, Any]) -> None:
    print(header("Max-norm cost: step time with and without the constraint"))
    for net in out["nets"]:
        print(
            f"{net['net']}: batch {net['batch_size']}, {net['params'] / 1e6:.2f} M parameters "
            f"({net['constrained_params'] / 1e6:.2f} M constrained), {net['rounds']} interleaved rounds x "
            f"{net['steps_per_round']} steps per variant"
        )
    rows = [r for net in out["nets"] for r in net["rows"]]
    print(
        table(
            rows,
            [
                ("net", "net"),
                ("variant", "after each step"),
                ("step_ms", "CPU ms/step (median)"),
                ("ab_overhead_pct", "A/B overhead %"),
                ("projection_ms", "projection ms"),
                ("direct_overhead_pct", "direct overhead %"),
            ],
        )
    )
    ours = [r for r in rows if r["variant"] == "MaxNormConstraint"]
    worst = max(r["direct_overhead_pct"] for r in ours)
    print(
        f"target: MaxNormConstraint <= {out['target_pct']:.0f}% extra per step (direct): "
        f"{'met' if worst <= out['target_pct'] else 'NOT met'} (worst {worst:.2f}%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine())
    run(args.quick)


if __name__ == "__main__":
    main()
