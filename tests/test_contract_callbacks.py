"""Issue 11, the callbacks: points 4, 11, 12 and 14, each tested as a Lightning user writes the pattern.

Every test builds its own ``Trainer`` and uses the public API only (to be merged into
``tests/test_lightning_contract.py``).
"""

from __future__ import annotations

import json
import re
import warnings
from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_deepfeat.callbacks import DivideLROnPlateau, MaxNormConstraint

SRC = Path(__file__).resolve().parents[1] / "src" / "lightning_deepfeat"


# ----------------------------------------------------------------- a user's module and data
def _loader(n: int = 16, batch_size: int = 4, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


class Regression(LightningModule):
    """A user's module: linear regression, SGD with momentum, two parameter groups.

    ``train_loss`` is logged per epoch (or per step with ``per_step=True``), ``val_loss`` by validation.
    """

    def __init__(self, lrs: tuple[float, float] = (0.1, 0.02), per_step: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(3, 1)
        self.lrs, self.per_step = lrs, per_step

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x).squeeze(1), y)
        self.log("train_loss", loss, on_step=self.per_step, on_epoch=not self.per_step)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x).squeeze(1), y))

    def configure_optimizers(self):
        return torch.optim.SGD([{"params": [self.net.weight], "lr": self.lrs[0]},
                                {"params": [self.net.bias], "lr": self.lrs[1]}], momentum=0.9)


class ConstantMetric(Regression):
    """Logs ``metric = 1.0`` at every step: a plateau from the first check on."""

    def training_step(self, batch, batch_idx):
        self.log("metric", 1.0, on_step=True, on_epoch=False)
        return super().training_step(batch, batch_idx)


class LRsBeforeEachStep(Callback):
    """The learning rates each optimizer step uses: ``{global_step: [lr of every group]}``."""

    def __init__(self) -> None:
        self.lrs: dict[int, list[float]] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs[trainer.global_step] = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]


def _trainer(tmp_path: Path | None = None, **kwargs) -> Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                    limit_val_batches=0, deterministic=True)
    if tmp_path is not None:
        defaults["default_root_dir"] = str(tmp_path)
    defaults.update(kwargs)
    return Trainer(**defaults)


def _unit_norms(weight: torch.Tensor, unit_dim: int = 0) -> torch.Tensor:
    """Norm of each unit, computed in float64 (exact to ~1e-16 for float32 weights)."""
    w = weight.detach().double()
    return torch.linalg.vector_norm(w, 2, dim=[d for d in range(w.dim()) if d != unit_dim])


# ----------------------------------------------------------------- 4. exact resume on the max-norm bound
SHAPES = [(64, 9216), (32, 1, 3, 3), (64, 32, 3, 3), (256, 3136), (100, 7), (128, 1031)]


