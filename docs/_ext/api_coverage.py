"""An mkdocs hook: every public name of a documented module has an entry in the API reference.

For each ``::: module`` directive in ``docs/api/``, every name in the module's ``__all__``
(dunder names aside) must be the anchor of an entry somewhere in the built site: either
``module.name`` or the path where the object is defined, ``defining_module.qualname`` (a
function documented by its own path, say). A name without an entry, which happens when
mkdocstrings skips it (an attribute without a docstring, a name shadowed by a submodule),
is a warning, so ``mkdocs build --strict`` fails on it, naming the module and the name.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from typing import Any

log = logging.getLogger("mkdocs.plugins.deepfeat_api_coverage")

_DIRECTIVE = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)
_ID = re.compile(r'\bid="([^"]+)"')

_modules: dict[str, str] = {}  # documented module -> the page that documents it
_anchors: set[str] = set()


def on_pre_build(config: Any, **kwargs: Any) -> None:
    _modules.clear()
    _anchors.clear()


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri.startswith("api/"):
        for name in _DIRECTIVE.findall(markdown):
            _modules.setdefault(name, page.file.src_uri)
    return markdown


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    _anchors.update(_ID.findall(html))
    return html


def missing_entries(module_name: str, anchors: set[str]) -> list[str]:
    """The names of ``module_name.__all__`` that have no anchor in ``anchors``."""
    module = importlib.import_module(module_name)
    missing = []
    for name in getattr(module, "__all__", []):
        if name.startswith("__"):
            continue
        obj = getattr(module, name)
        paths = {f"{module_name}.{name}"}
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and hasattr(obj, "__qualname__"):
            paths.add(f"{obj.__module__}.{obj.__qualname__}")
        if not paths & anchors:
            missing.append(name)
    return missing


def on_post_build(config: Any, **kwargs: Any) -> None:
    for module_name, page in sorted(_modules.items()):
        try:
            is_module = inspect.ismodule(importlib.import_module(module_name))
        except ImportError:
            continue  # an object's path, not a module: mkdocstrings has reported it if it is wrong
        if not is_module:
            continue
        for name in missing_entries(module_name, _anchors):
            log.warning(
                "%s: %s.%s is in __all__ but has no entry in the API reference (give it a docstring, "
                "or add a `::: <its path>` directive)",
                page,
                module_name,
                name,
            )
