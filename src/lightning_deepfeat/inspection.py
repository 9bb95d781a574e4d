"""Working on a model and its data outside the Trainer's loops: clean batches of a split, parameters frozen for a while.

The probes (:mod:`lightning_deepfeat.probes`) and the pictures (:mod:`lightning_deepfeat.viz`)
both need these; neither package imports the other, both import this module, which imports
neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn

__all__ = ["frozen", "requires_grad_flags", "set_requires_grad", "split_batches"]


# ---------------------------------------------------------------------------- requires_grad
def requires_grad_flags(module: nn.Module) -> dict[str, bool]:
    """``{name: requires_grad}`` of every parameter of ``module`` (the names of ``named_parameters()``)."""
    return {name: param.requires_grad for name, param in module.named_parameters()}


def set_requires_grad(module: nn.Module, flags: Mapping[str, bool]) -> None:
    """Set ``requires_grad`` of the parameters named in ``flags``; every other parameter keeps its own.

    ``set_requires_grad(module, saved)`` with ``saved = requires_grad_flags(module)`` puts back
    exactly the flags there were. Lightning's ``BaseFinetuning.freeze`` / ``make_trainable``
    cannot: they act on whole modules and set every flag to one value (``make_trainable``
    turns on parameters that were off before), while the probes freeze single tensors
    (``features.conv.0.bias``) and must leave a user's own frozen parameters frozen.
    """
    for name, param in module.named_parameters():
        if name in flags:
            param.requires_grad_(flags[name])


@contextmanager
def frozen(module: nn.Module, names: Iterable[str] | None = None) -> Iterator[dict[str, bool]]:
    """Inside the block the parameters ``names`` of ``module`` (default: all) have ``requires_grad=False``.

    On leaving the block, also by an exception, every parameter gets back the flag it had on
    entry; the block receives those flags (``{name: requires_grad}``) and may change any flag
    meanwhile::

        with frozen(model):  # gradients flow to the input only
            model(x).sum().backward()
    """
    saved = requires_grad_flags(module)
    chosen = saved.keys() if names is None else set(names)
    try:
        set_requires_grad(module, dict.fromkeys(chosen, False))
        yield saved
    finally:
        set_requires_grad(module, saved)


# ---------------------------------------------------------------------------- batches
@torch.no_grad()
def split_batches(
    datamodule: Any, split: str, device: torch.device | str = "cpu", batch_size: int = 512
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised ``(x, y)`` batches of ``split`` (``train``/``val``/``test``), each sample once, no augmentation.

    For an :class:`ImageClassificationDataModule` the in-memory split is read directly
    and passed through ``normalize`` (what ``on_after_batch_transfer`` does outside
    training); any other data module's ``{split}_dataloader`` is used together with its
    ``on_after_batch_transfer``.
    """
    splits = getattr(datamodule, "splits", None)
    if isinstance(splits, dict) and hasattr(datamodule, "normalize"):
        if split not in splits:
            datamodule.setup("fit" if split in ("train", "val") else "test")
        images, labels = datamodule.splits[split]
        for start in range(0, labels.shape[0], batch_size):
            x = images[start : start + batch_size].to(device)
            yield datamodule.normalize(x), labels[start : start + batch_size].to(device)
        return
    loader = getattr(datamodule, f"{split}_dataloader")()
    for batch in loader:
        batch = move_data_to_device(batch, device)  # keeps the batch type (e.g. IndexBatch)
        batch = datamodule.on_after_batch_transfer(batch, 0)
        yield batch[0], batch[1]
