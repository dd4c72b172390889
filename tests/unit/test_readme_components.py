"""The README's components table names every registered component: a user reading it sees them all."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.registry import components

README = Path(__file__).resolve().parents[2] / "README.md"


def _table_names() -> set[str]:
    """Names in backticks in the first column of the table under '### Components' (one unbroken table)."""
    section = README.read_text().split("### Components", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    table = section[section.index(rows[0]) : section.index(rows[-1]) + len(rows[-1])]
    assert "\n\n" not in table, "a blank line cuts the components table in two: the rest is not drawn as a table"
    return {name for row in rows for name in re.findall(r"`([^`]+)`", row.split(" | ")[0])}


def test_every_registered_component_is_in_the_readme_table() -> None:
    names = _table_names()
    missing = [c for c in components() if c not in names and f"{c.split('.')[0]}.*" not in names]
    assert not missing, f"README's components table misses {missing}"
