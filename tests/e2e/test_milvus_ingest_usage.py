"""milvus-ingest's documented command lines run unchanged on ours, on Milvus Lite and the local store (no server).

The lines are milvus-ingest's "CLI Usage" section and options tables (its CLAUDE.md, seed 000), one test
each, run in a directory of their own exactly as written, with two kinds of substitution only: row counts
and file sizes scaled down (a CI budget), and a remote Milvus URI pointed at a Milvus Lite file. "Local
Milvus" (their default http://localhost:19530) is MILVUS__URI naming a Lite file, as a user sets it once.
The upload and import lines need S3: tests/integration/test_milvus_ingest_usage_services.py runs them.
Each test checks what the line does (rows written and read back, files and sizes, rows in Milvus, what
verify compared), not only the exit code. ``--no-progress`` is checked on a pseudo-terminal, where the
live view is on by default, through the installed ``milvus-ingest`` console script.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import chdir
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import Result
from typer.testing import CliRunner

import pipeline.clean_cli
import pipeline.datagen_cli
import pipeline.ingest_cli
from config.settings import get_settings
from pipeline.cli import app
from task_components.manifest import Manifest

assert pipeline.clean_cli and pipeline.datagen_cli and pipeline.ingest_cli  # register their commands on `app`

MILVUS_INGEST = Path(sys.executable).with_name("milvus-ingest")
ROWS = 300
# milvus-ingest's `schema.json` in its examples: a partition key for --partitions, a small vector for speed
SCHEMA = {
    "collection_name": "mi_usage",
    "fields": [
        {"name": "id", "type": "Int64", "is_primary": True},
        {"name": "title", "type": "VarChar", "max_length": 64},
        {"name": "category", "type": "VarChar", "max_length": 32, "is_partition_key": True},
        {"name": "price", "type": "Float", "min": 0, "max": 100},
        {"name": "embedding", "type": "FloatVector", "dim": 16},
    ],
}


def invoke(cwd: Path, line: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    """Run one command line in ``cwd`` with only ``env``'s settings; the process' environment is restored after.

    Connection flags write MILVUS__*/S3__* into this process' environment (ingest_options.override_settings):
    without the restore one test's flags would leak into the next.
    """
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith(("MILVUS__", "S3__", "PIPELINE__"))]:
            del os.environ[key]
        os.environ.update(env or {})
        get_settings.cache_clear()
        with chdir(cwd):
            return CliRunner().invoke(app, shlex.split(line), input=stdin, catch_exceptions=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def report(cwd: Path, result: Result) -> dict:
    found = re.search(r"^report: (.+)$", result.output, re.MULTILINE)
    assert found, result.output
    return json.loads((cwd / found.group(1).strip()).read_text())


def dataset(path: Path) -> tuple[Manifest, pa.Table]:
    manifest = Manifest.load(path)
    return manifest, pa.concat_tables(pq.read_table(manifest.file_path(f)) for f in manifest.files)


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``./output`` the to-milvus lines read: ROWS rows of SCHEMA, made once."""
    root = tmp_path_factory.mktemp("made")
    (root / "schema.json").write_text(json.dumps(SCHEMA))
    ok(invoke(root, f"generate --schema schema.json --total-rows {ROWS} --out output --no-progress"))
    return root / "output"


@pytest.fixture
def here(tmp_path: Path, output: Path) -> Path:
    """A user's working directory: schema.json / example_schema.json / file.json and ./output beside them."""
    for name in ("schema.json", "example_schema.json", "file.json"):
        (tmp_path / name).write_text(json.dumps(SCHEMA))
    shutil.copytree(output, tmp_path / "output")
    return tmp_path


# --- generate ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    documented: str  # milvus-ingest's line, without the program name
    scaled: dict[str, str]  # its row counts and sizes, scaled down: what runs is the line with these replaced
    check: Callable[[Path, Result], None]

    @property
    def runs(self) -> str:
        line = self.documented
        for documented, runs in self.scaled.items():
            line = line.replace(documented, runs)
        return line


def _made(here: Path, name: str = "mi_usage") -> tuple[Manifest, pa.Table]:
    return dataset(here / name)  # no --out: ./<collection>


def _preview(here: Path, result: Result) -> None:
    manifest, data = _made(here, "simple")
    assert data.num_rows == ROWS == manifest.total_rows  # generated: the preview no longer writes nothing
    text = ok(result)
    assert "preview (top 5 rows of data-00001.parquet)" in text
    for name in data.column("name").to_pylist()[:5]:  # the first rows, as the file holds them
        assert name[:20] in text


