"""Shared helpers of the probes: the "layers" W_1 … W_L, head of a model, and clean batches of a split."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn


def parameter_layers(model: nn.Module) -> list[tuple[str, list[str]]]:
    r"""The layers of a :class:`FeatureClassifier`: ``[(module_name, [param names]), …]``.

    A layer is a leaf module of ``model.features`` that owns parameters (a ``Linear`` or
    ``Conv`` with its bias, a norm layer …), in registration order — W_1 … W_L — followed
    by the ``head`` (all its parameters as one layer). Index ``0`` is W_1, index ``-1`` the
    head, index ``-2`` is W_L. Parameter names are those of ``model.named_parameters()``.
    For a model without ``features``/``head`` every parameterised leaf module is a layer.
    """
    layers: list[tuple[str, list[str]]] = []
    roots = [r for r in ("features", "head") if isinstance(getattr(model, r, None), nn.Module)]
    if len(roots) != 2:
        roots = [""]
    for root in roots:
        module = model if root == "" else getattr(model, root)
        if root == "head":
            names = [f"head.{n}" for n, _ in module.named_parameters()]
            if names:
                layers.append(("head", names))
            continue
        for name, sub in module.named_modules():
            own = [n for n, _ in sub.named_parameters(recurse=False)]
            if not own:
                continue
            full = f"{root}.{name}" if root and name else (root or name)
            layers.append((full, [f"{full}.{n}" if full else n for n in own]))
    return layers


def resolve_layer_index(index: int, n_layers: int, argument: str = "layers") -> int:
    """Map a possibly negative layer index to ``[0, n_layers)`` or raise a ``ValueError``."""
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError(f"`{argument}` must hold ints (layer indices), got {index!r}.")
    if not -n_layers <= index < n_layers:
        raise ValueError(
            f"`{argument}` index {index} is out of range: the model has {n_layers} layers "
            f"(W_1 … W_{n_layers - 1} and the head), allowed indices are {-n_layers} … {n_layers - 1}."
        )
    return index % n_layers


def select_parameters(
    model: nn.Module, patterns: Sequence[str] | None = None, layers: Sequence[int] | None = None, argument: str = "params"
) -> list[str]:
    """Names of the parameters matched by fnmatch ``patterns`` and/or layer indices.

    Raises ``ValueError`` when a pattern matches no parameter (listing a few names) or an
    index is out of range.
    """
    names = [n for n, _ in model.named_parameters()]
    chosen: set[str] = set()
    for pattern in patterns or ():
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            preview = ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
            raise ValueError(f"`{argument}` pattern {pattern!r} matches no parameter; the parameters are: {preview}.")
        chosen.update(hits)
    if layers:
        table = parameter_layers(model)
        for index in layers:
            chosen.update(table[resolve_layer_index(index, len(table), "layers")][1])
    return [n for n in names if n in chosen]


def check_name_patterns(argument: str, patterns: Any) -> list[str] | None:
    """Validate a list of fnmatch patterns (``None`` allowed)."""
    if patterns is None:
        return None
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, Sequence) or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"`{argument}` must be a list of non-empty parameter-name patterns such as ['features.conv.0.*'], got {patterns!r}.")
    return list(patterns)


def check_layer_indices(argument: str, layers: Any) -> list[int] | None:
    """Validate a list of layer indices (``None`` allowed)."""
    if layers is None:
        return None
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = [layers]
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in layers
    ):
        raise ValueError(f"`{argument}` must be a list of layer indices (ints; 0 = W_1, -1 = head), got {layers!r}.")
    return list(layers)


@torch.no_grad()
def split_batches(datamodule: Any, split: str, device: torch.device | str = "cpu", batch_size: int = 512) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
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
