"""A run's journal replayed: what the run planned and what it has durably done.

:func:`replay` reads ``OUT/_journal/<run_id>.jsonl`` (see :mod:`extractor.engine.journal`) into
a :class:`RunState`; a last line cut short by a crash is ignored, any other damage refused.
"""

from __future__ import annotations

import datetime as dt
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from extractor.errors import CorruptJournal, OutputError, UsageError
from extractor.ids import Ids, among, ids_of, unique, without
from extractor.output.parquet import RunInfo


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
    #: The ChangedAfter of a listing that holds every planned id (None: the full listing),
    #: so that a later run can ask whether the ids this one could not fetch are still listed.
    since: str | None = None
    again: Ids = field(default_factory=lambda: ids_of(()))  # asked a second time: see missing
    gone: Ids = field(default_factory=lambda: ids_of(()))  # settled: the service no longer lists

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
        """Ids a staged batch asked for and the service did not return (gone ones too)."""
        missing = ids_of(())
        for batch in self.batches.values():
            missing.extend(batch["missing"])
        return missing

    @property
    def not_returned(self) -> Ids:
        """Missing for the first time, and still listed as far as the run knows: the next
        run lists them again and asks for those still listed once more."""
        return without(without(self.missing, self.again), self.gone)

    @property
    def missing_twice(self) -> Ids:
        """Listed, and still listed, but not returned by this run either: settled, reported
        once, not asked for again until the service lists them anew."""
        return without(among(self.missing, self.again), self.gone)

    @property
    def still_failed(self) -> set[int]:
        """Ids that failed alone and that the service still lists, as far as the run knows."""
        failed = self.failed_ids
        return set(without(ids_of(failed), self.gone)) if failed and self.gone else failed

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
                self.since = event.get("since")  # absent before: the full listing
                self.again = (  # or the planned ids not asked for again, when fewer
                    without(self.plan, ids_of(event["first"]))
                    if "first" in event
                    else ids_of(event.get("again", ()))
                )
                self.gone = ids_of(event.get("gone", ()))
        elif kind == "staged":
            self._stage(event)
        elif kind == "failed":
            failure = {name: event[name] for name in ("ids", "window", "error") if name in event}
            if failure not in self.failures:
                self.failures.append(failure)
        elif kind == "lost":  # staged files found missing or short: fetched again
            for key in event["keys"]:
                self.batches.pop(key, None)
        elif kind == "gone":  # not in the full listing made to reconcile: settled
            self.gone = unique(self.gone + ids_of(event["ids"]))
        elif kind == "published":
            self.published = True

    def _stage(self, event: Mapping[str, Any]) -> None:
        # a batch is staged once under its key (a repeated line changes nothing)
        if event["key"] not in self.batches:
            compact = {"ids": ids_of(event["ids"]), "missing": ids_of(event["missing"])}
            self.batches[event["key"]] = {**event, **compact}


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


#: Each event's fields and their types: a line of another shape is damage, not an event.
_SHAPES: Final[dict[str, dict[str, type | tuple[type, ...]]]] = {
    "start": {"run_id": str, "job": dict},
    "plan": {},
    "staged": {"key": str, "ids": list, "counts": dict, "missing": list},
    "failed": {"error": str},
    "lost": {"keys": list},
    "gone": {"ids": list},
    "published": {},
}
_OPTIONAL: Final[dict[str, type | tuple[type, ...]]] = {
    "ids": list,
    "windows": list,
    "window": list,
    "as_of": str,
    "since": (str, type(None)),
    "again": list,
    "first": list,
    "gone": list,
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
    lists = ("ids", "missing", "again", "first", "gone")
    numbers = [
        *event.get("counts", {}).values(),
        *(value for name in lists for value in event.get(name, ())),
    ]
    if not all(type(value) is int for value in numbers):
        raise _corrupt(path, number, "its counts or ids are not whole numbers")
    checked: dict[str, Any] = event
    return checked


def _corrupt(path: Path, number: int, why: str) -> CorruptJournal:
    return CorruptJournal(
        f"{path}, line {number}, is damaged ({why}); nothing was changed. Move the journal "
        "away to start the run afresh (what it staged is fetched again)"
    )
