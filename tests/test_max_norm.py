"""MaxNormConstraint: exact projection, applied after exactly the steps that update the weights, DDP-identical."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn

from _callback_helpers import row_norms
from lightning_deepfeat.callbacks import MaxNormConstraint
from lightning_deepfeat.models import MLP, FeatureClassifier

C = 0.5
BOUND_RTOL = 1e-5  # a projected unit ends at c(1 - mu), mu ~ 1e-6 here (the margin that makes it idempotent)


def _on_bound(norms: torch.Tensor, c: float) -> bool:
    """Every norm (computed in float64) is in [c (1 - 1e-5), c]: on the bound, never above it."""
    return bool(((norms <= c) & (norms >= c * (1 - BOUND_RTOL))).all())


def _data(n: int = 16, batch_size: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)


def _classifier(lr: float) -> FeatureClassifier:
    torch.manual_seed(0)
    return FeatureClassifier(
        features=MLP(hidden=[12, 10], dropout=0.0),
        num_classes=3,
        input_shape=(1, 4, 4),
        optimizer=partial(torch.optim.SGD, lr=lr),
    )


def _mixed_weight(rows_out: int = 8, cols: int = 6) -> torch.Tensor:
    """Rows with norms from 0.1 C to 4 C, including one exactly at C and one zero row."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(rows_out, cols, generator=g)
    w = w / row_norms(w)[:, None] * torch.linspace(0.1, 4.0, rows_out)[:, None] * C
    w[1] = w[1] / row_norms(w[1:2])[0] * C
    w[2] = 0.0
    return w


def test_projection_exact_and_equal_to_renorm():
    lin = nn.Linear(6, 8)
    with torch.no_grad():
        lin.weight.copy_(_mixed_weight())
    before = lin.weight.detach().clone()
    cb = MaxNormConstraint(max_norm=C, exclude_head=False)
    cb.project(cb.select(nn.Sequential(lin)).values())
    n_before, n_after = row_norms(before), row_norms(lin.weight.double())
    inside = n_before <= C
    assert inside.sum() >= 3 and (~inside).sum() >= 3
    assert torch.equal(lin.weight[inside], before[inside])  # bit-identical, not just close
    assert _on_bound(n_after[~inside], C)
    assert (lin.weight - torch.renorm(before, 2, 0, C)).abs().max() <= 1e-6


@pytest.mark.parametrize(
    "layer, unit_dim", [(nn.Conv2d(3, 5, 3), 0), (nn.Conv1d(2, 4, 5), 0), (nn.ConvTranspose2d(5, 3, 3), 1)]
)
def test_conv_filters_and_transposed_units(layer, unit_dim):
    with torch.no_grad():
        layer.weight.mul_(20.0)
        layer.weight.select(unit_dim, 0).mul_(0.001)  # one unit well inside the ball
    before = layer.weight.detach().clone()
    cb = MaxNormConstraint(max_norm=C, module_types=[type(layer)])
    selected = cb.select(nn.Sequential(layer))
    assert [d for _, d in selected.values()] == [unit_dim]
    cb.project(selected.values())
    n = row_norms(layer.weight.double(), unit_dim)
    assert torch.equal(layer.weight.select(unit_dim, 0), before.select(unit_dim, 0))
    assert _on_bound(n[1:], C)
    expected = torch.renorm(before.transpose(0, unit_dim), 2, 0, C).transpose(0, unit_dim)
    assert (layer.weight - expected).abs().max() <= 1e-6


def test_small_rows_never_shrink_unlike_keras():
    w = torch.tensor([[1e-6, 0.0], [0.3, 0.4], [3.0, 4.0]])
    lin = nn.Linear(2, 3)
    with torch.no_grad():
        lin.weight.copy_(w)
    cb = MaxNormConstraint(max_norm=1.0)
    sel = list(cb.select(nn.Sequential(lin)).values())
    keras = w.clone()
    for _ in range(100):
        cb.project(sel)
        n = row_norms(keras)[:, None]
        keras = keras * n.clamp(0, 1.0) / (n + 1e-7)  # Keras' MaxNorm formula
    assert torch.equal(lin.weight[:2], w[:2])
    assert row_norms(keras)[0] < 1e-9  # the 1e-6 row went to ~0 under Keras' rule
    assert cb.num_applications == 100


def test_bound_after_real_training_steps_and_head_left_out(quiet_trainer):
    model = _classifier(lr=5.0)
    cb = MaxNormConstraint(max_norm=C)
    quiet_trainer(max_steps=3, callbacks=[cb]).fit(model, _data())
    assert sorted(cb.constrained) == ["features.layers.1.weight", "features.layers.3.weight"]  # no head
    for name, (w, d) in cb.constrained.items():
        assert row_norms(w, d).max() <= C + 1e-6, name
    assert row_norms(model.head.weight).max() > C  # the logistic-regression head is not constrained
    assert cb.num_applications == 1 + 3  # fit start + one per optimizer step