def _matrix(shape: tuple[int, ...], c: float, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Units with norms spread over [0.05 c, 4 c], some within 1e-7 of c, one zero unit."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    units = shape[0]
    norms = c * torch.exp(torch.empty(units, dtype=torch.float64).uniform_(-3.0, 1.4, generator=g))
    norms[: units // 8] = c * (1 + 1e-7 * torch.randn(units // 8, generator=g, dtype=torch.float64))  # at the bound
    view = (units,) + (1,) * (len(shape) - 1)
    w = w / _unit_norms(w).view(view) * norms.view(view)
    w[-1] = 0.0
    return w.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_point04_projection_is_idempotent_bit_for_bit(shape, dtype):
    for seed, c in enumerate([1e-3, 0.3, 3.5, 1e3]):  # weights scaled with c: 1e-3 .. 1e3
        w = _matrix(shape, c, dtype, seed)
        before = w.clone()
        constraint = MaxNormConstraint(max_norm=c)
        constraint.project([(w, 0)])
        n_before, n_after = _unit_norms(before), _unit_norms(w)
        inside = n_before <= c * (1 - 1e-3)
        outside = n_before > c * (1 + 1e-3)
        assert inside.sum() >= 4 and outside.sum() >= 4
        assert torch.equal(w[inside], before[inside])  # under the bound: bit-identical
        tol = 2e-2 if dtype == torch.bfloat16 else 2e-4
        assert (n_after[outside] <= c).all() and (n_after[outside] >= c * (1 - tol)).all()  # onto the bound
        assert (n_after <= c * (1 + 1e-6)).all(), f"max norm {float(n_after.max() / c)} c"  # c up to rounding
        projected = w.clone()
        for _ in range(3):  # projecting projected weights changes no bit
            constraint.project([(w, 0)])
            assert torch.equal(w, projected), (c, int((w != projected).any(dim=1).sum()))


def test_point04_transposed_conv_units_idempotent():
    layer = nn.ConvTranspose2d(16, 24, 3)  # weight (in, out, k, k): units on dim 1
    with torch.no_grad():
        layer.weight.mul_(torch.linspace(0.1, 30.0, 24).view(1, 24, 1, 1))
    constraint = MaxNormConstraint(max_norm=0.5, module_types=["ConvTranspose2d"])
    weights = list(constraint.select(nn.Sequential(layer)).values())
    constraint.project(weights)
    once = layer.weight.detach().clone()
    constraint.project(weights)
    assert torch.equal(layer.weight, once)
    assert (_unit_norms(once, 1) <= 0.5).all()


def _digits_fit(max_epochs: int = 3, max_steps: int = -1, ckpt_dir: Path | None = None,
                ckpt_path: str | None = None) -> tuple[LightningModule, MaxNormConstraint, Trainer]:
    from lightning_deepfeat import ConvNet, FeatureClassifier
    from lightning_deepfeat.data import DigitsDataModule

    seed_everything(0)
    model = FeatureClassifier(features=ConvNet(channels=[32], convs_per_stage=2, hidden=[256], dropout=0.5),
                              optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4))
    constraint = MaxNormConstraint(max_norm=0.3)
    callbacks: list[Callback] = [constraint]
    if ckpt_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=30, save_top_k=-1))
    trainer = Trainer(max_epochs=max_epochs, max_steps=max_steps, deterministic=True, accelerator="cpu",
                      logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=ckpt_dir is not None, callbacks=callbacks)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=128, translate=1), ckpt_path=ckpt_path)
    return model, constraint, trainer


@pytest.mark.slow
def test_point04_resume_with_units_on_the_bound_is_bit_exact(tmp_path):
    full, full_constraint, full_trainer = _digits_fit()
    _digits_fit(max_steps=30, ckpt_dir=tmp_path)  # interrupted at step 30 (mid-epoch 2)
    (ckpt,) = tmp_path.glob("*step=30.ckpt")
    resumed, constraint, trainer = _digits_fit(ckpt_path=str(ckpt))

    assert trainer.global_step == full_trainer.global_step == 33
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ after resume: {differ}"
    # units really sit on the bound (so the resume exercised the re-projection), none above it
    for name, (weight, unit_dim) in constraint.constrained.items():
        norms = _unit_norms(weight, unit_dim)
        assert (norms <= 0.3).all(), name
        assert int((norms >= 0.3 * (1 - 1e-4)).sum()) >= 8, name
    # one projection at fit start plus one per optimizer step, in both runs
    assert constraint.num_applications == full_constraint.num_applications == 33 + 1


# ----------------------------------------------------------------- 11. DivideLROnPlateau's messages
TIMING = "ModelCheckpoint saves at the end of validation"


def _fit_with_checkpoint(tmp_path: Path, checkpoint: ModelCheckpoint, **trainer_kwargs) -> list[str]:
    """Fit with a training-metric plateau and ``checkpoint``; the messages of the warnings raised."""
    trainer = _trainer(tmp_path, enable_checkpointing=True, callbacks=[
        DivideLROnPlateau(monitor="train_loss", patience=1, verbose=False), checkpoint], **trainer_kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Regression(), _loader(), _loader(n=8))
    return [str(w.message) for w in caught]


