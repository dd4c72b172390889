"""Object stores with one async interface: S3 (aiobotocore) and a local directory.

Both skip a file that is already stored unchanged: S3 compares the ``sha256`` object metadata we
write and the size (one HEAD request), the local store compares size and content hash. That is what
makes a re-run or a resumed run upload only what is missing. S3 uploads above a threshold go
multipart with a bounded number of parts in flight (memory = parts x part size); a failed multipart
upload is aborted so no orphan parts are billed. Requests retry with botocore's standard backoff.
A local file that cannot be read (missing, no permission, a directory) is the run's problem, not the
store's: ``SourceFileError`` names it at once instead of six retries of an ``OSError`` that cannot heal.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import anyio
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from task_components.clients import s3_client
from task_components.manifest import sha256_file

__all__ = ["LocalStore", "ObjectStore", "S3Store", "SourceFileError", "StorageError", "StoredObject"]


# OSErrors about a path that no retry changes: the network ones (ConnectionError, TimeoutError...) stay transient
_PERMANENT_OS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def s3_transient(exc: BaseException) -> bool:
    """Worth retrying: the connection, a timeout, throttling or a 5xx; not a refusal (4xx) or a bad path."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return status >= 500 or err.get("Code") in ("SlowDown", "RequestTimeout", "Throttling", "InternalError")
    if isinstance(exc, (StorageError, NoCredentialsError, PartialCredentialsError, *_PERMANENT_OS)):
        return False  # no retry brings credentials nobody configured
    return isinstance(exc, BotoCoreError | aiohttp.ClientError | OSError | TimeoutError)


class StorageError(RuntimeError):
    pass


class SourceFileError(StorageError):
    """A local file to upload cannot be read: permanent, so it is never retried."""


def _unreadable(path: Path, exc: OSError) -> SourceFileError:
    return SourceFileError(f"cannot upload {path}: {exc.strerror or type(exc).__name__} (the local file to upload)")


def _source_size(path: Path) -> int:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if not path.is_file():
        raise SourceFileError(f"cannot upload {path}: not a regular file (the local file to upload)")
    return size


@dataclass(slots=True)
class StoredObject:
    key: str
    bytes: int
    sha256: str
    skipped: bool


class ObjectStore(Protocol):
    kind: str
    bucket: str

    async def put_file(self, path: Path, key: str, sha256: str) -> StoredObject: ...
    async def abort_unfinished(self, prefix: str) -> int: ...
    async def get_bytes(self, key: str) -> bytes: ...
    async def download(self, key: str, path: Path) -> None: ...
    async def list_keys(self, prefix: str) -> list[str]: ...
    def locate(self, key: str) -> str: ...
    async def aclose(self) -> None: ...


class LocalStore:
    """A directory standing in for a bucket: the embedded default, and handy on a laptop."""

    kind = "local"

    def __init__(self, root: Path, bucket: str = "bucket") -> None:
        self.root = Path(root) / bucket
        self.bucket = bucket

    def _path(self, key: str) -> Path:
        target = (self.root / key).resolve()
        if self.root.resolve() not in target.parents:
            raise StorageError(f"key {key!r} escapes the store root {self.root}")
        return target

    def locate(self, key: str) -> str:
        """An absolute path: what a Milvus server with local storage imports from."""
        return str(self._path(key))

    async def put_file(self, path: Path, key: str, sha256: str) -> StoredObject:
        target = self._path(key)
        size = _source_size(path)
        same_size = target.exists() and target.stat().st_size == size
        if same_size and await anyio.to_thread.run_sync(sha256_file, target) == sha256:
            return StoredObject(key, size, sha256, skipped=True)
        await anyio.to_thread.run_sync(_link_or_copy, path, target)
        return StoredObject(key, size, sha256, skipped=False)

    async def abort_unfinished(self, prefix: str) -> int:
        return 0  # a local copy is written to a temporary name and renamed: nothing is left half-done

    async def get_bytes(self, key: str) -> bytes:
        return await anyio.Path(self._path(key)).read_bytes()

    async def download(self, key: str, path: Path) -> None:
        await anyio.to_thread.run_sync(shutil.copyfile, self._path(key), path)

    async def list_keys(self, prefix: str) -> list[str]:
        base = self.root
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file() and str(p.relative_to(base)).startswith(prefix))

    async def aclose(self) -> None:
        return None


