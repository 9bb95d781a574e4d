"""`deepfeat fit ... --trainer.strategy ddp --trainer.devices 2` end to end on CPU (gloo), in a subprocess.

The printed test error must be the error over the whole test split: the test in the parent
recomputes it from the best checkpoint on all 359 test images and checks that neither
process's half alone would give the printed number.
"""

from __future__ import annotations

import pytest
import torch

from _scaling_helpers import ROOT, parse_test_error, run_cli
from lightning_deepfeat import FeatureClassifier
from lightning_deepfeat.data import DigitsDataModule

pytestmark = [pytest.mark.slow, pytest.mark.ddp]


def _errors_by_sample(model: FeatureClassifier) -> torch.Tensor:
    data = DigitsDataModule(batch_size=32, val_fraction=0.1)  # as in the run
    data.setup("test")
    wrong = []
    model.eval()
    with torch.no_grad():
        for batch in data.test_dataloader():
            x, y = data.on_after_batch_transfer(batch, 0)
            wrong.append(model(x).argmax(1) != y)
    return torch.cat(wrong)


def test_cli_ddp_two_processes_prints_the_whole_test_set_error(tmp_path):
    proc = run_cli(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "digits.yaml"),
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "2",
            "--trainer.strategy",
            "ddp",
            "--trainer.max_epochs",
            "3",
            "--data.init_args.batch_size",
            "32",
            "--trainer.logger",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        timeout=400,
    )
    out = proc.stdout
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr
    assert "All distributed processes registered. Starting with 2 processes" in proc.stdout + proc.stderr
    printed = parse_test_error(out)
    line = next(s for s in out.splitlines() if s.startswith("deepfeat: test_error="))
    ckpt = line.split("checkpoint: ")[1].rstrip(")")
    assert ckpt.endswith(".ckpt") and "epoch=" in ckpt, line

    model = FeatureClassifier.load_from_checkpoint(ckpt, weights_only=True, map_location="cpu")
    wrong = _errors_by_sample(model)
    assert wrong.numel() == 359
    whole = wrong.float().mean().item()
    assert printed == pytest.approx(whole, abs=5e-5), f"printed {printed}, whole test split {whole:.4f}"
    # the check can tell the whole split from one process's share (perm[r::2] of the unshuffled split)
    shares = [wrong[r::2].float().mean().item() for r in (0, 1)]
    assert all(abs(s - whole) > 5e-5 for s in shares) or shares[0] == shares[1] == whole
    assert printed < 0.5  # three epochs of SGD are far better than chance
