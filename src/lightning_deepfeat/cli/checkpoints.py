"""Checkpoints on the command line: safe loading with errors that say what is wrong, and the run they came from.

``deepfeat test|validate|predict|visualize --ckpt_path X`` needs a model and a data module.
A checkpoint written by ``deepfeat fit`` sits in ``<run>/checkpoints/`` beside the run's
``<run>/config.yaml``; failing that, the checkpoint's own hyper-parameters name the
classes (``_class_path``, which LightningCLI records) and their arguments.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from lightning_deepfeat.version import __version__

#: key of the package version in checkpoints written by FeatureClassifier
VERSION_KEY = "lightning_deepfeat_version"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint with ``weights_only=True``; ``ValueError``/``FileNotFoundError`` naming the problem.

    Problems told apart: the file is missing or a folder; it is not a checkpoint (not a
    torch file, corrupt or truncated); it is a torch file but not a Lightning checkpoint;
    it holds pickled objects that safe loading refuses; it was written by a newer
    ``lightning_deepfeat`` than the one installed. Unsafe loading is never suggested.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist.")
    if file.is_dir():
        raise ValueError(f"checkpoint {str(path)!r} is a folder; pass the .ckpt file inside it.")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # whatever torch.load trips over (random bytes raise anything from IndexError to OSError)
        unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if unsupported:
            raise ValueError(
                f"{str(path)!r} is a checkpoint holding a pickled object ({unsupported.group(1)}) that deepfeat "
                "does not load: only tensors and plain data are read from checkpoints, so a file cannot run code. "
                "Save the hyper-parameters as plain data (numbers, strings, lists, dicts)."
            ) from None
        raise ValueError(
            f"{str(path)!r} is not a checkpoint: torch could not read it (the file is corrupt, truncated or of "
            f"another format; {type(err).__name__})."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        kind = "a dict without 'state_dict'" if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{str(path)!r} is a torch file but not a Lightning checkpoint (it holds {kind}).")
    written_by = checkpoint.get(VERSION_KEY)
    if written_by is not None and _newer(str(written_by), __version__):
        raise ValueError(
            f"{str(path)!r} was written by lightning_deepfeat {written_by}, newer than the installed "
            f"{__version__}; upgrade lightning_deepfeat to read it."
        )
    return checkpoint


def _release(version: str) -> tuple[int, ...]:
    """``"0.2.1rc1"`` -> ``(0, 2, 1)``: the numeric release part, enough to order our own versions."""
    match = re.match(r"(\d+(?:\.\d+)*)", version.strip())
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def _newer(a: str, b: str) -> bool:
    return bool(_release(a)) and _release(a) > _release(b)


def check_weights_fit(checkpoint: dict[str, Any], model: torch.nn.Module, path: str | Path) -> None:
    """Raise ``ValueError`` when ``checkpoint`` holds the weights of another model than ``model``.

    Compares parameter names and shapes (not values); names the file, the class the
    checkpoint was trained with (when recorded) and the first differences.
    """
    saved = checkpoint.get("state_dict", {})
    expected = model.state_dict()
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    reshaped = [k for k in expected if k in saved and tuple(saved[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or reshaped):
        return
    trained = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    origin = f" (trained as {trained})" if trained else ""
    details = []
    if reshaped:
        k = reshaped[0]
        details.append(f"{k} is {tuple(saved[k].shape)} in the file but {tuple(expected[k].shape)} in the model")
    if missing:
        details.append(f"{len(missing)} weight(s) missing, e.g. {missing[0]}")
    if unexpected:
        details.append(f"{len(unexpected)} unknown weight(s), e.g. {unexpected[0]}")
    raise ValueError(
        f"{str(path)!r} is a checkpoint of another model{origin} than this {type(model).__name__}: "
        + "; ".join(details)
        + ". Pass the config the checkpoint was trained with (--config)."
    )


def run_config_of(ckpt_path: str | Path) -> Path | None:
    """The ``config.yaml`` of the run that wrote ``ckpt_path``.

    It is in the checkpoint's folder or the one above (``<run>/checkpoints/``).
    """
    folder = Path(ckpt_path).expanduser().resolve().parent
    for candidate in (folder / "config.yaml", folder.parent / "config.yaml"):
        if candidate.is_file():
            return candidate
    return None


def config_from_hyperparameters(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """``{"model": ..., "data": ...}`` rebuilt from a checkpoint's hyper-parameters.

    ``None`` if they do not name both.

    LightningCLI records ``_class_path`` in the hyper-parameters of the classes it built,
    for the model and for a data module that saves its hyper-parameters (ours do).
    """
    sections = {}
    for key, hparams in (
        ("model", checkpoint.get("hyper_parameters")),
        ("data", checkpoint.get("datamodule_hyper_parameters")),
    ):
        if not isinstance(hparams, dict) or "_class_path" not in hparams:
            return None
        init_args = {k: v for k, v in hparams.items() if not k.startswith("_")}
        sections[key] = {"class_path": hparams["_class_path"], "init_args": init_args}
    return sections


__all__ = ["VERSION_KEY", "check_weights_fit", "config_from_hyperparameters", "read_checkpoint", "run_config_of"]
