"""The recipes that ship inside the package: ``deepfeat fit --config digits`` from any folder.

The YAML files live in ``lightning_deepfeat/recipes/`` (the repository's ``configs/`` is a
link to that folder, so there is one copy of each). A recipe's first line,
``# recipe: <purpose>``, is what ``deepfeat recipes`` prints.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SUFFIXES = (".yaml", ".yml")
_SUMMARY_PREFIX = "# recipe:"


def recipes_dir() -> Path:
    """The folder of the packaged recipes (inside the installed package)."""
    return Path(str(resources.files("lightning_deepfeat") / "recipes"))


def recipe_names() -> list[str]:
    """Names of the packaged recipes, sorted (the file names without ``.yaml``)."""
    folder = recipes_dir()
    return sorted(p.stem for p in folder.iterdir() if p.suffix in SUFFIXES) if folder.is_dir() else []


def recipe_path(name: str) -> Path | None:
    """The packaged recipe called ``name`` (``digits``, ``digits.yaml`` or ``configs/digits.yaml``), or ``None``."""
    stem = Path(name).name
    for suffix in SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    path = recipes_dir() / f"{stem}.yaml"
    return path if path.is_file() else None


def recipe_summary(name: str) -> str:
    """The recipe's one-line purpose: its ``# recipe:`` line (or its first comment line)."""
    path = recipe_path(name)
    if path is None:
        raise ValueError(f"no packaged recipe called {name!r}; known: {', '.join(recipe_names())}.")
    first_comment = ""
    for line in path.read_text().splitlines():
        if line.startswith(_SUMMARY_PREFIX):
            return line[len(_SUMMARY_PREFIX) :].strip()
        if line.startswith("#") and not first_comment:
            first_comment = line.lstrip("#").strip()
    return first_comment


def resolve_config_args(argv: list[str]) -> list[str]:
    """Replace each ``--config NAME`` whose NAME is not a file but a packaged recipe by that recipe's path.

    A file that exists always wins (``--config configs/digits.yaml`` in a checkout reads
    that file). A name that is neither raises ``FileNotFoundError`` listing the recipes.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config", "-c") and i + 1 < len(argv):
            out += [arg, _resolve(argv[i + 1])]
            i += 2
            continue
        if arg.startswith("--config="):
            out.append("--config=" + _resolve(arg.split("=", 1)[1]))
        else:
            out.append(arg)
        i += 1
    return out


def _resolve(value: str) -> str:
    if Path(value).expanduser().is_file():
        return value
    packaged = recipe_path(value)
    if packaged is not None:
        return str(packaged)
    raise FileNotFoundError(
        f"`--config` {value!r} is neither a file nor a packaged recipe; recipes: {', '.join(recipe_names())} "
        "(`deepfeat recipes` lists them with their purpose)."
    )


def format_recipes() -> str:
    """The table ``deepfeat recipes`` prints: name and purpose, one recipe per line."""
    names = recipe_names()
    width = max((len(n) for n in names), default=0)
    lines = [f"  {name:<{width}}  {recipe_summary(name)}" for name in names]
    return "Packaged recipes (deepfeat fit --config NAME):\n" + "\n".join(lines)


__all__ = ["format_recipes", "recipe_names", "recipe_path", "recipe_summary", "recipes_dir", "resolve_config_args"]
