"""Every fenced code block of README.md, CONTRIBUTING.md and docs/**/*.md is run, or says why not.

The info string of a fence (the words after the opening backquotes) says what happens to it:

python                 run on its own, in a fresh interpreter
python continues       run as one script with the python block(s) just above it on the page
python file="m.py"     written into the page's folder as m.py (for later blocks to import)
bash                   each command line run in order, `deepfeat` being `python -m lightning_deepfeat`
                       and `python` this interpreter (sh and shell alike; console: the lines
                       starting with "$ ")
bash quick="ARGS"      ARGS appended to every command line of the block: the page shows the real
                       run, the test a short one (quick="--trainer.max_epochs 1")
bash norun="why"       not run, for the reason given (a GPU, several nodes, a data set that is not
                       on the machine, an install); python norun="why" alike
yaml                   parsed; text, toml, ini, json and diff: shown only

A fence with no language, an unknown language or an unknown word after ``python``/``bash``
fails ``test_every_block_is_run_or_tagged``. The runnable blocks of a page run in page order
(``test_page_blocks_run[<page>]``, marked slow). Shell commands run in one fresh folder of the
page's own, which holds links ``configs`` and ``benchmarks`` to the checkout's (the docs are
written for a checkout), so a command may use what an earlier one wrote (``deepfeat test
--ckpt_path lightning_logs/version_0/...``); ``file=`` blocks are written there too. Each
python script runs in an empty folder of its own, with the page's folder on its path; the
examples of CONTRIBUTING.md must leave theirs empty.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PYTHON_LANGS = {"python", "py"}
SHELL_LANGS = {"bash", "sh", "shell", "console"}
SHOWN_LANGS = {"text", "toml", "ini", "json", "diff", "yaml", "yml"}
FLAGS = {"python": {"norun", "continues", "file"}, "shell": {"norun", "quick"}}
# Pages whose examples promise to run "from an empty folder": they may write nothing there.
WRITES_NOTHING = {"CONTRIBUTING.md"}
LINKS = ("configs", "benchmarks")  # what a checkout has beside the docs; the page's folder links them
TIMEOUT = 600


@dataclasses.dataclass
class Block:
    """One fenced code block: where it starts, its info string (language and flags) and its text."""

    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    flags: dict[str, str | bool]
    code: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def kind(self) -> str:
        """``python``, ``shell``, ``shown`` or ``unknown``."""
        if self.lang in PYTHON_LANGS:
            return "python"
        if self.lang in SHELL_LANGS:
            return "shell"
        return "shown" if self.lang in SHOWN_LANGS else "unknown"

    @property
    def runs(self) -> bool:
        return self.kind in ("python", "shell") and "norun" not in self.flags


_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def parse_blocks(text: str, page: str) -> list[Block]:
    """The fenced code blocks of a Markdown ``text`` (CommonMark fences: ``` or ~~~, any indentation)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None or (opening["fence"][0] == "`" and "`" in opening["info"]):
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])  # the same character, at least as many, no info string
            if (
                closing
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j].lstrip())
            j += 1
        try:
            words = shlex.split(opening["info"])
        except ValueError:  # an unbalanced quote: reported by the tag check
            words = ["<unparsable>", opening["info"]]
        lang = words[0].lower() if words else ""
        flags: dict[str, str | bool] = {}
        for word in words[1:]:
            key, eq, value = word.partition("=")
            flags[key] = value if eq else True
        blocks.append(Block(page, i + 1, lang, flags, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def pages() -> list[str]:
    """The Markdown pages whose blocks are checked, relative to the repository root."""
    docs = sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md"))
    return ["README.md", "CONTRIBUTING.md", *docs]


def page_blocks(page: str) -> list[Block]:
    return parse_blocks((REPO / page).read_text(encoding="utf-8"), page)


def tag_problems(blocks: list[Block]) -> list[str]:
    """What is wrong with the tags of one page's ``blocks``: each item names the block and the problem."""
    problems = []
    previous_python: Block | None = None
    for block in blocks:
        kind = block.kind
        if not block.lang:
            problems.append(f"{block.where}: a fence without a language (```text for output, ```python, ```bash, …)")
        elif kind == "unknown":
            problems.append(f"{block.where}: unknown language {block.lang!r} (known: {sorted(_all_langs())})")
        elif kind == "shown":
            if block.flags:
                problems.append(f"{block.where}: ```{block.lang} is shown only; {sorted(block.flags)} mean nothing")
        else:
            unknown = set(block.flags) - FLAGS[kind]
            if unknown:
                problems.append(
                    f"{block.where}: unknown word(s) {sorted(unknown)} after ```{block.lang} "
                    f'(known: {sorted(FLAGS[kind])}; a block that cannot run is tagged norun="reason")'
                )
            for key in ("norun", "quick", "file"):
                if key in block.flags and (block.flags[key] is True or not str(block.flags[key]).strip()):
                    problems.append(f'{block.where}: {key} needs a value: {key}="…"')
            if "continues" in block.flags:
                if block.flags["continues"] is not True:
                    problems.append(f"{block.where}: continues takes no value")
                if previous_python is None:
                    problems.append(f"{block.where}: continues, but no python block comes before it on the page")
                elif ("norun" in block.flags) != ("norun" in previous_python.flags) or "file" in previous_python.flags:
                    problems.append(f"{block.where}: continues {previous_python.where}, which is run differently")
            if "file" in block.flags and len(block.flags) > 1:
                problems.append(f"{block.where}: a file= block is written, not run: it takes no other flag")
        if kind == "python":
            previous_python = block
    return problems


