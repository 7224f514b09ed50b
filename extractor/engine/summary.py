"""A run's summary, typed: :class:`RunSummary` (one run), :class:`SyncSummary` (a sync's runs);
JSON only at the edge (``OUT/_runs/<run_id>.json``, ``--json``, a fleet member's answer), and
one renderer for people, :func:`render`, for every command.

The JSON keys are the contract schedulers read: named after what the job counts
(``invoices``, ``ids_total``, ``invoices_per_second``; ``transactions``, ``days_total``;
``items``, ``lists_total``), with the job's own counts (``rows``, ``failed_ids``,
``failed_days``) beside the engine's.
"""

from __future__ import annotations

import contextlib
import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from extractor import redact
from extractor.clock import utc_text

#: What a resumed run's summary counts over this invocation only (the rest: the whole run).
THIS_INVOCATION: Final = (
    "requests", "retries", "relogins", "give_ups", "splits", "quarantines", "bytes_received",
    "fetch_seconds", "publish_seconds",
)  # fmt: skip
#: The reports a job may leave beside its summary, by key.
REPORTS: Final = ("failures_report", "not_returned_report")


#: What a split unit is called, by what the run counts its work in.
_SPLIT: Final = {"ids": "batches", "days": "windows"}


#: A run's record in ``_runs/`` says how it ended (``outcome``): a finished run's summary (a
#: summary written before 0.3 has no ``outcome``: finished too), or the record of a run that
#: stopped on an error (``failed``) or a signal (``interrupted``), with that ``error``.
FINISHED: Final = "finished"
FAILED: Final = "failed"
INTERRUPTED: Final = "interrupted"


class Status(enum.StrEnum):
    COMPLETE = "complete"
    PARTIAL = "partial"


@dataclass
class Resumed:
    """A run resumed: this invocation's number, and the records it fetched itself."""

    starts: int
    fetched_now: int


