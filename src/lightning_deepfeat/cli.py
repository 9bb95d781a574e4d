"""The ``deepfeat`` command: a LightningCLI where data shapes flow into the model."""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import lightning.pytorch
from jsonargparse import ActionConfigFile
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.model_helpers import is_overridden

import lightning_deepfeat
from lightning_deepfeat.models.classifier import FeatureClassifier

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

    def dump(self, cfg: Any, *args: Any, **kwargs: Any) -> str:
        cfg = cfg.clone()
        for config in (cfg, _get(cfg, str(_get(cfg, "subcommand")))):
            if config is not None and _get(config, "model") is not None:
                try:
                    link_data_to_model(config)
                except Exception:  # an invalid config is reported by the parse itself, not here
                    pass
        return super().dump(cfg, *args, **kwargs)


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
        kwargs.setdefault("parser_kwargs", {"version": f"deepfeat {lightning_deepfeat.__version__}"})
        with warnings.catch_warnings():
            # `--optimizer` replacing the module's own optimizer is the documented behaviour, not a surprise
            warnings.filterwarnings("ignore", message=".*will be overridden by.*")
            super().__init__(*args, **kwargs)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """A :class:`DeepFeatArgumentParser` (whose dumps show the values taken from the data module)."""
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={lightning.pytorch.__version__}"])
        parser = DeepFeatArgumentParser(**kwargs)
        parser.add_argument("-c", "--config", action=ActionConfigFile, help="Path to a configuration file in json or yaml format.")
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=True, help="Evaluate the best checkpoint on the test split after fit.")
        if self.model_class is None:  # any LightningModule; FeatureClassifier unless --model says otherwise
            parser.set_defaults({"model": {"class_path": f"{FeatureClassifier.__module__}.{FeatureClassifier.__qualname__}"}})

    def before_instantiate_classes(self) -> None:
        """Give the model the data module's ``num_classes`` and ``image_shape`` (see :func:`link_data_to_model`)."""
        link_data_to_model(self.config[self.subcommand] if self.subcommand else self.config)

    def after_fit(self) -> None:
        if not self.config.get(self.subcommand, {}).get("test_after_fit", True):
            return
        if self.trainer.interrupted or not is_overridden("test_step", self.model):
            return  # a module without a test step (any LightningModule may come through --model)
        has_test_data = is_overridden("test_dataloader", self.datamodule) if self.datamodule is not None else (
            is_overridden("test_dataloader", self.model)
        )
        if not has_test_data:
            return
        checkpoint = next((cb for cb in self.trainer.callbacks if isinstance(cb, ModelCheckpoint)), None)
        ckpt_path = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path, verbose=False)
        if self.trainer.is_global_zero and results:
            metrics = {k: float(v) for k, v in results[0].items()}
            shown = [k for k in ("test_error", "test_acc") if k in metrics] or sorted(metrics)
            values = " ".join(f"{k}={metrics[k]:.4f}" for k in shown)
            data_name = type(self.datamodule).__name__ if self.datamodule is not None else "its own data"
            print(
                f"deepfeat: {values} ({type(self.model).__name__} on {data_name}, "
                f"checkpoint: {ckpt_path or 'final weights'})",
                flush=True,
            )


def main(args: Sequence[str] | None = None, **kwargs: Any) -> DeepFeatCLI:
    """Entry point of ``deepfeat`` and ``python -m lightning_deepfeat``; ``args`` as on the command line."""
    # Imported so that short class names (ConvNet, DivideLROnPlateau, TrainOnly, ...) resolve in YAML.
    import lightning_deepfeat.callbacks  # noqa: F401
    import lightning_deepfeat.data  # noqa: F401
    import lightning_deepfeat.models  # noqa: F401
    import lightning_deepfeat.probes  # noqa: F401
    import lightning_deepfeat.viz  # noqa: F401

    if args is None and len(sys.argv) > 1 and sys.argv[1] in ("--version", "-V"):
        print(f"deepfeat {lightning_deepfeat.__version__}")
        raise SystemExit(0)
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in ("probe", "visualize"):  # extra subcommands, see lightning_deepfeat.probes.cli
        from lightning_deepfeat.probes.cli import probe_main

        return probe_main(argv, **kwargs)
    return DeepFeatCLI(args=args, **kwargs)


def run() -> None:
    """Console-script entry point (``deepfeat``): like :func:`main`, returning nothing."""
    main()


__all__ = ["DeepFeatArgumentParser", "DeepFeatCLI", "main", "run"]