def _rows(here: Path, result: Result) -> None:
    ok(result)
    manifest, data = _made(here)
    assert data.num_rows == manifest.total_rows == ROWS
    assert data.column_names == [f["name"] for f in SCHEMA["fields"]]


def _batch(here: Path, result: Result) -> None:
    ok(result)
    manifest, data = _made(here)
    assert manifest.generation["chunk_rows"] == 100 and data.num_rows == ROWS


def _sizes(count: int | None, limit: int) -> Callable[[Path, Result], None]:
    def check(here: Path, result: Result) -> None:
        ok(result)
        manifest, data = _made(here)
        sizes = [manifest.file_path(f).stat().st_size for f in manifest.files]
        assert data.num_rows == manifest.total_rows
        assert (len(sizes) == count) if count else len(sizes) > 1, sizes
        assert all(s <= 1.1 * limit for s in sizes), sizes
        if count:  # rows derived from the size: every file close to it
            assert all(s >= 0.6 * limit for s in sizes), sizes

    return check


def _per_file(here: Path, result: Result) -> None:
    ok(result)
    manifest, _ = _made(here)
    assert [f.rows for f in manifest.files] == [150, 150]


def _shards(partitions: int, shards: int) -> Callable[[Path, Result], None]:
    def check(here: Path, result: Result) -> None:
        ok(result)
        manifest, data = _made(here)
        assert manifest.collection_config["num_partitions"] == partitions
        assert manifest.collection_config["num_shards"] == shards
        assert len({f.shard for f in manifest.files}) == min(shards, ROWS) and data.num_rows == ROWS
        assert len(set(data.column("category").to_pylist())) <= partitions * 10

    return check


def _workers(here: Path, result: Result) -> None:
    ok(result)
    manifest, _ = _made(here)
    single, _ = dataset(here / "output")  # same schema, rows and seed, made by the fixture
    assert [f.sha256 for f in manifest.files] == [f.sha256 for f in single.files]  # 8 workers, the same bytes


def _validate_only(here: Path, result: Result) -> None:
    assert "ok: schema 'mi_usage': 5 fields" in ok(result)
    assert not (here / "mi_usage").exists() and not (here / "runs").exists()


def _forced(here: Path, result: Result) -> None:
    ok(result)
    _, data = dataset(here / "mydata")
    assert not (here / "mydata" / "old.txt").exists() and data.num_rows == 1000  # milvus-ingest's default rows


R = str(ROWS)
GENERATE = [  # (documented line, its numbers scaled down: {documented: runs}, check)
    Line("generate --builtin simple --total-rows 100000 --preview", {"100000": R}, _preview),
    Line("generate --schema example_schema.json --total-rows 1000000", {"1000000": R}, _rows),
    Line("generate --schema schema.json --total-rows 5000000 --batch-size 100000", {"5000000": R, "100000": "100"}, _batch),
    Line("generate --schema schema.json --total-rows 1000000 --file-size 256MB", {"1000000": "6000", "MB": "KB"}, _sizes(None, 256 << 10)),
    Line("generate --schema schema.json --file-count 10 --file-size 10GB", {"10 ": "2 ", "10GB": "256KB"}, _sizes(2, 256 << 10)),
    Line("generate --schema schema.json --file-count 500 --file-size 200MB", {"500": "3", "200MB": "128KB"}, _sizes(3, 128 << 10)),
    Line("generate --schema schema.json --total-rows 1000000 --rows-per-file 500000", {"1000000": R, "500000": "150"}, _per_file),
    Line("generate --schema schema.json --total-rows 1000000 --partitions 8 --shards 4", {"1000000": R}, _shards(8, 4)),
    Line("generate --schema schema.json --total-rows 5000000 --partitions 1024 --shards 16", {"5000000": R}, _shards(1024, 16)),
    Line("generate --schema schema.json --total-rows 10000000 --workers 8", {"10000000": R}, _workers),
    Line("generate --schema schema.json --validate-only", {}, _validate_only),
    Line("generate --schema schema.json --out mydata --force", {}, _forced),
]


@pytest.mark.parametrize("line", GENERATE, ids=[g.documented for g in GENERATE])
def test_generate_line(line: Line, here: Path) -> None:
    (here / "mydata").mkdir()
    (here / "mydata" / "old.txt").write_text("replaced by --force")
    line.check(here, invoke(here, line.runs))


# --- schema, clean -----------------------------------------------------------------------------------


