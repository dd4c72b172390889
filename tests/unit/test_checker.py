"""The checker's parts that need no service: rows rebuilt from a journal entry, the journal, bad command lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.checker.journal import Intent, Journal, JournalBusyError
from pipeline.checker.rows import make_rows
from pipeline.pymilvus_pg_cli import pg_app


def test_rows_are_a_function_of_keys_and_version() -> None:
    """A replay after a crash rebuilds exactly the rows the lost batch carried."""
    a, b = make_rows([5, 6, 7], 42, 8), make_rows([5, 6, 7], 42, 8)
    assert a == b
    assert make_rows([5, 6, 7], 43, 8) != a
    assert [r["id"] for r in a] == [5, 6, 7] and all(len(r["embedding"]) == 8 for r in a)
    assert a[0]["name"] == "name_5_v42" and make_rows([5], 0, 8)[0]["name"] == "name_5"


def test_the_journal_keeps_what_was_begun_and_not_done(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.begin(0, Intent("insert", [1, 2], 0))
    journal.begin(3, Intent("delete", [9], 0))
    journal.begin(0, Intent("upsert", [1], 7))  # a slot's next batch replaces its previous entry
    journal.done(3)
    assert list(Journal(tmp_path / "j").pending()) == [(0, Intent("upsert", [1], 7))]
    assert not list((tmp_path / "j").glob(".intent-*"))  # no temporary file left behind


def test_a_second_checker_on_the_same_journal_is_refused(tmp_path: Path) -> None:
    first, second = Journal(tmp_path / "j"), Journal(tmp_path / "j")
    first.lock()
    with pytest.raises(JournalBusyError, match="another checker is running"):
        second.lock()
    first.unlock()
    second.lock()  # free again once the first lets go
    second.unlock()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["ingest", "--duration", "1"], "no Milvus"),
        (["ingest", "--uri", "http://127.0.0.1:1"], "no PostgreSQL shadow"),
        (["ingest", "--schema", "ecommerce"], "No such option"),
        (["ingest", "--threads", "0"], "--threads"),
        (["validate", "--sample-percentage", "101"], "--sample-percentage"),
    ],
)
def test_bad_command_lines_exit_2_naming_what_is_wrong(argv: list[str], says: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MILVUS_URI", "MILVUS__URI", "PG_CONN", "POSTGRES__DSN"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(pg_app, argv)
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert "Traceback" not in result.output
