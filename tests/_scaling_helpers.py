"""Helpers of the scaling and fault tests: importable by spawned DDP workers and CLI subprocesses.

Run a subprocess with ``tests/`` on ``PYTHONPATH`` and these callbacks resolve as
``_scaling_helpers.BlockAtStep`` etc. from the command line.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


class BlockAtStep(Callback):
    """At the start of the batch that would make optimizer step ``step + 1``, write ``marker`` and hang.

    The parent test waits for the marker and SIGKILLs the process: a kill in the middle of
    an epoch, at a point the test chooses, whatever the machine's speed.
    """

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = marker

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            Path(self.marker).write_text(f"{trainer.global_step} {trainer.current_epoch} {batch_idx}\n")
            time.sleep(600)


_GROUP_DESTROYED_AT_EXIT = False


def destroy_process_group_at_exit() -> None:
    """Destroy this process's gloo group when it exits, before the interpreter's own teardown.

    Lightning destroys only NCCL groups at exit. A spawned worker that exits with its gloo
    group alive tears it down during interpreter finalisation, racing its peer's exit; on
    this machine that occasionally aborted a worker ("terminate called without an active
    exception") after a fit had finished and its results were saved.
    """
    global _GROUP_DESTROYED_AT_EXIT
    if not _GROUP_DESTROYED_AT_EXIT and torch.distributed.is_available() and torch.distributed.is_initialized():
        atexit.register(lambda: torch.distributed.is_initialized() and torch.distributed.destroy_process_group())
        _GROUP_DESTROYED_AT_EXIT = True


class SaveFinalState(Callback):
    """On rank 0 at the end of fit, save weights, learning rates and step counters to ``path`` (tensors only).

    In every process it also destroys the gloo group at exit (see :func:`destroy_process_group_at_exit`).
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        destroy_process_group_at_exit()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        state = {
            "weights": {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()},
            "lrs": torch.tensor(
                [float(g["lr"]) for opt in trainer.optimizers for g in opt.param_groups], dtype=torch.float64
            ),
            "global_step": torch.tensor(trainer.global_step),
            "metrics": {k: torch.as_tensor(v).detach().cpu().double() for k, v in trainer.callback_metrics.items()},
        }
        torch.save(state, self.path)


class RecordLRs(Callback):
    """Record the first learning rate before every optimizer step, as ``(global_step, lr)`` pairs (saved on rank 0)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.lrs: list[tuple[int, float]] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.lrs.append((trainer.global_step, float(trainer.optimizers[0].param_groups[0]["lr"])))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.path and trainer.is_global_zero:
            torch.save(torch.tensor(self.lrs, dtype=torch.float64), self.path)


def subprocess_env() -> dict[str, str]:
    """Environment for a ``python -m lightning_deepfeat`` child: tests/ importable, one thread per process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m lightning_deepfeat *args`` in a subprocess; raises with its output on failure."""
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_deepfeat", *args],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"deepfeat {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def sigkill_once(proc: subprocess.Popen, marker: Path, timeout: float, what: str) -> None:
    """Wait until ``marker`` exists, then SIGKILL ``proc``; fail if it ends first or ``timeout`` s pass.

    ``what`` says in the failure what the process never reached. The process is reaped either way.
    """
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert proc.poll() is None, f"the process ended before the kill:\n{proc.stdout.read().decode()[-4000:]}"
            assert time.monotonic() < deadline, f"the process never reached {what}"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def cli_error(args: list[str]) -> str:
    """Run ``deepfeat args`` in this process, expect the parser to exit with code 2, return its stderr."""
    import contextlib
    import io

    import pytest

    from lightning_deepfeat.cli import main

    err = io.StringIO()
    with pytest.raises(SystemExit) as info, contextlib.redirect_stderr(err):
        main(args)
    assert info.value.code == 2
    return err.getvalue()


def parse_test_error(stdout: str) -> float:
    """The ``test_error`` of the ``deepfeat: test_error=...`` summary line."""
    lines = [line for line in stdout.splitlines() if line.startswith("deepfeat: test_error=")]
    assert len(lines) == 1, f"expected one summary line, got {lines!r} in:\n{stdout[-3000:]}"
    return float(lines[0].split("test_error=")[1].split()[0])


def assert_state_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float, atol: float = 0.0) -> None:
    """Every tensor of ``a`` equals the one of ``b`` to ``rtol`` relative (in norm), naming the first that differs."""
    assert a.keys() == b.keys(), f"state keys differ: {sorted(set(a) ^ set(b))}"
    for key in a:
        x, y = a[key].double(), b[key].double()
        assert x.shape == y.shape, f"{key}: shapes {tuple(x.shape)} != {tuple(y.shape)}"
        diff = (x - y).norm().item()
        scale = max(x.norm().item(), y.norm().item())
        assert diff <= rtol * scale + atol, f"{key}: |a-b| = {diff:.3g} > {rtol:g} * {scale:.3g}"


from lightning_deepfeat.callbacks import DivideLROnPlateau  # noqa: E402


class RecordingPlateau(DivideLROnPlateau):
    """``DivideLROnPlateau`` that records every ``(global_step, value)`` it decides on.

    The record is saved to ``record`` at fit end.
    """

    def __init__(self, *args: Any, record: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record = record
        self.values: list[tuple[int, float]] = []
        self._step_now = -1

    def on_train_batch_end(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        self._step_now = trainer.global_step
        super().on_train_batch_end(trainer, *args, **kwargs)

    def step(self, current: float, optimizers: Any) -> bool:
        self.values.append((self._step_now, float(current)))
        return super().step(current, optimizers)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.record and trainer.is_global_zero:
            torch.save(
                {"values": torch.tensor(self.values, dtype=torch.float64), "state": self.state_dict()}, self.record
            )
