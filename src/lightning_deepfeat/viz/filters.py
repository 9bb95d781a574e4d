"""``FilterGallery``: the learned first-layer filters as one grid image, every N epochs."""

from __future__ import annotations

import math
import os
from typing import Any, cast

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from typing_extensions import override

from lightning_deepfeat.validation import check_int, check_path
from lightning_deepfeat.viz._common import output_dir, save_image_array


def first_layer(model: nn.Module) -> nn.Module:
    """The first ``Conv2d`` (else the first ``Linear``) of ``model.features`` (or of ``model``)."""
    root = getattr(model, "features", model)
    for kind in (nn.Conv2d, nn.Linear):
        for module in root.modules():
            if isinstance(module, kind) and not isinstance(module, nn.modules.lazy.LazyModuleMixin):
                return module
    raise ValueError(f"{type(model).__name__} has no materialised Conv2d or Linear layer to draw filters from.")


def filter_grid(
    weight: torch.Tensor,
    input_shape: tuple[int, ...] | None = None,
    scale: int = 8,
    pad: int = 1,
    max_filters: int = 64,
) -> np.ndarray:
    r"""Tile filters into one image, each normalised to [0, 1] on its own.

    A filter w (a conv kernel ``(C, k, k)``, or a row of a first dense layer reshaped to
    ``input_shape``) is shown as (w − min w) / (max w − min w); 3-channel filters in
    colour, others as the mean over input channels. Each filter is enlarged ``scale``×
    (nearest neighbour) and separated by ``pad`` pixels of white. The image has
    ``rows·(h·scale + pad) + pad`` × ``cols·(w·scale + pad) + pad`` pixels with
    ``cols = ⌈√n⌉`` and ``rows = ⌈n / cols⌉``, n = min(#filters, ``max_filters``).
    """
    w = weight.detach().float().cpu()
    if w.dim() == 2:
        if input_shape is None or math.prod(input_shape) != w.shape[1]:
            side = int(round(math.sqrt(w.shape[1])))
            if side * side != w.shape[1]:
                raise ValueError(f"cannot reshape dense filters of size {w.shape[1]} into an image; pass input_shape.")
            input_shape = (1, side, side)
        w = (
            w.reshape(w.shape[0], *input_shape[-3:])
            if len(input_shape) >= 3
            else w.reshape(w.shape[0], 1, *input_shape)
        )
    w = w[:max_filters]
    n, c, h, wd = w.shape
    flat = w.reshape(n, -1)
    lo, hi = flat.min(1).values.view(n, 1, 1, 1), flat.max(1).values.view(n, 1, 1, 1)
    w = (w - lo) / (hi - lo).clamp_min(1e-12)
    colour = c == 3
    tiles = w.permute(0, 2, 3, 1).numpy() if colour else w.mean(1).numpy()
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    th, tw = h * scale, wd * scale
    shape = (rows * (th + pad) + pad, cols * (tw + pad) + pad) + ((3,) if colour else ())
    grid = np.ones(shape, dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, cols)
        tile = np.kron(tiles[i], np.ones((scale, scale) + ((1,) if colour else ()), dtype=np.float32))
        grid[pad + r * (th + pad) : pad + r * (th + pad) + th, pad + col * (tw + pad) : pad + col * (tw + pad) + tw] = (
            tile
        )
    return grid


class FilterGallery(Callback):
    """Every ``every_n_epochs`` training epochs, write ``filters_epoch{E:03d}.png``: the first-layer filters.

    Like the AlexNet figure of the 96 learned conv1 kernels. Files go to ``dirpath``
    (default ``trainer.log_dir``); a TensorBoard-like logger also gets ``add_image``.

    The paths written are kept in ``paths`` and saved in checkpoints, so a resumed run's
    ``paths`` lists every picture of the run, those written before the interruption first.

    Args:
        every_n_epochs: period in epochs (≥ 1); the last epoch is always drawn.
        dirpath: output directory (default: the trainer's log directory).
        scale: pixels per filter weight.
        max_filters: draw at most this many filters.
    """

    def __init__(
        self, every_n_epochs: int = 1, dirpath: str | None = None, scale: int = 8, max_filters: int = 64
    ) -> None:
        super().__init__()
        self.every_n_epochs = check_int("every_n_epochs", every_n_epochs, low=1)
        self.dirpath = check_path("dirpath", dirpath, kind="directory", allow_none=True, hint="None: trainer.log_dir")
        self.scale = check_int("scale", scale, low=1, hint="pixels per filter weight")
        self.max_filters = check_int("max_filters", max_filters, low=1)
        self.paths: list[str] = []

    def draw(self, trainer: Trainer, pl_module: LightningModule, epoch: int) -> str:
        """Save the first layer's filters as ``filters_epoch<epoch>.png`` (and to an image logger); return its path."""
        layer = first_layer(pl_module)
        grid = filter_grid(
            cast(torch.Tensor, layer.weight),
            getattr(pl_module, "input_shape", None),
            scale=self.scale,
            max_filters=self.max_filters,
        )
        path = os.path.join(output_dir(trainer, self.dirpath), f"filters_epoch{epoch:03d}.png")
        save_image_array(grid, path, trainer, tag="first_layer_filters")
        self.paths.append(path)
        return path

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if trainer.is_global_zero and ((epoch + 1) % self.every_n_epochs == 0 or last):
            self.draw(trainer, pl_module, epoch)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"paths": list(self.paths)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.paths = list(state_dict["paths"])
