"""``DeepFeatCLI``: the LightningCLI behind ``deepfeat``, where data shapes flow into the model."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

import lightning.pytorch
from jsonargparse import ActionConfigFile
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.model_helpers import is_overridden
from typing_extensions import override

from lightning_deepfeat.callbacks.prediction_writer import PredictionWriter
from lightning_deepfeat.cli.checkpoints import check_weights_fit, read_checkpoint
from lightning_deepfeat.cli.errors import condense_parse_error, debug_requested
from lightning_deepfeat.models.classifier import FeatureClassifier
from lightning_deepfeat.version import __version__

#: what a data module tells the model, and the model argument that receives it
DATA_TO_MODEL = {"num_classes": "num_classes", "image_shape": "input_shape"}


def _get(config: Any, key: str, default: Any = None) -> Any:
    if config is None:
        return default
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default) if hasattr(config, key) else default


def _import_class(class_path: str) -> type:
    module_name, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def data_description(data_config: Any) -> dict[str, Any]:
    """``num_classes`` and ``image_shape`` of a configured data module, known before it is built.

    Uses the class's ``describe(**init_args)`` when it has one (every data module of
    ours does; it accounts for ``crop_size``), else its class attributes. Keys it cannot
    tell are left out.
    """
    class_path = _get(data_config, "class_path")
    if not class_path:
        return {}
    cls = _import_class(class_path)
    init_args = _get(data_config, "init_args") or {}
    init_args = dict(init_args.items()) if not isinstance(init_args, dict) else init_args
    if hasattr(cls, "describe"):
        described = dict(cls.describe(**init_args))
    else:
        described = {key: getattr(cls, key) for key in DATA_TO_MODEL if hasattr(cls, key)}
    out: dict[str, Any] = {}
    classes = described.get("num_classes")
    if isinstance(classes, int) and not isinstance(classes, bool) and classes > 0:
        out["num_classes"] = classes
    shape = described.get("image_shape")
    if shape:
        out["image_shape"] = [int(d) for d in shape]
    return out


def model_accepts(model_class: type, name: str) -> bool:
    """Whether ``model_class(...)`` takes the keyword ``name``: by name in ``__init__``, or any FeatureClassifier."""
    if isinstance(model_class, type) and issubclass(model_class, FeatureClassifier):
        return True  # its own **kwargs, if any, reach FeatureClassifier.__init__
    try:
        parameters = inspect.signature(model_class.__init__).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters and parameters[name].kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def link_data_to_model(config: Any) -> None:
    """Set ``model.init_args.num_classes`` / ``input_shape`` from the data module, where the model takes them.

    ``config`` holds ``model`` and ``data`` (one subcommand's config). Applied before the
    classes are built and to the dumped config (``--print_config``, the saved
    ``config.yaml``), so nobody writes these twice and every dump shows what was used.
    """
    model, data = _get(config, "model"), _get(config, "data")
    class_path = _get(model, "class_path")
    if not class_path or data is None:
        return
    description = data_description(data)
    if not description:
        return
    model_class = _import_class(class_path)
    for data_key, model_key in DATA_TO_MODEL.items():
        if data_key in description and model_accepts(model_class, model_key):
            config[f"model.init_args.{model_key}"] = description[data_key]


class DeepFeatArgumentParser(LightningArgumentParser):
    """Parser whose dumps (``--print_config``, the saved ``config.yaml``) show what the data module decided.

    ``--print_config`` dumps the parsed config before any class is built, so the values
    that :func:`link_data_to_model` fills in (``num_classes``, ``input_shape``) are
    applied to the dumped copy too.
    """

    @override
    def dump(self, cfg: Any, *args: Any, **kwargs: Any) -> str:
        cfg = cfg.clone()
        for config in (cfg, _get(cfg, str(_get(cfg, "subcommand")))):
            if config is not None and _get(config, "model") is not None:
                with contextlib.suppress(Exception):  # an invalid config is reported by the parse itself, not here
                    link_data_to_model(config)
                if _get(config, "optimizer") is not None and _get(
                    _get(_get(config, "model"), "init_args"), "optimizer"
                ):
                    # `--optimizer` replaces the module's own optimizer: showing both reads like two optimizers
                    del config["model.init_args.optimizer"]
        return super().dump(cfg, *args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Parse errors as one short message (exit code 2).

        ``--debug`` or ``DEEPFEAT_DEBUG=1`` shows jsonargparse's own.
        """
        if not self.exit_on_error or debug_requested():
            super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {condense_parse_error(message)}\n")
        sys.stderr.write(f"  (`{prog} --help` lists the options; --debug shows the parser's full message)\n")
        raise SystemExit(2)


class DeepFeatCLI(LightningCLI):
    """``LightningCLI`` for lightning_deepfeat.

    * ``--model`` takes any LightningModule (default :class:`FeatureClassifier`) and
      ``--data`` any LightningDataModule; short class names (``ConvNet``,
      ``DigitsDataModule``, ``DivideLROnPlateau``) work in YAML;
    * ``num_classes`` and ``input_shape`` of the model are set from the data module
      (:func:`link_data_to_model`) wherever the model's ``__init__`` takes them, so no YAML
      repeats them and ``--print_config`` shows them;
    * after ``fit``, the best checkpoint (or the final weights when none was saved) is
      evaluated on the test split and one summary line is printed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        parser_kwargs = dict(kwargs.get("parser_kwargs") or {})
        parser_kwargs.setdefault("version", f"deepfeat {__version__}")
        parser_kwargs.setdefault("prog", "deepfeat")  # not "__main__.py" under `python -m lightning_deepfeat`
        kwargs["parser_kwargs"] = parser_kwargs
        with warnings.catch_warnings():
            # `--optimizer` replacing the module's own optimizer is the documented behaviour, not a surprise
            warnings.filterwarnings("ignore", message=".*will be overridden by.*")
            super().__init__(*args, **kwargs)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """A :class:`DeepFeatArgumentParser` (whose dumps show the values taken from the data module)."""
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={lightning.pytorch.__version__}"])
        parser = DeepFeatArgumentParser(**kwargs)
        parser.add_argument(
            "-c", "--config", action=ActionConfigFile, help="Path to a configuration file in json or yaml format."
        )
        return parser

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="Evaluate the best checkpoint on the test split after fit.",
        )
        if self.model_class is None:  # any LightningModule; FeatureClassifier unless --model says otherwise
            parser.set_defaults(
                {"model": {"class_path": f"{FeatureClassifier.__module__}.{FeatureClassifier.__qualname__}"}}
            )

    def before_instantiate_classes(self) -> None:
        """Give the model the data module's ``num_classes`` and ``image_shape`` (see :func:`link_data_to_model`).

        A ``fast_dev_run`` without a ``default_root_dir`` writes under
        ``lightning_logs/fast_dev_run`` (it has no logger, and Lightning would otherwise put
        its checkpoints in ``./checkpoints``).
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        link_data_to_model(config)
        trainer = _get(config, "trainer")
        if trainer is not None and _get(trainer, "fast_dev_run") and not _get(trainer, "default_root_dir"):
            config["trainer.default_root_dir"] = str(Path("lightning_logs") / "fast_dev_run")

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The Trainer.

        ``predict`` gets a :class:`~lightning_deepfeat.callbacks.PredictionWriter` unless one is configured.
        """
        trainer = super().instantiate_trainer(**kwargs)
        # a public attribute that Lightning's callback connector sets; the Trainer class does not declare it
        callbacks = trainer.callbacks  # type: ignore[attr-defined]
        if self.subcommand == "predict" and not any(isinstance(cb, BasePredictionWriter) for cb in callbacks):
            callbacks.append(PredictionWriter())
        return trainer

    def after_instantiate_classes(self) -> None:
        """Refuse a ``--ckpt_path`` that cannot be read or holds another model's weights, before any work."""
        config = self.config.get(self.subcommand, {}) if self.subcommand else {}
        ckpt_path = config.get("ckpt_path") if hasattr(config, "get") else None
        if (
            ckpt_path
            and ckpt_path not in ("best", "last", "hpc", "registry")
            and not str(ckpt_path).startswith("registry:")
        ):
            check_weights_fit(read_checkpoint(ckpt_path), self.model, ckpt_path)

    def after_fit(self) -> None:
        """After ``fit`` (unless ``--test_after_fit false``): test the best checkpoint, print one summary line."""
        if not self.config.get(self.subcommand, {}).get("test_after_fit", True):
            return
        if self.trainer.interrupted or not is_overridden("test_step", self.model):
            return  # a module without a test step (any LightningModule may come through --model)
        has_test_data = (
            is_overridden("test_dataloader", self.datamodule)
            if self.datamodule is not None
            else (is_overridden("test_dataloader", self.model))
        )
        if not has_test_data:
            return
        checkpoint = next((cb for cb in self.trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)), None)
        ckpt_path = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path, verbose=False)
        if self.trainer.is_global_zero and results:
            metrics = {k: float(v) for k, v in results[0].items()}
            shown: list[str] = [k for k in ("test_error", "test_acc") if k in metrics] or sorted(metrics)
            values = " ".join(f"{k}={metrics[k]:.4f}" for k in shown)
            data_name = type(self.datamodule).__name__ if self.datamodule is not None else "its own data"
            print(
                f"deepfeat: {values} ({type(self.model).__name__} on {data_name}, "
                f"checkpoint: {ckpt_path or 'final weights'})",
                flush=True,
            )


__all__ = [
    "DATA_TO_MODEL",
    "DeepFeatArgumentParser",
    "DeepFeatCLI",
    "data_description",
    "link_data_to_model",
    "model_accepts",
]