def _link_or_copy(src: Path, dst: Path) -> None:
    """Dataset files are immutable, so a hard link is a safe zero-copy 'upload'."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    tmp.replace(dst)


class S3Store:
    kind = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None,
        access_key: str | None,
        secret_key: str | None,
        region: str = "us-east-1",
        verify_ssl: bool = True,
        part_size: int = 16 << 20,
        multipart_threshold: int = 64 << 20,
        parts_in_flight: int = 4,
    ) -> None:
        self.bucket = bucket
        self.part_size = max(part_size, 5 << 20)  # S3's minimum part size
        self.multipart_threshold = multipart_threshold
        self._parts = anyio.Semaphore(parts_in_flight)
        self._args: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "aws_access_key_id": access_key,
            "aws_secret_access_key": secret_key,
            "region_name": region,
            "verify": verify_ssl,
            "max_pool_connections": max(10, parts_in_flight * 2),
        }
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def client(self) -> Any:
        if self._client is None:
            self._client = await self._stack.enter_async_context(s3_client(**self._args))
        return self._client

    def locate(self, key: str) -> str:
        return key

    async def head(self, key: str) -> dict[str, Any] | None:
        c = await self.client()
        try:
            return await c.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    async def put_file(self, path: Path, key: str, sha256: str) -> StoredObject:
        size = _source_size(path)  # before any request: a missing file fails at once
        head = await self.head(key)
        if head and head.get("ContentLength") == size and head.get("Metadata", {}).get("sha256") == sha256:
            return StoredObject(key, size, sha256, skipped=True)
        if size < self.multipart_threshold:
            try:
                body = await anyio.Path(path).read_bytes()
            except OSError as exc:
                raise _unreadable(path, exc) from exc
            c = await self.client()
            await c.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata={"sha256": sha256})
        else:
            await self._multipart(path, key, size, sha256)
        return StoredObject(key, size, sha256, skipped=False)

    async def _multipart(self, path: Path, key: str, size: int, sha256: str) -> None:
        c = await self.client()
        upload = await c.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata={"sha256": sha256})
        upload_id = upload["UploadId"]
        parts: dict[int, str] = {}

        async def send(number: int, offset: int, length: int) -> None:
            async with self._parts:  # bounds memory: at most parts_in_flight parts read at once
                data = await anyio.to_thread.run_sync(_read_range, path, offset, length)
                reply = await c.upload_part(Bucket=self.bucket, Key=key, PartNumber=number, UploadId=upload_id, Body=data)
                parts[number] = reply["ETag"]

        try:
            async with anyio.create_task_group() as tg:
                for number, offset in enumerate(range(0, size, self.part_size), start=1):
                    tg.start_soon(send, number, offset, min(self.part_size, size - offset))
            await c.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"ETag": parts[n], "PartNumber": n} for n in sorted(parts)]},
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                try:
                    await c.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                except Exception:  # noqa: BLE001 - the original failure is what matters
                    pass
            raise

    async def abort_unfinished(self, prefix: str) -> int:
        """Abort every unfinished multipart upload under ``prefix`` (left by a killed earlier attempt)."""
        c = await self.client()
        aborted = 0
        paginator = c.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for up in page.get("Uploads", []) or []:
                await c.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                aborted += 1
        return aborted

    async def get_bytes(self, key: str) -> bytes:
        c = await self.client()
        reply = await c.get_object(Bucket=self.bucket, Key=key)
        async with reply["Body"] as stream:
            return await stream.read()

    async def download(self, key: str, path: Path, chunk: int = 8 << 20) -> None:
        """The object into ``path`` in chunks: memory is one chunk, not the object (files are ~256 MB)."""
        c = await self.client()
        reply = await c.get_object(Bucket=self.bucket, Key=key)
        async with reply["Body"] as stream, await anyio.open_file(path, "wb") as out:
            while data := await stream.read(chunk):
                await out.write(data)

    async def list_keys(self, prefix: str) -> list[str]:
        c = await self.client()
        keys: list[str] = []
        async for page in _pages(c, self.bucket, prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    async def aclose(self) -> None:
        await self._stack.aclose()
        self._client = None


async def _pages(client: Any, bucket: str, prefix: str) -> AsyncIterator[dict[str, Any]]:
    paginator = client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        yield page


def _read_range(path: Path, offset: int, length: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(length)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
