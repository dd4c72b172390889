"""Invalid pipeline files: exit 2, one readable line naming file, task and field, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "invalid"

CASES = {
    "syntax.yaml": ["YAML syntax error at line 4"],
    "unknown_component.yaml": [
        "task 'gen'",
        "field 'uses'",
        "unknown component 'demo.coutn'",
        "did you mean 'demo.count'",
    ],
    "cycle.yaml": ["field 'needs'", "has a cycle", "a -> ", "b", "c"],
    "missing_need.yaml": ["task 'b'", "field 'needs'", "needs 'nowhere', which is not a task"],
    "wrong_type.yaml": ["task 'a'", "field 'with.seconds'", "valid number", "'soon'"],
    "missing_input.yaml": ["task 'import'", "field 'needs'", "needs a task producing UploadResult", "generate -> GenerationResult"],
    "unknown_param.yaml": ["task 'a'", "field 'with.total'", "unknown parameter ${params.rowz}", "known: rows"],
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("command", ["run", "validate"])
def test_invalid_file_exits_2_with_one_message(name: str, command: str, tmp_path: Path) -> None:
    args = [command, str(FIXTURES / name)] + (["--run-dir", str(tmp_path)] if command == "run" else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert text.startswith("error:") and name in text
    for part in CASES[name]:
        assert part in text
    assert "Traceback" not in result.output
    assert not any(tmp_path.iterdir()), "nothing may run or be written for an invalid file"


def test_set_of_unknown_param_and_missing_file_exit_2(tmp_path: Path) -> None:
    demo = ROOT / "pipelines" / "demo.yaml"
    result = CliRunner().invoke(app, ["run", str(demo), "--set", "rowz=5", "--run-dir", str(tmp_path)])
    assert result.exit_code == 2 and "the pipeline has no parameter 'rowz'" in result.output
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_real_process_prints_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "run_pipeline.py", "validate", str(FIXTURES / "cycle.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "has a cycle" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