@dataclass
class RunSummary:
    """What one run did (see the module)."""

    run_id: str
    status: Status
    records: str  # what it fetched: ``invoices``, ``transactions``, ``items``
    units: str  # what it counted its work in: ``ids``, ``days``, ``lists``
    fetched: int  # records
    total: int  # units planned
    done: int  # units fetched or given up
    per_second: float  # records a second
    output: str
    format: str = "parquet"
    job: dict[str, Any] = field(default_factory=dict)  # the fingerprint
    retry_of: str | None = None  # the partial run whose leftovers it fetched again
    counts: dict[str, int] = field(default_factory=dict)  # the job's own
    failures: list[dict[str, Any]] = field(default_factory=list)
    reports: dict[str, str | None] = field(default_factory=dict)  # by :data:`REPORTS` key
    lists: dict[str, int] | None = None  # a list run's items per list
    table_requests: dict[str, int] | None = None  # a list run's requests per list
    bytes_received: int = 0
    requests: int = 0
    retries: int = 0
    relogins: int = 0
    give_ups: int = 0
    splits: int = 0
    quarantines: int = 0
    clock_skew_seconds: float | None = None
    files: int = 0
    written: dict[str, int] = field(default_factory=dict)
    fetch_seconds: float = 0.0
    publish_seconds: float = 0.0
    started_at: str = ""
    finished_at: str = ""
    seconds: float = 0.0
    mb_per_second: float = 0.0
    resumed: Resumed | None = None
    #: Provenance: where the records came from, whose they are, and what wrote them
    base_url: str = ""
    identity_id: str | None = None
    extractor_version: str = ""
    #: Read back: this invocation found the job finished by that run and did nothing
    already_finished: bool = False
    #: Where it is written (``<work>/_runs/<run_id>.json``), where known; not in the JSON
    summary_file: Path | None = field(default=None, compare=False)

    @property
    def complete(self) -> bool:
        return self.status is Status.COMPLETE

    def as_json(self) -> dict[str, Any]:
        """The summary as schedulers read it (``_runs/<run_id>.json``)."""
        data: dict[str, Any] = {
            "run_id": self.run_id, "units": self.units, "records": self.records,
            **{name: getattr(self, name) for name in _ENGINE},
            "failures": self.failures, "files": self.files, "written": self.written,
            "fetch_seconds": self.fetch_seconds, "publish_seconds": self.publish_seconds,
            "started_at": self.started_at, **self.counts,
            self.records: self.fetched, f"{self.units}_total": self.total,
            f"{self.units}_done": self.done, f"{self.records}_per_second": self.per_second,
            "status": str(self.status), "output": self.output, "format": self.format,
            "finished_at": self.finished_at, "seconds": self.seconds,
            "mb_per_second": self.mb_per_second, "job": self.job, "retry_of": self.retry_of,
            **self.reports, "base_url": self.base_url, "identity_id": self.identity_id,
            "extractor_version": self.extractor_version, "outcome": FINISHED,
        }  # fmt: skip
        if self.lists is not None:
            data["lists"] = self.lists
        if self.already_finished:  # this invocation's: never written into the file
            data["already_finished"] = True
        if self.table_requests is not None:
            data["requests_by_table"] = self.table_requests
        if self.resumed is not None:
            data["resumed"] = {
                "starts": self.resumed.starts,
                "this_invocation": [self.records, *THIS_INVOCATION, "seconds", "rates"],
                f"{self.records}_this_invocation": self.resumed.fetched_now,
            }
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSummary:
        """A summary read back from its file (a finished run's)."""
        records, units = data["records"], data["units"]
        named = {records, f"{units}_total", f"{units}_done", f"{records}_per_second"}
        known = _KNOWN | named
        resumed = data.get("resumed")
        return cls(
            run_id=data["run_id"], status=Status(data["status"]), records=records, units=units,
            fetched=data[records], total=data[f"{units}_total"], done=data[f"{units}_done"],
            per_second=data[f"{records}_per_second"], output=data["output"],
            format=data.get("format", "parquet"), job=data.get("job") or {},
            retry_of=data.get("retry_of"),
            counts={k: v for k, v in data.items() if k not in known and isinstance(v, int)},
            failures=data.get("failures", []),
            reports={key: data[key] for key in REPORTS if key in data},
            lists=data.get("lists"),
            table_requests=data.get("requests_by_table"),
            **{name: data[name] for name in _ENGINE + _TAIL if name in data},
            resumed=Resumed(resumed["starts"], resumed[f"{records}_this_invocation"])
            if resumed
            else None,
        )  # fmt: skip


#: The engine's counters, as the summary carries them.
_ENGINE: Final = (
    "bytes_received", "requests", "retries", "relogins", "give_ups", "splits", "quarantines",
    "clock_skew_seconds",
)  # fmt: skip
_TAIL: Final = (
    "files", "written", "fetch_seconds", "publish_seconds", "started_at", "finished_at",
    "seconds", "mb_per_second", "base_url", "identity_id", "extractor_version",
)  # fmt: skip
_KNOWN: Final = frozenset(
    {"run_id", "units", "records", "status", "output", "format", "job", "retry_of", "failures",
     "lists", "requests_by_table", "resumed", "already_finished", "outcome", *REPORTS,
     *_ENGINE, *_TAIL}
)  # fmt: skip


@dataclass
class SyncSummary:
    """What one sync did: each part's run (``invoices``, ``transactions``, ``lists``), and
    the watermarks the tables hold now."""

    run_id: str
    output: str
    parts: dict[str, RunSummary] = field(default_factory=dict)
    status: Status = Status.COMPLETE
    clock_skew_seconds: float | None = None
    stale_records: int = 0
    watermarks: dict[str, str | None] = field(default_factory=dict)
    format: str = "delta"
    #: Where its parts' runs are (``<work>/sync-<part>/``), where known; not in the JSON
    work: Path | None = field(default=None, compare=False)

    @property
    def complete(self) -> bool:
        return self.status is Status.COMPLETE

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "output": self.output, "format": self.format,
            **{name: part.as_json() for name, part in self.parts.items()},
            "clock_skew_seconds": self.clock_skew_seconds, "status": str(self.status),
            "stale_records": self.stale_records, "watermarks": self.watermarks,
            "outcome": FINISHED,
        }  # fmt: skip


