"""Probes: TrainOnly, AlternatingMinimization, ConvexHeadRefit, DropoutSchedule, the layer-wise probe and its CLI."""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_deepfeat.data import DigitsDataModule
from lightning_deepfeat.inspection import frozen
from lightning_deepfeat.models import ConvNet, FeatureClassifier
from lightning_deepfeat.probes import (
    AlternatingMinimization,
    ConvexHeadRefit,
    DropoutSchedule,
    TrainOnly,
    head_objective,
    layerwise_probe,
    parameter_layers,
    solve_logistic_head,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_model(optimizer=None, dropout: float = 0.0) -> FeatureClassifier:
    seed_everything(0)
    kwargs = {} if optimizer is None else {"optimizer": optimizer}
    return FeatureClassifier(
        ConvNet(channels=[4, 8], hidden=[16], dropout=dropout), num_classes=10, input_shape=(1, 8, 8), **kwargs
    )


def sgd_momentum(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def trainer(callbacks, max_steps: int = -1, max_epochs: int = 1, tmp_path=None, **kwargs) -> Trainer:
    return Trainer(
        max_steps=max_steps,
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path) if tmp_path else None,
        **kwargs,
    )


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@contextmanager
def lightning_messages() -> Iterator[list[str]]:
    """The messages that Lightning's console logger ``lightning.pytorch`` (``rank_zero_info``) gets in the block."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger, handler = logging.getLogger("lightning.pytorch"), Collect(logging.INFO)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def test_parameter_layers_are_w1_to_wl_then_head():
    model = tiny_model()
    layers = parameter_layers(model)
    assert [name for name, _ in layers] == ["features.conv.0", "features.conv.3", "features.fc.1", "head"]
    assert layers[0][1] == ["features.conv.0.weight", "features.conv.0.bias"]
    assert sum(len(p) for _, p in layers) == len(list(model.parameters()))


@pytest.mark.parametrize(
    "spec", [{"layers": [0]}, {"params": ["head.*"]}, {"layers": [-2], "params": ["features.conv.0.bias"]}]
)
def test_train_only_leaves_frozen_parameters_bit_identical(spec):
    model = tiny_model(optimizer=sgd_momentum)
    callback = TrainOnly(**spec)
    trainable = set(callback.resolve(model))
    before = snapshot(model)
    trainer([callback], max_steps=5).fit(model, DigitsDataModule(batch_size=64))
    after = snapshot(model)
    for name in before:
        if name in trainable:
            assert not torch.equal(before[name], after[name]), f"{name} should have moved"
        else:
            assert torch.equal(before[name], after[name]), f"{name} moved although frozen"
    assert set(callback.trainable) == trainable and set(callback.frozen) == set(before) - trainable
    assert all(p.requires_grad for p in model.parameters())  # restored at fit end
    # momentum buffers exist only for the trained tensors
    optimizer = model.trainer.optimizers[0]
    with_state = {n for n, p in model.named_parameters() if optimizer.state.get(p)}
    assert with_state == trainable


def test_frozen_puts_back_the_exact_requires_grad_flags():
    model = tiny_model()
    params = dict(model.named_parameters())
    params["features.conv.0.bias"].requires_grad_(False)  # the user's own frozen tensor

    def flags():
        return {n: p.requires_grad for n, p in model.named_parameters()}

    before = flags()
    with frozen(model) as saved:
        assert saved == before
        assert not any(flags().values())
    assert flags() == before
    with pytest.raises(RuntimeError, match="inside"), frozen(model, ["head.weight"]):
        assert [n for n, on in flags().items() if not on] == ["features.conv.0.bias", "head.weight"]
        raise RuntimeError("inside the block")
    assert flags() == before


def test_probes_leave_a_user_frozen_tensor_frozen_and_untouched():
    def user_model():
        model = tiny_model(optimizer=sgd_momentum)
        dict(model.named_parameters())["features.conv.0.bias"].requires_grad_(False)
        return model

    for callback in (
        TrainOnly(params=["features.conv.0.*", "head.*"]),
        AlternatingMinimization(head_steps=1, body_steps=1),
    ):
        model = user_model()
        before = snapshot(model)
        trainer([callback], max_steps=4).fit(model, DigitsDataModule(batch_size=64))
        bias = dict(model.named_parameters())["features.conv.0.bias"]
        assert not bias.requires_grad and torch.equal(bias, before["features.conv.0.bias"]), type(callback).__name__
        assert all(p.requires_grad for n, p in model.named_parameters() if n != "features.conv.0.bias")
    model = user_model()
    datamodule = DigitsDataModule(batch_size=64)
    datamodule.setup("fit")
    layerwise_probe(model, datamodule, steps=2)
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == ["features.conv.0.bias"]


def _train_only_fit(root, model, ckpt_path=None, **spec) -> TrainOnly:
    callback = TrainOnly(**spec, verbose=True)
    Trainer(
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=0,
        deterministic=True,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[callback, ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=2, save_top_k=-1)],
    ).fit(model, DigitsDataModule(batch_size=64), ckpt_path=ckpt_path)
    return callback


def test_train_only_resumes_exactly_and_refuses_another_selection(tmp_path):
    trained = ["features.conv.0.weight", "features.conv.0.bias", "head.weight", "head.bias"]
    start = snapshot(tiny_model(optimizer=sgd_momentum))
    reference = tiny_model(optimizer=sgd_momentum)
    with lightning_messages() as messages:
        _train_only_fit(tmp_path / "ref", reference, layers=[0, -1])
    assert f"TrainOnly: training 4 tensors: {', '.join(trained)}" in messages  # verbose, through rank_zero_info
    ckpt = tmp_path / "ref" / "ckpt" / "epoch=1-step=4.ckpt"  # epoch 1 after 1 of its 3 batches
    assert torch.load(ckpt, weights_only=True)["callbacks"][TrainOnly(layers=0).state_key] == {"trainable": trained}

    resumed = tiny_model(optimizer=sgd_momentum)
    callback = _train_only_fit(tmp_path / "run", resumed, ckpt_path=ckpt, layers=[0, -1])
    assert callback.trainable == trained
    for name, value in snapshot(reference).items():
        assert torch.equal(snapshot(resumed)[name], value), f"{name} differs after resume"
        assert torch.equal(value, start[name]) == (name not in trained), name

    # the same checkpoint resumed with another selection: refused before any step, flags restored
    other = tiny_model(optimizer=sgd_momentum)
    with pytest.raises(
        ValueError,
        match=r"TrainOnly trains \['head.weight', 'head.bias'\] but the run of the checkpoint "
        r"being resumed trained \['features.conv.0.weight'.*Resume with the same",
    ):
        _train_only_fit(tmp_path / "other", other, ckpt_path=ckpt, layers=-1)
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(p, saved[n]) for n, p in other.named_parameters())  # the checkpoint's weights, no step
    assert all(p.requires_grad for p in other.parameters())


def test_train_only_rejects_bad_arguments_before_training():
    with pytest.raises(ValueError, match="params.*layers"):
        TrainOnly()
    with pytest.raises(ValueError, match="layers"):
        TrainOnly(layers=["0"])
    model = tiny_model()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"pattern 'features\.nope\.\*' matches no parameter"):
        trainer([TrainOnly(params=["features.nope.*"])], max_steps=2).fit(model, DigitsDataModule(batch_size=64))
    with pytest.raises(ValueError, match=r"index 7 is out of range.*-4 … 3"):
        trainer([TrainOnly(layers=[7])], max_steps=2).fit(model, DigitsDataModule(batch_size=64))
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


class StepRecorder(Callback):
    """Records, per optimizer step, which parameters and which optimizer-state tensors changed."""

    def __init__(self) -> None:
        self.changed_params: list[set[str]] = []
        self.changed_state: list[set[str]] = []
        self.frozen_state_equal: list[bool] = []

    @staticmethod
    def _state(model, optimizer):
        out = {}
        for name, p in model.named_parameters():
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    out[f"{name}:{key}"] = value.detach().clone()
        return out

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._params = snapshot(pl_module)
        self._opt_state = self._state(pl_module, trainer.optimizers[0])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = snapshot(pl_module)
        self.changed_params.append({n for n in now if not torch.equal(now[n], self._params[n])})
        state = self._state(pl_module, trainer.optimizers[0])
        self.changed_state.append(
            {
                k.split(":")[0]
                for k in state
                if k not in self._opt_state or not torch.equal(state[k], self._opt_state[k])
            }
        )


@pytest.mark.parametrize(
    "make_optimizer",
    [sgd_momentum, lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-4)],
    ids=["sgd_momentum", "adam"],
)
def test_alternating_touches_exactly_the_scheduled_block(make_optimizer):
    model = tiny_model(optimizer=make_optimizer)
    alternating = AlternatingMinimization(head_steps=2, body_steps=1)
    recorder = StepRecorder()
    top, body = alternating.blocks(model)
    assert top == ["features.fc.1.weight", "features.fc.1.bias", "head.weight", "head.bias"]
    assert body == ["features.conv.0.weight", "features.conv.0.bias", "features.conv.3.weight", "features.conv.3.bias"]
    trainer([alternating, recorder], max_steps=7).fit(model, DigitsDataModule(batch_size=64))
    expected = [set(top), set(top), set(body)] * 3
    assert recorder.changed_params == expected[:7]
    # optimizer state (momentum / Adam moments) of the frozen block is untouched at every step
    assert recorder.changed_state == expected[:7]
    assert all(p.requires_grad for p in model.parameters())


def test_alternating_without_last_layer_in_head_block_and_bad_input():
    model = tiny_model(optimizer=sgd_momentum)
    alternating = AlternatingMinimization(head_steps=1, body_steps=2, head_includes_last_layer=False)
    top, body = alternating.blocks(model)
    assert top == ["head.weight", "head.bias"] and len(body) == 6
    recorder = StepRecorder()
    trainer([alternating, recorder], max_steps=3).fit(model, DigitsDataModule(batch_size=64))
    assert recorder.changed_params == [set(top), set(body), set(body)]
    for bad in ({"head_steps": 0}, {"body_steps": 1.5}, {"head_steps": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            AlternatingMinimization(**bad)


def test_solve_logistic_head_reaches_tolerance_and_is_optimal():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(300, 12, generator=gen)
    labels = torch.randint(0, 4, (300,), generator=gen)
    A, b, grad_norm, _ = solve_logistic_head(feats, labels, 4, l2=1e-2, tol=1e-7)
    assert grad_norm < 1e-7
    best = head_objective(A, b, feats.double(), labels, 1e-2)
    for _ in range(5):  # convex problem: no nearby point is better
        dA = 1e-3 * torch.randn(A.shape, generator=gen, dtype=torch.float64)
        assert head_objective(A + dA, b, feats.double(), labels, 1e-2) >= best


def test_convex_head_refit_is_not_worse_than_sgd_head():
    model = tiny_model(optimizer=sgd_momentum, dropout=0.3)
    refit = ConvexHeadRefit(l2=1e-3, tol=1e-5, keep_better=True)
    datamodule = DigitsDataModule(batch_size=64)
    with lightning_messages() as messages:
        trainer([refit], max_epochs=1).fit(model, datamodule)
    result = refit.results[-1]
    assert result.refit_loss <= result.sgd_loss
    assert result.grad_norm < 1e-5
    assert result.kept == "refit"
    assert [m for m in messages if m.startswith("ConvexHeadRefit (epoch 0): SGD head F=")]  # through rank_zero_info
    # the kept head is the optimum on the same frozen features: recompute F and its gradient
    feats, labels = refit.features_of(model, datamodule)
    A = model.head.weight.detach().double().requires_grad_(True)
    b = model.head.bias.detach().double().requires_grad_(True)
    loss = head_objective(A, b, feats.double(), labels, 1e-3)
    loss.backward()
    assert loss.item() == pytest.approx(result.refit_loss, abs=1e-5)  # float32 storage of the head
    assert torch.cat([A.grad.flatten(), b.grad.flatten()]).norm() < 1e-3


def test_convex_head_refit_rejects_bad_arguments():
    for kwargs, name in (
        ({"tol": 0}, "tol"),
        ({"l2": -1.0}, "l2"),
        ({"every_n_epochs": 0}, "every_n_epochs"),
        ({"split": "test"}, "split"),
    ):
        with pytest.raises(ValueError, match=name):
            ConvexHeadRefit(**kwargs)


def test_dropout_schedule_probabilities():
    linear = DropoutSchedule("linear", start=0.5, end=0.0)
    assert [linear.probability(e, 5) for e in range(6)] == pytest.approx([0.5, 0.375, 0.25, 0.125, 0.0, 0.0])
    step = DropoutSchedule("step", start=0.0, milestones=[2, 4], values=[0.3, 0.6])
    assert [step.probability(e) for e in range(6)] == [0.0, 0.0, 0.3, 0.3, 0.6, 0.6]
    assert DropoutSchedule("constant", start=0.2).probability(9) == 0.2
    for kwargs, name in (
        ({"schedule": "cosine"}, "schedule"),
        ({"start": 1.0}, "start"),
        ({"schedule": "linear"}, "end"),
        ({"schedule": "step", "end": 0.1}, "milestones"),
        ({"schedule": "step", "milestones": [1], "values": [0.1, 0.2]}, "values"),
    ):
        with pytest.raises(ValueError, match=name):
            DropoutSchedule(**kwargs)


class MetricsAtEpochEnd(Callback):
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self.p: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.p.append(next(m.p for m in pl_module.modules() if isinstance(m, torch.nn.Dropout)))

    def on_train_epoch_end(self, trainer, pl_module):
        self.rows.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def test_dropout_schedule_sets_p_and_logs_generalization_gap():
    model = tiny_model(dropout=0.5)
    schedule = DropoutSchedule("linear", start=0.6, end=0.0)
    probe = MetricsAtEpochEnd()
    trainer([schedule, probe], max_epochs=3, limit_train_batches=3, limit_val_batches=2).fit(
        model, DigitsDataModule(batch_size=32)
    )
    assert probe.p == pytest.approx([0.6, 0.3, 0.0])
    for row in probe.rows:
        assert row["generalization_gap"] == pytest.approx(row["val_error"] - row["train_error"], abs=1e-6)
    assert [r["dropout_p"] for r in probe.rows] == pytest.approx([0.6, 0.3, 0.0])
    with pytest.raises(ValueError, match="no nn.Dropout"):
        trainer([DropoutSchedule("constant", start=0.1)], max_steps=1).fit(
            tiny_model(dropout=0.0), DigitsDataModule(batch_size=32)
        )


def test_layerwise_probe_restores_weights_and_training_all_layers_helps_most():
    model = tiny_model(optimizer=sgd_momentum)
    datamodule = DigitsDataModule(batch_size=64)
    datamodule.setup("fit")
    before = snapshot(model)
    runs = layerwise_probe(model, datamodule, steps=30)
    assert [r.name for r in runs] == [
        "W_1 (features.conv.0)",
        "W_2 (features.conv.3)",
        "W_3 (features.fc.1)",
        "head only",
        "all layers",
    ]
    assert all(len(r.step_losses) == 30 for r in runs)
    assert len({r.loss_before for r in runs}) == 1  # the same starting weights
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert all(p.requires_grad for p in model.parameters())
    by_name = {r.name: r for r in runs}
    assert by_name["all layers"].decrease > max(r.decrease for r in runs if r.name != "all layers")
    assert by_name["all layers"].loss_after < by_name["all layers"].loss_before
    with pytest.raises(ValueError, match="steps"):
        layerwise_probe(model, datamodule, steps=0)


TINY_CONFIG = """\
seed_everything: 0
model:
  class_path: FeatureClassifier
  init_args:
    features:
      class_path: ConvNet
      init_args: {channels: [4], hidden: [16], dropout: 0.0}
optimizer:
  class_path: SGD
  init_args: {lr: 0.05, momentum: 0.9}
data:
  class_path: DigitsDataModule
  init_args: {batch_size: 64}
"""


@pytest.mark.slow
def test_cli_probe_layerwise_end_to_end(tmp_path, capsys):
    from PIL import Image

    from lightning_deepfeat.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    out = tmp_path / "out"
    cli = main(["probe", "layerwise", "--config", str(config), "--steps", "4", "--out", str(out)])
    runs = cli.result["runs"]
    assert [r.name for r in runs] == ["W_1 (features.conv.0)", "W_2 (features.fc.1)", "head only", "all layers"]
    with open(out / "layerwise_losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 4 and rows[0]["step"] == "1" and float(rows[0]["loss"]) > 0
    assert (out / "layerwise_losses.png").read_bytes()[:8] == PNG_MAGIC
    assert Image.open(out / "layerwise_losses.png").size == (640, 400)
    assert "| all layers |" in (out / "layerwise_table.md").read_text()
    assert "| head only |" in capsys.readouterr().out
    # a checkpoint as the starting point: the probe's "before" loss is the checkpoint's
    ckpt = tmp_path / "w.ckpt"
    torch.save({"state_dict": {k: torch.zeros_like(v) for k, v in cli.model.state_dict().items()}}, ckpt)
    cli2 = main(
        ["probe", "layerwise", "--config", str(config), "--ckpt_path", str(ckpt), "--steps", "1", "--out", str(out)]
    )
    assert cli2.result["runs"][0].loss_before == pytest.approx(torch.log(torch.tensor(10.0)).item(), abs=1e-5)


def test_cli_probe_rejects_bad_input(tmp_path):
    from lightning_deepfeat.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    with pytest.raises(ValueError, match="`--steps` must be a positive int, got 0"):
        main(["probe", "layerwise", "--config", str(config), "--steps", "0", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="probe name 'sideways'; allowed: layerwise"):
        main(["probe", "sideways", "--config", str(config)])
    with pytest.raises(FileNotFoundError, match="missing.ckpt.*does not exist"):
        main(["probe", "layerwise", "--config", str(config), "--ckpt_path", str(tmp_path / "missing.ckpt")])
    assert not os.path.exists(tmp_path / "layerwise_losses.csv")


# The worked example "Add a probe" of CONTRIBUTING.md, verbatim: the test runs exactly this code.
def _contributing_probe_example() -> str:
    """The "Add a probe" example of CONTRIBUTING.md, as written there."""
    text = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text()
    return re.search(r"```python\n(# Example: a new probe\n.*?)```", text, flags=re.S).group(1)


PROBE_EXAMPLE = _contributing_probe_example()


def test_contributing_example_probe_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the example writes nothing; a stray file would show up here
    namespace: dict[str, object] = {"__name__": "contributing_example"}
    exec(compile(PROBE_EXAMPLE, "CONTRIBUTING.md", "exec"), namespace)
    model, norms = namespace["model"], namespace["norms"]
    assert sorted(norms) == ["layer_norm/features.conv.0", "layer_norm/features.fc.1", "layer_norm/head"]
    params = dict(model.named_parameters())
    for layer, names in parameter_layers(model):  # the last epoch's values are the norms of the final weights
        theta = torch.cat([params[name].detach().flatten() for name in names])
        assert norms[f"layer_norm/{layer}"] == pytest.approx(torch.linalg.vector_norm(theta).item(), rel=1e-6)
    assert norms["layer_norm/head"] != pytest.approx(0.0)
    assert "layer_norm/head" in capsys.readouterr().out
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match=r"`every_n_epochs` must be a positive int, got 0\."):
        namespace["LayerNorms"](every_n_epochs=0)
