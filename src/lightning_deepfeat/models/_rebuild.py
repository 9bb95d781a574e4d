"""What a checkpoint records to rebuild a model, as plain data, and how it is read back.

Checkpoints are data: ``load_from_checkpoint(..., weights_only=True)`` must work, and
loading one must not run code the user did not choose to run. So the hyperparameters
hold import paths and arguments, never modules or functions, and reading them back
imports only ``torch.optim`` and ``lightning_deepfeat`` modules; anything else must
already be imported.

Three forms, the ones jsonargparse (LightningCLI's YAML) also uses where it can:

* a feature net φ that records its arguments: ``{"class_path": ..., "init_args": {...}}``;
* an optimizer or scheduler factory that is a class, or a ``functools.partial`` of a class
  or of a module-level function with keyword arguments of plain data: the same dict;
* a module-level function: its import path, ``"pkg.module.function"``.

A factory that none of these can describe (a lambda, a local function, a partial with
positional or non-data arguments) is recorded as ``{"unrebuildable": "<what it was>"}``;
what is built from that raises a ``ValueError`` naming the argument to pass again when
it is called (when the model is trained, not when it is loaded for inference).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

UNREBUILDABLE = "unrebuildable"
# modules a checkpoint may import; any other module must have been imported by the user
_IMPORTABLE_PACKAGES = ("torch.optim", "lightning_deepfeat")
_MISSING = object()


# ----------------------------------------------------------------------------- import paths
def _may_import(module_name: str) -> bool:
    return any(module_name == p or module_name.startswith(p + ".") for p in _IMPORTABLE_PACKAGES)


def _get_path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part, _MISSING)
        if obj is _MISSING:
            return _MISSING
    return obj


def resolve_import_path(path: str, argument: str) -> Any:
    """The object that the dotted ``path`` names, for ``argument`` (named in any error).

    The longest prefix of ``path`` that is an imported module is the module; the rest is
    looked up in it. Only ``torch.optim`` and ``lightning_deepfeat`` modules are imported
    here; any other must be imported already.
    """
    if not isinstance(path, str) or not path or any(not part.isidentifier() for part in path.split(".")):
        raise ValueError(f"`{argument}` must name a class or function by its dotted import path, got {path!r}.")
    parts = path.split(".")
    module_found = False
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        module = sys.modules.get(module_name)
        if module is None and _may_import(module_name):
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                module = None
        if module is None:
            continue
        module_found = True
        obj = _get_path(module, ".".join(parts[cut:]))
        if obj is not _MISSING:
            return obj
    if module_found:
        raise ValueError(f"`{argument}` names {path!r}, which does not exist.")
    raise ValueError(
        f"`{argument}` names {path!r}, whose module is not imported. Import it before loading the checkpoint, "
        f"or pass `{argument}=` explicitly."
    )


def import_path(obj: Any) -> str | None:
    """The shortest dotted path under which ``obj`` can be imported again, or ``None``.

    ``None`` for lambdas, local functions and objects not reachable from their module.
    ``torch.optim.adam.Adam`` comes out as ``torch.optim.Adam``, as jsonargparse writes it.
    """
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    parts = module.split(".")
    for cut in range(1, len(parts) + 1):
        candidate = ".".join(parts[:cut])
        loaded = sys.modules.get(candidate)
        if loaded is not None and _get_path(loaded, qualname) is obj:
            return f"{candidate}.{qualname}"
    return None


def is_plain_data(value: Any) -> bool:
    """Whether ``value`` is built from None, bools, numbers, strings, lists, tuples and str-keyed dicts only.

    Exact types: a numpy float is a ``float`` subclass, but unpickling it needs numpy,
    which ``weights_only=True`` refuses.
    """
    if value is None or type(value) in (bool, int, float, str):
        return True
    if type(value) in (list, tuple):
        return all(is_plain_data(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and is_plain_data(v) for k, v in value.items())
    return False


# ----------------------------------------------------------------------------- feature nets
def module_spec(module: nn.Module) -> dict[str, Any] | None:
    """The ``{"class_path", "init_args"}`` dict that rebuilds ``module``, if it records its arguments.

    Our feature nets keep their constructor arguments in ``init_args``; a user's own
    module may do the same to make ``FeatureClassifier.load_from_checkpoint`` rebuild it.
    """
    init_args = getattr(module, "init_args", None)
    if not isinstance(init_args, dict):
        return None
    cls = type(module)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(init_args)}


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Instantiate a ``{"class_path", "init_args"}`` dict naming an ``nn.Module`` (see :func:`resolve_import_path`)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("class_path"), str):
        raise ValueError(f"`features` must be an nn.Module or a dict with 'class_path', got {spec!r}.")
    cls = resolve_import_path(spec["class_path"], "features")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"`features` class_path {spec['class_path']!r} does not name an nn.Module subclass.")
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise ValueError(f"`features` init_args must be a dict, got {init_args!r}.")
    return cls(**init_args)


# ----------------------------------------------------------------------------- factories
def _jsonargparse_class(factory: functools.partial) -> type | None:
    """The class of a factory that jsonargparse built from a ``class_path`` (LightningCLI's YAML), or None.

    jsonargparse hands a ``Callable[..., Optimizer]`` given as ``class_path``/``init_args``
    over as ``partial(<its instantiator>, ..., cls, **init_args)``: the class and the
    keywords are the spec. This reads how jsonargparse builds it, which no public API
    exposes; ``test_factory_spec_of_a_jsonargparse_class_path`` (tests/test_models.py) checks
    it against the installed version, and anything else falls back to "unrebuildable" (a
    clear message naming the argument to pass, never a wrong optimizer).
    """
    func_module = getattr(factory.func, "__module__", None) or ""
    if func_module.split(".")[0] == "jsonargparse" and factory.args and isinstance(factory.args[-1], type):
        return factory.args[-1]
    return None


def _describe(factory: Any) -> str:
    target = factory.func if isinstance(factory, functools.partial) else factory
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    module = getattr(target, "__module__", None)
    name = f"{module}.{name}" if module else name
    if "<lambda>" in name:
        kind = "a lambda"
    elif "<locals>" in name:
        kind = "a local function"
    else:
        kind = "an object without an import path" if import_path(target) is None else "a callable"
    return f"functools.partial of {kind} ({name})" if isinstance(factory, functools.partial) else f"{kind} ({name})"


def factory_spec(factory: Callable[..., Any]) -> str | dict[str, Any]:
    """Plain-data form of an optimizer or scheduler factory (see the module docstring)."""
    if isinstance(factory, UnrebuildableFactory):
        return {UNREBUILDABLE: factory.description}
    target: Callable[..., Any] = factory
    keywords: dict[str, Any] = {}
    if isinstance(factory, functools.partial):
        target, keywords = factory.func, dict(factory.keywords)
        if factory.args:
            cls = _jsonargparse_class(factory)
            if cls is None:
                return {UNREBUILDABLE: f"{_describe(factory)} with positional arguments"}
            target = cls
    path = import_path(target)
    if path is None:
        return {UNREBUILDABLE: _describe(factory)}
    if not is_plain_data(keywords):
        bad = sorted(k for k, v in keywords.items() if not is_plain_data(v))
        return {UNREBUILDABLE: f"functools.partial of {path} whose arguments {bad} are not plain data"}
    if isinstance(target, type) or keywords:
        return {"class_path": path, "init_args": keywords}
    return path


def unrebuildable_message(spec: dict[str, Any], argument: str, owner: str) -> str:
    """Why the factory recorded as ``spec`` cannot be rebuilt, and the argument that replaces it."""
    return (
        f"The checkpoint's `{argument}` cannot be rebuilt: it was {spec[UNREBUILDABLE]}, which a checkpoint cannot "
        "hold (it holds a class, a module-level function, or a functools.partial of one with plain-data keyword "
        f"arguments). Pass it again: {owner}.load_from_checkpoint(path, {argument}=...)."
    )


class UnrebuildableFactory:
    """Stands in for a factory that the checkpoint could not record: calling it raises the reason.

    A model loaded for inference needs no optimizer; one that is trained fails in
    ``configure_optimizers``, before any step, naming the argument to pass.
    """

    def __init__(self, message: str, description: str) -> None:
        self.message = message
        self.description = description  # what the checkpoint recorded: saved again as it was

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


def build_factory(spec: Any, argument: str, owner: str) -> Callable[..., Any]:
    """The factory that :func:`factory_spec` described; ``argument`` and ``owner`` name it in errors.

    For a spec recorded as unrebuildable: an :class:`UnrebuildableFactory`.
    """
    if isinstance(spec, dict) and UNREBUILDABLE in spec:
        return UnrebuildableFactory(unrebuildable_message(spec, argument, owner), str(spec[UNREBUILDABLE]))
    init_args: Any  # read from the checkpoint: checked to be a dict below
    if isinstance(spec, str):
        path, init_args = spec, {}
    elif isinstance(spec, dict) and isinstance(spec.get("class_path"), str):
        path, init_args = spec["class_path"], spec.get("init_args") or {}
        if not isinstance(init_args, dict):
            raise ValueError(f"`{argument}` init_args must be a dict, got {init_args!r}.")
    else:
        raise ValueError(
            f"`{argument}` must be a callable, an import path or a dict with 'class_path' and 'init_args', "
            f"got {spec!r}."
        )
    target = resolve_import_path(path, argument)
    if not callable(target):
        raise ValueError(f"`{argument}` names {path!r}, which is not callable.")
    # the standard library's callables (os, subprocess, builtins, ...) are never optimizers: refuse them
    top = str(getattr(target, "__module__", None) or "").split(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        raise ValueError(
            f"`{argument}` names {path!r}, a standard-library callable, not an optimizer or scheduler factory."
        )
    return functools.partial(target, **init_args) if init_args else target


# ----------------------------------------------------------------------------- the constructor call
@dataclass(frozen=True)
class InitCall:
    """The call of the outermost ``__init__`` of an object being constructed.

    Attributes:
        arguments: what that ``__init__`` received, by name: its named parameters and the
            contents of its ``**kwargs``; ``None`` when it also received positional
            ``*args`` (their names are unknown).
        inner_names: the named parameters of the ``__init__`` calls below it (``super()``).
    """

    arguments: dict[str, Any] | None
    inner_names: frozenset[str]


def outermost_init_call(obj: Any, frame: types.FrameType | None) -> InitCall | None:
    """Walk up from ``frame`` through the ``__init__`` frames of ``obj``; describe the outermost call.

    ``None`` when ``frame`` is not inside a constructor of ``obj``. ``load_from_checkpoint``
    calls the class with the saved hyperparameters, so only what this outermost call
    received may be saved: an argument that a subclass passes to ``super().__init__``
    itself would be passed twice.
    """
    chain: list[types.FrameType] = []
    while frame is not None and frame.f_code.co_name == "__init__":
        code = frame.f_code
        if code.co_argcount < 1 or frame.f_locals.get(code.co_varnames[0]) is not obj:
            break
        chain.append(frame)
        frame = frame.f_back
    if not chain:
        return None
    inner = frozenset(name for f in chain[:-1] for name in inspect.getargvalues(f).args[1:])
    names, varargs, varkw, values = inspect.getargvalues(chain[-1])
    if varargs and values.get(varargs):
        return InitCall(None, inner)
    arguments = {name: values[name] for name in names[1:] if name in values}
    if varkw and isinstance(values.get(varkw), dict):
        arguments.update(values[varkw])
    return InitCall(arguments, inner)


__all__ = [
    "UNREBUILDABLE",
    "InitCall",
    "UnrebuildableFactory",
    "build_factory",
    "build_from_spec",
    "factory_spec",
    "import_path",
    "is_plain_data",
    "module_spec",
    "outermost_init_call",
    "resolve_import_path",
    "unrebuildable_message",
]
