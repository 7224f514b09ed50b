"""The run journal: what a run planned and what it has durably done, so a crash loses nothing.

``OUT/_journal/<run_id>.jsonl`` holds one orjson line per event, each flushed and fsynced
before the run goes on:

- ``start``: the run id and the job's fingerprint (what decides which records it fetches);
- ``plan``: the OrderIds GetOrderSyncList returned (or a ledger run's windows), saved once,
  with ``as_of``, the time just before the listing (what a sync's watermark advances to);
- ``staged``: a batch whose staged files are all renamed into place, with its ids and counts;
- ``failed``: ids that failed alone after their retries, with the error;
- ``lost``: staged batches found missing or short on disk before publishing, fetched again;
- ``published``: the dataset files are in place.

A run that did not finish leaves its journal there; running the same command again (or with
``--resume``) replays it and fetches only what is not yet staged or failed. A finished run's
journal moves to ``OUT/_runs/``, beside its summary.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import orjson

from extractor import redact
from extractor.checkpoints import checkpoint
from extractor.errors import CorruptJournal, OutputError, UsageError
from extractor.ids import Ids, ids_of, without
from extractor.output.staging import RunInfo, TableWriter

JOURNAL_DIR: Final = "_journal"
RUNS_DIR: Final = "_runs"


@dataclass
class RunState:
    """A journal replayed: the plan, and what is done."""

    run_id: str
    fingerprint: dict[str, Any]
    plan: Ids | None = None
    windows: list[list[Any]] | None = None  # a ledger run's plan: [start, end, system type]
    batches: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # staged events by key
    failures: list[dict[str, Any]] = field(default_factory=list)
    published: bool = False
    starts: int = 0
    as_of: str | None = None  # when the run began listing what to fetch (ISO, UTC)
    retry_of: str | None = None  # the finished run whose unfetched ids this one fetches again

    def run_info(self) -> RunInfo:
        """The run id, and the time the run began listing (the start of a run that had no
        plan event before this version)."""
        as_of = dt.datetime.fromisoformat(self.as_of) if self.as_of else dt.datetime.now(dt.UTC)
        return RunInfo(self.run_id, as_of)

    @property
    def staged(self) -> dict[str, Ids]:
        """Each staged batch's ids, by key."""
        return {key: batch["ids"] for key, batch in self.batches.items()}

    @property
    def counts(self) -> dict[str, int]:
        """Records of each kind, summed over the staged batches."""
        counts: dict[str, int] = {}
        for batch in self.batches.values():
            for name, value in batch["counts"].items():
                counts[name] = counts.get(name, 0) + value
        return counts

    @property
    def missing(self) -> Ids:
        """Ids a staged batch asked for and the service did not return."""
        missing = ids_of(())
        for batch in self.batches.values():
            missing.extend(batch["missing"])
        return missing

    @property
    def done_windows(self) -> list[list[Any]]:
        """A ledger run's windows that are staged or failed."""
        return [
            event["window"]
            for event in (*self.batches.values(), *self.failures)
            if "window" in event
        ]

    @property
    def failed_ids(self) -> set[int]:
        return {order_id for failure in self.failures for order_id in failure.get("ids", ())}

    def remaining(self) -> Ids:
        """Planned ids neither staged nor failed, in plan order."""
        done = ids_of(self.failed_ids)
        for batch in self.batches.values():
            done.extend(batch["ids"])
        return without(self.plan or ids_of(()), done)

    def apply(self, event: Mapping[str, Any]) -> None:
        """Take one event; taking the same event twice changes nothing."""
        kind = event["event"]
        if kind == "start":
            self.starts += 1
        elif kind == "plan":
            if self.plan is None and self.windows is None:  # saved once: a repeat is ignored
                ids = event.get("ids", ())
                self.plan = ids if isinstance(ids, array) else ids_of(ids)
                self.windows = event.get("windows")
                self.as_of = event.get("as_of")
                self.retry_of = event.get("retry_of")
        elif kind == "staged":
            self._stage(event)
        elif kind == "failed":
            failure = {name: event[name] for name in ("ids", "window", "error") if name in event}
            if failure not in self.failures:
                self.failures.append(failure)
        elif kind == "lost":  # staged files found missing or short: fetched again
            for key in event["keys"]:
                self.batches.pop(key, None)
        elif kind == "published":
            self.published = True

    def _stage(self, event: Mapping[str, Any]) -> None:
        # a batch is staged once under its key (a repeated line changes nothing)
        if event["key"] not in self.batches:
            compact = {"ids": ids_of(event["ids"]), "missing": ids_of(event["missing"])}
            self.batches[event["key"]] = {**event, **compact}


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
        if state.starts == 1 and state.plan is None and state.windows is None:
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


def replay(path: Path) -> RunState:
    """The state a journal describes; a last line cut short by a crash is ignored, any other
    damage is refused (CorruptJournal naming the file and line)."""
    state: RunState | None = None
    for number, event in _events(path):
        if state is None:
            if event["event"] != "start":
                raise _corrupt(path, number, "it does not begin with the run's start")
            state = RunState(event["run_id"], event["job"])
        state.apply(event)
    if state is None:
        raise UsageError(f"{path} is an empty journal; delete it to start afresh")
    return state


