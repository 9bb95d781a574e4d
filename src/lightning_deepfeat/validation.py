r"""Argument checks shared by every constructor of the package.

Each ``check_*`` function takes the argument's name and value, returns the value in its
normal form (a ``float`` for a number, a ``tuple`` for a sequence, ...) and otherwise raises
a ``ValueError`` in one form::

    `name` must be <what is allowed>, got <repr of the value>.

so that a user sees which argument, what they passed and what would be accepted, before any
training starts. ``hint`` adds a short reason or example in parentheses after what is
allowed (``"`epochs` must be a positive int or None (None: trainer.max_epochs), got 0."``).

Conventions:

* ``bool`` is never a number here, although it is an ``int`` in Python: ``dropout=True``
  is a mistake, not ``1``.
* Numbers are finite (no ``nan``, no ``inf``). Bounds are closed unless ``low_open`` /
  ``high_open`` make them open; they read ``>= 0``, ``> 1``, ``in [0, 1)``.
* An int bounded below by 1 reads "a positive int"; other bounds read ``>= n``.
* A **probability** is a number in :math:`[0, 1]` (:func:`check_probability`), both ends
  allowed: ``p = 1`` is "always" (a flip applied to every image). A **dropout** probability
  is a probability that is also :math:`< 1` (:func:`check_dropout`): dropping every unit
  leaves nothing to learn from and the inverted-dropout scale :math:`1/(1-p)` is infinite.
* A choice is typed as ``Literal[...]`` in the signature (so that jsonargparse rejects a
  bad value when it parses a command line or YAML) and checked again at run time with
  :func:`check_choice` on the same ``Literal`` (Python callers bypass the parser).

Only the standard library is used, so any module of the package may import this one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

T = TypeVar("T")

__all__ = [
    "check_bool",
    "check_callable",
    "check_choice",
    "check_dropout",
    "check_each",
    "check_instance",
    "check_int",
    "check_ints",
    "check_number",
    "check_pair",
    "check_path",
    "check_patterns",
    "check_probability",
    "check_shape",
    "check_str",
    "choices_of",
    "fail",
]


# ---------------------------------------------------------------------------- message
def fail(name: str, allowed: str, value: Any, *, hint: str = "") -> ValueError:
    """The package's argument error: ``"`name` must be <allowed> (<hint>), got <repr(value)>."``.

    Returned, not raised, so that the caller writes ``raise fail(...)`` and type checkers see
    the branch end. Use it for a rule that no ``check_*`` function expresses.
    """
    reason = f" ({hint})" if hint else ""
    return ValueError(f"`{name}` must be {allowed}{reason}, got {value!r}.")


def _or_none(allowed: str, allow_none: bool) -> str:
    return f"{allowed} or None" if allow_none else allowed


def _bound(x: float) -> str:
    """A bound as written in a message: ``1`` rather than ``1.0``, ``1e-08`` as Python writes it."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def _range(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """``" >= 0"``, ``" > 1"``, ``" <= 32"`` or ``" in [0, 1)"``; empty when unbounded."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{_bound(low)}, {_bound(high)}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {_bound(low)}"
    if high is not None:
        return f" {'<' if high_open else '<='} {_bound(high)}"
    return ""