def render(summary: RunSummary | SyncSummary) -> str:
    """What a run or a sync did, for people; the lines a job's counts do not apply to are
    left out."""
    if isinstance(summary, SyncSummary):
        return _render_sync(summary)
    s, counts = summary, summary.counts
    if s.already_finished:  # not the old run's figures again, as if it had just worked
        return (
            f"nothing to do: run {s.run_id} already finished this job ({s.status}, finished "
            f"{utc_text(s.finished_at) or 'at an unknown time'}); `extractor status "
            f"{s.output}` shows it"
        )
    records, units = s.records, s.units
    lines = [
        f"run {s.run_id}: {s.status}"
        + (f" (fetched again what run {s.retry_of} could not)" if s.retry_of else ""),
        f"  {records:<13} {s.fetched:,} (of {s.total:,} {units} "
        + ("listed)" if units == "ids" else "planned)"),
    ]
    if "rows" in counts:
        lines.append(f"  invoice rows  {counts['rows']:,}")
    if s.lists:
        lines += _list_lines(s)
    if s.resumed is not None:
        lines.append(
            f"  resumed       start {s.resumed.starts} of this run: the counts above are the "
            f"whole run's; requests, time and rates below this invocation's "
            f"({s.resumed.fetched_now:,} {records} fetched now)"
        )
    lines += [
        f"  received      {s.bytes_received / 1e6:,.1f} MB in {counting(s.requests, 'request')}",
        f"  time          {s.seconds:,.1f} s  ({s.per_second:,.0f} {records}/s, "
        f"{s.mb_per_second:.1f} MB/s)",
        f"  retries       {s.retries}   gave up {s.give_ups}   "
        f"split {_SPLIT.get(units, units)} {s.splits}   "
        f"re-logins {s.relogins}   quarantines {s.quarantines}",
    ]
    if "failed_ids" in counts:
        lines.append(
            f"  api errors    {counts['api_exceptions']}   missing ids {counts['missing_ids']}"
            f"   failed ids {counts['failed_ids']}"
        )
    if counts.get("gone_ids") or counts.get("missing_twice_ids"):
        lines.append(
            f"  settled       {counts['gone_ids']} no longer listed   "
            f"{counts['missing_twice_ids']} not returned twice (not asked for again)"
        )
    if "failed_days" in counts:
        lines.append(f"  failed days   {counts['failed_days']}")
    if s.lists is not None and s.failures:
        lines.append("  failed lists  " + ", ".join(str(f["list"]) for f in s.failures))
    lines.append(f"  written       {_written(s)} under {s.output}")
    if s.reports.get("failures_report"):
        lines.append(f"  failures      {s.reports['failures_report']}")
    if s.reports.get("not_returned_report"):
        lines.append(f"  not returned  {s.reports['not_returned_report']}")
    return "\n".join(lines)


def _render_sync(summary: SyncSummary) -> str:
    lines = [f"sync of {summary.output}: {summary.status}"]
    for name, part in summary.parts.items():
        written = dict(part.written)
        stale = written.pop("stale_records", 0)
        merged = ", ".join(f"{table} {count:,}" for table, count in written.items())
        if part.lists is not None:
            lines.append(
                f"  {name:<13} {len(part.lists)} tables ({part.requests:,} "
                f"{_plural(part.requests, 'request')}, {part.seconds:,.1f} s)"
            )
            lines += _list_lines(part)
            continue
        unit = "orders listed" if part.units == "ids" else "days of changes"
        kept_out = f"; {stale:,} older than stored, kept out" if stale else ""
        said = f"{part.total:,} {unit}; written: {merged or 'nothing'}{kept_out}"
        asked = f"{part.requests:,} {_plural(part.requests, 'request')}"
        lines.append(f"  {name:<13} {said} ({asked}, {part.seconds:,.1f} s)")
    lines.append(
        "  watermarks    "
        + ", ".join(f"{name} {value or 'none'}" for name, value in summary.watermarks.items())
    )
    return "\n".join(lines)