def test_schema_list(here: Path) -> None:
    listed = ok(invoke(here, "schema list"))
    assert all(name in listed for name in ("simple", "ecommerce", "ecommerce_partitioned", "documents"))
    assert ok(invoke(here, "schemas list")) == listed  # our first name stays, hidden


def test_schema_show_simple(here: Path) -> None:
    shown = json.loads(invoke(here, "schema show simple").output)
    assert shown["collection_name"] == "simple"
    assert {"name": "embedding", "type": "FloatVector", "dim": 128} in shown["fields"]


def test_schema_add_myschema_file_json(here: Path) -> None:
    library = {"SCHEMA_LIBRARY": str(here / "library")}  # the user's schema library: this test's own
    assert "added 'myschema'" in ok(invoke(here, "schema add myschema file.json", library))
    assert (Path(library["SCHEMA_LIBRARY"]) / "myschema.json").is_file()
    assert re.search(r"myschema\s*│\s*user\s*│\s*5\b", invoke(here, "schema list", library).output)
    _rows(here, invoke(here, f"generate --builtin myschema --total-rows {ROWS}", library))  # usable by name


def test_schema_remove_myschema(here: Path) -> None:
    library = {"SCHEMA_LIBRARY": str(here / "library")}
    ok(invoke(here, "schema add myschema file.json", library))
    assert "removed 'myschema'" in ok(invoke(here, "schema remove myschema", library))
    assert "myschema" not in invoke(here, "schema list", library).output
    gone = invoke(here, "schema remove myschema", library)
    assert gone.exit_code == 2 and "myschema" in gone.output


def test_schema_help(here: Path) -> None:
    text = ok(invoke(here, "schema help"))
    for needle in ("Field types", "FloatVector", '"dim": 768', "is_partition_key", "Functions", "BM25"):
        assert needle in text, needle


@pytest.mark.parametrize(("line", "stdin"), [("clean", "y\n"), ("clean -y", None)])
def test_clean(line: str, stdin: str | None, here: Path) -> None:
    ok(invoke(here, f"generate --schema schema.json --total-rows {ROWS}"))
    assert (here / "mi_usage").is_dir() and (here / "runs").is_dir()
    text = ok(invoke(here, line, stdin=stdin))
    assert "removed 3 item(s)" in text  # ./mi_usage, ./output and ./runs
    assert not (here / "mi_usage").exists() and not (here / "output").exists() and not (here / "runs").exists()
    assert (here / "schema.json").is_file()  # not a generated dataset: kept


# --- to-milvus insert / verify on Milvus Lite -------------------------------------------------------


def _lite(here: Path) -> dict[str, str]:
    return {"MILVUS__URI": str(here / "milvus.db")}  # the user's "local Milvus"


def _inserted(here: Path, result: Result, collection: str = "mi_usage") -> dict:
    ok(result)
    summary = report(here, result)["summary"]
    assert summary["insert"]["rows in milvus"] == ROWS  # count(*) in Milvus after the insert
    assert summary["collection"]["collection"] == collection
    assert summary["verify"]["result"] == "passed"
    return summary


def test_insert_to_local_milvus(here: Path) -> None:
    _inserted(here, invoke(here, "to-milvus insert ./output", _lite(here)))
    assert (here / "milvus.db").exists()


def test_insert_to_remote_milvus_with_auth(here: Path) -> None:
    line = "to-milvus insert ./output --uri http://192.168.1.100:19530 --token your-token"
    remote = here / "remote.db"  # the remote server, here a Lite file
    _inserted(here, invoke(here, line.replace("http://192.168.1.100:19530", str(remote))))
    assert remote.exists() and not (here / "milvus.db").exists()


def test_insert_drop_if_exists(here: Path) -> None:
    _inserted(here, invoke(here, "to-milvus insert ./output", _lite(here)))
    _inserted(here, invoke(here, "to-milvus insert ./output --drop-if-exists", _lite(here)))  # 300 again, not 600


def test_insert_collection_name_and_batch_size(here: Path) -> None:
    result = invoke(here, "to-milvus insert ./output --collection-name my_collection --batch-size 5000", _lite(here))
    _inserted(here, result, "my_collection")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, output: Path) -> Path:
    """A directory whose Lite "local Milvus" holds ./output twice: as mi_usage and as my_collection."""
    root = tmp_path_factory.mktemp("loaded")
    shutil.copytree(output, root / "output")
    ok(invoke(root, "to-milvus insert ./output", _lite(root)))
    ok(invoke(root, "to-milvus insert ./output --collection-name my_collection", _lite(root)))
    return root


