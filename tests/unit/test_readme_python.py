"""The README's Python quickstart is the quickstart: the block a reader copies builds the YAML file's tasks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dag_orchestrator import DAG
from pipeline.registry import build_dag
from pipeline.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


def _readme_block() -> str:
    section = (ROOT / "README.md").read_text().split("### In Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no Python block under README's 'In Python'"
    return match.group(1)


def _shape(dag: DAG) -> dict[str, Any]:
    return {
        t.name: (
            getattr(t, "component", ""),
            sorted(t.needs),
            sorted(t.streams_from),
            t.retry.attempts,
            t.timeout,
            getattr(t, "params", None),
        )
        for t in dag
    }


def test_the_readme_python_block_builds_the_quickstart_yaml() -> None:
    scope: dict[str, Any] = {"__name__": "readme"}  # not __main__: build, do not run
    exec(compile(_readme_block(), "README.md", "exec"), scope)
    from_readme = scope["p"].build()
    defaults = load_spec(ROOT / "pipelines" / "quickstart.yaml")
    from_yaml = build_dag(defaults, ROOT / "pipelines" / "quickstart.yaml")
    assert _shape(from_readme) == _shape(from_yaml)
