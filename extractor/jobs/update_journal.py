"""The record of an ``update-invoices`` job: ``<report>.journal.jsonl``, beside the report.

One fsynced JSON line per event, so that a killed run resumes without sending an applied
update again:

- ``sending``: the updates of a request, written before it goes out;
- ``answered``: each order's outcome once the service answered (or once the batch failed
  after its retries, or once a check found the update already applied).

An order whose last event is an ``updated`` or ``refused`` outcome with the values asked for
is settled: never sent again. One sent and not answered (the run died in between), or whose
batch failed or went unanswered, may have been applied: ``apply_updates`` first reads its
current values back (GetInvoices) and sends it again only when they differ. The journal
stays after the job (the record of what was changed): the same command again sends only
what is not settled. Lines of the ``<report>.partial.jsonl`` of earlier versions (each an
outcome) are read as answers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from extractor import redact
from extractor.checkpoints import checkpoint
from extractor.errors import CorruptJournal, OutputError
from extractor.records.update_files import Update

Outcome = dict[str, Any]  # an update with its status and error
#: Outcomes that end an order's part of the job: the service applied it, or refused it.
SETTLED: Final = frozenset({"updated", "refused"})


def values(update: Mapping[str, Any]) -> tuple[Any, Any]:
    """What an update sets (an outcome carries the same fields)."""
    return update.get("InvoiceTitle"), update.get("ReferenceNumber")


@dataclass
class Resume:
    """An input's updates against the journal."""

    settled: dict[int, Outcome] = field(default_factory=dict)  # answered: not sent again
    unsure: list[Update] = field(default_factory=list)  # sent, maybe applied: check first
    to_send: list[Update] = field(default_factory=list)  # never sent with these values


class UpdateJournal:
    """Append-only, fsynced after every event; replayed when opened."""

    def __init__(self, report: Path) -> None:
        self.path = report.with_name(f"{report.name}.journal.jsonl")
        legacy = report.with_name(f"{report.name}.partial.jsonl")
        if legacy.is_file() and not self.path.exists():
            legacy.rename(self.path)
        self.last: dict[int, tuple[str, Mapping[str, Any]]] = {}  # each order's last event
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._replay()
            self._file = self.path.open("ab")
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def resume(self, updates: Sequence[Update]) -> Resume:
        """Which of ``updates`` the journal settled, which were sent and may be applied,
        and which are still to send."""
        found = Resume()
        for update in updates:
            kind, recorded = self.last.get(update["OrderId"], ("", {}))
            if not kind or values(recorded) != values(update):
                found.to_send.append(update)
            elif kind == "answered" and recorded["status"] in SETTLED:
                found.settled[update["OrderId"]] = dict(recorded)
            else:
                found.unsure.append(update)
        return found

    def sending(self, updates: Sequence[Update]) -> None:
        self._append({"event": "sending", "updates": list(updates)})

    def answered(self, outcomes: Sequence[Outcome]) -> None:
        self._append({"event": "answered", "outcomes": list(outcomes)})

    def close(self) -> None:
        self._file.close()

    def _append(self, event: dict[str, Any]) -> None:
        try:
            self._file.write(redact.mask_bytes(orjson.dumps(event)) + b"\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._take(event)
        checkpoint(f"updates:{event['event']}")

    def _take(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event", "answered")  # earlier versions: a line is an outcome
        for record in event.get("updates" if kind == "sending" else "outcomes", [event]):
            self.last[record["OrderId"]] = (kind, record)

    def _replay(self) -> None:
        """Take every complete line; a last line the crash cut short is dropped."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        for number, line in enumerate(complete.splitlines(), 1):
            self._take(_checked(self.path, number, line))
        if len(complete) < len(data):
            with self.path.open("r+b") as torn:
                torn.truncate(len(complete))


def _checked(path: Path, number: int, line: bytes) -> dict[str, Any]:
    """The event of one line, or CorruptJournal naming it."""
    try:
        event = orjson.loads(line)
        sending = event.get("event") == "sending"
        records = event["updates"] if sending else event.get("outcomes", [event])
        if all(_record(record, sending) for record in records):
            checked: dict[str, Any] = event
            return checked
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        pass
    raise CorruptJournal(
        f"{path}, line {number}, is damaged; nothing was sent. Move it away to send every "
        "update again (those it records as applied would then be applied twice)"
    )


def _record(record: Mapping[str, Any], sending: bool) -> bool:
    return type(record["OrderId"]) is int and (sending or isinstance(record["status"], str))
