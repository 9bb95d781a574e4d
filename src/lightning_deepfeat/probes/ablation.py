r"""``deepfeat ablate``: train the recipe, then the recipe with one ingredient taken out, at the same budget.

The claim the library packages is that learned ReLU features with max-pooling, dropout,
max-norm, translations and flips and a ÷10 plateau schedule, all under logistic regression,
are what made deep nets work. The ablation measures each ingredient's share: every *arm* is
the same ``deepfeat fit`` config with one ingredient removed or replaced (:data:`ABLATION_ARMS`),
trained with the same ``max_epochs``, batch size, data and seeds as the full recipe, so the
difference in test error

.. math::
    Δ_a = \overline{e}_{\text{test}}(a) - \overline{e}_{\text{test}}(\text{full})

(means over the seeds) is what the ingredient bought at that budget.

Command::

    deepfeat ablate --config CONFIG [--arms a,b,...] [--seeds 0,1] [--max_epochs N] [--out DIR]

Each (arm, seed) run is ``deepfeat fit`` of the arm's config, written to
``OUT/<arm>/seed<k>/config.yaml``, with ``--trainer.default_root_dir OUT/<arm>/seed<k>`` and
``--seed_everything k``; it is run in this process (see :func:`run_arm`). ``OUT`` gets
``ablation.csv`` (one row per arm and seed), ``ablation.md`` (one row per arm) and
``ablation.png`` (test error per arm, one dot per seed); finished runs are skipped when the
command is run again with the same ``--out``, so a killed ablation continues where it stopped.
"""

from __future__ import annotations

import argparse
import copy
import csv
import gc
import importlib
import inspect
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import Callback, LightningModule, Trainer

PROG = "deepfeat ablate"

#: every arm, in the order of the table, and what it changes in the config
ABLATION_ARMS: dict[str, str] = {
    "full": "the config as is",
    "no_dropout": "every dropout rate of the feature net set to 0",
    "no_maxnorm": "MaxNormConstraint callbacks removed",
    "no_dropout_maxnorm": "neither dropout nor max-norm",
    "no_translate": "no random translations (translate 0, no random crops); tested on single images",
    "no_flip": "no horizontal flips; tested on single images",
    "no_augment": "no translations, crops or flips; tested on single images",
    "constant_lr": "DivideLROnPlateau (and any LR scheduler) removed: the optimizer's initial LR throughout",
    "tanh": "tanh instead of ReLU in the feature net",
    "no_maxpool": "average pooling instead of max-pooling (ConvNet pooling='avg')",
    "frozen_features": "φ frozen at its random initialisation, only the logistic-regression head trained (TrainOnly)",
    "logreg_pixels": "logistic regression on the raw pixels (φ = flatten), no max-norm",
    "mlp": "a ReLU MLP φ (1024-1024), no dropout, no max-norm",
    "mlp_dropout": "the MLP with dropout 0.5 on hidden units and 0.2 on the input, no max-norm",
    "mlp_dropout_maxnorm": "the MLP with dropout and max-norm",
}

#: the MLP rows of Srivastava et al. (2014), two hidden layers at this budget
MLP_HIDDEN = (1024, 1024)
MLP_DROPOUT = 0.5
MLP_INPUT_DROPOUT = 0.2
#: max-norm radius for ``mlp_dropout_maxnorm`` when the config has no MaxNormConstraint
DEFAULT_MAX_NORM = 3.0

CSV_COLUMNS = ("arm", "seed", "test_error", "train_error", "epochs", "wall_seconds")
CSV_NAME, TABLE_NAME, CHART_NAME = "ablation.csv", "ablation.md", "ablation.png"
#: written into a run folder when its run has finished: the folder is complete
RESULT_NAME = "result.json"
#: the base config and budget of an output folder, so a second call cannot mix two ablations
SETTINGS_NAME = "ablation_settings.json"

_MAX_NORM = "lightning_deepfeat.callbacks.MaxNormConstraint"
_PLATEAU = "lightning_deepfeat.callbacks.DivideLROnPlateau"
_TRAIN_ONLY = "lightning_deepfeat.probes.TrainOnly"
_MLP = "lightning_deepfeat.models.MLP"
_CONVNET = "lightning_deepfeat.models.ConvNet"
_FLATTEN = "torch.nn.Flatten"
#: where YAML's short class names are looked up (what DeepFeatCLI imports for them)
_SHORT_NAME_MODULES = (
    "lightning_deepfeat.models",
    "lightning_deepfeat.callbacks",
    "lightning_deepfeat.probes",
    "lightning_deepfeat.data",
    "lightning_deepfeat.viz",
    "lightning.pytorch.callbacks",
    "torch.nn",
)


