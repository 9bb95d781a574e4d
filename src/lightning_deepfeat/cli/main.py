"""The ``deepfeat`` command: subcommands, packaged recipes, checkpoint-only runs and short errors.

``deepfeat fit|validate|test|predict`` run :class:`~lightning_deepfeat.cli.DeepFeatCLI`
(a LightningCLI); ``probe``, ``visualize`` and ``recipes`` are ours. Errors a user can
fix (a bad argument, a missing data set, a wrong class name, an unreadable checkpoint)
end with one short message and exit code 2; ``--debug`` (or ``DEEPFEAT_DEBUG=1``) shows
the traceback instead.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_deepfeat.cli.checkpoints import config_from_hyperparameters, read_checkpoint, run_config_of
from lightning_deepfeat.cli.errors import DEBUG_FLAG, condense_exception, debug_requested, did_you_mean
from lightning_deepfeat.cli.recipes import format_recipes, resolve_config_args
from lightning_deepfeat.version import __version__

PROG = "deepfeat"

#: every subcommand and its one-line purpose (what ``deepfeat --help`` lists)
SUBCOMMANDS: dict[str, str] = {
    "fit": "train a model on a data module (then test its best checkpoint)",
    "validate": "evaluate a checkpoint on the validation split",
    "test": "evaluate a checkpoint on the test split",
    "predict": "write a checkpoint's class probabilities for the test split to predictions.csv",
    "probe": "probe the recipe's open questions: `probe layerwise` trains one layer at a time",
    "visualize": "draw class models and saliency maps of a checkpoint",
    "ablate": "train the recipe, then one arm per ingredient taken out, at the same budget (ablation.csv/.md/.png)",
    "prepare": "convert an image folder into litdata shards (resized, with mean/std) for StreamingImageDataModule",
    "recipes": "list the packaged recipes (use one with --config NAME)",
}
_LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
_FROM_CHECKPOINT = ("validate", "test", "predict")
_SPECIAL_CKPT = ("best", "last", "hpc", "registry")

#: exceptions that mean "fix your input", reported in one line with exit code 2
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, FileNotFoundError, NotADirectoryError)


def usage() -> str:
    """What ``deepfeat --help`` prints."""
    width = max(len(n) for n in SUBCOMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items())
    return (
        f"usage: {PROG} <subcommand> [options]\n\n"
        "Learn the features, then do logistic regression: the recipe of Krizhevsky et al. (2012) and\n"
        "Srivastava et al. (2014) as PyTorch Lightning components.\n\n"
        f"subcommands:\n{rows}\n\n"
        "options:\n"
        f"  -h, --help     show this message; `{PROG} <subcommand> --help` lists a subcommand's options\n"
        "  -V, --version  print the version\n"
        "  --debug        show full tracebacks and parser messages (or set DEEPFEAT_DEBUG=1)\n\n"
        f"example: {PROG} fit --config digits    (a packaged recipe; `{PROG} recipes` lists them)"
    )


def _import_short_names() -> None:
    """Import the packages whose classes YAML may name by short name (ConvNet, DivideLROnPlateau, TrainOnly, ...)."""
    import lightning_deepfeat.callbacks  # noqa: F401
    import lightning_deepfeat.data  # noqa: F401
    import lightning_deepfeat.models  # noqa: F401
    import lightning_deepfeat.probes  # noqa: F401
    import lightning_deepfeat.viz  # noqa: F401


def _option(argv: list[str], name: str) -> str | None:
    """The value of ``--name V`` or ``--name=V`` in ``argv`` (the last one wins), else ``None``."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def complete_from_checkpoint(command: str, argv: list[str], tmpdir: str) -> list[str]:
    """For ``validate|test|predict|visualize --ckpt_path X`` without ``--config``/``--model``: the run's config.

    First the ``config.yaml`` that ``deepfeat fit`` saved beside the checkpoint's folder,
    else a config rebuilt from the checkpoint's hyper-parameters (written to ``tmpdir``).
    Without either, one line saying what to pass.
    """
    ckpt = _option(argv, "--ckpt_path")
    if ckpt is None or ckpt in _SPECIAL_CKPT:
        return argv
    if _option(argv, "--config") is not None or _option(argv, "-c") is not None or _option(argv, "--model") is not None:
        return argv
    checkpoint = read_checkpoint(ckpt)
    saved = run_config_of(ckpt)
    if saved is not None:
        return ["--config", str(saved), *argv]
    rebuilt = config_from_hyperparameters(checkpoint)
    if rebuilt is None:
        raise ValueError(
            f"`{PROG} {command}` needs the model and data of {ckpt!r}: no config.yaml beside it and its "
            "hyper-parameters do not name both classes; pass --config <the config it was trained with> (or --model "
            "and --data)."
        )
    import yaml

    path = Path(tmpdir) / "config_from_checkpoint.yaml"
    path.write_text(yaml.safe_dump(rebuilt, sort_keys=False))
    return ["--config", str(path), *argv]