VERIFY = [  # (documented line, fields the sample compares beside the key)
    ("to-milvus verify ./output", 4),  # ours is full by default (theirs count): named in --help
    ("to-milvus verify ./output --level count", 0),
    ("to-milvus verify ./output --level scalar", 3),
    ("to-milvus verify ./output --level full", 4),
    ("to-milvus verify ./output --level full --collection-name my_collection", 4),
    ("to-milvus verify ./output --level scalar --uri http://remote:19530 --token your-token", 3),
]


@pytest.mark.parametrize(("line", "fields"), VERIFY, ids=[v[0] for v in VERIFY])
def test_verify_line(line: str, fields: int, loaded: Path) -> None:
    result = invoke(loaded, line.replace("http://remote:19530", str(loaded / "milvus.db")), _lite(loaded))
    summary = report(loaded, result)["summary"]["verify"]
    assert result.exit_code == 0, result.output
    assert summary["result"] == "passed"
    assert summary["count"] == f"milvus {ROWS} rows, source {ROWS} rows"
    assert summary["sample"].startswith(f"{ROWS} keys, {fields} fields compared"), summary["sample"]
    assert summary["search"].startswith("recall@10 1.000")


# --- --no-progress, on a terminal -------------------------------------------------------------------

LIVE_VIEW = re.compile(r"\bdone ━+")  # a task's row in the live view; the summary table has no "done"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_a_terminal(cwd: Path, line: str, env: dict[str, str]) -> tuple[int, str]:
    """Run the console script with stdout/stderr on a pseudo-terminal, where the live view is on by default."""
    master, slave = os.openpty()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS__", "S3__", "PIPELINE__"))}
    proc = subprocess.Popen(
        [str(MILVUS_INGEST), *shlex.split(line)], cwd=cwd, env={**base, **env}, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
    )
    os.close(slave)
    chunks: list[bytes] = []
    try:
        while data := os.read(master, 65536):
            chunks.append(data)
    except OSError:  # EIO: the process closed the terminal
        pass
    finally:
        os.close(master)
    return proc.wait(timeout=120), ANSI.sub("", b"".join(chunks).decode(errors="replace"))


NO_PROGRESS = [
    f"generate --schema schema.json --total-rows {ROWS} --no-progress",  # documented (1000000 rows)
    "upload --local-path ./output --no-progress",  # the local store: no --s3-path, no S3__*
    "to-milvus insert ./output --no-progress",
    "to-milvus import --local-path ./output/ --s3-path data/ --bucket my-bucket --no-progress",  # Lite: inserts
]
CONTROL = "to-milvus insert ./output"
NO_SCRIPT = pytest.mark.skipif(not MILVUS_INGEST.exists(), reason=f"no console script at {MILVUS_INGEST} (pip install -e .)")


@pytest.fixture(scope="module")
def terminals(tmp_path_factory: pytest.TempPathFactory, output: Path) -> dict[str, tuple[int, str]]:
    """Each line below on a terminal of its own, all at once: each is mostly a process start (~2 s)."""
    places = []
    for line in [*NO_PROGRESS, CONTROL]:
        cwd = tmp_path_factory.mktemp("terminal")
        (cwd / "schema.json").write_text(json.dumps(SCHEMA))
        shutil.copytree(output, cwd / "output")
        places.append((line, cwd))
    with ThreadPoolExecutor(len(places)) as pool:
        shown = pool.map(lambda place: on_a_terminal(place[1], place[0], _lite(place[1])), places)
        return {line: result for (line, _), result in zip(places, shown, strict=True)}


@NO_SCRIPT
@pytest.mark.parametrize("line", NO_PROGRESS)
def test_no_progress_hides_the_live_view_on_a_terminal(line: str, terminals: dict[str, tuple[int, str]]) -> None:
    code, shown = terminals[line]
    assert code == 0, shown[-3000:]
    assert not LIVE_VIEW.search(shown), shown[-3000:]
    assert "succeeded" in shown or "generated 300 rows" in shown


@NO_SCRIPT
def test_without_no_progress_a_terminal_shows_the_live_view(terminals: dict[str, tuple[int, str]]) -> None:
    """The control: the terminal above is one (without it the --no-progress checks would prove nothing)."""
    code, shown = terminals[CONTROL]
    assert code == 0, shown[-3000:]
    assert LIVE_VIEW.search(shown), shown[-3000:]