class ArmChangesNothing(ValueError):
    """The arm applies to the config but would train the same recipe as ``full`` (e.g. ``no_flip`` without flips)."""


# ----------------------------------------------------------------------------- config access
def _class_of(class_path: Any) -> type | None:
    """The class a config's ``class_path`` names (a dotted path or a short name), or ``None`` if unknown."""
    if not isinstance(class_path, str) or not class_path:
        return None
    module_name, _, name = class_path.rpartition(".")
    candidates = (module_name,) if module_name else _SHORT_NAME_MODULES
    for candidate in candidates:
        try:
            obj = getattr(importlib.import_module(candidate), name, None)
        except ImportError:
            obj = None
        if isinstance(obj, type):
            return obj
    return None


def _is(entry: Any, base: str) -> bool:
    """Whether the config ``entry`` (a ``{"class_path": ...}`` dict) names ``base`` or a subclass of it."""
    cls = _class_of(entry.get("class_path")) if isinstance(entry, dict) else None
    return cls is not None and issubclass(cls, _class_of(base))  # type: ignore[arg-type]


def _init_args(entry: dict[str, Any]) -> dict[str, Any]:
    args = entry.get("init_args")
    if args is None:
        args = entry["init_args"] = {}
    return args


def _default(cls: type, name: str) -> Any:
    """The default of ``cls(name=...)`` (through ``**kwargs`` to the base classes), or ``None``."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameter = inspect.signature(init).parameters.get(name)
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    return None


def _accepts(cls: type, name: str) -> bool:
    return any(
        name in inspect.signature(klass.__dict__["__init__"]).parameters
        for klass in cls.__mro__
        if "__init__" in klass.__dict__
    )


def _value(entry: dict[str, Any], name: str) -> Any:
    """``entry``'s ``init_args[name]``, or the class default when the config leaves it out."""
    args = entry.get("init_args") or {}
    return args[name] if name in args else _default(_class_of(entry["class_path"]), name)  # type: ignore[arg-type]


def _callbacks(config: dict[str, Any]) -> list[Any]:
    """``trainer.callbacks`` as a list (created and stored back, so edits stick)."""
    trainer = config.get("trainer")
    if trainer is None:
        trainer = config["trainer"] = {}
    callbacks = trainer.get("callbacks")
    if callbacks is None:
        callbacks = []
    elif not isinstance(callbacks, list):
        callbacks = [callbacks]
    trainer["callbacks"] = callbacks
    return callbacks


def _remove_callbacks(config: dict[str, Any], base: str) -> list[dict[str, Any]]:
    """Drop every callback of class ``base`` (or a subclass); return the dropped entries."""
    callbacks = _callbacks(config)
    dropped = [cb for cb in callbacks if _is(cb, base)]
    callbacks[:] = [cb for cb in callbacks if not _is(cb, base)]
    return dropped


def _model(config: dict[str, Any], arm: str) -> dict[str, Any]:
    """The ``model`` entry, checked to be a FeatureClassifier (the default model of ``deepfeat fit``)."""
    model = config.get("model")
    if model is None:
        model = config["model"] = {}
    if not isinstance(model, dict):
        raise ValueError(f"arm {arm!r} needs `model` as a class_path/init_args mapping in the config, got {model!r}.")
    model.setdefault("class_path", "lightning_deepfeat.models.FeatureClassifier")
    if not _is(model, "lightning_deepfeat.models.FeatureClassifier"):
        raise ValueError(
            f"arm {arm!r} needs a FeatureClassifier model (a feature net φ under a logistic-regression head); "
            f"the config's model is {model.get('class_path')!r}."
        )
    return model


def _features(config: dict[str, Any], arm: str) -> dict[str, Any]:
    """The feature net's ``{"class_path", "init_args"}`` entry (FeatureClassifier's default ConvNet made explicit)."""
    model = _model(config, arm)
    args = _init_args(model)
    features = args.get("features")
    if features is None:
        from lightning_deepfeat.models import FeatureClassifier

        cls = _class_of(model["class_path"])
        is_default = (  # FeatureClassifier's default build_features: ConvNet()
            cls is not None
            and issubclass(cls, FeatureClassifier)
            and cls.build_features is FeatureClassifier.build_features
        )
        if is_default:
            features = args["features"] = {"class_path": _CONVNET, "init_args": {}}
        else:
            raise ValueError(
                f"arm {arm!r} changes the feature net, but {model['class_path']} builds its own in build_features; "
                "give it as `model.init_args.features` in the config."
            )
    if not isinstance(features, dict) or _class_of(features.get("class_path")) is None:
        raise ValueError(
            f"arm {arm!r} needs `model.init_args.features` as a class_path/init_args mapping of an importable class, "
            f"got {features!r}."
        )
    return features