def _within(x: float, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    if low is not None and (x <= low if low_open else x < low):
        return False
    return not (high is not None and (x >= high if high_open else x > high))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """An int or float, not a bool, finite as a float (``10**400`` is not: it overflows)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _is_sequence(value: Any) -> bool:
    """A list, tuple or other ``Sequence``, but not a string (which is a sequence of characters)."""
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _int_what(low: int | None, high: int | None, *, plural: bool = False) -> str:
    """``"a positive int"``, ``"an int >= 0"``, ``"an int in [1, 32]"``; ``"positive ints"`` … when ``plural``."""
    if low == 1 and high is None:
        return "positive ints" if plural else "a positive int"
    return ("ints" if plural else "an int") + _range(low, high, False, False)


# ---------------------------------------------------------------------------- scalars
def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (not ``0``/``1``, not ``"yes"``)."""
    if not isinstance(value, bool):
        raise fail(name, "True or False", value)
    return value


def check_int(
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    allow_none: bool = False,
    hint: str = "",
) -> Any:
    """``value`` if it is an int in ``[low, high]`` (either bound optional), or ``None`` when allowed.

    Messages read ``a positive int`` for ``low=1``, else ``an int >= low`` / ``an int in
    [low, high]``. Returns ``int | None`` (``int`` when ``allow_none`` is false).
    """
    if value is None and allow_none:
        return None
    if not _is_int(value) or not _within(value, low, high, False, False):
        raise fail(name, _or_none(_int_what(low, high), allow_none), value, hint=hint)
    return int(value)


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
    hint: str = "",
) -> Any:
    """``float(value)`` if it is a finite int or float within the bounds, or ``None`` when allowed.

    ``low``/``high`` are closed bounds unless ``low_open``/``high_open``: ``check_number("divisor",
    d, low=1, low_open=True)`` accepts :math:`d > 1` and otherwise says "a finite number > 1".
    Returns ``float | None`` (``float`` when ``allow_none`` is false).
    """
    if value is None and allow_none:
        return None
    if not _is_number(value) or not _within(float(value), low, high, low_open, high_open):
        what = "a finite number" + _range(low, high, low_open, high_open)
        raise fail(name, _or_none(what, allow_none), value, hint=hint)
    return float(value)


def check_probability(name: str, value: Any, *, hint: str = "") -> float:
    r"""``float(value)`` if it is a probability: a number :math:`p \in [0, 1]`, both ends included."""
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise fail(name, "a probability in [0, 1]", value, hint=hint)
    return float(value)


def check_dropout(name: str, value: Any) -> float:
    r"""``float(value)`` if it is a dropout probability: a probability that is also :math:`< 1`.

    :math:`p = 1` would zero every unit, and inverted dropout's scale :math:`1/(1-p)` of the
    kept units is infinite, so it is refused; :math:`p = 0` switches dropout off.
    """
    if not _is_number(value) or not 0.0 <= value < 1.0:
        raise fail(name, "a dropout probability in [0, 1)", value)
    return float(value)


def check_str(name: str, value: Any, *, allow_none: bool = False, hint: str = "") -> Any:
    """``value`` if it is a non-empty ``str`` (or ``None`` when allowed)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        raise fail(name, _or_none("a non-empty str", allow_none), value, hint=hint)
    return value


def choices_of(choices: Any) -> tuple[Any, ...]:
    """The allowed values of a ``Literal[...]`` type (also inside ``Optional``), or of a sequence, as a tuple."""
    if get_origin(choices) is Literal:
        return tuple(get_args(choices))
    args = get_args(choices)
    if args and any(get_origin(a) is Literal for a in args):  # Optional[Literal[...]]: None is one of them
        return tuple(v for a in args for v in (get_args(a) if get_origin(a) is Literal else (None,)))
    if _is_sequence(choices) or isinstance(choices, (set, frozenset)):
        return tuple(choices)
    raise TypeError(f"choices must be a Literal[...] type or a sequence of values, got {choices!r}.")


def check_choice(name: str, value: Any, choices: Any, *, hint: str = "") -> Any:
    """``value`` if it is one of ``choices``: a ``Literal[...]`` type (the one in the signature) or a sequence.

    The message lists the allowed values: ``"`mode` must be one of 'min', 'max', got 'mx'."``
    """
    allowed = choices_of(choices)
    # `in` alone would accept True for 1 and 1.0 for 1: compare types as well
    if not any(value == c and type(value) is type(c) for c in allowed):
        raise fail(name, "one of " + ", ".join(repr(c) for c in allowed), value, hint=hint)
    return value


def check_instance(
    name: str, value: Any, types: type | tuple[type, ...], *, what: str, allow_none: bool = False
) -> Any:
    """``value`` if it is an instance of ``types`` (or ``None`` when allowed).

    ``what`` describes the allowed values (``"an nn.Module"``). The message names the type
    received, not its ``repr``, which for a module or a tensor is long:
    ``"`features` must be an nn.Module, got str."``
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, types):
        raise ValueError(f"`{name}` must be {_or_none(what, allow_none)}, got {type(value).__name__}.")
    return value