def _all_langs() -> set[str]:
    return PYTHON_LANGS | SHELL_LANGS | SHOWN_LANGS


# ----------------------------------------------------------------- what a block runs
def split_comment(line: str) -> tuple[str, str]:
    """``line`` as (command, trailing ``# comment``), the ``#`` outside quotes and after a space."""
    quote = None
    for k, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip(), line[k:]
    return line.rstrip(), ""


def shell_commands(block: Block) -> list[str]:
    """The command lines of a shell block, continuations joined, comments dropped, ``quick`` appended."""
    raw = block.code.splitlines()
    if block.lang == "console":
        raw = [line[2:] for line in raw if line.startswith("$ ")]
    commands, current = [], ""
    for line in raw:
        current += line
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        command, _ = split_comment(current.strip())
        current = ""
        if command:
            commands.append(f"{command} {block.flags['quick']}" if "quick" in block.flags else command)
    return commands


@dataclasses.dataclass
class Step:
    """One thing the page test does: run a python script, write a file, or run a shell command."""

    kind: str  # "python", "file" or "shell"
    where: str
    text: str
    name: str = ""


def page_steps(blocks: list[Block]) -> list[Step]:
    """The runnable blocks of a page as steps, in page order (``continues`` blocks joined to their script)."""
    steps: list[Step] = []
    for block in blocks:
        if not block.runs:
            continue
        if block.kind == "shell":
            steps += [Step("shell", block.where, command) for command in shell_commands(block)]
        elif "file" in block.flags:
            steps.append(Step("file", block.where, block.code, name=str(block.flags["file"])))
        elif "continues" in block.flags:
            steps[-1].text += f"\n# --- {block.where}\n" + block.code
            steps[-1].where += f" + {block.where}"
        else:
            steps.append(Step("python", block.where, block.code))
    return steps


_SHELL_PRELUDE = """set -euo pipefail
deepfeat() { "$DOCS_PYTHON" -m lightning_deepfeat "$@"; }
python() { "$DOCS_PYTHON" "$@"; }
"""