def _data(config: dict[str, Any], arm: str) -> dict[str, Any]:
    """The ``data`` entry, checked to be a data module that takes ``translate``, ``hflip`` and ``crop_size``.

    The data modules of lightning_deepfeat do.
    """
    data = config.get("data")
    cls = _class_of(data.get("class_path")) if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)  # cls is None then too; this tells the type checker
        or cls is None
        or not all(_accepts(cls, name) for name in ("translate", "hflip", "crop_size"))
    ):
        name = data.get("class_path") if isinstance(data, dict) else data
        raise ValueError(
            f"arm {arm!r} changes the augmentation, which needs a lightning_deepfeat image data module "
            f"(translate/hflip/crop_size); the config's data is {name!r}."
        )
    return data


# ----------------------------------------------------------------------------- the ingredients
def _drop_dropout(config: dict[str, Any], arm: str) -> bool:
    features = _features(config, arm)
    cls = _class_of(features["class_path"])
    assert cls is not None
    names = sorted(
        {
            n
            for k in cls.__mro__
            if "__init__" in k.__dict__
            for n in inspect.signature(k.__dict__["__init__"]).parameters
            if n == "dropout" or n.endswith("_dropout")
        }
    )
    if not names:
        raise ValueError(
            f"arm {arm!r} sets the feature net's dropout rates to 0, but {cls.__name__} takes no dropout argument."
        )
    changed = any(float(_value(features, n) or 0.0) > 0.0 for n in names)
    _init_args(features).update({n: 0.0 for n in names})
    return changed


def _drop_maxnorm(config: dict[str, Any], arm: str) -> bool:
    return bool(_remove_callbacks(config, _MAX_NORM))


def _single_test_views(data: dict[str, Any]) -> bool:
    """Test on single images: shifted and mirrored test views are the augmentation again, at test time."""
    cls = _class_of(data.get("class_path"))
    if cls is None or not _accepts(cls, "test_views") or _value(data, "test_views") in (None, "single"):
        return False
    _init_args(data)["test_views"] = "single"
    return True


def _no_translate(config: dict[str, Any], arm: str) -> bool:
    data = _data(config, arm)
    translate, crop = _value(data, "translate"), _value(data, "crop_size")
    shifts = [translate] if isinstance(translate, int) else list(translate or ())
    _init_args(data).update({"translate": 0, "crop_size": None})
    views = _single_test_views(data)
    return any(s != 0 for s in shifts) or crop is not None or views


def _no_flip(config: dict[str, Any], arm: str) -> bool:
    data = _data(config, arm)
    changed = bool(_value(data, "hflip"))
    _init_args(data)["hflip"] = False
    views = _single_test_views(data)
    return changed or views


def _constant_lr(config: dict[str, Any], arm: str) -> bool:
    changed = bool(_remove_callbacks(config, _PLATEAU))
    for holder in (config, _init_args(config["model"]) if isinstance(config.get("model"), dict) else {}):
        if holder.get("lr_scheduler") is not None:
            holder.pop("lr_scheduler")
            changed = True
    return changed


def _tanh(config: dict[str, Any], arm: str) -> bool:
    features = _features(config, arm)
    cls = _class_of(features["class_path"])
    assert cls is not None
    if not _accepts(cls, "activation"):
        raise ValueError(
            f"arm {arm!r} sets the feature net's activation to 'tanh', but {cls.__name__} takes no `activation`."
        )
    changed = _value(features, "activation") != "tanh"
    _init_args(features)["activation"] = "tanh"
    return changed


def _avg_pool(config: dict[str, Any], arm: str) -> bool:
    features = _features(config, arm)
    if not _is(features, _CONVNET):
        raise ValueError(
            f"arm {arm!r} replaces ConvNet's max-pooling by average pooling; the config's feature net is "
            f"{features['class_path']!r}, not a ConvNet."
        )
    pool_size, pooling = _value(features, "pool_size"), _value(features, "pooling")
    _init_args(features)["pooling"] = "avg"
    return (pool_size is None or int(pool_size) > 1) and pooling != "avg"