def check_callable(name: str, value: Any, *, what: str = "a callable", allow_none: bool = False) -> Any:
    """``value`` if it is callable (or ``None`` when allowed); ``what`` says which callable is expected."""
    if value is None and allow_none:
        return None
    if not callable(value):
        raise fail(name, _or_none(what, allow_none), value)
    return value


def check_path(
    name: str,
    value: Any,
    *,
    kind: Literal["path", "file", "directory"] = "path",
    allow_none: bool = False,
    hint: str = "",
) -> Any:
    """``Path(value)`` if it is a non-empty ``str`` or ``os.PathLike`` (or ``None`` when allowed).

    Only the form is checked, not that the path exists: a run creates its output folders.
    ``kind`` only words the message ("a file path", "a directory path").
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        what = "a path" if kind == "path" else f"a {kind} path"
        raise fail(name, _or_none(what, allow_none), value, hint=hint)
    return Path(value)


# ---------------------------------------------------------------------------- sequences
def check_ints(
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    non_empty: bool = False,
    allow_int: bool = False,
    allow_none: bool = False,
    hint: str = "",
) -> Any:
    """``tuple(value)`` if it is a sequence of ints in ``[low, high]``; ``None`` when allowed.

    ``allow_int`` accepts a single int as a sequence of one. Messages read ``"a sequence of
    positive ints"``, ``"a non-empty sequence of ints >= 0"``. Returns ``tuple[int, ...] | None``.
    """
    if value is None and allow_none:
        return None
    if allow_int and _is_int(value):
        value = (value,)
    if (
        not _is_sequence(value)
        or (non_empty and len(value) == 0)
        or not all(_is_int(v) and _within(v, low, high, False, False) for v in value)
    ):
        what = f"a {'non-empty ' if non_empty else ''}sequence of {_int_what(low, high, plural=True)}"
        if allow_int:
            what = f"{_int_what(low, high)} or {what}"
        raise fail(name, _or_none(what, allow_none), value, hint=hint)
    return tuple(int(v) for v in value)


def check_shape(name: str, value: Any, *, hint: str = "such as (1, 28, 28)") -> tuple[int, ...]:
    """``tuple(value)`` if it is a tensor shape without the batch axis: a non-empty sequence of positive ints."""
    shape: tuple[int, ...] = check_ints(name, value, low=1, non_empty=True, hint=hint)
    return shape


def check_pair(name: str, value: Any, *, low: int = 0) -> tuple[int, int]:
    """``(y, x)`` from an int (the same for both axes) or a pair of ints, each ``>= low``."""
    pair = (value, value) if _is_int(value) else value
    if not _is_sequence(pair) or len(pair) != 2 or not all(_is_int(v) and v >= low for v in pair):
        raise fail(name, f"{_int_what(low, None)} or a pair of them (y, x)", value)
    return int(pair[0]), int(pair[1])


def check_patterns(name: str, value: Any, *, hint: str = "such as ['features.*']") -> list[str]:
    """``value`` as a list of non-empty fnmatch patterns over parameter names; ``None`` is no pattern (``[]``).

    A single string is one pattern. Whether a pattern matches anything depends on the model,
    so it is checked where the model is known (at setup), not here.
    """
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not _is_sequence(value) or not all(isinstance(p, str) and p for p in value):
        raise fail(name, "a list of non-empty fnmatch patterns over parameter names", value, hint=hint)
    return list(value)


def check_each(name: str, values: Any, check: Callable[..., T], **kwargs: Any) -> list[T]:
    """``[check(f"{name}[i]", v, **kwargs) for i, v in enumerate(values)]``: the message names the bad element."""
    return [check(f"{name}[{i}]", v, **kwargs) for i, v in enumerate(values)]
