"""DivideLROnPlateau: torch-equivalent decisions, right on negative metrics, DDP-consistent, resumable."""

from __future__ import annotations

import json
import math

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from _callback_helpers import LRRecorder, RankDivergentModule, ScriptedMetricModule, tiny_loader
from lightning_deepfeat.callbacks import DivideLROnPlateau

NAN = float("nan")


def _sgd(lrs: list[float]) -> torch.optim.Optimizer:
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs])


def _run_both(stream, lrs=(1.0,), **kw):
    """LR trace of torch's ReduceLROnPlateau(factor=1/divisor) and ours on the same stream."""
    divisor = kw.pop("divisor", 10.0)
    torch_opt, our_opt = _sgd(list(lrs)), _sgd(list(lrs))
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_opt, factor=1.0 / divisor, **kw)
    ours = DivideLROnPlateau(divisor=divisor, verbose=False, **kw)
    theirs_trace, ours_trace = [], []
    for v in stream:
        sched.step(v)
        ours.step(v, [our_opt])
        theirs_trace.append([g["lr"] for g in torch_opt.param_groups])
        ours_trace.append([g["lr"] for g in our_opt.param_groups])
    return theirs_trace, ours_trace


PLATEAU = [1.0, 0.8, 0.7] + [0.7] * 12
STREAMS = {
    "patience": (PLATEAU, dict(patience=2)),
    "patience0_mode_max": ([0.1, 0.2, 0.2, 0.3, 0.3, 0.3, 0.25, 0.3, 0.4, 0.4], dict(patience=0, mode="max")),
    "cooldown": (PLATEAU, dict(patience=1, cooldown=2)),
    "threshold_rel": ([1.0 * 0.995**i for i in range(15)], dict(patience=1, threshold=0.01, threshold_mode="rel")),
    "threshold_abs": ([1.0 - 0.005 * i for i in range(15)], dict(patience=1, threshold=0.01, threshold_mode="abs")),
    "min_lr": (PLATEAU, dict(patience=0, min_lr=0.005)),
    "min_lr_per_group": (PLATEAU, dict(patience=0, min_lr=[0.001, 0.03], lrs=(1.0, 3.0))),
    "nan": ([1.0, NAN, 0.9, NAN, NAN, NAN, 0.5, NAN, NAN, 0.4, 0.4, 0.4], dict(patience=1)),
    "inf_plateau": ([1.0, math.inf, math.inf, math.inf, 0.9, 0.9], dict(patience=1)),
}


@pytest.mark.parametrize("name", list(STREAMS))
def test_lr_sequence_equals_torch(name):
    stream, kw = STREAMS[name]
    kw = dict(kw)
    lrs = kw.pop("lrs", (1.0,))
    theirs, ours = _run_both(stream, lrs=lrs, **kw)
    flat = lambda trace: [lr for row in trace for lr in row]  # noqa: E731
    assert flat(ours) == pytest.approx(flat(theirs), rel=1e-12)
    assert any(o != list(lrs) for o in ours)  # the stream exercises at least one drop
    floors = kw.get("min_lr", 0.0)
    floors = floors if isinstance(floors, list) else [floors] * len(lrs)
    # each move is an exact division, or to the floor; strict=False: the last state has no successor
    for before, after in zip([list(lrs)] + ours, ours, strict=False):
        for b, a, floor in zip(before, after, floors, strict=True):
            assert a == b or a == b / 10.0 or (a == floor and b / 10.0 < floor)


def test_negative_metric_drop_that_torch_misses():
    # a loss-like metric that is negative: -1.0 then -0.95 is a 5% *worsening* (mode min)
    stream = [-1.0, -0.95, -0.95, -0.95]
    theirs, ours = _run_both(stream, patience=1, threshold=0.1)
    assert [t[0] for t in theirs] == [1.0, 1.0, 1.0, 1.0]  # torch: -0.95 < -1.0*(1-0.1) = -0.9 "improves"
    assert [o[0] for o in ours] == [1.0, 1.0, 0.1, 0.1]  # ours: needs < -1.0 - 0.1, two bad checks > patience 1
    cb = DivideLROnPlateau(mode="max", threshold=0.1)
    assert cb.is_improvement(-0.85, -1.0) and not cb.is_improvement(-0.95, -1.0)


def test_nan_and_inf_never_improve():
    cb = DivideLROnPlateau()
    for bad in (NAN, math.inf, -math.inf):
        assert not cb.is_improvement(bad, math.inf)
        assert not cb.is_improvement(bad, 1.0)
    assert cb.is_improvement(5.0, math.inf)