def _frozen_features(config: dict[str, Any], arm: str) -> bool:
    _model(config, arm)
    if any(_is(cb, _TRAIN_ONLY) for cb in _callbacks(config)):
        raise ValueError(
            f"arm {arm!r} adds TrainOnly(params=['head.*']), but the config already has a TrainOnly callback."
        )
    _callbacks(config).append({"class_path": _TRAIN_ONLY, "init_args": {"params": ["head.*"]}})
    return True


def _set_features(config: dict[str, Any], arm: str, features: dict[str, Any]) -> bool:
    _init_args(_model(config, arm))["features"] = features
    return True


def _logreg_pixels(config: dict[str, Any], arm: str) -> bool:
    _set_features(config, arm, {"class_path": _FLATTEN})
    _remove_callbacks(config, _MAX_NORM)  # it constrains φ's weights, and φ has none left
    return True


def _mlp(dropout: float, input_dropout: float, maxnorm: bool) -> Callable[[dict[str, Any], str], bool]:
    def apply(config: dict[str, Any], arm: str) -> bool:
        mlp = {
            "class_path": _MLP,
            "init_args": {
                "hidden": list(MLP_HIDDEN),
                "activation": "relu",
                "dropout": dropout,
                "input_dropout": input_dropout,
            },
        }
        _set_features(config, arm, mlp)
        kept = _remove_callbacks(config, _MAX_NORM)
        if maxnorm:  # the config's own max-norm (its radius c), else c = 3
            _callbacks(config).extend(
                kept[:1] or [{"class_path": _MAX_NORM, "init_args": {"max_norm": DEFAULT_MAX_NORM}}]
            )
        return True

    return apply


def _both(*steps: Callable[[dict[str, Any], str], bool]) -> Callable[[dict[str, Any], str], bool]:
    def apply(config: dict[str, Any], arm: str) -> bool:
        changed = [step(config, arm) for step in steps]  # every step runs, even after one that changed something
        return any(changed)

    return apply


_ARM_STEPS: dict[str, Callable[[dict[str, Any], str], bool]] = {
    "full": lambda config, arm: True,
    "no_dropout": _drop_dropout,
    "no_maxnorm": _drop_maxnorm,
    "no_dropout_maxnorm": _both(_drop_dropout, _drop_maxnorm),
    "no_translate": _no_translate,
    "no_flip": _no_flip,
    "no_augment": _both(_no_translate, _no_flip),
    "constant_lr": _constant_lr,
    "tanh": _tanh,
    "no_maxpool": _avg_pool,
    "frozen_features": _frozen_features,
    "logreg_pixels": _logreg_pixels,
    "mlp": _mlp(0.0, 0.0, maxnorm=False),
    "mlp_dropout": _mlp(MLP_DROPOUT, MLP_INPUT_DROPOUT, maxnorm=False),
    "mlp_dropout_maxnorm": _mlp(MLP_DROPOUT, MLP_INPUT_DROPOUT, maxnorm=True),
}
assert list(_ARM_STEPS) == list(ABLATION_ARMS)


def check_arm(arm: Any) -> str:
    """``arm`` if it names an arm of :data:`ABLATION_ARMS`, else a ``ValueError`` naming it and listing them."""
    if arm not in ABLATION_ARMS:
        from lightning_deepfeat.cli.errors import did_you_mean

        hint = did_you_mean(arm, ABLATION_ARMS) if isinstance(arm, str) else ""
        raise ValueError(f"unknown ablation arm {arm!r}.{hint} The arms are: {', '.join(ABLATION_ARMS)}.")
    return arm


def build_arm(config: dict[str, Any], arm: str) -> dict[str, Any]:
    """A copy of the ``deepfeat fit`` config ``config`` (a parsed YAML mapping) with the arm's change made.

    The budget (``max_epochs``, batch size, data, optimizer) is left as it is; only the
    arm's ingredient changes (see :data:`ABLATION_ARMS`). Raises ``ValueError`` naming the
    arm when it cannot apply (``no_maxpool`` on an MLP, any model arm on a model that is not
    a FeatureClassifier) and :class:`ArmChangesNothing` when it would train the same recipe
    as ``full`` (``no_flip`` on a config without flips).
    """
    check_arm(arm)
    if not isinstance(config, dict):
        raise ValueError(f"`config` must be a deepfeat fit config (a YAML mapping), got {type(config).__name__}.")
    out = copy.deepcopy(config)
    if not _ARM_STEPS[arm](out, arm):
        raise ArmChangesNothing(
            f"arm {arm!r} ({ABLATION_ARMS[arm]}) changes nothing in this config: it would train the same recipe as "
            "'full'; leave it out of --arms."
        )
    return out