@pytest.mark.parametrize("trainer_kwargs", [dict(val_check_interval=0.5), dict(check_val_every_n_epoch=2)],
                         ids=["val_check_interval=0.5", "check_val_every_n_epoch=2"])
def test_point11_resume_timing_warning_fires(tmp_path, trainer_kwargs):
    messages = _fit_with_checkpoint(tmp_path, ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True),
                                    max_epochs=3, limit_val_batches=1, **trainer_kwargs)
    timing = [m for m in messages if TIMING in m]
    assert len(timing) == 1, messages  # once
    assert "'train_loss'" in timing[0] and "save_on_train_epoch_end=True" in timing[0]


@pytest.mark.parametrize("checkpoint_kwargs, trainer_kwargs", [
    (dict(), dict()),  # Lightning's defaults: validation every epoch, saved at the training epoch end
    (dict(save_on_train_epoch_end=True), dict(val_check_interval=0.5)),
    (dict(save_on_train_epoch_end=True), dict(check_val_every_n_epoch=2)),
], ids=["defaults", "save_on_train_epoch_end+val_check_interval", "save_on_train_epoch_end+every_2"])
def test_point11_no_timing_warning_when_checkpoints_follow_the_decision(tmp_path, checkpoint_kwargs, trainer_kwargs):
    messages = _fit_with_checkpoint(tmp_path, ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True,
                                                              **checkpoint_kwargs),
                                    max_epochs=3, limit_val_batches=1, **trainer_kwargs)
    assert not [m for m in messages if TIMING in m]


def test_point11_step_checks_on_an_epoch_only_metric_say_so():
    plateau = DivideLROnPlateau(monitor="train_loss", check_every_n_steps=2)
    with pytest.raises(RuntimeError) as err:
        _trainer(max_epochs=2, callbacks=[plateau]).fit(Regression(per_step=False), _loader())
    msg = str(err.value)
    assert "logged per epoch only" in msg
    assert "on_step=True" in msg and "check_every_n_steps" in msg  # how to fix it
    assert "Available keys: (none)" not in msg


def test_point11_step_checks_on_an_epoch_only_metric_seen_after_an_epoch(tmp_path):
    # non-strict: warned and skipped in epoch 0; once the epoch's value exists the message is definite
    plateau = DivideLROnPlateau(monitor="train_loss", check_every_n_steps=2, strict=False)
    with pytest.warns(UserWarning, match="logged per epoch only") as caught:
        _trainer(max_epochs=2, callbacks=[plateau]).fit(Regression(per_step=False), _loader())
    assert plateau.num_checks == 0
    assert any("but 'train_loss' is logged per epoch only" in str(w.message) for w in caught)


# ----------------------------------------------------------------- 12. warm-up, then the plateau rule
def test_point12_warmup_follows_linear_lr_then_plateau_rule():
    n, f = 6, 0.25
    rec = LRsBeforeEachStep()
    plateau = DivideLROnPlateau(monitor="train_loss", patience=100, warmup_steps=n, warmup_start_factor=f,
                                verbose=False)
    _trainer(max_epochs=3, callbacks=[plateau, rec]).fit(Regression(lrs=(0.1, 0.02)), _loader())
    assert sorted(rec.lrs) == list(range(12))
    bases = [0.1, 0.02]
    # the closed form, bit for bit
    for t, lrs in rec.lrs.items():
        assert lrs == [base * (f + (1 - f) * min(t, n) / n) if t < n else base for base in bases], t
    # and torch's LinearLR on the same base rates
    opt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": b} for b in bases])
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=f, total_iters=n)
    for t in range(12):
        assert rec.lrs[t] == pytest.approx([g["lr"] for g in opt.param_groups], rel=1e-12, abs=0), t
        opt.step()
        sched.step()