def test_divisor_keeps_group_ratios_and_max_drops_stop():
    opt = _sgd([0.3, 0.03])
    cb = DivideLROnPlateau(divisor=4, patience=0, max_drops=2, stop_on_final_plateau=True, verbose=False)
    for v in [1.0, 1.0, 1.0, 1.0]:
        cb.step(v, [opt])
    assert [g["lr"] for g in opt.param_groups] == [0.3 / 4 / 4, 0.03 / 4 / 4]
    assert cb.num_drops == 2 and cb.stopped


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(divisor=1.0), "`divisor` must be a finite number > 1, got 1.0"),
        (dict(divisor=0.5), "`divisor`"),
        (dict(patience=-1), "`patience` must be an int >= 0, got -1"),
        (dict(mode="lowest"), "`mode` must be one of 'min', 'max', got 'lowest'"),
        (dict(threshold_mode="relative"), "`threshold_mode`"),
        (dict(threshold=-0.1), "`threshold`"),
        (dict(cooldown=-2), "`cooldown`"),
        (dict(min_lr=-1e-3), "`min_lr`"),
        (dict(max_drops=-1), "`max_drops`"),
        (
            dict(check_every_n_steps=0),
            "`check_every_n_steps` must be a positive int or None (None: once per epoch), got 0",
        ),
        (dict(stop_on_final_plateau=True), "`stop_on_final_plateau=True` needs `max_drops`"),
        (dict(monitor=""), "`monitor`"),
        (dict(warmup_steps=-1), "`warmup_steps` must be an int >= 0, got -1"),
        (dict(warmup_steps=2.5), "`warmup_steps` must be an int >= 0, got 2.5"),
        (dict(warmup_start_factor=1.5), "`warmup_start_factor` must be a finite number in [0, 1], got 1.5"),
        (dict(warmup_start_factor=-0.1), "`warmup_start_factor` must be a finite number in [0, 1], got -0.1"),
        (dict(warmup_start_factor=float("nan")), "`warmup_start_factor` must be a finite number in [0, 1], got nan"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, fragment):
    with pytest.raises(ValueError) as err:
        DivideLROnPlateau(**kwargs)
    assert fragment in str(err.value)


def test_min_lr_list_length_checked_before_training(quiet_trainer):
    cb = DivideLROnPlateau(monitor="metric", min_lr=[0.0, 0.0, 0.0])
    model = ScriptedMetricModule(stream=[1.0] * 3, groups=2)
    with pytest.raises(ValueError, match="`min_lr` has 3 values but the optimizers have 2 parameter groups"):
        quiet_trainer(max_epochs=1, callbacks=[cb]).fit(model, tiny_loader())
    assert model.global_step == 0


def test_scheduler_conflict_fails_at_fit_start(quiet_trainer):
    model = ScriptedMetricModule(stream=[1.0] * 3, with_scheduler=True)
    with pytest.raises(MisconfigurationException, match="Two owners of the learning rate"):
        quiet_trainer(max_epochs=1, callbacks=[DivideLROnPlateau(monitor="metric")]).fit(model, tiny_loader())
    assert model.global_step == 0


def test_missing_monitor_strict_lists_keys_and_non_strict_warns(quiet_trainer):
    model = ScriptedMetricModule(stream=[1.0] * 3)
    with pytest.raises(RuntimeError, match="monitor='nope'.*Available keys: 'metric'"):
        quiet_trainer(max_epochs=1, callbacks=[DivideLROnPlateau(monitor="nope")]).fit(model, tiny_loader())
    cb = DivideLROnPlateau(monitor="nope", strict=False)
    with pytest.warns(UserWarning, match="Skipping the check"):
        quiet_trainer(max_epochs=2, callbacks=[cb]).fit(ScriptedMetricModule(stream=[1.0] * 3), tiny_loader())
    assert cb.num_checks == 0


def test_epoch_check_on_a_per_step_only_metric_is_refused(quiet_trainer):
    # logged per step only: the value at the epoch end is the last step's, not the epoch's
    model = ScriptedMetricModule(step_stream=[1.0] * 8)
    with pytest.raises(RuntimeError, match=r"'metric' is logged per step only.*on_epoch=True.*check_every_n_steps"):
        quiet_trainer(max_epochs=2, callbacks=[DivideLROnPlateau(monitor="metric")]).fit(model, tiny_loader())
    cb = DivideLROnPlateau(monitor="metric", strict=False)
    with pytest.warns(UserWarning, match="logged per step only"):
        quiet_trainer(max_epochs=2, callbacks=[cb]).fit(ScriptedMetricModule(step_stream=[1.0] * 8), tiny_loader())
    assert cb.num_checks == 0


