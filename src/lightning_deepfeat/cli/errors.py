"""Short error messages for ``deepfeat``: one line that names the argument, the value and what is allowed.

jsonargparse explains a bad value with the whole tree of types it tried (a subclass
union inside a subclass union can take 60 lines); Python explains a bad argument with a
traceback. A user needs neither to fix a typo, so ``deepfeat`` prints the gist and
keeps the full story behind ``--debug`` (or ``DEEPFEAT_DEBUG=1``).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Iterable

DEBUG_FLAG = "--debug"
DEBUG_ENV = "DEEPFEAT_DEBUG"

_TYPE_NAMES = {"int": "an int", "float": "a float", "bool": "true or false", "str": "a string"}


def debug_requested() -> bool:
    """True when ``--debug`` is on the command line or ``DEEPFEAT_DEBUG`` is set to a true value."""
    return DEBUG_FLAG in sys.argv[1:] or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """``' Did you mean X?'`` for the closest candidates (case-insensitive), or ``''``."""
    pool = sorted(set(candidates))
    by_lower = {c.lower(): c for c in pool}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.6)
    if not close:
        return ""
    names = [by_lower[c] for c in close]
    return f" Did you mean {' or '.join(names)}?"


def known_class_names() -> set[str]:
    """Short names of the classes a config may name: ours, torch's layers and optimizers, Lightning's callbacks."""
    modules = [
        "lightning_deepfeat.models",
        "lightning_deepfeat.data",
        "lightning_deepfeat.callbacks",
        "lightning_deepfeat.probes",
        "lightning_deepfeat.viz",
        "torch.nn",
        "torch.optim",
        "torch.optim.lr_scheduler",
        "lightning.pytorch.callbacks",
        "lightning.pytorch.loggers",
    ]
    names: set[str] = set()
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # pragma: no cover - an optional extra
            continue
        names.update(n for n, obj in vars(module).items() if isinstance(obj, type) and not n.startswith("_"))
    return names


def _init_parameters(class_path: str) -> set[str]:
    try:
        module_name, _, name = class_path.rpartition(".")
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        return set()
    params: set[str] = set()
    for klass in inspect.getmro(cls):
        init = vars(klass).get("__init__")
        if init is None:
            continue
        try:
            params.update(p for p in inspect.signature(init).parameters if p not in ("self", "args", "kwargs", "kw"))
        except (TypeError, ValueError):
            continue
    return params


def condense_parse_error(message: str) -> str:
    """The gist of a jsonargparse error message, in one line (see the module docstring)."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    nested = re.findall(r"NestedArg\(key='([^']+)', val='([^']*)'\)", message)
    where = keys[0] if keys else ""
    if nested:
        where = f"{where}.{nested[-1][0]}" if where else nested[-1][0]
    elif len(keys) > 1:  # a value inside a class given as a dict (YAML): the keys from the outside in
        where = ".".join(keys)
    option = f"`--{where}`" if where else "a value"

    unknown = re.search(r"Option '([^']+)' is not accepted", message) or re.search(
        r"""Key ["']([^"']+)["'] is not expected""", message
    )
    owner = re.search(r"Problem with given class_path '([^']+)'", message)
    owner_path = owner.group(1) if owner else ""
    known = _init_parameters(owner_path) if owner_path else set()
    # jsonargparse tries every alternative of a union (a list of callbacks, one callback, None): one that
    # does not take the key says "not expected" even when the class does take it and the value is what is wrong
    if unknown and unknown.group(1) not in known:
        bad = unknown.group(1)
        what = f" of {owner_path.rsplit('.', 1)[-1]}" if owner_path else ""
        return f"unknown argument {bad!r}{what}.{did_you_mean(bad, known)}"

    bad_class = (
        re.search(r"Expected a dot import path string: (\S+)", message)
        or re.search(r"Import path (\S+) does not correspond", message)
        or re.search(r"No module named '([^']+)'", message)
    )
    if bad_class and (
        "class_path" in where
        or "Import path" in message
        or not re.search(r"Expected a <class '(int|float|bool|str)'>", message)
    ):
        name = bad_class.group(1).rstrip(":.,")
        hint = did_you_mean(name.rsplit(".", 1)[-1], known_class_names())
        return f"{option}: {name!r} is not a class that fits here.{hint}"

    expected = [t for t in re.findall(r"Expected a <class '([\w.]+)'>", message) if t != "NoneType"]
    # the innermost value that failed ("Got value"), else the whole value given to the outermost key
    given = re.findall(r"Got value: (.+)", message) or re.findall(r"Given value: (.+)", message)
    value = nested[-1][1] if nested else (given[-1].strip() if given else "")
    # a choice typed as Literal[...]: jsonargparse says "Expected a typing.Literal['min', 'max']. Got value: mx"
    literal = re.search(r"Expected a (?:typing(?:_extensions)?\.)?Literal\[(.+?)\](?:\.|$)", message, re.MULTILINE)
    if literal:
        # None is allowed only where the Literal itself is Optional, not where a union around it is
        subtypes = re.search(r"Subtypes: \[([^\n]*)\]", message)  # listed in either order, by version
        or_null = " or null" if subtypes and "Literal[" in subtypes[1] and "NoneType" in subtypes[1] else ""
        return f"{option} must be one of {literal.group(1).strip()}{or_null}, got {value!r}."
    if expected:
        allowed = " or ".join(
            dict.fromkeys(_TYPE_NAMES.get(t.rsplit(".", 1)[-1], t.rsplit(".", 1)[-1]) for t in expected)
        )
        return f"{option} must be {allowed}, got {value!r}."
    choices = re.search(r"Expected one of \[?([^\]\n]+)\]?", message) or re.search(
        r"invalid choice: .*?\(choose from ([^)]+)\)", message
    )
    if choices:
        return f"{option} must be one of {choices.group(1).strip()}, got {value!r}."
    first = next((line.strip() for line in message.splitlines() if line.strip()), message)
    position = re.search(r"line \d+, column \d+", message)
    if position and position.group(0) not in first:  # a YAML syntax error: where it is matters most
        first = f"{first.rstrip(':')} (at {position.group(0)})"
    return first if len(first) <= 300 else first[:297] + "..."


def condense_exception(err: BaseException, limit: int = 600) -> str:
    """One short line for an exception a user caused (our own validation errors are already one line).

    jsonargparse reports an exception raised while it builds a class inside its list of
    union alternatives; the user's message is the first alternative's error.
    """
    text = str(err).strip()
    if "Does not validate against any of the Union subtypes" in text:
        bullets = [m.strip() for m in re.findall(r"^\s*- (.+)$", text, flags=re.MULTILINE)]
        useful = [b for b in bullets if "NoneType" not in b]
        if useful:
            text = useful[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = " ".join(lines[:3]) if lines else type(err).__name__
    return message if len(message) <= limit else message[: limit - 3] + "..."


__all__ = [
    "DEBUG_ENV",
    "DEBUG_FLAG",
    "condense_exception",
    "condense_parse_error",
    "debug_requested",
    "did_you_mean",
    "known_class_names",
]