def test_point12_no_plateau_counted_during_warmup_then_one_drop_by_10():
    # "metric" is 1.0 at every step. Checks every 2 steps: at global steps 2, 4 (warm-up, ignored),
    # 6 (the first counted: sets the best), 8 (no improvement, patience 0: divide by 10).
    rec = LRsBeforeEachStep()
    plateau = DivideLROnPlateau(monitor="metric", check_every_n_steps=2, patience=0, warmup_steps=4,
                                warmup_start_factor=0.5, verbose=False)
    _trainer(max_steps=9, callbacks=[plateau, rec]).fit(ConstantMetric(lrs=(0.1, 0.02)), _loader())
    assert plateau.num_checks == 2 and plateau.num_drops == 1
    for t in range(9):
        expected = [b * (0.5 + 0.5 * t / 4) if t < 4 else (b if t < 8 else b / 10) for b in (0.1, 0.02)]
        assert rec.lrs[t] == expected, t
    # without the warm-up the same stream drops at steps 4 and 6 already
    plain = DivideLROnPlateau(monitor="metric", check_every_n_steps=2, patience=0, verbose=False)
    _trainer(max_steps=9, callbacks=[plain]).fit(ConstantMetric(), _loader())
    assert plain.num_drops == 3


def _warmup_fit(tmp_path: Path, max_epochs: int, ckpt_path: str | None = None, save: bool = False):
    rec = LRsBeforeEachStep()
    plateau = DivideLROnPlateau(monitor="train_loss", patience=0, threshold=0.9, warmup_steps=10,
                                warmup_start_factor=0.1, verbose=False)
    callbacks: list[Callback] = [plateau, rec]
    if save:
        callbacks.append(ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", every_n_epochs=1, save_top_k=-1,
                                         save_on_train_epoch_end=True))
    model = Regression(lrs=(0.05, 0.05))
    _trainer(max_epochs=max_epochs, enable_checkpointing=save, callbacks=callbacks).fit(
        model, _loader(), ckpt_path=ckpt_path)
    return model, plateau, rec


def test_point12_resume_mid_warmup_equals_uninterrupted(tmp_path):
    full, full_plateau, full_rec = _warmup_fit(tmp_path, max_epochs=6)
    _warmup_fit(tmp_path, max_epochs=1, save=True)  # stops after step 4 of a 10-step warm-up
    resumed, plateau, rec = _warmup_fit(tmp_path, max_epochs=6, ckpt_path=str(tmp_path / "epoch=0.ckpt"))
    assert sorted(rec.lrs) == list(range(4, 24))
    assert rec.lrs == {t: full_rec.lrs[t] for t in range(4, 24)}  # learning rates, bit for bit
    assert full_rec.lrs[4][0] < 0.05 and full_plateau.num_drops >= 1  # resumed mid-warm-up, then dropped
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert plateau.state_dict() == full_plateau.state_dict()


@pytest.mark.slow
@pytest.mark.ddp
def test_point12_warmup_identical_on_every_rank(tmp_path):
    from _callback_helpers import ScriptedMetricModule, StepLRRecorder

    # 2 processes x 2 batches per epoch; "metric" 1.0 every epoch: checks at steps 2, 4 (warm-up),
    # 6 (best), 8 and 10 (bad, patience 0: each divides by 10)
    plateau = DivideLROnPlateau(monitor="metric", patience=0, warmup_steps=5, warmup_start_factor=0.2,
                                verbose=False)
    trainer = _trainer(max_epochs=5, devices=2, strategy="ddp_spawn", deterministic=False,
                       callbacks=[plateau, StepLRRecorder(out_dir=str(tmp_path))])
    loader = DataLoader(TensorDataset(torch.randn(8, 3), torch.zeros(8)), batch_size=2)
    trainer.fit(ScriptedMetricModule(stream=[1.0] * 5, lr=0.1), loader)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0 == r1
    expected = [[t, [0.1 * (0.2 + (1 - 0.2) * t / 5) if t < 5 else (0.1 if t < 8 else 0.1 / 10)]] for t in range(10)]
    assert r0 == expected


