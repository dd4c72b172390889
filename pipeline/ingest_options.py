"""Options the milvus-ingest-style commands share, and turning them into settings and a checked dataset.

Connection flags (``--uri``, ``--s3-path``...) override the MILVUS__* / S3__* settings for this one
command: they are written to the environment before settings are read, so every task, whatever reads
the settings, sees the same values, and what is not given still comes from the environment or .env.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from config.settings import get_settings
from pipeline.cli_common import fail_invalid
from task_components.datafiles import DataFileError, check_files
from task_components.interop import MetaError
from task_components.manifest import MANIFEST_NAME, Manifest

DataPath = Annotated[Path | None, typer.Argument(help="dataset directory with meta.json (ours or milvus-ingest's)", show_default=False)]
LocalPath = Annotated[Path | None, typer.Option("--local-path", help="the dataset directory (milvus-ingest's spelling)")]
Uri = Annotated[
    str | None,
    typer.Option(
        "--uri",
        help="Milvus URI [default: MILVUS__URI; unset: a Milvus Lite file in the run directory, so no server is needed "
        "(milvus-ingest: http://localhost:19530)]",
    ),
]
Token = Annotated[str | None, typer.Option("--token", help="Milvus token [default: MILVUS__TOKEN]")]
DbName = Annotated[str | None, typer.Option("--db-name", help="Milvus database [default: MILVUS__DB_NAME]")]
CollectionName = Annotated[str | None, typer.Option("--collection-name", "--collection", help="collection [default: the schema's name]")]
Drop = Annotated[bool, typer.Option("--drop", "--drop-if-exists", help="drop the collection first if it exists")]
NoIndex = Annotated[bool, typer.Option("--no-index", help="create no vector index (and so do not load the collection)")]
S3Path = Annotated[
    str | None,
    typer.Option("--s3-path", help="s3://bucket/prefix or a prefix in the bucket [default: S3__PREFIX/<run>]"),
]
Bucket = Annotated[str | None, typer.Option("--bucket", help="bucket [default: S3__BUCKET]")]
Endpoint = Annotated[str | None, typer.Option("--endpoint-url", help="S3 endpoint [default: S3__ENDPOINT_URL]")]
AccessKey = Annotated[str | None, typer.Option("--access-key-id", help="[default: S3__ACCESS_KEY, else boto's AWS_ACCESS_KEY_ID]")]
SecretKey = Annotated[str | None, typer.Option("--secret-access-key", help="[default: S3__SECRET_KEY, else AWS_SECRET_ACCESS_KEY]")]
Region = Annotated[str | None, typer.Option("--region", help="[default: S3__REGION]")]
NoVerifySsl = Annotated[bool, typer.Option("--no-verify-ssl", help="accept any TLS certificate from S3")]
Progress = Annotated[
    bool | None, typer.Option("--progress/--no-progress", help="live task view [default: on a terminal]", show_default=False)
]


def use_s3(
    s3_path: str | None,
    bucket: str | None,
    endpoint_url: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    region: str | None,
    no_verify_ssl: bool,
) -> str | None:
    """milvus-ingest's S3 flags -> S3__* settings for this command; returns the key prefix (None: the default).

    One mapping for every command taking these flags (``upload``, ``to-milvus import``). The keys go to
    this process' environment only, never into a task's parameters: a run directory holds no secret.
    """
    bucket, prefix = split_s3_path(s3_path, bucket)
    override_settings(
        s3__bucket=bucket,
        s3__endpoint_url=endpoint_url,
        s3__access_key=access_key_id,
        s3__secret_key=secret_access_key,
        s3__region=region,
        s3__verify_ssl=False if no_verify_ssl else None,
    )
    return prefix


def override_settings(**values: str | bool | None) -> None:
    """``milvus__uri="..."`` -> MILVUS__URI for this process; None leaves the setting as configured."""
    for key, value in values.items():
        if value is None:
            continue
        os.environ[key.upper()] = str(value).lower() if isinstance(value, bool) else value
    get_settings.cache_clear()


def split_s3_path(s3_path: str | None, bucket: str | None) -> tuple[str | None, str | None]:
    """(bucket, key prefix) from ``s3://bucket/prefix`` or a bare prefix."""
    if s3_path is None:
        return bucket, None
    if s3_path.startswith("s3://"):
        head, _, prefix = s3_path[5:].partition("/")
        if not head:
            raise fail_invalid(f"--s3-path {s3_path!r} has no bucket (s3://bucket/prefix)")
        if bucket and bucket != head:
            raise fail_invalid(f"--s3-path names bucket {head!r} but --bucket is {bucket!r}")
        return head, prefix.strip("/") or None
    return bucket, s3_path.strip("/") or None