def _list_lines(summary: RunSummary) -> list[str]:
    """A list run's tables, one a line: its items, its requests, and (Delta) what it wrote."""
    requests = summary.table_requests or {}
    lines = []
    for name, items in (summary.lists or {}).items():
        asked = requests.get(name, 0)
        line = f"    {name:<18} {items:>9,} {_plural(items, 'item')}  {asked:>4,} " + _plural(
            asked, "request"
        )
        if summary.format == "delta" and name in summary.written:
            written = summary.written[name]
            line += f"   {'unchanged' if not written else f'{written:,} written'}"
        lines.append(line)
    return lines


@functools.cache
def version() -> str:
    """The installed extractor's version (what each summary says wrote its records)."""
    import importlib.metadata  # here: 10-20 ms of every command's start-up, ``--help`` too

    try:
        return importlib.metadata.version("extractor")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _plural(count: int, word: str) -> str:
    return word if count == 1 else f"{word}s"


def counting(count: int, word: str) -> str:
    """``1 window``, ``1,234 windows``: a count and its noun, in agreement."""
    return f"{count:,} {_plural(count, word)}"


def finished(summary: RunSummary) -> tuple[str, dict[str, Any]]:
    """The ``finished`` event of a run: its line, and the counts a scheduler reads."""
    data = summary.as_json()
    records, units = summary.records, summary.units
    counts = {
        key: data[key]
        for key in (
            "status", records, f"{units}_total", "rows", "requests", "retries", "give_ups",
            "failed_ids", "missing_ids", "missing_twice_ids", "gone_ids", "api_exceptions",
            "failed_days", "seconds",
        )
        if key in data
    }  # fmt: skip
    line = (
        f"run {summary.run_id} {summary.status}: {summary.fetched:,} {records} "
        f"in {summary.seconds:,.1f} s ({summary.requests:,} requests)"
    )
    return line, counts


def counted(summary: Mapping[str, Any]) -> tuple[str, str]:
    """What a summary read from its file fetched and counted its work in: ``(invoices,
    ids)``, ``(transactions, days)``, ``(items, lists)``."""
    return summary["records"], summary["units"]


def _written(summary: RunSummary) -> str:
    """``12 files``, or records per Delta table (``invoices 40, invoice_rows 155``)."""
    written = summary.written or {"files": summary.files}
    if summary.format == "delta":
        return "Delta: " + ", ".join(f"{name} {count:,}" for name, count in written.items())
    return f"{written.get('files', 0)} files"


#: The attribute of an error that carries the record of the run it stopped.
_RECORD: Final = "extractor_run_record"


def attach(error: BaseException, record: dict[str, Any]) -> None:
    """Hand ``record`` (the run's that ``error`` stopped) along with the error, to whoever
    shows it (``--json`` prints it as the last line)."""
    with contextlib.suppress(AttributeError, TypeError):  # an error that takes no attribute
        setattr(error, _RECORD, record)


def attached(error: BaseException) -> dict[str, Any] | None:
    """The record of the run ``error`` stopped, when it carries one."""
    record = getattr(error, _RECORD, None)
    return record if isinstance(record, dict) else None


def write_summary(document: Mapping[str, Any], out: Path) -> Path:
    """``document`` (a summary as JSON) as ``out/_runs/<run_id>.json``, whole or not at all."""
    folder = out / "_runs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{document['run_id']}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_bytes(redact.mask_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2)))
    temporary.rename(path)
    return path
