"""The "layers" W_1 … W_L, head of a model, and the parameters a probe selects by name pattern or layer index."""

from __future__ import annotations

import fnmatch
from typing import Any

from torch import nn

from lightning_deepfeat.validation import check_ints, check_patterns

#: what a layer index means, for the messages of every argument that takes one
LAYER_HINT = "layer indices: 0 = W_1, -1 = the head"


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


def select_parameters(
    model: nn.Module, patterns: Any = None, layers: Any = None, argument: str = "params"
) -> list[str]:
    """Names of the parameters matched by fnmatch ``patterns`` and/or layer indices ``layers``, in model order.

    ``argument`` is the name under which the patterns were given, for the messages. Raises
    ``ValueError`` when a pattern matches no parameter (listing a few names) or an index is
    out of range for this model.
    """
    patterns = check_patterns(argument, patterns)
    indices = check_ints("layers", layers, allow_int=True, allow_none=True, hint=LAYER_HINT) or ()
    names = [n for n, _ in model.named_parameters()]
    chosen: set[str] = set()
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            preview = ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
            raise ValueError(f"`{argument}` pattern {pattern!r} matches no parameter; the parameters are: {preview}.")
        chosen.update(hits)
    if indices:
        table = parameter_layers(model)
        n = len(table)
        for index in indices:
            if not -n <= index < n:  # depends on the model, hence not in the constructor's checks
                raise ValueError(
                    f"`layers` index {index} is out of range: the model has {n} layers "
                    f"(W_1 … W_{n - 1} and the head), allowed indices are {-n} … {n - 1}."
                )
            chosen.update(table[index][1])
    return [n for n in names if n in chosen]
