"""Every worked example of CONTRIBUTING.md runs as written, on its own, from an empty folder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CONTRIBUTING = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"


def examples() -> dict[str, str]:
    """The ``python`` blocks of CONTRIBUTING.md that start with ``# Example: <title>``, by title."""
    blocks = re.findall(r"```python\n(# Example: ([^\n]+)\n.*?)```", CONTRIBUTING.read_text(), flags=re.S)
    return {title: code for code, title in blocks}


def test_contributing_has_a_worked_example_for_each_kind_of_component():
    assert sorted(examples()) == sorted(
        [
            "a new feature net",
            "a new in-memory data set",
            "a new file-per-sample data set",
            "a new callback",
            "a new probe",
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize("title", sorted(examples()))
def test_each_contributing_example_runs_on_its_own(tmp_path, title):
    done = subprocess.run(
        [sys.executable, "-c", examples()[title]], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []  # an example writes nothing into the folder it runs in
