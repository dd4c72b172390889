"""Text that is not ours is never read as rich markup: brackets in names, values, errors and paths show as written.

Each test runs the real CLI in a subprocess on real files, as a user would, so every console, table,
progress column and typer setting on the way is exercised (an in-process runner swaps the consoles' files).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAME = "brackets [bold]p[/] [dask]"
MESSAGE = "boom [bold]x[/] [dask] [red]"
PIPELINE = f"""\
name: "{NAME}"
params: {{msg: "{MESSAGE}"}}
tasks:
  "ok[dask]": {{uses: demo.sleep, with: {{seconds: 0}}}}
  "t[bold]x[red]": {{uses: demo.fail, needs: ["ok[dask]"], with: {{message: "${{params.msg}}"}}}}
"""


def cli(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """``run_pipeline.py ARGS`` in a fresh process; ``prelude`` runs first (to hide a module, say)."""
    code = f"import runpy, sys\n{prelude}\nsys.argv = ['run_pipeline.py', *{list(args)!r}]\n"
    code += "runpy.run_path('run_pipeline.py', run_name='__main__')\n"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def flat(text: str) -> str:
    return " ".join(text.split())


def test_dask_missing_hint_keeps_the_extra_in_brackets() -> None:
    demo = str(ROOT / "pipelines" / "demo.yaml")
    proc = cli("run", demo, "--backend", "dask", prelude="sys.modules['distributed'] = None  # import fails")
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'dag-pipeline[dask]'" in flat(proc.stderr)


def test_run_summary_progress_and_runs_views_show_brackets_literally(tmp_path: Path) -> None:
    file = tmp_path / "b.yaml"
    file.write_text(PIPELINE)
    runs = str(tmp_path / "runs")
    proc = cli("run", str(file), "--run-dir", runs, "--progress")
    assert proc.returncode == 1, proc.stderr
    table = flat(proc.stdout)
    assert f"of '{NAME}': failed" in table
    assert "ok[dask]" in table and "t[bold]x[red]" in table
    assert f"RuntimeError: {MESSAGE}" in table
    assert "t[bold]x[red]" in proc.stderr and "ok[dask]" in proc.stderr  # the live view's task column

    listed = cli("runs", "list", "--run-dir", runs)
    assert listed.returncode == 0, listed.stderr
    assert NAME in flat(listed.stdout) and f"t[bold]x[red]: RuntimeError: {MESSAGE}" in flat(listed.stdout)
    run_id = next(p.name for p in Path(runs).iterdir() if (p / "report.json").exists())
    shown = cli("runs", "show", run_id, "--run-dir", runs)
    assert shown.returncode == 0, shown.stderr
    assert f"RuntimeError: {MESSAGE}" in flat(shown.stdout) and f"of '{NAME}'" in flat(shown.stdout)


def test_validate_errors_and_help_show_brackets_literally(tmp_path: Path) -> None:
    file = tmp_path / "b.yaml"
    file.write_text(PIPELINE)
    ok = cli("validate", str(file))
    assert ok.returncode == 0, ok.stderr
    assert f"ok: {file}: pipeline '{NAME}', 2 tasks" in flat(ok.stdout)

    missing = tmp_path / "no[dask][bold]y[/].yaml"
    gone = cli("validate", str(missing))
    assert gone.returncode == 2 and f"error: {missing}: no such file" in flat(gone.stderr)
    unknown = cli("validate", str(file), "--set", "x[red]=1")
    assert unknown.returncode == 2 and "no parameter 'x[red]'" in flat(unknown.stderr)

    helped = cli("run", "--help")
    assert "[default: PIPELINE__BACKEND or local]" in flat(helped.stdout)  # our own help is not markup either


CLI_MODULES = [
    "cli",
    "cli_common",
    "progress",
    "runs_cli",
    "datagen_cli",
    "ingest_cli",
    "ingest_options",
    "shadow_cli",
    "verify_cli",
    "clean_cli",
]


def test_no_console_print_takes_a_built_string() -> None:
    """A string built from values (an f-string, a concatenation) given to a console is read as markup: such
    output goes through ``styled``/``cell`` (rich Text) or passes ``markup=False``. Literal strings are ours.

    The subprocess tests above prove the paths they run; this keeps a new ``print(f"...")`` from slipping in."""
    import ast

    found = []
    for name in CLI_MODULES:
        path = ROOT / "pipeline" / f"{name}.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "print"):
                continue
            if not (isinstance(node.func.value, ast.Name) and node.func.value.id in ("out", "err", "console")):
                continue
            plain = any(k.arg == "markup" and isinstance(k.value, ast.Constant) and k.value.value is False for k in node.keywords)
            built = [a for a in node.args if isinstance(a, ast.JoinedStr | ast.BinOp)]
            if built and not plain:
                found.append(f"{path.name}:{node.lineno}")
    assert not found, f"console.print of a built string (markup): {found}"
