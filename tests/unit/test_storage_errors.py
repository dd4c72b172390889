"""A local file that cannot be uploaded fails at once, naming the file; network trouble is still retried.

``s3_transient`` used to call every OSError transient, so a missing dataset file was retried six times
with backoff before the run failed with a bare ``FileNotFoundError``.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from dag_orchestrator.retry import with_retries
from dag_orchestrator.task import RetryPolicy
from task_components.storage.stores import LocalStore, S3Store, SourceFileError, s3_transient

POLICY = RetryPolicy(attempts=6, backoff=0.2)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (FileNotFoundError(2, "No such file or directory", "/data/part-0.parquet"), False),
        (PermissionError(13, "Permission denied", "/data/part-0.parquet"), False),
        (IsADirectoryError(21, "Is a directory", "/data"), False),
        (SourceFileError("cannot upload /data/x"), False),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (TimeoutError(), True),
    ],
)
def test_path_errors_are_permanent_network_errors_transient(exc: BaseException, transient: bool) -> None:
    assert s3_transient(exc) is transient


def attempts_until_failure(store: object, path: Path) -> tuple[int, BaseException]:
    calls = 0

    async def put() -> object:
        nonlocal calls
        calls += 1
        return await store.put_file(path, "run/part-0.parquet", "0" * 64)  # type: ignore[attr-defined]

    async def go() -> BaseException:
        try:
            await with_retries(put, POLICY, s3_transient, what="upload")
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            return exc
        raise AssertionError("the upload of a missing file succeeded")

    err = anyio.run(go)
    return calls, err


def test_missing_file_fails_at_once_naming_it_local_store(tmp_path: Path) -> None:
    missing = tmp_path / "data" / "part-0.parquet"
    calls, err = attempts_until_failure(LocalStore(tmp_path / "store"), missing)
    assert calls == 1
    assert isinstance(err, SourceFileError) and str(missing) in str(err) and "No such file" in str(err)


def test_missing_file_fails_before_any_request_s3_store(tmp_path: Path) -> None:
    # nothing listens on port 9: a request would fail with a connection error (retried), not this
    store = S3Store(bucket="b", endpoint_url="http://127.0.0.1:9", access_key="k", secret_key="s")
    missing = tmp_path / "part-0.parquet"
    started = time.perf_counter()
    calls, err = attempts_until_failure(store, missing)
    anyio.run(store.aclose)
    assert calls == 1 and time.perf_counter() - started < 2
    assert isinstance(err, SourceFileError) and str(missing) in str(err)


def test_a_directory_is_not_uploaded(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    calls, err = attempts_until_failure(LocalStore(tmp_path / "store"), tmp_path / "dir")
    assert calls == 1 and isinstance(err, SourceFileError) and "not a regular file" in str(err)