def test_step_mode_metric_logged_at_some_steps_only(quiet_trainer):
    # logged at even steps only: the window mean is over the values logged in it, each counted once
    class EvenSteps(ScriptedMetricModule):
        def training_step(self, batch, batch_idx):
            if self.global_step % 2 == 0:
                self.log("metric", float(self.step_stream[self.global_step]), on_step=True, on_epoch=False)
            return (self.layers[0](batch[0]) ** 2).mean() * 0.0

    seen = []
    cb = DivideLROnPlateau(monitor="metric", check_every_n_steps=3, patience=10, verbose=False)
    original = cb.step
    cb.step = lambda v, opts: (seen.append(v), original(v, opts))[1]
    quiet_trainer(max_steps=6, callbacks=[cb]).fit(EvenSteps(step_stream=[1.0, 9, 4.0, 9, 7.0, 9]), tiny_loader())
    assert seen == [2.5, 7.0]  # steps 0-2: (1 + 4) / 2; steps 3-5: 7 (a value not logged again is not re-counted)


def test_warmup_lr_closed_form():
    cb = DivideLROnPlateau(warmup_steps=4, warmup_start_factor=0.2)
    assert [cb.warmup_lr(0.5, t) for t in range(6)] == [0.5 * (0.2 + (1 - 0.2) * t / 4) for t in range(4)] + [0.5, 0.5]
    assert DivideLROnPlateau().warmup_lr(0.5, 0) == 0.5  # no warm-up


def test_epoch_checks_in_trainer_match_pure_rule(quiet_trainer):
    stream = [1.0, 0.9, 0.9, 0.9, 0.9, 0.9]
    rec = LRRecorder()
    cb = DivideLROnPlateau(monitor="metric", patience=1, verbose=False)
    quiet_trainer(max_epochs=6, callbacks=[cb, rec]).fit(ScriptedMetricModule(stream=stream), tiny_loader())
    # checks after epochs 2 and 3 are bad (2 > patience 1 at epoch 3): drop takes effect in epoch 4
    assert [rec.lrs[e][0] for e in range(7)] == [1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01]
    assert cb.current_lrs == [0.01] and cb.num_checks == 6