def data_dir(path: Path | None, local_path: Path | None = None) -> Path:
    """The dataset directory, read once here so bad input is one line and exit 2, not a failed run."""
    if path is not None and local_path is not None:
        raise fail_invalid(f"give the dataset directory once: DATA_PATH {path} or --local-path {local_path}, not both")
    chosen = path or local_path
    if chosen is None:
        raise fail_invalid("give the dataset directory: DATA_PATH (or --local-path)")
    if not chosen.is_dir():
        raise fail_invalid(f"{chosen}: not a dataset directory (no such directory)")
    if not (chosen / MANIFEST_NAME).exists():
        raise fail_invalid(f"{chosen}: not a dataset directory (no {MANIFEST_NAME}); make one with `generate --out`")
    meta = chosen / MANIFEST_NAME
    try:
        manifest = Manifest.load(chosen, checksums=False)  # dataset.load hashes them, once
    except json.JSONDecodeError as exc:
        raise fail_invalid(f"{meta}: not valid JSON ({exc})") from None
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e["loc"])
        raise fail_invalid(f"{meta}: {where}: {e['msg']} (got {str(e.get('input'))[:80]!r})") from None
    except (MetaError, DataFileError) as exc:
        raise fail_invalid(str(exc)) from None
    except KeyError as exc:
        raise fail_invalid(f"{meta}: missing key {exc}") from None
    missing = [f.path for f in manifest.files if not manifest.file_path(f).is_file()]
    if missing:
        raise fail_invalid(f"{meta}: lists files that are not in {chosen}: {', '.join(missing[:5])}")
    if not manifest.files:
        raise fail_invalid(f"{meta}: lists no data files")
    try:
        check_files(manifest)
    except DataFileError as exc:
        raise fail_invalid(str(exc)) from None
    return chosen.resolve()


def importable(path: Path, run_dir: Path | None) -> Path:
    """``path``, or a converted copy when Milvus' bulk import would reject its Parquet column types.

    milvus-ingest writes strings as pandas' ``large_string``, which Milvus 2.3 refuses to import into a
    VarChar field; the copy (under ``<run dir>/staged/``) has exactly the schema's types.
    """
    import hashlib

    from pipeline.cli_common import cell, err, load_settings
    from task_components.datafiles import parquet_mismatches, rewrite_parquet

    manifest = Manifest.load(path, checksums=False)  # the copy is hashed as it is written
    problems = parquet_mismatches(manifest)
    if not problems:
        return path
    root = run_dir or load_settings().pipeline.run_dir
    out = root / "staged" / f"{path.name}-{hashlib.sha256(str(path).encode()).hexdigest()[:10]}"
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    note = f"note: Milvus bulk import rejects {problems[0]}{more}; importing a converted copy written to {out}"
    err.print(cell(note), soft_wrap=True)
    try:
        n = len(manifest.files)

        def done(i: int, name: str) -> None:
            err.print(cell(f"  converted {name} ({i}/{n})"))

        rewrite_parquet(manifest, out, on_file=done)
    except DataFileError as exc:
        raise fail_invalid(str(exc)) from None
    return out.resolve()