def test_under_bound_rows_bit_identical_through_training(quiet_trainer):
    model = _classifier(lr=0.0)  # the step leaves weights unchanged: only the projection can move them
    layer = model.features.layers[1]
    norms = row_norms(layer.weight)
    c = float(norms.median())
    before = layer.weight.detach().clone()
    cb = MaxNormConstraint(max_norm=c)
    quiet_trainer(max_steps=2, callbacks=[cb]).fit(model, _data())
    inside = norms <= c
    assert torch.equal(layer.weight[inside], before[inside])
    assert _on_bound(row_norms(layer.weight.double())[~inside], c)


def test_resume_on_the_bound_bit_exact_and_counts_steps_plus_one(tmp_path, quiet_trainer):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def fit(max_epochs, ckpt_path=None, save=False):
        model, cb = _classifier(lr=5.0), MaxNormConstraint(max_norm=C)
        cbs = [cb] + (
            [ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_on_train_epoch_end=True)] if save else []
        )
        trainer = quiet_trainer(max_epochs=max_epochs, callbacks=cbs, enable_checkpointing=save)
        trainer.fit(model, _data(), ckpt_path=ckpt_path)
        return model, cb

    full, full_cb = fit(3)
    fit(1, save=True)
    resumed, cb = fit(3, ckpt_path=str(tmp_path / "epoch=0.ckpt"))
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    for w, d in cb.constrained.values():  # units sit on the bound, none above it
        norms = row_norms(w.double(), d)
        assert (norms <= C).all() and (norms >= C * (1 - BOUND_RTOL)).any()
    assert cb.num_applications == full_cb.num_applications == 3 * 4 + 1  # fit start + 12 steps, in both runs


def test_once_per_step_under_gradient_accumulation(quiet_trainer):
    cb = MaxNormConstraint(max_norm=C)
    trainer = quiet_trainer(max_epochs=1, accumulate_grad_batches=2, callbacks=[cb])
    trainer.fit(_classifier(lr=1.0), _data(n=16, batch_size=2))  # 8 batches -> 4 optimizer steps
    assert trainer.global_step == 4
    assert cb.num_applications == 1 + 4


class _ManualScaler(LightningModule):
    """Manual optimisation with a CPU GradScaler; batch ``inf_at`` gets an inf gradient (the step is skipped)."""

    def __init__(self, inf_at: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(16, 8))
        self.head = nn.Linear(8, 3)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
        self.inf_at = inf_at
        self.snapshots: list[torch.Tensor] = []
        self.hook_counts: list[int] = []

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        opt = self.optimizers().optimizer
        opt.zero_grad()
        loss = nn.functional.cross_entropy(self.head(torch.relu(self.features(x))), y)
        self.scaler.scale(loss).backward()
        if batch_idx == self.inf_at:
            self.features[1].weight.grad[0, 0] = float("inf")
        self.scaler.step(opt)
        self.scaler.update()
        self.snapshots.append(self.features[1].weight.detach().clone())
        self.hook_counts.append(self.trainer.callbacks[0].num_applications)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=5.0)


def test_amp_skipped_step_is_not_projected(quiet_trainer):
    torch.manual_seed(0)
    model = _ManualScaler(inf_at=1)
    cb = MaxNormConstraint(max_norm=C)
    quiet_trainer(max_epochs=1, callbacks=[cb]).fit(model, _data(n=12, batch_size=4))  # 3 batches
    assert model.hook_counts == [2, 2, 3]  # fit start, step 0; step 1 skipped on inf; step 2
    assert torch.equal(model.snapshots[1], model.snapshots[0])  # skipped step: nothing moved
    assert not torch.equal(model.snapshots[2], model.snapshots[1])
    assert row_norms(model.features[1].weight).max() <= C + 1e-6


