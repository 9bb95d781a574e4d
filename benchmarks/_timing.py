"""Shared timing helpers: warm-up, medians of repeats, interleaved A/B runs, tables, the machine.

The machine these benchmarks run on is shared and small, so absolute times drift by tens
of percent from one minute to the next. Everything here is built to keep *ratios*
meaningful anyway:

* :func:`interleave` runs the contenders in alternating order (A B, B A, A B, ...) inside
  one process, so a slow spell hits both sides of a ratio alike;
* each contender's figure is the **median** over rounds, and each ratio is the median of
  the per-round ratios (a paired estimate: both numbers of a pair were measured within
  seconds of each other);
* a warm-up round (allocator, thread pool, first-call dispatch, lazy imports) is run and
  thrown away first.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

Clock = Callable[[], float]
now: Clock = time.perf_counter


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence (``nan`` when empty)."""
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> float:
    """Relative half-range ``(max - min) / (2 * median)``, a rough noise figure for a table."""
    if len(values) < 2:
        return 0.0
    m = median(values)
    return (max(values) - min(values)) / (2 * m) if m else float("nan")


def time_call(
    fn: Callable[[], Any], repeats: int = 5, warmup: int = 1, number: int = 1, clock: Clock = now
) -> list[float]:
    """Seconds per call of ``fn``: ``warmup`` untimed calls, then ``repeats`` timings of ``number`` calls each.

    ``clock`` is the wall clock by default; pass ``time.process_time`` to count only this
    process's CPU time (robust to other jobs on a shared machine).
    """
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = clock()
        for _ in range(number):
            fn()
        out.append((clock() - start) / number)
    return out


def interleave(
    contenders: dict[str, Callable[[], float | None]], rounds: int, warmup_rounds: int = 1
) -> dict[str, list[float]]:
    """Run each contender once per round, in alternating order; return each one's per-round figures.

    A contender is a callable that does one chunk of work and returns its own figure
    (seconds, or a throughput it measured itself); when it returns ``None`` the wall time
    of the call is used. Round ``r`` runs the contenders in their given order when ``r`` is
    even and reversed when odd, so neither side always runs right after the other's
    allocations or always first after a pause. The first ``warmup_rounds`` are discarded.
    """
    names = list(contenders)
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup_rounds + rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            start = now()
            figure = contenders[name]()
            elapsed = now() - start
            if r >= warmup_rounds:
                results[name].append(elapsed if figure is None else float(figure))
    return results


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Per-round ratios ``numerator[i] / denominator[i]`` (the rounds of :func:`interleave` pair them up)."""
    return [a / b for a, b in zip(numerator, denominator, strict=True) if b]


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, torch threads, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import lightning

        info["lightning"] = lightning.__version__
    except ImportError:  # pragma: no cover
        pass
    with contextlib.suppress(OSError):  # os.getloadavg is not available on every platform
        info["load_average"] = os.getloadavg()
    return info


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A Markdown table: ``columns`` is ``[(key, header), ...]``; floats are printed with 3 significant digits."""

    def fmt(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            if value != value:  # nan
                return "–"
            if abs(value) >= 1000:
                return f"{value:,.0f}"
            return f"{value:.3g}"
        return str(value)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(k)) for k, _ in columns) + " |")
    return "\n".join(lines)


def header(title: str) -> str:
    """The line that opens a benchmark's section in the output (the smoke test looks for it)."""
    return f"\n## {title}\n"