def finished_runs(out: Path) -> Iterator[dict[str, Any]]:
    """The summaries of the finished runs in ``out``, in the order they finished (two runs
    can begin in the same second, so their ids alone do not tell)."""
    folder = out / RUNS_DIR
    found = []
    for path in folder.glob("*.json") if folder.is_dir() else ():
        with contextlib.suppress(OSError, orjson.JSONDecodeError):
            summary = orjson.loads(path.read_bytes())
            found.append((str(summary.get("finished_at", "")), path.stat().st_mtime_ns, summary))
    found.sort(key=lambda entry: entry[:2])
    yield from (summary for *_, summary in found)


def finished_job(
    out: Path, fingerprint: Mapping[str, Any], tables: Sequence[str]
) -> dict[str, Any] | None:
    """The summary of a finished run of this very job in ``out``; UsageError when ``out``
    holds data of another job in one of ``tables`` (and no unfinished run to resume)."""
    if unfinished(out) is not None:
        return None
    summaries: list[dict[str, Any]] = list(finished_runs(out))
    matching = [summary for summary in summaries if summary.get("job") == fingerprint]
    if matching:
        return matching[-1]  # the latest
    for table in tables:
        if any((out / table).rglob("*.parquet")):
            raise UsageError(
                f"{{out}} {out} already holds a dataset of another job ({table}/); "
                "choose a new directory"
            )
    return None


@dataclass(frozen=True)
class Carried:
    """What a finished partial run could not fetch, for the next run to fetch again."""

    run_id: str
    ids: list[int]  # failed alone, or not returned by the service
    windows: list[list[Any]]  # a ledger run's failed days
    as_of: str | None  # when that run began listing (a retry covers no later changes)


def carried_over(out: Path, summary: Mapping[str, Any] | None) -> Carried | None:
    """The ids and windows the finished run of ``summary`` left unfetched (its journal,
    kept beside the summary, says which); None when it left nothing."""
    if summary is None or summary.get("status") == "complete":
        return None
    path = out / RUNS_DIR / f"{summary['run_id']}.journal.jsonl"
    if not path.is_file():
        return None
    state = replay(path)
    ids = sorted(state.failed_ids | set(state.missing))
    windows = [failure["window"] for failure in state.failures if "window" in failure]
    if not ids and not windows:
        return None
    return Carried(state.run_id, ids, windows, state.as_of)


def latest_run(out: Path) -> dict[str, Any] | None:
    """The summary of the last run that finished in ``out``, whatever its job."""
    runs = list(finished_runs(out))
    latest: dict[str, Any] | None = runs[-1] if runs else None
    return latest


def describe(fingerprint: Mapping[str, Any]) -> str:
    return ", ".join(f"{name} {value}" for name, value in fingerprint.items() if value) or "all"


#: Each event's fields and their types: a line of another shape is damage, not an event.
_SHAPES: Final[dict[str, dict[str, type | tuple[type, ...]]]] = {
    "start": {"run_id": str, "job": dict},
    "plan": {},
    "staged": {"key": str, "ids": list, "counts": dict, "missing": list},
    "failed": {"error": str},
    "lost": {"keys": list},
    "published": {},
}
_OPTIONAL: Final[dict[str, type | tuple[type, ...]]] = {
    "ids": list,
    "windows": list,
    "window": list,
    "as_of": str,
}


def _events(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each complete line's event, checked; bytes after the last newline are a line the run
    was writing when it was killed, and are ignored."""
    try:
        with path.open("rb") as lines:
            for number, line in enumerate(lines, 1):
                if not line.endswith(b"\n"):
                    return
                yield number, _checked(path, number, line)
    except OSError as exc:
        raise OutputError(f"cannot read the journal {path}: {exc.strerror or exc}") from None


def _checked(path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise _corrupt(path, number, "not a JSON event") from None
    shape = _SHAPES.get(str(event.get("event"))) if isinstance(event, dict) else None
    if shape is None or not isinstance(event, dict):
        raise _corrupt(path, number, "not an event this version knows")
    for name, kind in (shape | {k: v for k, v in _OPTIONAL.items() if k in event}).items():
        if not isinstance(event.get(name), kind):
            raise _corrupt(path, number, f"its {name!r} is missing or of the wrong type")
    numbers = [*event.get("counts", {}).values(), *event.get("ids", ()), *event.get("missing", ())]
    if not all(type(value) is int for value in numbers):
        raise _corrupt(path, number, "its counts or ids are not whole numbers")
    checked: dict[str, Any] = event
    return checked


def _corrupt(path: Path, number: int, why: str) -> CorruptJournal:
    return CorruptJournal(
        f"{path}, line {number}, is damaged ({why}); nothing was changed. Move the journal "
        "away to start the run afresh (what it staged is fetched again)"
    )


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


def lost_batches(state: RunState, writers: Sequence[TableWriter]) -> list[str]:
    """The journal's staged batches whose files are missing or short on disk."""
    lost: set[str] = set()
    for writer in writers:
        on_disk = writer.staged_rows()
        for key, batch in state.batches.items():
            if on_disk.get(key, 0) != batch["counts"].get(writer.counted_as, 0):
                lost.add(key)
    return sorted(lost)


def forget_lost(journal: Journal, writers: Sequence[TableWriter]) -> list[str]:
    """Journal the staged batches found missing or short, so they are fetched again, and
    remove what is left of their files; their keys."""
    lost = lost_batches(journal.state, writers)
    if lost:
        journal.append({"event": "lost", "keys": lost})
        for writer in writers:
            writer.discard(set(lost))
    return lost
