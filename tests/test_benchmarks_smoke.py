"""Smoke test of the benchmark runner: ``python -m benchmarks --quick`` runs end to end (speed is not tested here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEADERS = (
    "## Overhead: Lightning",
    "## Max-norm cost",
    "## Translation throughput",
    "## ImageNet input pipeline",
    "## Time to accuracy",
    "## Fashion-MNIST test accuracy",
)
SECTIONS = ("overhead", "maxnorm", "translation", "imagenet", "accuracy")


@pytest.mark.slow
def test_quick_benchmarks_run_and_write_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    for header in HEADERS:
        assert header in proc.stdout, f"missing {header!r} in the output:\n{proc.stdout[-3000:]}"

    results = json.loads(out.read_text())
    assert results["quick"] is True
    assert {"machine", "threads", "benchmarks", "seconds", "total_seconds"} <= set(results)
    assert set(results["benchmarks"]) == set(SECTIONS)
    assert not any("error" in v for v in results["benchmarks"].values() if isinstance(v, dict))

    overhead = results["benchmarks"]["overhead"]
    assert overhead["same_init"] is True
    assert {r["measure"] for r in overhead["rows"]} == {"steady wall", "end-to-end wall", "steady CPU"}
    assert all(r["ratio"] > 0 and r["lightning_ips"] > 0 and r["hand_ips"] > 0 for r in overhead["rows"])

    maxnorm = results["benchmarks"]["maxnorm"]
    assert len(maxnorm["nets"]) == 2
    for net in maxnorm["nets"]:
        variants = {r["variant"] for r in net["rows"]}
        assert variants == {"none", "MaxNormConstraint", "renorm loop", "Keras-style"}
        assert all(r["step_ms"] > 0 for r in net["rows"])

    translation = results["benchmarks"]["translation"]
    assert "rows" in translation or "skipped" in translation

    imagenet = results["benchmarks"]["imagenet"]
    methods = [r["method"] for r in imagenet["rows"]]
    assert sum(m.startswith("(a) torchvision") for m in methods) == 2 and len(methods) >= 5
    assert all(r["img_per_s"] > 0 for r in imagenet["rows"])
    assert f"jpeg shards vs torchvision: {imagenet['jpeg_vs_torchvision']:.2f}×" in proc.stdout

    accuracy = results["benchmarks"]["accuracy"]
    methods = [r["method"] for r in accuracy["rows"]]
    assert sum("(published)" in m for m in methods) == 5
    tta = accuracy["time_to_accuracy"]
    assert 0.0 <= tta["final_test_acc"] <= 1.0 and tta["epochs"] >= 1


def _history(lrs: list[float]) -> list[dict[str, float]]:
    return [{"epoch": e, "seconds": 60.0 * (e + 1), "test_acc": 0.80 + 0.01 * e, "lr": lr} for e, lr in enumerate(lrs)]


def test_time_to_accuracy_reports_the_epochs_the_rate_dropped_after_and_draws_them(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    try:
        from benchmarks.time_to_accuracy import lr_drops
    finally:
        sys.path.remove(str(REPO))
    # each row holds the rate at the end of its epoch, after the plateau decision
    history = _history([0.02, 0.02, 0.002, 0.002, 0.002, 0.0002, 0.0002])
    drops = lr_drops(history)
    assert [d["after_epoch"] for d in drops] == [1, 4]
    assert [d["minutes"] for d in drops] == [2.0, 5.0]
    assert [d["lr"] for d in drops] == [0.002, 0.0002]
    assert lr_drops(_history([0.02, 0.02, 0.02])) == []

    runs = []
    for seed, lrs in ((0, [0.02, 0.002, 0.002]), (1, [0.02, 0.02, 0.002])):
        path = tmp_path / f"seed{seed}.json"
        path.write_text(json.dumps({"seed": seed, "history": _history(lrs)}))
        runs.append(str(path))
    png = tmp_path / "curve.png"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.time_to_accuracy", "--plot", str(png), *runs],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
