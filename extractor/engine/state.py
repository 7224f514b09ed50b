"""A run's journal replayed: what the run planned and what it has durably done.

:func:`replay` reads ``OUT/_journal/<run_id>.jsonl`` (see :mod:`extractor.engine.journal`) into
a :class:`RunState`; a last line cut short by a crash is ignored, any other damage refused.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from extractor.errors import CorruptJournal, OutputError, UsageError
from extractor.ids import ids_of
from extractor.output.runinfo import RunInfo


@dataclass
class RunState:
    """A journal replayed: the plan as its job journaled it, and what is done. The engine
    reads nothing of a plan but its ``as_of`` and ``retry_of``; each job reads its own."""

    run_id: str
    fingerprint: dict[str, Any]
    plan: dict[str, Any] | None = None  # the plan event, saved once (lists of ids compact)
    staged: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # staged events by key
    failed: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # failed events by key
    notes: list[Mapping[str, Any]] = field(default_factory=list)  # a job's own events
    published: Mapping[str, Any] | None = None  # the published event: what was written
    starts: int = 0

    @property
    def as_of(self) -> str | None:
        """When the run began listing what to fetch (ISO, UTC): what a watermark becomes."""
        return None if self.plan is None else self.plan.get("as_of")

    @property
    def retry_of(self) -> str | None:
        """The finished run whose unfetched units this one fetches again."""
        return None if self.plan is None else self.plan.get("retry_of")

    def run_info(self) -> RunInfo:
        """The run id, and the time the run began listing."""
        as_of = dt.datetime.fromisoformat(self.as_of) if self.as_of else dt.datetime.now(dt.UTC)
        return RunInfo(self.run_id, as_of)

    @property
    def counts(self) -> dict[str, int]:
        """Records of each kind, summed over the staged units."""
        counts: dict[str, int] = {}
        for event in self.staged.values():
            for name, value in event["counts"].items():
                counts[name] = counts.get(name, 0) + value
        return counts

    def notes_of(self, kind: str) -> list[Mapping[str, Any]]:
        """The job's own events of ``kind``, in the order journaled."""
        return [note for note in self.notes if note["event"] == kind]

    def apply(self, event: Mapping[str, Any]) -> None:
        """Take one event; taking the same event twice changes nothing."""
        kind = event["event"]
        if kind == "start":
            self.starts += 1
        elif kind == "plan":
            if self.plan is None:  # saved once: a repeat is ignored
                self.plan = _compact(event)
        elif kind == "staged":
            self.staged.setdefault(event["key"], _compact(event))
        elif kind == "failed":
            self.failed.setdefault(failed_key(event), _compact(event))
        elif kind == "lost":  # staged files found missing or short: fetched again
            for key in event["keys"]:
                self.staged.pop(key, None)
        elif kind == "published":
            self.published = event
        elif event not in self.notes:
            self.notes.append(_compact(event))


def failed_key(event: Mapping[str, Any]) -> str:
    """A failed unit's key (a journal written before failures carried one: its fields)."""
    key = event.get("key")
    if isinstance(key, str):
        return key
    return orjson.dumps({k: v for k, v in event.items() if k != "error"}, default=list).decode()


def _compact(event: Mapping[str, Any]) -> dict[str, Any]:
    """``event`` with its lists of whole numbers (ids: a plan may hold millions) as arrays."""
    return {
        name: ids_of(value) if isinstance(value, list) and _whole(value) else value
        for name, value in event.items()
    }


def _whole(values: list[Any]) -> bool:
    return bool(values) and all(type(value) is int for value in values)


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


#: The engine's events and the fields it reads, with their types: a line of another shape
#: is damage. Any other event is a job's own (a note), its fields the job's to read.
_SHAPES: Final[dict[str, dict[str, type | tuple[type, ...]]]] = {
    "start": {"run_id": str, "job": dict},
    "plan": {},
    "staged": {"key": str, "counts": dict},
    "failed": {"error": str},
    "lost": {"keys": list},
    "published": {},
}
_OPTIONAL: Final[dict[str, type | tuple[type, ...]]] = {
    "key": str,
    "as_of": str,
    "retry_of": str,
}
_KIND: Final = re.compile(r"[a-z][a-z_]*")


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
    kind = event.get("event") if isinstance(event, dict) else None
    if not isinstance(event, dict) or not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise _corrupt(path, number, "not an event")
    shape = _SHAPES.get(kind, {})
    for name, type_ in (shape | {k: v for k, v in _OPTIONAL.items() if k in event}).items():
        if not isinstance(event.get(name), type_):
            raise _corrupt(path, number, f"its {name!r} is missing or of the wrong type")
    numbers = [
        *event.get("counts", {}).values(),
        *(
            item
            for value in event.values()
            if isinstance(value, list) and _numeric(value)
            for item in value
        ),
    ]
    if not all(type(value) is int for value in numbers):
        raise _corrupt(path, number, "its counts or ids are not whole numbers")
    checked: dict[str, Any] = event
    return checked


def _numeric(values: list[Any]) -> bool:
    """A list that holds a number (ids, or damage): every value of it must be whole."""
    return any(isinstance(value, int | float) for value in values)


def _corrupt(path: Path, number: int, why: str) -> CorruptJournal:
    return CorruptJournal(
        f"{path}, line {number}, is damaged ({why}); nothing was changed. Move the journal "
        "away to start the run afresh (what it staged is fetched again)"
    )