def test_validation_metric_with_check_val_every_2_epochs(quiet_trainer):
    # Lightning's plateau scheduler raises at epoch 0 here (Lightning issue 10496).
    stream = [1.0, 1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    rec = LRRecorder()
    cb = DivideLROnPlateau(monitor="val_metric", patience=1, verbose=False)
    trainer = quiet_trainer(
        max_epochs=8, check_val_every_n_epoch=2, limit_val_batches=1, num_sanity_val_steps=0, callbacks=[cb, rec]
    )
    trainer.fit(ScriptedMetricModule(stream=stream, key="val_metric", where="val"), tiny_loader(), tiny_loader())
    # checks at epochs 1, 3, 5, 7 see 1.0, 0.9, 0.9, 0.9: bad, bad at 5 and 7 -> drop after epoch 7
    assert cb.num_checks == 4
    assert [rec.lrs[e][0] for e in range(9)] == [1.0] * 8 + [0.1]


def test_step_mode_on_mean_of_last_n_steps(quiet_trainer):
    # 2 batches per epoch; windows of 3 optimizer steps: means 1.0, 1.0, 0.5, 0.5 -> bad at 6, 12 ... with patience 0
    steps = [1.0, 1.0, 1.0, 2.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    cb = DivideLROnPlateau(monitor="metric", check_every_n_steps=3, patience=0, verbose=False)
    model = ScriptedMetricModule(step_stream=steps)
    quiet_trainer(max_steps=12, callbacks=[cb]).fit(model, tiny_loader())
    # windows: [1,1,1]=1.0 best; [2,.5,.5]=1.0 bad -> drop; [.5]*3=.5 improves; [.5]*3 bad -> drop
    assert cb.num_checks == 4 and cb.num_drops == 2
    assert cb.current_lrs == [pytest.approx(0.01, rel=1e-12)]


def test_step_mode_feature_classifier_fast_path(quiet_trainer):
    from lightning_deepfeat.models import MLP, FeatureClassifier

    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 2, 2), torch.randint(0, 3, (16,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    model = FeatureClassifier(
        features=MLP(hidden=[4], dropout=0.0),
        num_classes=3,
        input_shape=(1, 2, 2),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.0),
    )
    seen = []
    cb = DivideLROnPlateau(check_every_n_steps=2, patience=100, verbose=False)
    original = cb.step
    cb.step = lambda v, opts: (seen.append(v), original(v, opts))[1]
    quiet_trainer(max_steps=8, callbacks=[cb]).fit(model, loader)
    # lr 0: the model is fixed, so window errors are the exact errors of batches (0,1) and (2,3) of each epoch
    with torch.no_grad():
        wrong = (model(x).argmax(1) != y).double()
    expected = [wrong[:8].mean().item(), wrong[8:].mean().item()] * 2
    assert seen == pytest.approx(expected, abs=1e-12)


def _fit_record(quiet_trainer, stream, max_epochs, ckpt_dir=None, ckpt_path=None):
    rec = LRRecorder()
    cbs = [
        DivideLROnPlateau(monitor="metric", patience=1, cooldown=1, verbose=False),
        DivideLROnPlateau(monitor="metric2", mode="max", divisor=2, patience=0, verbose=False),
        rec,
    ]
    kwargs = {}
    if ckpt_dir is not None:
        cbs.append(ModelCheckpoint(dirpath=ckpt_dir, save_top_k=-1, every_n_epochs=1, filename="{epoch}"))
        kwargs["enable_checkpointing"] = True
    model = ScriptedMetricModule(stream=stream)
    model.training_step = _two_metrics(model)
    quiet_trainer(max_epochs=max_epochs, callbacks=cbs, **kwargs).fit(model, tiny_loader(), ckpt_path=ckpt_path)
    return rec.lrs, cbs


def _two_metrics(model):
    original = model.training_step

    def step(batch, batch_idx):
        model.log("metric2", torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0][model.current_epoch]), on_epoch=True)
        return original(batch, batch_idx)

    return step


def test_resume_reproduces_uninterrupted_lr_sequence(tmp_path, quiet_trainer):
    stream = [1.0, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8]
    full, _ = _fit_record(quiet_trainer, stream, 8)
    # metric (÷10, patience 1, cooldown 1) drops after epochs 3 and 6; metric2 (max, ÷2, patience 0)
    # after epochs 2, 4, 5, 6, 7: the LRs multiply
    lrs = [1.0, 1.0, 1.0, 0.5, 0.05, 0.025, 0.0125, 0.000625, 0.0003125]
    expected = dict(enumerate(lrs))
    assert {e: v[0] for e, v in full.items()} == pytest.approx(expected, rel=1e-12)
    for k in (3, 5):  # epoch 3 (index) ends with a drop: Lightning's scheduler path resumes late there
        _, cbs = _fit_record(quiet_trainer, stream, k + 1, ckpt_dir=tmp_path / f"k{k}")
        ckpt = torch.load(tmp_path / f"k{k}" / f"epoch={k}.ckpt", weights_only=False)
        states = [key for key in ckpt["callbacks"] if key.startswith("DivideLROnPlateau")]
        assert len(states) == 2  # two instances with different monitors coexist
        resumed, _ = _fit_record(quiet_trainer, stream, 8, ckpt_path=tmp_path / f"k{k}" / f"epoch={k}.ckpt")
        assert {e: resumed[e] for e in range(k + 1, 9)} == {e: full[e] for e in range(k + 1, 9)}


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_processes_take_the_same_decision(tmp_path, quiet_trainer):
    # rank 0 logs 1.0 - 0.1*epoch (improving), rank 1 logs 0.1*epoch (worsening), both without sync_dist:
    # local decisions would diverge (rank 0 never drops, rank 1 does); on the mean (0.5 forever) both agree.
    rec = LRRecorder(out_dir=str(tmp_path))
    cb = DivideLROnPlateau(monitor="metric", patience=1, verbose=False)
    trainer = quiet_trainer(max_epochs=6, devices=2, strategy="ddp_spawn", callbacks=[cb, rec])
    trainer.fit(RankDivergentModule(), tiny_loader(n=8))
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0 == r1
    # mean 0.5 at every check: bad after epochs 1, 2 -> drop used from epoch 3; again after 3, 4 -> from epoch 5
    assert [r0[str(e)][0] for e in range(7)] == pytest.approx([1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01], rel=1e-12)
