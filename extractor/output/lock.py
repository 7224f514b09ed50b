"""One writer per output: exclusive locks, taken before any request, held for the run's life.

A local lock is an OS file lock (``flock``) on ``<folder>/_extractor.lock``, so the OS releases
it when the process dies, however it dies; a stale file is never a stale lock. The file holds
who has it (host, pid, start time, command), so a refused run can name the holder.

A run locks its work directory (its journal and staging) and the target itself, wherever the
work directory is (:func:`target_lock`): a local ``OUT`` by its own lock file, an ``s3://``
target by a lock object under a lease (:mod:`extractor.output.lease`). Local files are locked
in the order of their paths, before the object, so two runs never each hold what the other
needs.
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

from extractor.clock import SYSTEM, Clock
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
        "started": dt.datetime.now(dt.UTC).isoformat(sep=" ", timespec="seconds"),
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


@contextlib.contextmanager
def target_lock(
    target: Target, work_dir: Path | None, command: str, *, clock: Clock = SYSTEM
) -> Iterator[None]:
    """One writer for ``target`` whatever the work directory: the work directory's lock, the
    target's own (a local directory's lock file, unless it is the work directory; an s3://
    target's lock object), in a fixed order."""
    with contextlib.ExitStack() as held:
        for folder in _folders(target, work_dir):
            held.enter_context(OutputLock.take(folder, command))
        if target.local is None:
            from extractor.output.lease import CURRENT, ObjectLock

            lease = held.enter_context(ObjectLock.take(target, command, clock=clock))
            held.callback(CURRENT.reset, CURRENT.set(lease))
        yield


def _folders(target: Target, work_dir: Path | None) -> list[Path]:
    """The local folders to lock for ``target``, once each, in the order of their paths."""
    folders = [target.work_dir(work_dir), *([target.local] if target.local is not None else [])]
    unique = {folder.resolve(): folder for folder in reversed(folders)}
    return [unique[path] for path in sorted(unique)]


def target_holder(target: Target) -> dict[str, Any] | None:
    """Who holds ``target``'s own lock (None: nobody); for s3://, with ``lease`` saying until
    when, or since when it ended."""
    if target.local is not None:
        return current_holder(target.local)
    from extractor.output.lockobject import lease_state, read_lock

    found = read_lock(target)
    if found is None:
        return None
    return found.holder | {"lease": lease_state(found.holder).removeprefix("; ")}
