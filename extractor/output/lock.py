"""One writer per output: an exclusive lock, taken before any request, held for the run's life.

The lock is an OS file lock (``flock``) on ``<work dir>/_extractor.lock``, so the OS releases
it when the process dies, however it dies; a stale file is never a stale lock. The file holds
who has it (host, pid, start time, command), so a refused run can name the holder.

An object-store target is written from any machine, so it is also locked where it lives: the
object ``<target>/_extractor.lock``, created only if absent (a conditional write, S3's
``If-None-Match: *``) and holding its holder, removed when the run ends. A run killed outright
leaves it behind: a stale lock, which a later run names, with the command that breaks it
(delete the object, once sure its holder is gone).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import orjson

from extractor.errors import OutputError, OutputLocked
from extractor.output.targets import Target

LOCK_FILE: Final = "_extractor.lock"


class OutputLock:
    """Held while a run writes one output; :meth:`release` (or the process's end) frees it."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path, self._descriptor = path, descriptor

    @classmethod
    def take(cls, folder: Path, command: str) -> OutputLock:
        """The lock of ``folder``, or OutputLocked naming the run that holds it."""
        path = folder / LOCK_FILE
        try:
            folder.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot create the lock {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(descriptor)
            os.close(descriptor)
            raise OutputLocked(
                f"{folder} is in use by {describe(holder)}; one run writes an output at a "
                "time: wait for it to end, or choose another {out}"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, orjson.dumps(holder_of_this_process(command)))
        return cls(path, descriptor)

    def release(self) -> None:
        if self._descriptor < 0:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._descriptor, 0)  # the file stays: removing it would race a taker
        os.close(self._descriptor)
        self._descriptor = -1

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def current_holder(folder: Path) -> dict[str, Any] | None:
    """Who holds the lock of ``folder`` now (None: nobody; ``{}``: a holder that did not say
    who it is), found by trying the lock without taking it for long."""
    path = folder / LOCK_FILE
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(descriptor) or {}
    finally:
        os.close(descriptor)  # closing also frees the shared lock if it was taken
    return None


def holder_of_this_process(command: str) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": command or " ".join(sys.argv[1:2]),
    }


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another run (it did not say which)"
    return (
        f"'extractor {holder.get('command', '?')}' (pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, since {holder.get('started', '?')})"
    )


def _holder(descriptor: int) -> dict[str, Any] | None:
    try:
        text = os.pread(descriptor, 4096, 0)
        value = orjson.loads(text)
    except (OSError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


class ObjectLock:
    """The lock object of an ``s3://`` target (see the module's docstring)."""

    def __init__(self, target: Target, client: Any) -> None:
        self.target, self._client = target, client
        self.key = target.key(LOCK_FILE).split("/", 1)[1]

    @classmethod
    def take(cls, target: Target, command: str) -> ObjectLock:
        import boto3  # only object-store targets need it
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.client(
            "s3",
            endpoint_url=target.endpoint_url,
            region_name=target.storage_options()["AWS_REGION"],
        )
        lock = cls(target, client)
        body = orjson.dumps(holder_of_this_process(command))
        try:
            client.put_object(Bucket=target.bucket, Key=lock.key, Body=body, IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412"):
                raise OutputError(f"cannot create the lock {lock.uri}: {exc}") from None
            raise OutputLocked(
                f"{target.uri} is in use by {describe(lock.holder())}; one run writes an "
                f"output at a time: wait for it to end, or, if that run is gone (killed), "
                f"break its lock with: aws s3 rm {lock.uri}"
            ) from None
        except BotoCoreError as exc:
            raise OutputError(f"cannot create the lock {lock.uri}: {exc}") from None
        return lock

    @property
    def uri(self) -> str:
        return f"s3://{self.target.bucket}/{self.key}"

    def holder(self) -> dict[str, Any] | None:
        try:
            text = self._client.get_object(Bucket=self.target.bucket, Key=self.key)["Body"]
            value = orjson.loads(text.read())
        except Exception:  # gone meanwhile, or unreadable: the message says so
            return None
        return value if isinstance(value, dict) else None

    def release(self) -> None:
        with contextlib.suppress(Exception):  # a lock left behind is named by the next run
            self._client.delete_object(Bucket=self.target.bucket, Key=self.key)

    def __enter__(self) -> ObjectLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def target_lock(target: Target, work_dir: Path | None, command: str) -> Iterator[None]:
    """One writer for ``target``: its local work directory's lock, and for an object store
    the lock object beside the data too."""
    with OutputLock.take(target.work_dir(work_dir), command):
        if target.local is not None:
            yield
            return
        with ObjectLock.take(target, command):
            yield