class _TwoOptimizers(LightningModule):
    """Manual optimisation: optimizer 0 owns ``a``, optimizer 1 owns ``b``; they step alternately."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.a, self.b = nn.Linear(16, 8), nn.Linear(8, 3)
        self.checks: list[tuple[str, float, bool]] = []

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        opt_a, opt_b = self.optimizers()
        loss = nn.functional.cross_entropy(self.b(torch.relu(self.a(x.flatten(1)))), y)
        opt = opt_a if batch_idx % 2 == 0 else opt_b
        other = self.b if batch_idx % 2 == 0 else self.a
        other_before = other.weight.detach().clone()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        layer = self.a if batch_idx % 2 == 0 else self.b
        self.checks.append(
            (
                type(opt.optimizer).__name__,
                float(row_norms(layer.weight).max()),
                torch.equal(other.weight, other_before),
            )
        )

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.a.parameters(), lr=5.0), torch.optim.Adam(self.b.parameters(), lr=2.0)


def test_after_each_optimizer_on_its_own_weights(quiet_trainer):
    torch.manual_seed(0)
    model = _TwoOptimizers()
    cb = MaxNormConstraint(max_norm=C)
    quiet_trainer(max_epochs=1, callbacks=[cb]).fit(model, _data(n=16, batch_size=4))
    assert [name for name, _, _ in model.checks] == ["SGD", "Adam", "SGD", "Adam"]
    assert all(norm <= C + 1e-6 for _, norm, _ in model.checks)
    assert all(untouched for _, _, untouched in model.checks)  # the other optimizer's weights did not move
    assert cb.num_applications == 1 + 4


class _Capture(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "capture"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.records.append(dict(metrics))

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass


def test_logs_fraction_of_units_on_the_bound(quiet_trainer):
    logger = _Capture()
    cb = MaxNormConstraint(max_norm=C, log_every_n_steps=2)
    quiet_trainer(max_steps=4, callbacks=[cb], logger=logger).fit(_classifier(lr=5.0), _data())
    recs = [r for r in logger.records if any(k.startswith("maxnorm/") for k in r)]
    assert len(recs) == 2
    for rec in recs:
        assert set(rec) == {f"maxnorm/on_bound/{n}" for n in cb.constrained}
        assert all(0.0 <= v <= 1.0 for v in rec.values())
    fractions = cb.fraction_on_bound()
    for name, (w, d) in cb.constrained.items():
        assert float(fractions[name]) == pytest.approx(float((row_norms(w, d) >= C * (1 - 1e-5)).float().mean()))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(max_norm=0.0), "`max_norm` must be a finite number > 0, got 0.0"),
        (dict(max_norm=-3), "`max_norm`"),
        (dict(max_norm=float("nan")), "`max_norm`"),
        (dict(module_types=["Lineer"]), "`module_types`"),
        (dict(module_types=[]), "`module_types`"),
        (dict(dim="rows"), "`dim`"),
        (dict(log_every_n_steps=0), "`log_every_n_steps`"),
        (dict(include=[3]), "`include`"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, fragment):
    with pytest.raises(ValueError) as err:
        MaxNormConstraint(**kwargs)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(include=["encoder.*"]), "`include` pattern 'encoder.*' matches no"),
        (dict(exclude=["*.gamma"]), "`exclude` pattern '*.gamma' matches no"),
    ],
)
def test_unmatched_patterns_fail_before_training(kwargs, fragment, quiet_trainer):
    model = _classifier(lr=1.0)
    with pytest.raises(ValueError, match=fragment.replace("*", r"\*").replace(".", r"\.")):
        quiet_trainer(max_steps=1, callbacks=[MaxNormConstraint(**kwargs)]).fit(model, _data())
    assert model.global_step == 0


def test_include_exclude_select():
    model = _classifier(lr=1.0)
    names = [n for n, _ in model.named_parameters() if n.endswith("weight") and n.startswith("features")]
    cb = MaxNormConstraint(exclude=[names[0]])
    assert sorted(cb.select(model)) == sorted(names[1:])
    cb = MaxNormConstraint(include=["head.*"], exclude_head=False)
    assert list(cb.select(model)) == ["head.weight"]


def test_fsdp_refused_at_setup():
    from lightning.pytorch.strategies import FSDPStrategy

    fake_trainer = SimpleNamespace(strategy=FSDPStrategy.__new__(FSDPStrategy))
    with pytest.raises(MisconfigurationException, match="cannot run under FSDPStrategy"):
        MaxNormConstraint().setup(fake_trainer, _classifier(lr=1.0), "fit")


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_weights_identical_across_processes(tmp_path, quiet_trainer):
    from _callback_helpers import DumpWeights

    model = _classifier(lr=5.0)
    cb = MaxNormConstraint(max_norm=C)
    trainer = quiet_trainer(max_steps=3, devices=2, strategy="ddp_spawn", callbacks=[cb, DumpWeights(str(tmp_path))])
    trainer.fit(model, _data(n=32, batch_size=4))
    w0 = torch.load(tmp_path / "rank0.pt")
    w1 = torch.load(tmp_path / "rank1.pt")
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    for k, (_unit_dim, norm_max) in torch.load(tmp_path / "bounds0.pt").items():
        assert norm_max <= C + 1e-6, k
    assert len(torch.load(tmp_path / "bounds0.pt")) == 2  # the two hidden layers, not the head


def test_mnist_dropout_maxnorm_config_parses(capsys):
    from pathlib import Path

    from lightning_deepfeat.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "mnist_dropout_maxnorm.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "lightning_deepfeat.callbacks.MaxNormConstraint" in out and "max_norm: 3.5" in out
    assert "lightning_deepfeat.callbacks.DivideLROnPlateau" in out and "monitor: train_error" in out
    assert "input_dropout: 0.2" in out and "dropout: 0.5" in out and "MNISTDataModule" in out