def run_step(step: Step, folder: Path, cwd: Path | None = None) -> subprocess.CompletedProcess | None:
    """Run (or write) one step; returns the finished process (``None`` for a file).

    ``folder`` is the page's folder: files are written there and shell commands run there.
    A python script runs in ``cwd`` (its own empty folder), with ``folder`` on its path.
    """
    if step.kind == "file":
        (folder / step.name).write_text(step.text)
        return None
    env = {**os.environ, "DOCS_PYTHON": sys.executable, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    if step.kind == "python":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH")]))
        argv = [sys.executable, "-c", step.text]
    else:
        argv = ["bash", "-c", _SHELL_PRELUDE + step.text]
        cwd = folder
    return subprocess.run(argv, cwd=cwd or folder, env=env, capture_output=True, text=True, timeout=TIMEOUT)


# ----------------------------------------------------------------- the tests
ALL_BLOCKS = {page: page_blocks(page) for page in pages()}
RUN_PAGES = [page for page, blocks in ALL_BLOCKS.items() if any(block.runs for block in blocks)]


def test_every_block_is_run_or_tagged():
    problems = [problem for blocks in ALL_BLOCKS.values() for problem in tag_problems(blocks)]
    assert not problems, "\n".join(problems)
    runnable = [block for blocks in ALL_BLOCKS.values() for block in blocks if block.kind in ("python", "shell")]
    assert sum(block.runs for block in runnable) > len(runnable) / 2  # "not runnable" stays the exception


def test_the_tag_check_reports_each_kind_of_mistake():
    page = """
```
untagged output
```

```python
x = 1
```

```python continue
y = x
```

```bash norun
deepfeat fit
```

```bash quick="--trainer.max_epochs 1" nrun="typo"
deepfeat fit
```

```rust
fn main() {}
```

```text norun="x"
shown
```

```python file="m.py" continues
z = 3
```
"""
    problems = tag_problems(parse_blocks(page, "page.md"))
    assert [p.split(":", 2)[1] for p in problems] == ["2", "10", "14", "18", "22", "26", "30"], problems
    assert "without a language" in problems[0] and "'continue'" in problems[1] and 'norun="' in problems[2]
    assert "'nrun'" in problems[3] and "'rust'" in problems[4] and "shown only" in problems[5]
    assert tag_problems(parse_blocks("```python\na = 1\n```\n\n```python continues\nb = a\n```\n", "ok.md")) == []
    assert "no python block comes before" in tag_problems(parse_blocks("```bash continues\nls\n```\n", "x.md"))[1]


def test_fences_in_fences_and_indented_fences_are_parsed_as_commonmark_does():
    page = "1. a step:\n\n    ```python\n    x = 1\n    ```\n\n````text\n```python\nnot a block\n```\n````\n"
    blocks = parse_blocks(page, "p.md")
    assert [(b.line, b.lang, b.code) for b in blocks] == [
        (3, "python", "x = 1\n"),
        (7, "text", "```python\nnot a block\n```\n"),
    ]


def test_shell_lines_are_joined_commented_and_shortened():
    block = parse_blocks(
        '```bash quick="--trainer.max_epochs 1"\n'
        "deepfeat fit --config digits \\\n    --seed_everything 1   # a comment\n"
        '# only a comment\n\necho "a # in quotes"\n```\n',
        "p.md",
    )[0]
    assert shell_commands(block) == [
        "deepfeat fit --config digits      --seed_everything 1 --trainer.max_epochs 1",
        'echo "a # in quotes" --trainer.max_epochs 1',
    ]
    console = parse_blocks("```console\n$ deepfeat recipes\ndigits  the default\n```\n", "p.md")[0]
    assert shell_commands(console) == ["deepfeat recipes"]


def test_continued_python_blocks_run_as_one_script(tmp_path):
    blocks = parse_blocks(
        '```python file="helper.py"\nY = 5\n```\n\n```python\nx = 2\n```\n\n```python continues\n'
        "from helper import Y\nprint(x * Y)\n```\n\n```bash\npython -c 'import helper; print(helper.Y)'\n```\n",
        "p.md",
    )
    assert tag_problems(blocks) == []
    steps = page_steps(blocks)
    assert [step.kind for step in steps] == ["file", "python", "shell"]
    outputs = [run_step(step, tmp_path) for step in steps]
    assert outputs[0] is None and outputs[1].stdout == "10\n" and outputs[2].stdout == "5\n", outputs


def test_yaml_blocks_parse():
    for blocks in ALL_BLOCKS.values():
        for block in blocks:
            if block.lang in ("yaml", "yml"):
                try:
                    yaml.safe_load(block.code)
                except yaml.YAMLError as err:
                    pytest.fail(f"{block.where}: {err}")


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES)
def test_page_blocks_run(page, tmp_path):
    folder = tmp_path / "page"
    folder.mkdir()
    for name in LINKS:
        (folder / name).symlink_to(REPO / name, target_is_directory=True)
    timings = []
    for number, step in enumerate(page_steps(ALL_BLOCKS[page])):
        own = tmp_path / f"script{number}"  # a python script runs on its own, from an empty folder
        own.mkdir()
        start = time.perf_counter()
        done = run_step(step, folder, cwd=own)
        timings.append(f"{time.perf_counter() - start:6.1f} s  {step.where}  {step.text.splitlines()[0][:80]}")
        if done is not None:
            assert done.returncode == 0, (
                f"{step.where} failed (exit {done.returncode}):\n{step.text}\n"
                f"--- stdout\n{done.stdout[-2000:]}\n--- stderr\n{done.stderr[-4000:]}"
            )
        if page in WRITES_NOTHING:
            assert not os.listdir(own), f"{step.where} wrote into the folder it ran in: {os.listdir(own)}"
    print("\n".join(timings))