# ----------------------------------------------------------------- 14. no private attributes
PRIVATE = {
    "Lightning's private result collection": re.compile(r"\._results\b|[\"']_results[\"']"),
    "ModelCheckpoint's private save-time rule": re.compile(r"_should_save_on_train_epoch_end"),
    "a class-name string match": re.compile(r"\.__name__\s*==|==\s*[\w.()]*\.__name__"),
}


def test_point14_no_private_lightning_access_in_the_package():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for what, pattern in PRIVATE.items():
                if pattern.search(line):
                    found.append(f"{path.relative_to(SRC)}:{lineno}: {what}: {line.strip()}")
    assert not found, "\n".join(found)


def test_point14_callback_metrics_keep_the_storage_of_a_value_not_logged_again():
    """What DivideLROnPlateau relies on to tell a new value from an old one, with public API only."""

    class EveryOtherEpoch(Regression):
        def training_step(self, batch, batch_idx):
            if self.current_epoch % 2 == 0:
                self.log("sometimes", float(self.current_epoch), on_step=False, on_epoch=True)
            return super().training_step(batch, batch_idx)

    class Probe(Callback):
        def __init__(self) -> None:
            self.reads: list[tuple[torch.Tensor, torch.Tensor]] = []

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.reads.append((trainer.callback_metrics["sometimes"], trainer.callback_metrics["sometimes"]))

    probe = Probe()
    _trainer(max_epochs=4, callbacks=[probe]).fit(EveryOtherEpoch(), _loader())
    ptr = [(a.untyped_storage().data_ptr(), b.untyped_storage().data_ptr()) for a, b in probe.reads]
    assert all(p == q for p, q in ptr)  # two reads of one value: one storage (the tensors may differ)
    assert ptr[1][0] == ptr[0][0] and ptr[3][0] == ptr[2][0]  # not logged again: the same storage
    assert ptr[2][0] != ptr[0][0]  # logged again: a new tensor
    assert [float(a) for a, _ in probe.reads] == [0.0, 0.0, 2.0, 2.0]


def test_point14_epoch_checks_use_only_values_logged_since_the_last_check():
    class EveryOtherEpoch(Regression):
        def training_step(self, batch, batch_idx):
            if self.current_epoch % 2 == 0:
                self.log("sometimes", 1.0, on_step=False, on_epoch=True)
            return super().training_step(batch, batch_idx)

    plateau = DivideLROnPlateau(monitor="sometimes", patience=0, verbose=False)
    _trainer(max_epochs=6, callbacks=[plateau]).fit(EveryOtherEpoch(), _loader())
    assert plateau.num_checks == 3  # epochs 0, 2, 4: the value of epoch 0 is not checked again at epoch 1
    assert plateau.num_drops == 2


def test_point14_step_checks_read_a_classification_error_subclass_by_isinstance():
    from torchmetrics import MetricCollection

    from lightning_deepfeat.metrics import ClassificationError

    class Top1Error(ClassificationError):
        """A user's own subclass: its class name is not 'ClassificationError'."""

    class Classifier(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Linear(4, 3)
            self.train_metrics = MetricCollection({"error": Top1Error(num_classes=3, average="micro")},
                                                  prefix="train_")

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self.net(x)
            self.train_metrics.update(logits, y)
            self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
            return F.cross_entropy(logits, y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)  # fixed model: exact window errors known

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    model = Classifier()
    seen: list[float] = []

    class Recording(DivideLROnPlateau):
        def step(self, current, optimizers):
            seen.append(current)
            return super().step(current, optimizers)

    _trainer(max_steps=4, callbacks=[Recording(monitor="train_error", check_every_n_steps=2, verbose=False)]).fit(
        model, DataLoader(TensorDataset(x, y), batch_size=4))
    with torch.no_grad():
        wrong = (model.net(x).argmax(1) != y).double()
    assert seen == pytest.approx([wrong[:8].mean().item(), wrong[8:].mean().item()], abs=1e-12)
