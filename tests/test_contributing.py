"""CONTRIBUTING.md has a worked example for each kind of component.

tests/test_docs.py runs every one of them (as it runs every code block of the docs), each on
its own from an empty folder, and checks that it writes nothing there.
"""

from __future__ import annotations

import re
from pathlib import Path

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
