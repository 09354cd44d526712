"""Where task result logs and cached results live: a local directory or `s3://bucket/prefix`,
behind one small interface. Writes are atomic: a reader sees a whole file or none."""

from __future__ import annotations

import io
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Protocol

from shared.errors import StoreError


class BlobStore(Protocol):
    def uri(self, relpath: str) -> str: ...

    def writer(self, relpath: str) -> AbstractContextManager[IO[str]]: ...

    def open(self, relpath: str) -> IO[bytes]: ...

    def read_bytes(self, relpath: str) -> bytes | None: ...

    def write_bytes(self, relpath: str, data: bytes) -> None: ...

    def list(self, prefix: str = "") -> Iterator[str]: ...

    def read_range(self, relpath: str, start: int, size: int) -> bytes | None: ...

    def delete(self, relpath: str) -> None: ...

    def any_under(self, prefix: str) -> bool: ...


def safe_relpath(relpath: str) -> str:
    """Refuse paths that would land outside the store's root."""
    parts = [part for part in relpath.split("/") if part not in ("", ".")]
    if not parts or relpath.startswith("/") or ".." in parts or "\\" in relpath:
        raise StoreError(f"refusing a path outside the store: {relpath!r}")
    return "/".join(parts)


def process_umask() -> int:
    """The process's umask, read without changing it: setting it to 0 and back (the only portable
    way) would let another thread create a file with mode 0666 in between."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:  # no /proc: the portable way, at least serialised among our own calls
        mask = os.umask(0)
        os.umask(mask)
        return mask


_UMASK_LOCK = threading.Lock()


class LocalStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self._root = str(self.root)
        self._made_dirs: set[str] = set()

    def uri(self, relpath: str) -> str:
        return os.path.join(self._root, safe_relpath(relpath))

    @contextmanager
    def writer(self, relpath: str) -> Iterator[IO[str]]:
        target = Path(self.uri(relpath))
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            # mkstemp makes the file private (0600); a log is made like any other file (umask).
            os.fchmod(fd, 0o666 & ~process_umask())
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                yield handle
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def open(self, relpath: str) -> IO[bytes]:
        return open(self.uri(relpath), "rb")  # noqa: SIM115

    def read_bytes(self, relpath: str) -> bytes | None:
        try:
            with open(self.uri(relpath), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def write_bytes(self, relpath: str, data: bytes) -> None:
        # On the per-sample path: plain os calls, directories made once per process, and a temporary
        # name unique to this thread (cheaper than mkstemp), renamed into place atomically.
        target = self.uri(relpath)
        directory = os.path.dirname(target)
        if directory not in self._made_dirs:
            os.makedirs(directory, exist_ok=True)
            self._made_dirs.add(directory)
        tmp = f"{directory}/.{os.path.basename(target)}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                yield path.relative_to(self.root).as_posix()

    def read_range(self, relpath: str, start: int, size: int) -> bytes | None:
        """Bytes [start, start + size) of a file (fewer at its end); None when it does not exist."""
        try:
            with open(self.uri(relpath), "rb") as handle:
                handle.seek(start)
                return handle.read(size)
        except FileNotFoundError:
            return None

    def size(self, relpath: str) -> int | None:
        try:
            return os.path.getsize(self.uri(relpath))
        except FileNotFoundError:
            return None

    def delete(self, relpath: str) -> None:
        Path(self.uri(relpath)).unlink(missing_ok=True)

    def any_under(self, prefix: str) -> bool:
        base = self.root / safe_relpath(prefix)
        return base.is_dir() and any(True for _ in base.iterdir())


class S3Store:
    """Logs on S3 or any S3-compatible endpoint (boto3's standard configuration applies,
    including AWS_ENDPOINT_URL). Uploads stream through a spooled file and multipart upload."""

    SPOOL_BYTES = 8 * 1024 * 1024

    def __init__(self, url: str):
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise StoreError(f"no bucket in {url!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        import boto3

        self.client = boto3.client("s3")

    def _key(self, relpath: str) -> str:
        relpath = safe_relpath(relpath)
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def uri(self, relpath: str) -> str:
        return f"s3://{self.bucket}/{self._key(relpath)}"

    @contextmanager
    def writer(self, relpath: str) -> Iterator[IO[str]]:
        with tempfile.SpooledTemporaryFile(max_size=self.SPOOL_BYTES, mode="w+b") as spool:
            text = io.TextIOWrapper(spool, encoding="utf-8", write_through=True)
            yield text
            text.flush()
            text.detach()  # hand the bytes back without letting the wrapper close the spool
            self._upload(spool, relpath)

    def _upload(self, spool: IO[bytes], relpath: str) -> None:
        """One upload (a multipart upload is complete or absent: never half an object), tried
        again while the endpoint is unreachable or failing, for up to the outage budget."""
        from shared.outages import OutageBudgetExceeded, retry_while

        def attempt() -> None:
            spool.seek(0)
            self.client.upload_fileobj(spool, self.bucket, self._key(relpath))

        try:
            retry_while(attempt, transient_s3_error, f"uploading {self.uri(relpath)}")
        except OutageBudgetExceeded as exc:
            raise StoreError(f"cannot write {self.uri(relpath)}: {exc.cause}") from exc
        except Exception as exc:  # botocore raises many unrelated types
            raise StoreError(f"cannot write {self.uri(relpath)}: {exc}") from exc

    def open(self, relpath: str) -> IO[bytes]:
        """A buffered reader over the object, streamed (not loaded whole)."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(relpath))["Body"]
        except Exception as exc:
            raise StoreError(f"cannot read {self.uri(relpath)}: {exc}") from exc
        return io.BufferedReader(_RawStream(body), 1024 * 1024)

    def read_range(self, relpath: str, start: int, size: int) -> bytes | None:
        """Bytes [start, start + size) of an object (fewer at its end): one ranged GET. None when
        the object does not exist."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(relpath),
                                          Range=f"bytes={start}-{start + size - 1}")["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        except Exception as exc:
            raise StoreError(f"cannot read {self.uri(relpath)}: {exc}") from exc

    def size(self, relpath: str) -> int | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(relpath))["ContentLength"]
        except Exception as exc:
            if _status_of(exc) == 404:
                return None
            raise StoreError(f"cannot read {self.uri(relpath)}: {exc}") from exc

    def delete(self, relpath: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(relpath))
        except Exception as exc:
            raise StoreError(f"cannot delete {self.uri(relpath)}: {exc}") from exc

    def any_under(self, prefix: str) -> bool:
        try:
            found = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(prefix) + "/", MaxKeys=1)
        except Exception as exc:
            raise StoreError(f"cannot list {self.uri(prefix)}: {exc}") from exc
        return bool(found.get("KeyCount"))

    def read_bytes(self, relpath: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(relpath))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        except Exception as exc:
            raise StoreError(f"cannot read {self.uri(relpath)}: {exc}") from exc

    def write_bytes(self, relpath: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(relpath), Body=data)
        except Exception as exc:
            raise StoreError(f"cannot write {self.uri(relpath)}: {exc}") from exc

    def list(self, prefix: str = "") -> Iterator[str]:
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                yield item["Key"][strip:]


def _status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None) or {}
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def transient_s3_error(exc: BaseException) -> bool:
    """An S3 failure worth trying again: no connection, a timeout, a 5xx or throttling answer.
    A refusal (403, 404: no such bucket) is not."""
    from botocore.exceptions import ClientError

    cause = exc
    while cause is not None:
        if isinstance(cause, ClientError):
            status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            code = cause.response.get("Error", {}).get("Code", "")
            return status >= 500 or status == 429 or code in ("SlowDown", "RequestTimeout", "Throttling")
        cause = cause.__cause__ or cause.__context__
    # Connection refused or reset, timeouts, upload failures without an S3 answer.
    return True


class _RawStream(io.RawIOBase):
    """A streaming response body as a raw stream, so it can be buffered and read by lines."""

    def __init__(self, body) -> None:  # noqa: ANN001 - botocore's StreamingBody
        self.body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001
        data = self.body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.body.close()
        super().close()


_s3_stores: dict[str, S3Store] = {}


def store_for(location: str) -> LocalStore | S3Store:
    """The store at a location; S3 stores (and their boto3 clients) are made once per process."""
    if not location.startswith("s3://"):
        return LocalStore(location)
    store = _s3_stores.get(location)
    if store is None:
        store = _s3_stores[location] = S3Store(location)
    return store
