"""The import contracts (pyproject's [tool.importlinter]) hold, and they do catch a violation.

The README's test command runs ``lint-imports`` on the tree; here a copy of the packages gets one bad
import at a time, so a contract that silently stopped checking (a renamed package, a typo in a layer)
fails this test instead of waving everything through.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["dag_pipeline", "pipeline", "task_components", "dag_orchestrator", "config"]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    args = [str(LINT), "--config", str(tree / "pyproject.toml"), "--no-cache"]
    env = {"PYTHONPATH": str(tree), "PATH": ""}  # the copy's packages, not the installed project
    return subprocess.run(args, cwd=tree, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imports")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "*.json", "*.txt"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.count(" KEPT") == 4 and "BROKEN" not in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("dag_orchestrator/executor.py", "import pipeline.runner", "Layers"),
        ("task_components/sources/kafka.py", "import task_components.sinks.kafka", "Components stand alone"),
        ("task_components/keyexpr.py", "import task_components.verification", "Components over shared modules"),
        ("task_components/schema/types/spec.py", "import task_components.schema.models", "No import circle"),
    ],
    ids=["upward", "component-to-component", "shared-to-component", "circle"],
)
def test_one_bad_import_breaks_its_contract(tree: Path, module: str, line: str, broken: str) -> None:
    path = tree / module
    original = path.read_text()
    try:
        path.write_text(original + f"\n{line}  # injected by the test\n")
        result = _lint(tree)
    finally:
        path.write_text(original)
    assert result.returncode != 0
    failed = [ln for ln in result.stdout.splitlines() if ln.endswith(" BROKEN")]
    assert any(broken in ln for ln in failed), result.stdout[-3000:]
