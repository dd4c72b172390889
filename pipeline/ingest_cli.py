"""milvus-ingest conveniences: ``upload DIR`` and ``to-milvus insert|import|verify DATA_PATH``.

Each builds a small pipeline spec in code around ``dataset.load`` and runs it exactly like a YAML
file (same validation, run directory, report, progress view and exit codes), so there is one way
things run whichever door a user came in by. DATA_PATH may be a directory we wrote or one
milvus-ingest wrote (Parquet or JSON); the flags are milvus-ingest's, and override MILVUS__*/S3__*.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli_common import RunDirOpt, app, exit_code, fail_invalid, load_settings, run_tasks
from pipeline.ingest_options import (
    AccessKey,
    Bucket,
    CollectionName,
    DataPath,
    DbName,
    Drop,
    Endpoint,
    LocalPath,
    NoIndex,
    NoVerifySsl,
    Progress,
    Region,
    S3Path,
    SecretKey,
    Token,
    Uri,
    data_dir,
    importable,
    override_settings,
    use_s3,
)

to_milvus = typer.Typer(
    help="Load a dataset directory into Milvus, or check one against a collection (like milvus-ingest to-milvus).",
    no_args_is_help=True,
)
app.add_typer(to_milvus, name="to-milvus")

LEVELS = ("count", "scalar", "full")


def _milvus(uri: str | None, token: str | None, db_name: str | None) -> None:
    override_settings(milvus__uri=uri, milvus__token=token, milvus__db_name=db_name)


def _collection(collection: str | None, drop: bool, no_index: bool) -> dict[str, Any]:
    params = {"collection": collection, "if_exists": "drop" if drop else "append", "index": not no_index}
    return {"uses": "milvus.create_collection", "needs": ["dataset"], "with": params}


def _dataset(path: Path) -> dict[str, Any]:
    return {"uses": "dataset.load", "with": {"path": str(path)}}


@app.command()
def upload(
    path: DataPath = None,
    local_path: LocalPath = None,
    s3_path: S3Path = None,
    endpoint_url: Endpoint = None,
    access_key_id: AccessKey = None,
    secret_access_key: SecretKey = None,
    region: Region = None,
    no_verify_ssl: NoVerifySsl = False,
    prefix: Annotated[
        str | None, typer.Option(help="key prefix (or the prefix part of --s3-path) [default: <S3__PREFIX>/<run id>]")
    ] = None,
    progress: Progress = None,
    run_dir: RunDirOpt = None,
) -> None:
    """Upload a dataset directory to S3 or the local store; unchanged files are skipped.

    milvus-ingest's line works as is: upload --local-path ./output --s3-path s3://bucket/prefix/ --endpoint-url URL.
    Without --s3-path s3://... or --endpoint-url, the S3__* settings decide (none set: the local store).
    """
    path = data_dir(path, local_path)
    named = use_s3(s3_path, None, endpoint_url, access_key_id, secret_access_key, region, no_verify_ssl)
    if named is not None and prefix is not None and named != prefix.strip("/"):
        raise fail_invalid(f"--s3-path gives prefix {named!r} and --prefix {prefix!r}: give one")
    # an s3:// URL means S3, as in milvus-ingest (AWS when no endpoint), never the local store
    backend = "s3" if s3_path is not None and s3_path.startswith("s3://") else "auto"
    params = {"prefix": named or prefix, "backend": backend}
    tasks = {
        "dataset": _dataset(path),
        "upload": {"uses": "storage.upload", "needs": ["dataset"], "with": params, "retries": 3},
    }
    raise typer.Exit(exit_code(run_tasks("upload", tasks, run_dir, live=progress)[1]))


@to_milvus.command("insert")
def to_milvus_insert(
    data_path: DataPath = None,
    uri: Uri = None,
    token: Token = None,
    db_name: DbName = None,
    collection_name: CollectionName = None,
    drop: Drop = False,
    no_index: NoIndex = False,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            "--batch-rows",
            min=1,
            help="rows per insert call [milvus-ingest: 10000; ours has 2 calls in flight, as many rows as theirs, and "
            "a call stays well under Milvus' 64 MB message limit with wide vectors (10000 x 1536-d is 61 MB)]",
        ),
    ] = 5000,
    progress: Progress = None,
    run_dir: RunDirOpt = None,
) -> None:
    """Insert a dataset (Parquet or JSON) into Milvus in batches; works on Milvus Lite and servers."""
    path = data_dir(data_path)
    _milvus(uri, token, db_name)
    tasks = {
        "dataset": _dataset(path),
        "collection": _collection(collection_name, drop, no_index),
        "insert": {"uses": "milvus.insert", "needs": ["dataset", "collection"], "with": {"batch_rows": batch_size}},
        "verify": {"uses": "verify", "needs": ["insert"], "with": {"level": "count"}},
    }
    raise typer.Exit(exit_code(run_tasks("to-milvus-insert", tasks, run_dir, live=progress)[1]))


@to_milvus.command("import")
def to_milvus_import(
    data_path: DataPath = None,
    local_path: LocalPath = None,
    uri: Uri = None,
    token: Token = None,
    db_name: DbName = None,
    collection_name: CollectionName = None,
    drop: Drop = False,
    no_index: NoIndex = False,
    s3_path: S3Path = None,
    bucket: Bucket = None,
    endpoint_url: Endpoint = None,
    access_key_id: AccessKey = None,
    secret_access_key: SecretKey = None,
    region: Region = None,
    no_verify_ssl: NoVerifySsl = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="wait until the rows are searchable, then count them [milvus-ingest: returns once the job is submitted "
            "unless --wait; ours waits so that exit 0 means the rows are in Milvus; --no-wait for theirs]",
        ),
    ] = True,
    timeout: Annotated[
        float, typer.Option(min=1, help="seconds to wait for the import jobs [milvus-ingest: no limit; ours fails a stuck job]")
    ] = 3600,
    progress: Progress = None,
    run_dir: RunDirOpt = None,
) -> None:
    """Upload a dataset to S3 and bulk-import it (Milvus Lite: falls back to insert).

    Milvus reads the files from its own object store, so the bucket must be the one Milvus is configured with.
    """
    path = importable(data_dir(data_path, local_path), run_dir)
    prefix = use_s3(s3_path, bucket, endpoint_url, access_key_id, secret_access_key, region, no_verify_ssl)
    _milvus(uri, token, db_name)
    # a Milvus server reads the files from its object store, never from our local one: S3 then, even with no
    # endpoint or S3__ keys given (AWS, keys from AWS_*), as milvus-ingest; Milvus Lite inserts from either
    server = (milvus_uri := load_settings().milvus.uri) is not None and not milvus_uri.endswith(".db")
    backend = "s3" if server or (s3_path or "").startswith("s3://") else "auto"
    tasks: dict[str, Any] = {
        "dataset": _dataset(path),
        "upload": {"uses": "storage.upload", "needs": ["dataset"], "with": {"prefix": prefix, "backend": backend}, "retries": 3},
        "collection": _collection(collection_name, drop, no_index),
        # `import` imports whatever the size (no small-load insert); Milvus Lite still falls back to insert
        "import": {
            "uses": "milvus.bulk_import",
            "needs": ["upload", "collection"],
            "with": {"wait": wait and not no_index, "timeout": timeout, "insert_below_rows": 0},
        },
    }
    if wait and not no_index:  # without an index Milvus 2.3 cannot load the collection to count it
        tasks["verify"] = {"uses": "verify", "needs": ["import"], "with": {"level": "count"}}
    raise typer.Exit(exit_code(run_tasks("to-milvus-import", tasks, run_dir, live=progress)[1]))


def sample_size(total_rows: int) -> int:
    """milvus-ingest's verify sample: 10% of the rows, at least 1,000 (at most our 100,000 cap)."""
    return max(1000, min(total_rows // 10, 100_000))


def verify_data_path(path: Path, level: str, collection: str | None, sample: int | None, run_dir: Path | None) -> None:
    """Check a dataset against a collection with no run id: count, a field-by-field sample, search recall.

    Thresholds are milvus-ingest's: value mismatches under 5% of the sample, search recall of at least 0.8;
    a sampled key missing from (or repeated in) Milvus always fails, and is named.
    """
    from task_components.manifest import Manifest

    if level not in LEVELS:
        raise fail_invalid(f"--level must be one of {', '.join(LEVELS)}, got {level!r}")
    total = Manifest.load(path, checksums=False).total_rows
    fields = {"count": "none", "scalar": "scalar", "full": "all"}[level]
    tasks = {
        "dataset": _dataset(path),
        "collection": {"uses": "milvus.existing", "needs": ["dataset"], "with": {"collection": collection}},
        "verify": {
            "uses": "verify",
            "needs": ["collection"],
            "with": {
                "level": "sample",
                "sample": sample or sample_size(total),
                "sample_threshold": 0.95,
                "sample_fields": fields,
                "recall_threshold": 0.8,
                "find_missing": True,
            },
        },
    }
    raise typer.Exit(exit_code(run_tasks("to-milvus-verify", tasks, run_dir)[1]))


@to_milvus.command("verify")
def to_milvus_verify(
    data_path: DataPath = None,
    uri: Uri = None,
    token: Token = None,
    db_name: DbName = None,
    collection_name: CollectionName = None,
    level: Annotated[
        str,
        typer.Option(
            help="count: keys + count + search; scalar/full: also compare a sample's fields [milvus-ingest: count; "
            "ours is stronger by default: full also compares every field of the sample, vectors included; "
            "--level count for theirs]"
        ),
    ] = "full",
    sample: Annotated[int | None, typer.Option(min=1, max=100_000, help="keys sampled [default: 10%, >= 1000]")] = None,
    run_dir: RunDirOpt = None,
) -> None:
    """Check that a collection holds a dataset directory's rows (no run id needed); exit 1 names what differs."""
    path = data_dir(data_path)
    _milvus(uri, token, db_name)
    verify_data_path(path, level, collection_name, sample, run_dir)
