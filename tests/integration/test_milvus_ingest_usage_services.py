"""milvus-ingest's documented upload / to-milvus lines run unchanged on ours, against the real S3 and Milvus.

The lines are milvus-ingest's "CLI Usage" section (its CLAUDE.md, seed 000), without the program name.
Placeholders become the test services: the bucket, ``http://localhost:9000``/``http://minio:9000`` (the
endpoint), ``KEY``/``SECRET``/``key``/``secret`` (the keys), ``http://192.168.1.100:19530``/
``http://remote:19530`` (the Milvus URI), the ``data/`` and ``prefix/`` key prefixes and ``my_collection``
(made unique, so runs never share a prefix or a collection). What a line leaves out comes from where a
milvus-ingest user has it: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL (boto's own
variables, which milvus-ingest reads too) and MILVUS__URI for "local Milvus"; no S3__* setting is set.
Each test checks the effect: the objects in S3 with the local files' sizes and bytes, rows counted in
Milvus by a client of the test's own, the collection a line names, and no secret in a run directory.

The five import lines are started together with the module (each waits ~10 s for Milvus to make the rows
searchable; one after the other they would take a minute) and checked last, each test its own line, so
their waits overlap the other tests. Secrets given as flags (the S3 keys, a Milvus token) are looked for
in every file of the run directories.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import chdir
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE
from typing import Any

import boto3
import pytest
from click.testing import Result
from typer.testing import CliRunner

import pipeline.datagen_cli
import pipeline.ingest_cli
from config.settings import get_settings
from pipeline.cli import app
from tests.integration.conftest import service_uri

pytestmark = pytest.mark.integration
assert pipeline.datagen_cli and pipeline.ingest_cli  # register `generate`, `upload` and `to-milvus` on `app`

MILVUS_INGEST = Path(sys.executable).with_name("milvus-ingest")
ROWS = 300
RUN = uuid.uuid4().hex[:8]
TOKEN = f"root:token-{uuid.uuid4().hex}"
SCHEMA = {
    "collection_name": f"mi_svc_{RUN}",
    "fields": [
        {"name": "id", "type": "Int64", "is_primary": True},
        {"name": "title", "type": "VarChar", "max_length": 64},
        {"name": "price", "type": "Float", "min": 0, "max": 100},
        {"name": "embedding", "type": "FloatVector", "dim": 16},
    ],
}


def services() -> dict[str, str]:
    names = ("TEST_S3_ENDPOINT", "TEST_S3_BUCKET", "TEST_S3_ACCESS_KEY", "TEST_S3_SECRET_KEY", "TEST_MILVUS_URI")
    return {name: service_uri(name) for name in names}


def user_env(keys: bool = True) -> dict[str, str]:
    """A milvus-ingest user's environment: boto's variables (keys only when ``keys``) and the local Milvus."""
    s = services()
    env = {"AWS_ENDPOINT_URL": s["TEST_S3_ENDPOINT"], "MILVUS__URI": s["TEST_MILVUS_URI"]}
    if keys:
        env |= {"AWS_ACCESS_KEY_ID": s["TEST_S3_ACCESS_KEY"], "AWS_SECRET_ACCESS_KEY": s["TEST_S3_SECRET_KEY"]}
    return env


def placed(line: str, tag: str) -> str:
    """The documented line with its placeholders pointing at the test services (unique prefix and collection)."""
    s = services()
    keys = f"--access-key-id {s['TEST_S3_ACCESS_KEY']} --secret-access-key {s['TEST_S3_SECRET_KEY']}"
    swaps = {
        "s3://bucket/prefix/": f"s3://{s['TEST_S3_BUCKET']}/mi-usage/{RUN}/{tag}/",
        "--s3-path data/": f"--s3-path mi-usage/{RUN}/{tag}/",
        "--bucket my-bucket": f"--bucket {s['TEST_S3_BUCKET']}",
        "http://localhost:9000": s["TEST_S3_ENDPOINT"],
        "http://minio:9000": s["TEST_S3_ENDPOINT"],
        "--access-key-id KEY --secret-access-key SECRET": keys,
        "--access-key-id key --secret-access-key secret": keys,
        "http://192.168.1.100:19530": s["TEST_MILVUS_URI"],
        "http://remote:19530": s["TEST_MILVUS_URI"],
        "my_collection": f"my_collection_{RUN}_{tag}",
        "your-token": TOKEN,  # the server has authentication off: any token passes, and this one is unmistakable
    }
    for documented, here in swaps.items():
        line = line.replace(documented, here)
    return line


def invoke(cwd: Path, line: str, env: dict[str, str]) -> Result:
    """One line in-process with only ``env``'s settings; the environment is restored after (flags write to it)."""
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith(("MILVUS__", "S3__", "PIPELINE__", "AWS_"))]:
            del os.environ[key]
        os.environ.update(env)
        get_settings.cache_clear()
        with chdir(cwd):
            return CliRunner().invoke(app, shlex.split(line), catch_exceptions=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def report(cwd: Path, output: str) -> dict:
    found = re.search(r"^report: (.+)$", output, re.MULTILINE)
    assert found, output[-3000:]
    return json.loads((cwd / found.group(1).strip()).read_text())


def milvus() -> Any:
    from pymilvus import MilvusClient

    return MilvusClient(uri=services()["TEST_MILVUS_URI"])


def counted(collection: str) -> int:
    """count(*) by a client of the test's own: the rows are in Milvus, whatever our command reported."""
    client = milvus()
    try:
        return int(client.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"])
    finally:
        client.close()


def other_shape(collection: str) -> None:
    client = milvus()
    try:
        client.create_collection(collection, dimension=4)
        client.insert(collection, [{"id": i, "vector": [0.1] * 4} for i in range(7)])
    finally:
        client.close()


def fields_of(collection: str) -> list[str]:
    client = milvus()
    try:
        return [f["name"] for f in client.describe_collection(collection)["fields"]]
    finally:
        client.close()


def s3() -> Any:
    s = services()
    return boto3.client(
        "s3",
        endpoint_url=s["TEST_S3_ENDPOINT"],
        aws_access_key_id=s["TEST_S3_ACCESS_KEY"],
        aws_secret_access_key=s["TEST_S3_SECRET_KEY"],
        region_name="us-east-1",
    )


def no_secret_in(runs: Path, *secrets: str) -> None:
    """No file of the run directories holds a secret: as a value of its own (a pickled or quoted string) when
    it is short (the test server's key is a 4-letter word, inside "pytest" too), anywhere when it is long."""
    for secret in secrets or (services()["TEST_S3_SECRET_KEY"],):
        raw = secret.encode()
        forms = [raw] if len(raw) >= 12 else [b"\x8c" + bytes([len(raw)]) + raw, b'"' + raw + b'"', b"'" + raw + b"'"]
        holding = [str(p) for p in runs.rglob("*") if p.is_file() and any(f in p.read_bytes() for f in forms)]
        assert holding == [], (len(secret), holding)


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("made")
    (root / "schema.json").write_text(json.dumps(SCHEMA))
    made = invoke(root, f"generate --schema schema.json --total-rows {ROWS} --out output --no-progress", {})
    assert made.exit_code == 0, made.output
    return root / "output"


def workdir(root: Path, output: Path, collection: str) -> Path:
    """A user's directory holding ./output, its meta.json naming ``collection`` (the lines take it from there)."""
    root.mkdir(parents=True)
    shutil.copytree(output, root / "output")
    meta = json.loads((root / "output" / "meta.json").read_text())
    meta["schema"]["collection_name"] = collection
    (root / "output" / "meta.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def collections() -> Iterator[list[str]]:
    """Every collection the module makes, dropped at its end."""
    made: list[str] = []
    yield made
    client = milvus()
    try:
        for name in made:
            if client.has_collection(name):
                client.drop_collection(name)
    finally:
        client.close()


# --- upload ---------------------------------------------------------------------------------------------

UPLOADS = [
    ("aws", "upload --local-path ./output --s3-path s3://bucket/prefix/", True),
    ("minio", "upload --local-path ./output --s3-path s3://bucket/prefix/ --endpoint-url http://localhost:9000", True),
    ("nossl", "upload --local-path ./output --s3-path s3://bucket/prefix/ --no-verify-ssl", True),
    ("keys", "upload --local-path ./output --s3-path s3://bucket/prefix/ --access-key-id KEY --secret-access-key SECRET", False),
]


@pytest.mark.parametrize(("tag", "line", "keys"), UPLOADS, ids=[u[1] for u in UPLOADS])
def test_upload_line(tag: str, line: str, keys: bool, output: Path, tmp_path: Path) -> None:
    cwd = workdir(tmp_path / "user", output, SCHEMA["collection_name"])
    result = invoke(cwd, placed(line, f"up-{tag}"), user_env(keys))
    assert result.exit_code == 0, result.output[-3000:]
    assert report(cwd, result.output)["summary"]["upload"]["store"] == "s3"
    client, bucket, prefix = s3(), services()["TEST_S3_BUCKET"], f"mi-usage/{RUN}/up-{tag}/"
    listed = {o["Key"]: o["Size"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])}
    local = {f"{prefix}{p.name}": p.stat().st_size for p in (cwd / "output").iterdir()}
    assert listed == local  # every file of the directory, each whole
    data = cwd / "output" / "data-00001.parquet"
    assert client.get_object(Bucket=bucket, Key=f"{prefix}data-00001.parquet")["Body"].read() == data.read_bytes()
    no_secret_in(cwd / "runs")


def test_upload_takes_one_dataset_directory(output: Path, tmp_path: Path) -> None:
    cwd = workdir(tmp_path / "user", output, SCHEMA["collection_name"])
    both = invoke(cwd, placed("upload ./output --local-path ./output --s3-path s3://bucket/prefix/", "up-both"), user_env())
    assert both.exit_code == 2 and "not both" in both.output
    neither = invoke(cwd, placed("upload --s3-path s3://bucket/prefix/", "up-none"), user_env())
    assert neither.exit_code == 2 and "--local-path" in neither.output


# --- to-milvus insert and import: started with the module, all at once; each test checks its own line -----

BASE = "to-milvus import --local-path ./output/ --s3-path data/ --bucket my-bucket --endpoint-url http://minio:9000"
IMPORTS = [  # (tag, documented line, S3 keys in the environment)
    ("plain", BASE, True),
    ("named", f"{BASE} --collection-name my_collection", True),
    ("wait", f"{BASE} --wait", True),
    ("keys", f"{BASE} --access-key-id key --secret-access-key secret", False),  # keys only from the flags
    ("drop", f"{BASE} --drop-if-exists", True),
    ("aws", BASE.removesuffix(" --endpoint-url http://minio:9000"), True),  # AWS: S3 from the AWS_* environment
]
INSERTS = [  # (tag, documented line, "local Milvus" in the environment)
    ("ins_local", "to-milvus insert ./output", True),
    ("ins_remote", "to-milvus insert ./output --uri http://192.168.1.100:19530 --token your-token", False),
    ("ins_drop", "to-milvus insert ./output --drop-if-exists", True),
    ("ins_named", "to-milvus insert ./output --collection-name my_collection --batch-size 5000", True),
]


@dataclass
class Started:
    """One line running as the installed console script; ``done()`` waits for it once and returns its stdout."""

    proc: subprocess.Popen[str]
    cwd: Path
    target: str  # the collection the line loads
    out: str | None = None

    def done(self) -> str:
        if self.out is None:
            out, err = self.proc.communicate(timeout=600)
            assert self.proc.returncode == 0, (out + err)[-3000:]
            self.out = out
        return self.out


@pytest.fixture(scope="module", autouse=True)
def launched(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, output: Path, collections: list[str]
) -> Iterator[dict[str, Started]]:
    """Start the insert and import lines before the module's first test (each waits seconds for Milvus to index
    and load; at once, those waits overlap): only when a test checking them is selected."""
    started: dict[str, Started] = {}
    if not any(item.name.startswith(("test_import_line", "test_insert_line", "test_verify")) for item in request.session.items):
        yield started
        return
    root = tmp_path_factory.mktemp("lines")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS__", "S3__", "PIPELINE__", "AWS_"))}
    for tag, line, in_env in IMPORTS + INSERTS:
        collection = f"mi_svc_{RUN}_{tag}"
        target = f"my_collection_{RUN}_{tag}" if "my_collection" in line else collection
        cwd = workdir(root / tag, output, collection)
        collections.append(target)
        if "--drop-if-exists" in line:  # a collection of another shape with rows already there: the line replaces it
            other_shape(collection)
        importing = tag in {i[0] for i in IMPORTS}
        env = user_env(keys=in_env) if importing else (user_env() if in_env else {})
        cmd = [str(MILVUS_INGEST), *shlex.split(placed(line, tag)), "--no-progress"]
        proc = subprocess.Popen(cmd, cwd=cwd, env={**base, **env, "LOGGING__FORMAT": "json"}, text=True, stdout=PIPE, stderr=PIPE)
        started[tag] = Started(proc, cwd, target)
    yield started
    for one in started.values():
        if one.proc.poll() is None:
            one.proc.kill()
        one.proc.communicate()  # reaps it and closes its pipes


def loaded_by(started: Started) -> dict:
    """The line's summary, after checking what it left in Milvus with a client of the test's own."""
    summary = report(started.cwd, started.done())["summary"]
    assert summary["collection"]["collection"] == started.target and summary["verify"]["result"] == "passed"
    step = summary["import"] if "import" in summary else summary["insert"]
    assert step["rows in milvus"] == ROWS
    assert counted(started.target) == ROWS  # after --drop-if-exists: 300, not 307
    assert fields_of(started.target) == ["id", "title", "price", "embedding"]  # --drop-if-exists: the 4-d one replaced
    return summary


@pytest.mark.parametrize(("tag", "line", "in_env"), INSERTS, ids=[i[1] for i in INSERTS])
def test_insert_line(tag: str, line: str, in_env: bool, launched: dict[str, Started]) -> None:
    loaded_by(launched[tag])
    no_secret_in(launched[tag].cwd / "runs", TOKEN)


@pytest.mark.parametrize(("tag", "line", "keys"), IMPORTS, ids=[i[1] for i in IMPORTS])
def test_import_line(tag: str, line: str, keys: bool, launched: dict[str, Started]) -> None:
    summary = loaded_by(launched[tag])  # waited, then counted: ours waits with or without --wait
    assert summary["import"]["method"] == "bulk_import" and summary["upload"]["store"] == "s3"
    listed = s3().list_objects_v2(Bucket=services()["TEST_S3_BUCKET"], Prefix=f"mi-usage/{RUN}/{tag}/").get("Contents", [])
    local = {f"mi-usage/{RUN}/{tag}/{p.name}": p.stat().st_size for p in (launched[tag].cwd / "output").iterdir()}
    assert {o["Key"]: o["Size"] for o in listed} == local
    no_secret_in(launched[tag].cwd / "runs")


# --- to-milvus verify: what the import lines loaded, as a milvus-ingest user checks it ---------------------


@pytest.fixture(scope="module")
def loaded(launched: dict[str, Started]) -> Path:
    """The plain import's directory; its collection, and the named import's my_collection, hold ./output."""
    launched["plain"].done()
    launched["named"].done()
    return launched["plain"].cwd


VERIFY = [  # (documented line, fields the sample compares beside the key)
    ("to-milvus verify ./output", 3),  # ours is full by default (theirs count): named in --help
    ("to-milvus verify ./output --level count", 0),
    ("to-milvus verify ./output --level scalar", 2),
    ("to-milvus verify ./output --level full", 3),
    ("to-milvus verify ./output --level full --collection-name my_collection", 3),
    ("to-milvus verify ./output --level scalar --uri http://remote:19530 --token your-token", 2),
]


@pytest.mark.parametrize(("line", "fields"), VERIFY, ids=[v[0] for v in VERIFY])
def test_verify_line(line: str, fields: int, loaded: Path) -> None:
    result = invoke(loaded, placed(line, "named"), user_env() if "--uri" not in line else {})
    assert result.exit_code == 0, result.output[-3000:]
    summary = report(loaded, result.output)["summary"]["verify"]
    assert summary["result"] == "passed" and summary["count"] == f"milvus {ROWS} rows, source {ROWS} rows"
    assert summary["sample"].startswith(f"{ROWS} keys, {fields} fields compared"), summary["sample"]
    assert summary["search"].startswith("recall@10 1.000")
    no_secret_in(loaded / "runs", TOKEN)


def test_verify_names_a_row_deleted_behind_its_back(loaded: Path) -> None:
    """The lines above pass because the data is there: the same line fails, naming the key, when it is not."""
    client = milvus()
    try:
        client.delete(f"my_collection_{RUN}_named", filter="id in [123]")
    finally:
        client.close()
    result = invoke(loaded, placed("to-milvus verify ./output --level full --collection-name my_collection", "named"), user_env())
    assert result.exit_code == 1, result.output[-3000:]
    error = report(loaded, result.output)["tasks"]["verify"]["error"]
    assert "id=123: missing in Milvus" in error and f"milvus {ROWS - 1} rows" in error