def applicable_arms(config: dict[str, Any], arms: Sequence[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The arms to run and, for the default (all arms), those left out with the reason.

    Arms named explicitly must all apply (an error names the first that does not); of the
    default list, arms that cannot apply or change nothing are left out.
    """
    if arms is not None:
        for arm in arms:
            build_arm(config, arm)
        return list(arms), {}
    chosen, left_out = [], {}
    for arm in ABLATION_ARMS:
        try:
            build_arm(config, arm)
        except ValueError as err:
            left_out[arm] = str(err)
        else:
            chosen.append(arm)
    return chosen, left_out


# ----------------------------------------------------------------------------- one run
class _RunRecorder(Callback):
    """Reads what a run's row needs from the trainer (public API): the last epoch's train error, epochs, test error."""

    def __init__(self) -> None:
        self.train_error = math.nan
        self.test_error = math.nan
        self.epochs = 0

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epochs = int(trainer.current_epoch)
        value = trainer.callback_metrics.get("train_error")
        self.train_error = math.nan if value is None else float(value)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        value = trainer.callback_metrics.get("test_error")
        self.test_error = math.nan if value is None else float(value)


def run_config(config: dict[str, Any], run_dir: Path, seed: int, max_epochs: int | None) -> dict[str, Any]:
    """The config of one run: the arm's config at the common budget, writing only into ``run_dir``."""
    out = copy.deepcopy(config)
    out["seed_everything"] = seed
    out["test_after_fit"] = True  # the row's test error: the best checkpoint on the test split
    out.pop("ckpt_path", None)  # every arm starts from its own random initialisation
    trainer = out.setdefault("trainer", {}) or {}
    out["trainer"] = trainer
    if max_epochs is not None:
        trainer["max_epochs"] = max_epochs
    trainer["default_root_dir"] = str(run_dir)
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(logger, dict) and "save_dir" in (logger.get("init_args") or {}):
            logger["init_args"]["save_dir"] = str(run_dir)
    for callback in _callbacks(out):
        if isinstance(callback, dict) and (callback.get("init_args") or {}).get("dirpath") is not None:
            callback["init_args"]["dirpath"] = str(run_dir / "checkpoints")
    return out


def run_arm(
    config: dict[str, Any], arm: str, seed: int, run_dir: str | os.PathLike[str], max_epochs: int | None = None
) -> dict[str, Any]:
    """Train one arm with one seed: ``deepfeat fit`` of its config, in this process; returns the row.

    In-process rather than a subprocess: ``deepfeat fit`` seeds everything
    (``seed_everything``) before it builds the model and data, and every object of a run
    (model, data module, trainer, callbacks) is built from the YAML and dropped afterwards,
    so runs share no state; a subprocess would add the start-up of Python, torch and
    Lightning to every run. The row's ``test_error`` is that of the best checkpoint on the
    test split (what ``deepfeat fit`` prints), ``train_error`` the last epoch's logged
    training error, ``epochs`` the epochs trained and ``wall_seconds`` the whole run
    (build, fit and test).
    """
    from lightning_deepfeat.cli.main import main as deepfeat

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    path.write_text(yaml.safe_dump(run_config(build_arm(config, arm), run_dir, seed, max_epochs), sort_keys=False))
    recorder = _RunRecorder()
    start = time.perf_counter()
    cli = deepfeat(
        ["fit", "--config", str(path), "--trainer.default_root_dir", str(run_dir), "--seed_everything", str(seed)],
        trainer_defaults={"callbacks": [recorder]},
    )
    wall = time.perf_counter() - start
    del cli
    gc.collect()
    row = {
        "arm": arm,
        "seed": seed,
        "test_error": recorder.test_error,
        "train_error": recorder.train_error,
        "epochs": recorder.epochs,
        "wall_seconds": round(wall, 2),
    }
    (run_dir / RESULT_NAME).write_text(json.dumps(row, indent=1))  # last: the folder is complete
    return row


# ----------------------------------------------------------------------------- outputs
def read_ablation_csv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of an ``ablation.csv`` (typed), ``[]`` when there is none."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return [_typed_row(row) for row in csv.DictReader(f)]


def _typed_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "arm": str(row["arm"]),
        "seed": int(row["seed"]),
        "test_error": float(row["test_error"]),
        "train_error": float(row["train_error"]),
        "epochs": int(row["epochs"]),
        "wall_seconds": float(row["wall_seconds"]),
    }


def _sorted_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {arm: i for i, arm in enumerate(ABLATION_ARMS)}
    return sorted(rows, key=lambda r: (order.get(r["arm"], len(order)), r["seed"]))


def write_ablation_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Write the rows (arm order, then seed), replacing the file atomically."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in _sorted_rows(rows):
            writer.writerow({k: row[k] for k in CSV_COLUMNS})
    os.replace(tmp, path)


def _by_arm(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in _sorted_rows(rows):
        groups.setdefault(row["arm"], []).append(row)
    return groups


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.2f}"


def format_ablation_table(rows: Sequence[dict[str, Any]], budget: str, left_out: dict[str, str] | None = None) -> str:
    """The Markdown table: one row per arm, mean test error over the seeds and each seed's value.

    Errors in %; ``Δ`` is the arm's mean test error minus that of ``full`` (points).
    """
    groups = _by_arm(rows)
    full = _mean([r["test_error"] for r in groups.get("full", [])])
    lines = [
        (
            f"Ablation, {budget}. Test error of the best checkpoint on the test split, train error of the last "
            "epoch, in %; Δ = arm − full (points)."
        ),
        "",
        (
            "| arm | what changes | test error (mean) | Δ | test error per seed | train error (mean) | epochs "
            "| minutes per run |"
        ),
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for arm, group in groups.items():
        test = _mean([r["test_error"] for r in group])
        delta = "–" if math.isnan(full) or arm == "full" else f"{100 * (test - full):+.2f}"
        seeds = ", ".join(f"{_pct(r['test_error'])} (seed {r['seed']})" for r in group)
        epochs = "/".join(sorted({str(r["epochs"]) for r in group}))
        lines.append(
            f"| {arm} | {ABLATION_ARMS.get(arm, '')} | {_pct(test)} | {delta} | {seeds} | "
            f"{_pct(_mean([r['train_error'] for r in group]))} | {epochs} | "
            f"{_mean([r['wall_seconds'] for r in group]) / 60:.1f} |"
        )
    for arm, reason in (left_out or {}).items():
        lines.append(f"\nLeft out: `{arm}`: {reason}")
    return "\n".join(lines) + "\n"


def plot_ablation(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str], title: str = "") -> str:
    """Bar chart of the mean test error per arm (%), one dot per seed's value; a PNG at ``path``."""
    from lightning_deepfeat.viz._common import agg_pyplot, save_figure

    plt = agg_pyplot()
    groups = _by_arm(rows)
    arms = list(groups)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(arms) + 2.0), 4.5))
    means = [100 * _mean([r["test_error"] for r in groups[a]]) for a in arms]
    colors = ["#4c72b0" if a == "full" else "#a0a0a0" for a in arms]
    ax.bar(range(len(arms)), means, color=colors, width=0.7, zorder=1)
    for i, arm in enumerate(arms):
        values = [100 * r["test_error"] for r in groups[arm]]
        offsets = [0.0] if len(values) == 1 else [-0.18 + 0.36 * k / (len(values) - 1) for k in range(len(values))]
        ax.scatter(
            [i + o for o in offsets], values, color="black", s=14, zorder=2, label="one seed" if i == 0 else None
        )
    if "full" in groups:  # the reference every other bar is read against
        ax.axhline(means[arms.index("full")], color="#4c72b0", linestyle="--", linewidth=0.8, zorder=0)
    ax.set_xticks(range(len(arms)))
    ax.set_xticklabels(arms, rotation=40, ha="right")
    ax.set_ylabel("test error (%)")
    ax.set_title(title or "ablation: test error per arm (bar: mean over seeds)", fontsize=9)
    if arms:
        ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    fig.tight_layout()
    return save_figure(fig, str(path))


