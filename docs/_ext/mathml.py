r"""An mkdocs hook: the maths of every page rendered to MathML at build time.

``pymdownx.arithmatex`` (generic mode) wraps ``\( … \)`` and ``\[ … \]`` in
``<span class="arithmatex">`` / ``<div class="arithmatex">``. Here they become MathML
(``latex2mathml``), which browsers draw natively: the site needs no JavaScript and no
download to show its maths, and an expression that cannot be converted fails the build
(with ``--strict``, through mkdocs' warning log) instead of showing raw TeX.
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any

import latex2mathml.converter

log = logging.getLogger("mkdocs.plugins.deepfeat_mathml")

_BLOCK = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.DOTALL)
_DELIMITERS = {"\\(": ("\\)", "inline"), "\\[": ("\\]", "block")}


# latex2mathml writes \lVert … \rVert as stretchy fences, which browsers draw as tall bars
# around a fraction next to them; \| is the same symbol, not stretched.
_NORM_BARS = {"\\lVert": "\\|", "\\rVert": "\\|", "\\lvert": "|", "\\rvert": "|"}


def to_mathml(tex: str, display: str) -> str:
    """MathML for the TeX expression ``tex`` (``display`` is ``"inline"`` or ``"block"``)."""
    for bar, plain in _NORM_BARS.items():
        tex = re.sub(re.escape(bar) + r"(?![A-Za-z])", lambda _m, plain=plain: plain, tex)
    return latex2mathml.converter.convert(tex, display=display)


def on_page_content(html_text: str, page: Any, **kwargs: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        body = html.unescape(match.group(2)).strip()
        for opening, (closing, display) in _DELIMITERS.items():
            if body.startswith(opening) and body.endswith(closing):
                tex = body[len(opening) : -len(closing)].strip()
                try:
                    return to_mathml(tex, display)
                except Exception as err:  # noqa: BLE001 - any failure to convert is reported, not hidden
                    log.warning("%s: cannot render the maths %r to MathML: %s", page.file.src_path, tex, err)
                    return match.group(0)
        return match.group(0)

    return _BLOCK.sub(replace, html_text)
