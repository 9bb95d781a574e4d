r"""A griffe extension: the Sphinx roles of our docstrings rendered as Markdown for mkdocstrings.

The docstrings are written for readers of the source and of ``help()``, in the style of
torch and torchmetrics: ``:math:`x```, ``.. math::`` blocks, ``:class:`~a.B```,
double-backquoted literals and ``Example::`` blocks; module constants are documented by a
``#:`` comment above them. mkdocstrings renders Markdown, so at build time (never in the
source) this extension:

* rewrites ``:math:`x``` → ``\(x\)`` and a ``.. math::`` block → ``\[ … \]`` (arithmatex);
* rewrites ``:class:`~a.b.C``` (and ``:func:``, ``:meth:``, ``:attr:``, ``:mod:``, ``:data:``,
  ``:exc:``, ``:obj:``) → ```C``` (the ``~`` form) or ```a.b.C```;
* rewrites ````literal```` → ```literal``` (also when the literal spans two lines);
* turns a paragraph ending in ``::`` followed by an indented block into a fenced block
  (``python`` when it parses as Python, else ``text``), and an RST simple table (``=====  =====``
  borders) into a Markdown table;
* gives a module attribute without a docstring the ``#:`` comment lines right above it.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(class|func|meth|attr|mod|data|exc|obj):`(~?)([^`]+)`")
_MATH = re.compile(r":math:`([^`]+)`")
_LITERAL = re.compile(r"(?<!`)``(?!`)(.+?)(?<!`)``(?!`)", re.DOTALL)  # may hold single backquotes


def _role(match: re.Match[str]) -> str:
    tilde, target = match.group(2), " ".join(match.group(3).split())
    if "<" in target and target.endswith(">"):  # :class:`text <target>`
        return f"`{target.split('<', 1)[0].strip()}`"
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def _inline(text: str) -> str:
    """The roles and literals of a run of prose lines (a literal may span a line break)."""
    text = _MATH.sub(lambda m: f"\\({m.group(1)}\\)", text)
    text = _ROLE.sub(_role, text)
    return _LITERAL.sub(_literal, text)


def _literal(match: re.Match[str]) -> str:
    """A Markdown code span: one backquote, or two and spaces when the code holds one (CommonMark)."""
    code = match.group(1)
    return f"`` {code} ``" if "`" in code else f"`{code}`"


_BORDER = re.compile(r"^\s*=+(?: +=+)+\s*$")


def _simple_table(lines: list[str], i: int) -> tuple[list[str], int] | None:
    """The RST simple table whose top border is ``lines[i]`` as Markdown table lines, and the index after it.

    Only the form with a header (border, header row, border, rows, border); a row whose first
    column is empty continues the row above. ``None`` when the lines are not such a table.
    """
    border = lines[i]
    if i + 2 >= len(lines) or lines[i + 2].strip() != border.strip():
        return None
    starts = [m.start() for m in re.finditer(r"=+", border)]

    def cells(line: str) -> list[str]:
        bounds = [*starts[1:], None]
        return [line[a:b].strip() if b else line[a:].strip() for a, b in zip(starts, bounds, strict=True)]

    rows: list[list[str]] = []
    j = i + 3
    while j < len(lines) and lines[j].strip() != border.strip():
        if lines[j].strip():
            row = cells(lines[j])
            if rows and not row[0]:
                rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], row, strict=True)]
            else:
                rows.append(row)
        j += 1
    if j == len(lines):
        return None
    pad = " " * (len(border) - len(border.lstrip()))
    table = [cells(lines[i + 1]), ["---"] * len(starts), *rows]
    return [pad + "| " + " | ".join(row) + " |" for row in table], j + 1


def rewrite(text: str) -> str:
    """The docstring ``text`` with its Sphinx roles and directives as Markdown (see the module docstring)."""
    lines = text.splitlines()
    out: list[str] = []
    prose: list[str] = []

    def flush() -> None:
        if prose:
            out.extend(_inline("\n".join(prose)).split("\n"))
            prose.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        table = _simple_table(lines, i) if _BORDER.match(line) else None
        if table is not None:
            prose.extend(table[0])
            i = table[1]
            continue
        directive = stripped.startswith(".. math::")
        literal = stripped.endswith("::") and not directive and not stripped.startswith("..")
        if not (directive or literal):
            prose.append(line)
            i += 1
            continue
        inline = stripped[len(".. math::") :].strip() if directive else ""
        block: list[str] = [" " * (indent + 4) + inline] if inline else []
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
            block.append(lines[j])
            j += 1
        while block and not block[-1].strip():
            block.pop()
        inner = min((len(b) - len(b.lstrip()) for b in block if b.strip()), default=0)
        body = [b[inner:] if b.strip() else "" for b in block]
        while body and not body[0].strip():
            body.pop(0)
        pad = " " * indent
        if directive:
            flush()
            out += [pad + "\\[", *[pad + b for b in body], pad + "\\]"]
        else:
            head = line.rstrip()[:-2].rstrip()
            if head.strip():
                prose.append(head + ("" if head.endswith(":") else ":"))
            flush()
            lang = "python" if _is_python("\n".join(body)) else "text"
            out += ["", pad + "```" + lang, *[pad + b for b in body], pad + "```"]
        if j < len(lines):
            out.append("")
        i = j
    flush()
    return "\n".join(out)


def _is_python(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True


def comment_docstring(obj: Any) -> str | None:
    """The ``#:`` comment lines right above a module attribute, as text (``None`` when there are none)."""
    module = obj.parent
    lines = getattr(module, "lines", None) if getattr(module, "is_module", False) else None
    if not lines or not obj.lineno:
        return None
    comment: list[str] = []
    k = obj.lineno - 2  # the line above, 0-based
    while k >= 0 and lines[k].lstrip().startswith("#:"):
        comment.insert(0, lines[k].lstrip()[2:].strip())
        k -= 1
    return " ".join(comment) or None


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring of the loaded package (see :func:`rewrite`); read ``#:`` comments."""

    def on_object(self, *, obj: Any, **kwargs: Any) -> None:  # noqa: D102
        if getattr(obj, "is_attribute", False) and obj.docstring is None:
            text = comment_docstring(obj)
            if text:
                obj.docstring = griffe.Docstring(text, lineno=obj.lineno, parent=obj)
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and docstring.value:
            docstring.value = rewrite(docstring.value)