def write_ablation_outputs(
    rows: Sequence[dict[str, Any]], out: str | os.PathLike[str], budget: str, left_out: dict[str, str] | None = None
) -> dict[str, Path]:
    """Write ``ablation.csv``, ``ablation.md`` and ``ablation.png`` into ``out`` from ``rows``."""
    out = Path(out)
    paths = {"csv": out / CSV_NAME, "table": out / TABLE_NAME, "chart": out / CHART_NAME}
    write_ablation_csv(rows, paths["csv"])
    paths["table"].write_text(format_ablation_table(rows, budget, left_out))
    plot_ablation(rows, paths["chart"], title=f"ablation ({budget})")
    return paths


# ----------------------------------------------------------------------------- the command
def load_config(config: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """The path and parsed mapping of ``--config``: a YAML file or a packaged recipe name (``digits``)."""
    from lightning_deepfeat.cli.recipes import resolve_config_args

    path = Path(resolve_config_args(["--config", os.fspath(config)])[1])
    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict):
        raise ValueError(
            f"`--config` {os.fspath(config)!r} must hold a YAML mapping (a deepfeat fit config), "
            f"got {type(loaded).__name__}."
        )
    return path, loaded


def _budget(config: dict[str, Any], max_epochs: int | None, seeds: Sequence[int], device: str) -> str:
    trainer = config.get("trainer") or {}
    epochs = max_epochs if max_epochs is not None else trainer.get("max_epochs")
    data = config.get("data") or {}
    batch = (data.get("init_args") or {}).get("batch_size") if isinstance(data, dict) else None
    data_name = str(data.get("class_path", "?")).rpartition(".")[2] if isinstance(data, dict) else "?"
    parts = [f"budget max_epochs={epochs} per run for every arm"]
    if trainer.get("max_steps") not in (None, -1):
        parts.append(f"max_steps={trainer['max_steps']}")
    parts += [
        f"batch size {batch}" if batch is not None else "the data module's batch size",
        data_name,
        f"seeds {','.join(map(str, seeds))}",
        device,
    ]
    return ", ".join(parts)


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def _check_settings(out: Path, config: dict[str, Any], max_epochs: int | None) -> None:
    """Refuse to continue, in ``out``, an ablation of another config or budget (its runs would be mixed in)."""
    path = out / SETTINGS_NAME
    settings = json.loads(json.dumps({"config": config, "max_epochs": max_epochs}, default=str))
    if path.is_file():
        saved = json.loads(path.read_text())
        for key, what in (("max_epochs", "--max_epochs"), ("config", "--config")):
            if saved.get(key) != settings[key]:
                raise ValueError(
                    f"`--out` {str(out)!r} holds an ablation with another {what} "
                    f"({'a different config' if key == 'config' else saved.get(key)!r}); its finished runs would be "
                    "mixed with these: pass another --out (or the same settings to continue it)."
                )
    else:
        path.write_text(json.dumps(settings, indent=1))


