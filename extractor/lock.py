"""One writer per output: an exclusive lock, taken before any request, held for the run's life.

The lock is an OS file lock (``flock``) on ``<work dir>/_extractor.lock``, so the OS releases
it when the process dies, however it dies; a stale file is never a stale lock. The file holds
who has it (host, pid, start time, command), so a refused run can name the holder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import socket
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import orjson

from extractor.errors import OutputError, OutputLocked

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
                "time: wait for it to end, or choose another --out"
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