def main(args: Sequence[str] | None = None, **kwargs: Any) -> Any:
    """Run ``deepfeat`` with ``args`` as on the command line (default ``sys.argv[1:]``).

    Returns the :class:`~lightning_deepfeat.cli.DeepFeatCLI` that ran (for ``probe`` and
    ``visualize`` it carries ``.result``), or ``None`` for ``recipes``. ``kwargs`` go to
    :class:`~lightning_deepfeat.cli.DeepFeatCLI` (e.g. ``trainer_defaults``).
    """
    argv = [a for a in (sys.argv[1:] if args is None else list(args)) if a != DEBUG_FLAG]
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        raise SystemExit(0 if argv else 2)
    if argv[0] in ("-V", "--version"):
        print(f"{PROG} {__version__}")
        raise SystemExit(0)
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(
            f"{PROG}: error: unknown subcommand {command!r}.{did_you_mean(command, SUBCOMMANDS)} "
            f"(`{PROG} --help` lists them)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    if command == "recipes":
        if rest and rest[0] in ("-h", "--help"):
            print(f"usage: {PROG} recipes\n\n{SUBCOMMANDS['recipes']}")
            raise SystemExit(0)
        print(format_recipes())
        return None
    if command == "prepare":
        from lightning_deepfeat.data.prepare import prepare_main

        return prepare_main(rest)
    _import_short_names()
    if command == "ablate":
        from lightning_deepfeat.probes.ablation import ablate_main

        return ablate_main(rest)
    rest = resolve_config_args(rest)
    with tempfile.TemporaryDirectory() as tmpdir, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*args parameter is intended.*")
        warnings.filterwarnings("ignore", message=".*infer the batch indices.*")  # PredictionWriter counts them
        if not {"-h", "--help"} & set(rest):
            ckpt = _option(rest, "--ckpt_path")
            if ckpt is not None and ckpt not in _SPECIAL_CKPT and not ckpt.startswith("registry"):
                read_checkpoint(ckpt)  # before LightningCLI reads it: a missing or corrupt file gets a clear message
            if command in (*_FROM_CHECKPOINT, "visualize"):
                rest = complete_from_checkpoint(command, rest, tmpdir)
        if command == "probe":
            from lightning_deepfeat.probes.cli import probe_main

            return probe_main(rest, **kwargs)
        if command == "visualize":
            from lightning_deepfeat.viz.cli import visualize_main

            return visualize_main(rest, **kwargs)
        from lightning_deepfeat.cli.core import DeepFeatCLI

        if (
            not any(a in ("--config", "-c") or a.startswith("--config=") for a in rest)
            and command == "fit"
            and ("-h" not in rest and "--help" not in rest and "--print_config" not in rest)
        ):
            print(
                f"{PROG} fit: no --config, so Lightning's defaults apply (max_epochs=1000, no plateau drops, no "
                f"max-norm, no augmentation); `{PROG} fit --config digits` runs a full recipe.",
                file=sys.stderr,
            )
        return DeepFeatCLI(args=[command, *rest], **kwargs)


def run() -> None:
    """Console-script entry point (``deepfeat``): :func:`main`, with user errors as one line and exit code 2."""
    try:
        main()
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except USER_ERRORS as err:
        if debug_requested():
            raise
        command = next((a for a in sys.argv[1:] if a in SUBCOMMANDS), "")
        print(f"{PROG}{' ' + command if command else ''}: error: {condense_exception(err)}", file=sys.stderr)
        print("  (--debug shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as err:
        if debug_requested() or not _is_lightning_misconfiguration(err):
            raise
        print(f"{PROG}: error: {condense_exception(err)}", file=sys.stderr)
        print("  (--debug shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


def _is_lightning_misconfiguration(err: BaseException) -> bool:
    """Lightning's MisconfigurationException is a user error too; any other exception keeps its traceback."""
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    return isinstance(err, MisconfigurationException)


__all__ = ["PROG", "SUBCOMMANDS", "USER_ERRORS", "complete_from_checkpoint", "main", "run", "usage"]
