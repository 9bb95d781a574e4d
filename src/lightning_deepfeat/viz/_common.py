"""Where pictures go: PNG files in a directory and, when the logger has one, its image API."""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def agg_pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def output_dir(trainer: Any, dirpath: str | os.PathLike[str] | None) -> str:
    """``dirpath`` or the trainer's ``log_dir`` (``default_root_dir`` without a logger), created."""
    path = os.fspath(dirpath or getattr(trainer, "log_dir", None) or trainer.default_root_dir)
    os.makedirs(path, exist_ok=True)
    return path


def save_figure(fig: Any, path: str, trainer: Any = None, tag: str | None = None, dpi: int = 100) -> str:
    """Save ``fig`` as a PNG of exactly figsize × dpi pixels; send it to the logger when it takes figures."""
    plt = agg_pyplot()
    # matplotlib < 3.11.1 truncates figsize × dpi (6 × 1.2 in at 100 dpi → 719 px): aim at the pixel's centre
    width, height = fig.get_size_inches()
    fig.set_size_inches((round(width * dpi) + 0.5) / dpi, (round(height * dpi) + 0.5) / dpi)
    fig.savefig(path, dpi=dpi, format="png")
    experiment = _experiment(trainer)
    if experiment is not None and hasattr(experiment, "add_figure"):
        experiment.add_figure(tag or os.path.basename(path), fig, global_step=trainer.global_step, close=False)
    plt.close(fig)
    return path


def save_image_array(image: np.ndarray, path: str, trainer: Any = None, tag: str | None = None) -> str:
    """Save an ``(H, W)`` or ``(H, W, 3)`` array in [0, 1] as a PNG of exactly that many pixels."""
    import matplotlib.image as mpimg

    mpimg.imsave(
        path, np.clip(image, 0.0, 1.0), cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0, format="png"
    )
    experiment = _experiment(trainer)
    if experiment is not None and hasattr(experiment, "add_image"):
        experiment.add_image(
            tag or os.path.basename(path),
            image,
            global_step=trainer.global_step,
            dataformats="HW" if image.ndim == 2 else "HWC",
        )
    return path


def _experiment(trainer: Any) -> Any:
    if trainer is None or getattr(trainer, "logger", None) is None or not trainer.is_global_zero:
        return None
    try:
        return trainer.logger.experiment
    except Exception:  # loggers without an experiment object
        return None
