"""The run journal: what a run planned and what it has durably done, so a crash loses nothing.

``OUT/_journal/<run_id>.jsonl`` holds one orjson line per event, each flushed and fsynced
before the run goes on. The engine's own events (:mod:`extractor.engine.state` replays them):

- ``start``: the run id and the job's fingerprint (what decides which records it fetches);
- ``plan``: what the job will fetch, as the job writes it (an invoices run: the OrderIds
  GetOrderSyncList returned, ``since``, ``again``, ``gone``; a ledger run: its windows),
  saved once, with ``as_of``, the service's time just before the listing (what a sync's
  watermark advances to) and, for a run that fetches again what a partial one could not,
  ``retry_of``;
- ``staged``: a unit (a batch of ids, a window) whose staged files are all renamed into
  place, by ``key``, with its counts and whatever else its job needs (ids, missing ids,
  the window);
- ``failed``: a unit that failed alone after its retries, by ``key``, with the error
  (written by 0.1.0 without a key: its fields are the key);
- ``lost``: staged units found missing or short on disk before publishing, fetched again;
- ``published``: the dataset files are in place.

Any other event is the job's own note, replayed in order for the job to read (an invoices
run's ``gone``: ids it missed that the full listing before publishing no longer holds).

A run that did not finish leaves its journal there; running the same command again (or with
``--resume``) replays it and fetches only what is not yet staged or failed. A finished run's
journal moves to ``OUT/_runs/``, beside its summary.
"""

from __future__ import annotations

import contextlib
import os
from array import array
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Final

import orjson

from extractor import redact
from extractor.checkpoints import checkpoint
from extractor.engine.state import RunState, replay
from extractor.errors import OutputError, UsageError

JOURNAL_DIR: Final = "_journal"
RUNS_DIR: Final = "_runs"


class Journal:
    """Append-only, fsynced after every event."""

    def __init__(self, path: Path, state: RunState) -> None:
        self.path, self.state = path, state
        try:
            self._file = path.open("ab")
        except OSError as exc:
            raise OutputError(f"cannot write the journal {path}: {exc.strerror or exc}") from None

    @classmethod
    def open(cls, out: Path, run_id: str, fingerprint: dict[str, Any]) -> Journal:
        """Resume the unfinished run in ``out`` when there is one for the same job, else start."""
        found = unfinished(out)
        if found is not None:
            _cut_torn_tail(found)  # or the next line would be glued to it
            state = replay(found)
            if state.fingerprint != fingerprint:
                raise UsageError(
                    f"{{out}} {out} holds the unfinished run {state.run_id} of a different job "
                    f"({describe(state.fingerprint)}); run that command again to finish it, "
                    "or choose another directory"
                )
            journal = cls(found, state)
        else:
            folder = out / JOURNAL_DIR
            _mkdir(folder)
            journal = cls(folder / f"{run_id}.jsonl", RunState(run_id, fingerprint))
        journal.append({"event": "start", "run_id": journal.state.run_id, "job": fingerprint})
        return journal

    def append(self, event: dict[str, Any]) -> None:
        try:
            _write_event(self._file, event)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise OutputError(
                f"cannot write the journal {self.path}: {exc.strerror or exc}"
            ) from None
        self.state.apply(event)
        checkpoint(f"journal:{event['event']}")

    def finish(self) -> Path:
        """Close the journal and move it beside the run's summary."""
        self._file.close()
        target = self.path.parent.parent / RUNS_DIR / f"{self.state.run_id}.journal.jsonl"
        _mkdir(target.parent)
        self.path.rename(target)
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()
        return target

    def close(self) -> None:
        """Closed; removed when it holds nothing but this run's first start (the run stopped
        before its plan, at Login say), so there is nothing to resume."""
        self._file.close()
        state = self.state
        if state.starts == 1 and state.plan is None:
            self.path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()


def _write_event(sink: IO[bytes], event: Mapping[str, Any]) -> None:
    """One line of orjson; arrays of ids (a plan of millions) streamed in slices, so that
    neither a list of them nor the whole line is held at once."""
    arrays = {name: value for name, value in event.items() if isinstance(value, array)}
    small = {name: value for name, value in event.items() if name not in arrays}
    line = redact.mask_bytes(orjson.dumps(small))
    if not arrays:
        sink.write(line + b"\n")
        return
    sink.write(line[:-1])
    for name, values in arrays.items():
        sink.write(b',"%s":[' % name.encode())
        for at in range(0, len(values), _SLICE):
            comma = b"," if at else b""
            sink.write(comma + b",".join(b"%d" % i for i in values[at : at + _SLICE]))
        sink.write(b"]")
    sink.write(b"}\n")


_SLICE: Final = 50_000


def unfinished(out: Path) -> Path | None:
    """The journal of the run that did not finish in ``out``, if any."""
    folder = out / JOURNAL_DIR
    journals = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    return journals[-1] if journals else None


def describe(fingerprint: Mapping[str, Any]) -> str:
    return ", ".join(f"{name} {value}" for name, value in fingerprint.items() if value) or "all"


def _cut_torn_tail(path: Path, step: int = 1024 * 1024) -> None:
    """Drop a last line the crash left without its newline, so appends start on a line."""
    try:
        with path.open("r+b") as journal:
            size = at = journal.seek(0, os.SEEK_END)
            keep = 0
            while at > 0:
                start = max(at - step, 0)
                journal.seek(start)
                newline = journal.read(at - start).rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                at = start
            if keep < size:
                journal.truncate(keep)
                os.fsync(journal.fileno())
    except OSError as exc:
        raise OutputError(f"cannot repair the journal {path}: {exc.strerror or exc}") from None


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {folder}: {exc.strerror or exc}") from None