def _done(out: Path, arm: str, seed: int, rows: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any] | None:
    """The row of a finished (arm, seed), or ``None``. A complete run folder without its row gets it back."""
    result = out / arm / f"seed{seed}" / RESULT_NAME
    if not result.is_file():
        return None
    return rows.get((arm, seed)) or _typed_row(json.loads(result.read_text()))


def ablate(
    config: str | os.PathLike[str],
    arms: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    max_epochs: int | None = None,
    out: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Train every (arm, seed) not yet done in ``out``; write the CSV, the table and the chart.

    Args:
        config: a ``deepfeat fit`` YAML file or a packaged recipe name.
        arms: arm names (:data:`ABLATION_ARMS`); ``None``: every arm that applies to the config.
        seeds: one run per seed and arm (``--seed_everything``).
        max_epochs: the budget of every run; ``None``: the config's ``trainer.max_epochs``.
        out: output folder; ``None``: a new ``lightning_logs/ablate/version_<n>``.

    Returns ``{"out", "csv", "table", "chart", "rows", "ran", "skipped", "left_out"}``:
    ``ran``/``skipped`` list the (arm, seed) pairs trained now / found finished.
    Every argument and every arm is checked before the first run starts.
    """
    from lightning_deepfeat.cli.analysis import new_run_dir
    from lightning_deepfeat.validation import check_int, fail

    if arms is not None:
        if isinstance(arms, str) or not isinstance(arms, Sequence) or not arms:
            raise fail("arms", "a non-empty list of arm names", arms, hint=", ".join(ABLATION_ARMS))
        for arm in arms:
            check_arm(arm)
        if len(set(arms)) != len(arms):
            raise fail("arms", "a list of distinct arm names", list(arms))
    if (
        isinstance(seeds, (str, bytes))
        or not isinstance(seeds, Sequence)
        or not seeds
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)
    ):
        raise fail("seeds", "a non-empty list of ints >= 0", seeds, hint="e.g. 0,1")
    if len(set(seeds)) != len(seeds):
        raise fail("seeds", "a list of distinct seeds", list(seeds))
    check_int("--max_epochs", max_epochs, low=1, allow_none=True, hint="None: the config's trainer.max_epochs")
    config_path, base = load_config(config)
    chosen, left_out = applicable_arms(base, arms)
    if not chosen:
        raise ValueError(f"no ablation arm applies to {str(config_path)!r}: " + "; ".join(left_out.values()))

    out_dir = Path(out) if out is not None else new_run_dir(Path("lightning_logs") / "ablate")
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(out_dir, base, max_epochs)
    budget = _budget(base, max_epochs, seeds, _device())
    print(f"{PROG}: {config_path} -> {out_dir} ({len(chosen)} arms x {len(seeds)} seeds; {budget})", flush=True)
    for arm, reason in left_out.items():
        print(f"{PROG}: left out {arm}: {reason}", flush=True)

    rows = {(r["arm"], r["seed"]): r for r in read_ablation_csv(out_dir / CSV_NAME)}
    rows = {key: row for key, row in rows.items() if (out_dir / key[0] / f"seed{key[1]}" / RESULT_NAME).is_file()}
    ran: list[tuple[str, int]] = []
    skipped: list[tuple[str, int]] = []
    paths: dict[str, Path] = {}
    for arm in chosen:
        for seed in seeds:
            row = _done(out_dir, arm, seed, rows)
            if row is not None:
                rows[(arm, seed)] = row
                skipped.append((arm, seed))
                print(f"{PROG}: {arm} seed {seed}: done before, skipped", flush=True)
                continue
            run_dir = out_dir / arm / f"seed{seed}"
            if run_dir.exists():  # a run killed before it finished: start it again from scratch
                shutil.rmtree(run_dir)
            row = run_arm(base, arm, seed, run_dir, max_epochs)
            rows[(arm, seed)] = row
            ran.append((arm, seed))
            write_ablation_csv(list(rows.values()), out_dir / CSV_NAME)
            print(
                f"{PROG}: {arm} seed {seed}: test_error={row['test_error']:.4f} train_error={row['train_error']:.4f} "
                f"epochs={row['epochs']} wall={row['wall_seconds']:.1f}s",
                flush=True,
            )
        paths = write_ablation_outputs(list(rows.values()), out_dir, budget, left_out)
    print((out_dir / TABLE_NAME).read_text(), flush=True)
    return {
        "out": out_dir,
        **paths,
        "rows": _sorted_rows(list(rows.values())),
        "ran": ran,
        "skipped": skipped,
        "left_out": left_out,
    }


def _csv_list(name: str, text: str) -> list[str]:
    from lightning_deepfeat.validation import fail

    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise fail(f"--{name}", "a comma-separated list without empty items", text)
    return items


def _seed_list(text: str) -> list[int]:
    from lightning_deepfeat.validation import fail

    items = _csv_list("seeds", text)
    if not all(item.isdigit() for item in items):
        raise fail("--seeds", "a comma-separated list of ints >= 0", text, hint="e.g. 0,1")
    return [int(item) for item in items]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``deepfeat ablate``."""
    arms = "\n".join(f"  {name:<20} {what}" for name, what in ABLATION_ARMS.items())
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Train the recipe of --config, then one arm per ingredient taken out, at the same budget; "
            "write ablation.csv, ablation.md and ablation.png. Finished runs in --out are skipped, so a killed "
            "ablation continues when run again with the same --out."
        ),
        epilog=f"arms:\n{arms}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", required=True, help="a deepfeat fit YAML file or a packaged recipe name")
    parser.add_argument("--arms", default=None, help="comma-separated arms (default: every arm that applies)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one run per arm and seed (default 0)")
    parser.add_argument("--max_epochs", type=int, default=None, help="epochs per run (default: the config's)")
    parser.add_argument("--out", default=None, help="output folder (default: a new lightning_logs/ablate/version_<n>)")
    return parser


def ablate_main(argv: Sequence[str]) -> dict[str, Any]:
    """``deepfeat ablate ...`` (``argv`` without the word ``ablate``); returns what :func:`ablate` returns."""
    args = build_parser().parse_args(list(argv))
    arms = None if args.arms is None else [check_arm(arm) for arm in _csv_list("arms", args.arms)]
    seeds = _seed_list(args.seeds)
    return ablate(args.config, arms=arms, seeds=seeds, max_epochs=args.max_epochs, out=args.out)


__all__ = [
    "ABLATION_ARMS",
    "ArmChangesNothing",
    "ablate",
    "ablate_main",
    "applicable_arms",
    "build_arm",
    "build_parser",
    "check_arm",
    "format_ablation_table",
    "load_config",
    "plot_ablation",
    "read_ablation_csv",
    "run_arm",
    "run_config",
    "write_ablation_outputs",
]
