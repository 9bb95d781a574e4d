"""The ``deepfeat`` command: a LightningCLI where data shapes flow into the model."""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from jsonargparse._link_arguments import ActionLink  # private, but the only way to show linked values
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import lightning_deepfeat
from lightning_deepfeat.data.base import ImageClassificationDataModule
from lightning_deepfeat.models.classifier import FeatureClassifier


def _data_class(data_config: Any) -> type:
    class_path = data_config["class_path"] if isinstance(data_config, dict) else data_config.class_path
    module_name, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def _init_args(data_config: Any) -> dict[str, Any]:
    init_args = data_config["init_args"] if isinstance(data_config, dict) else data_config.get("init_args")
    if init_args is None:
        return {}
    return dict(init_args.items()) if not isinstance(init_args, dict) else init_args


def num_classes_of(data_config: Any) -> int:
    """``num_classes`` of the configured data module, known at parse time (see ``describe``)."""
    cls = _data_class(data_config)
    return int(cls.describe(**_init_args(data_config))["num_classes"]) if hasattr(cls, "describe") else cls.num_classes


def image_shape_of(data_config: Any) -> list[int]:
    """``image_shape`` of the configured data module, known at parse time (see ``describe``)."""
    cls = _data_class(data_config)
    shape = cls.describe(**_init_args(data_config))["image_shape"] if hasattr(cls, "describe") else cls.image_shape
    return list(shape)


class DeepFeatArgumentParser(LightningArgumentParser):
    """Parser whose dumps (``--print_config``, the saved ``config.yaml``) include linked values.

    jsonargparse hides link targets by default; showing ``model.num_classes`` tells a
    user what the data module decided.
    """

    def dump(self, cfg: Any, *args: Any, skip_link_targets: bool = False, **kwargs: Any) -> str:
        if not skip_link_targets:
            # `--print_config` dumps before jsonargparse applies the parse-time links: apply them to a copy.
            cfg = cfg.clone()
            # jsonargparse skips links while a print is pending (it marks the parsers): unmark them meanwhile.
            pending, parser = [], self
            while parser is not None:
                if "print_config" in vars(parser):
                    pending.append((parser, vars(parser).pop("print_config")))
                parser = getattr(parser, "parent_parser", None)
            try:
                ActionLink.apply_parsing_links(self, cfg)
            except Exception:  # an invalid config is reported by the parse itself, not here
                pass
            finally:
                for parser, value in pending:
                    parser.print_config = value
        return super().dump(cfg, *args, skip_link_targets=skip_link_targets, **kwargs)


class DeepFeatCLI(LightningCLI):
    """``LightningCLI`` for lightning_deepfeat.

    * model and data in subclass mode: short class names (``ConvNet``, ``DigitsDataModule``)
      work in YAML;
    * ``model.num_classes`` and ``model.input_shape`` are linked from the data module at
      parse time, so no YAML repeats them and ``--print_config`` shows them;
    * after ``fit``, the best checkpoint (or the final weights when none was saved) is
      evaluated on the test split and one summary line is printed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("model_class", FeatureClassifier)
        kwargs.setdefault("datamodule_class", ImageClassificationDataModule)
        kwargs.setdefault("parser_class", DeepFeatArgumentParser)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"version": f"deepfeat {lightning_deepfeat.__version__}"})
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=True, help="Evaluate the best checkpoint on the test split after fit.")
        parser.link_arguments("data", "model.init_args.num_classes", compute_fn=num_classes_of, apply_on="parse")
        parser.link_arguments("data", "model.init_args.input_shape", compute_fn=image_shape_of, apply_on="parse")

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        # `--optimizer` replacing the module's default SGD is the documented behaviour, not a surprise.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will be overridden by.*")
            super()._add_configure_optimizers_method_to_model(subcommand)

    def after_fit(self) -> None:
        if not self.config.get(self.subcommand, {}).get("test_after_fit", True):
            return
        if self.trainer.interrupted:
            return
        checkpoint = next((cb for cb in self.trainer.callbacks if isinstance(cb, ModelCheckpoint)), None)
        ckpt_path = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path, verbose=False)
        if self.trainer.is_global_zero and results:
            metrics = results[0]
            error = metrics.get("test_error")
            acc = metrics.get("test_acc")
            source = ckpt_path or "final weights"
            print(
                f"deepfeat: test_error={error:.4f} test_acc={acc:.4f} "
                f"({type(self.model).__name__} on {type(self.datamodule).__name__}, checkpoint: {source})",
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
