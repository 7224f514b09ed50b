"""The general ledger job: GetTransactions over date windows, run by the one runner.

The range is cut into windows (a month, week or day each) that meet without gaps or overlaps:
each window asks from its first day at ``T00:00:00`` to its last day at ``T23:59:59``, as the
service needs to include that day. A window that fails after its retries is split in halves
and fetched again, down to a day; a day that still fails is reported. Published as Parquet
under ``OUT/transactions/date_month=YYYY-MM/`` (or merged into the Delta table).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from extractor import arrow, redact, soap
from extractor.config import DEFAULT_SERVICE, RetryPolicy, ServiceConfig
from extractor.engine.destination import Destination
from extractor.engine.journal import Journal
from extractor.engine.state import RunState
from extractor.engine.stats import RunStats
from extractor.engine.summary import RunSummary, Status, counting
from extractor.engine.workers import Run
from extractor.errors import InvalidOption
from extractor.operations import TRANSACTIONS
from extractor.output.staging import TableWriter
from extractor.records.ledger import LedgerSink, month_of

#: The operation, as the engine knows it.
SPEC: Final = TRANSACTIONS
TABLE: Final = SPEC.table
WINDOW_SIZES: Final = ("month", "week", "day")
DATE_FIELDS: Final = {"entry": "EntryDate", "changed": "DateChangedUTC"}
#: Years of the ledger asked at once while looking for where it starts.
PROBE_YEARS: Final = 2


@dataclass(frozen=True)
class Window:
    """Whole days ``start`` to ``end`` (inclusive), of one SystemType or of all."""

    start: dt.date
    end: dt.date
    system_type: str | None = None

    @property
    def key(self) -> str:
        kind = f"-{self.system_type}" if self.system_type else ""
        return f"{self.start:%Y%m%d}-{self.end:%Y%m%d}{kind}"

    @property
    def size(self) -> int:
        """What it counts for in the progress line: its days."""
        return self.length

    def halves(self) -> tuple[Window, Window] | None:
        if self.start == self.end:
            return None
        middle = self.start + (self.end - self.start) // 2
        first = Window(self.start, middle, self.system_type)
        return first, Window(middle + dt.timedelta(days=1), self.end, self.system_type)

    @property
    def length(self) -> int:
        """Its number of days."""
        return (self.end - self.start).days + 1

    def days(self) -> Iterator[dt.date]:
        day = self.start
        while day <= self.end:
            yield day
            day += dt.timedelta(days=1)

    def as_json(self) -> list[Any]:
        return [self.start.isoformat(), self.end.isoformat(), self.system_type]

    @classmethod
    def from_json(cls, value: Sequence[Any]) -> Window:
        return cls(dt.date.fromisoformat(value[0]), dt.date.fromisoformat(value[1]), value[2])


def cut(start: dt.date, end: dt.date, size: str) -> list[Window]:
    """Windows from ``start`` to ``end`` (inclusive) that meet without gaps or overlaps."""
    windows, day = [], start
    while day <= end:
        if size == "month":
            following = (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        elif size == "week":  # ISO weeks: Monday to Sunday
            following = day + dt.timedelta(days=7 - day.weekday())
        else:
            following = day + dt.timedelta(days=1)
        last = min(following - dt.timedelta(days=1), end)
        windows.append(Window(day, last))
        day = last + dt.timedelta(days=1)
    return windows


@dataclass(frozen=True)
class TransactionJob:
    """Everything ``extractor transactions`` was asked to do."""

    destination: Destination
    date_from: dt.date
    date_to: dt.date
    service: ServiceConfig = DEFAULT_SERVICE
    date_field: str = "entry"
    window: str = "month"
    account_from: int | None = None
    account_to: int | None = None
    system_types: tuple[str, ...] = ()
    until_now: bool = False  # a sync's: ``date_to`` is today, and a resume keeps its plan
    sync: bool = False  # part of a sync: a finished run of the same plan is no reason to stop
    command: str = "transactions"
    tables: tuple[str, ...] = (TABLE,)

    @property
    def out(self) -> Path:
        """The run's folder: its journal, staging, reports (local Parquet: the table)."""
        return self.destination.work

    def fingerprint(self) -> dict[str, Any]:
        print_ = {
            "command": "transactions",
            "from": self.date_from.isoformat(),
            "to": "now" if self.until_now else self.date_to.isoformat(),
            "date_field": self.date_field,
            "accounts": [self.account_from, self.account_to],
            "system_types": list(self.system_types),
        }
        return print_

    def check(self) -> None:
        check(self)

    def retrying(self, previous: RunState) -> str:
        days = sum(Window.from_json(w).length for w in failed_windows(previous))
        return f"run {previous.run_id} could not fetch {days:,} days; fetching them again"

    def start(self, journal: Journal, stats: RunStats) -> LedgerWork:
        stats.units, stats.records = "days", TABLE
        stats.fetched = journal.state.counts.get(TABLE, 0)  # a resumed run's lines so far
        return LedgerWork(self, journal, stats)

    def plan(self, start: dt.date | None = None) -> list[Window]:
        """The windows from ``start`` (where the ledger starts; default ``date_from``)."""
        windows = cut(start or self.date_from, self.date_to, self.window)
        if not self.system_types:
            return windows
        return [Window(w.start, w.end, kind) for kind in self.system_types for w in windows]

    def params(self, window: Window) -> dict[str, Any]:
        """GetTransactions parameters: the window's days, to the last second of the last."""
        search: dict[str, Any] = {
            "DateSearchParameters": DATE_FIELDS[self.date_field],
            "DateStart": dt.datetime.combine(window.start, dt.time()),
            "DateEnd": dt.datetime.combine(window.end, dt.time(23, 59, 59)),
            "SystemType": window.system_type or soap.NIL,
            "HasInvoiceId": soap.NIL,
        }
        if self.account_from is not None:
            search["AccountNoStart"] = self.account_from
        if self.account_to is not None:
            search["AccountNoEnd"] = self.account_to
        return {"searchParams": search}


async def ledger_start(run: Run, job: TransactionJob) -> dt.date | None:
    """The first day of the month the ledger starts in (by the job's date field), at or after
    ``date_from``; None when it holds no line in the whole range.

    A ledger rarely starts on ``date_from`` (a first sync asks from 2000): walking every empty
    month to where it does start cost a first sync 154 of its 160 seconds. The range is asked
    :data:`PROBE_YEARS` at a time instead; the first answer holding lines says where the
    months start (that answer's lines are fetched again, month by month, with the rest).
    """
    day = job.date_from
    if (job.date_to - day).days < PROBE_YEARS * 366:
        return day  # a short range (a later sync's): its windows are few, ask them all
    column = "Date" if job.date_field == "entry" else "DateChanged"
    while day <= job.date_to:
        end = min(_years_after(day, PROBE_YEARS) - dt.timedelta(days=1), job.date_to)
        sink = await run.call(SPEC.operation, job.params(Window(day, end)), LedgerSink)
        table = sink.table
        if table is not None and table.num_rows:
            lowest = pc.min(table.column(column))
            first = arrow.moment(lowest) if pa.types.is_timestamp(lowest.type) else lowest.as_py()
            first_day = first.date() if isinstance(first, dt.datetime) else first
            return max(job.date_from, first_day.replace(day=1)) if first_day else day
        day = end + dt.timedelta(days=1)
    return None


def _years_after(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def check(job: TransactionJob) -> None:
    """Refuse what cannot be done as asked, before any request."""
    if job.date_to < job.date_from:
        raise InvalidOption(f"{{date_to}} {job.date_to} is before {{date_from}} {job.date_from}")
    if job.window not in WINDOW_SIZES:
        raise InvalidOption(f"{{window}} {job.window!r}: use one of {', '.join(WINDOW_SIZES)}")
    if job.date_field not in DATE_FIELDS:
        raise InvalidOption(f"{{date_field}} {job.date_field!r}: use entry or changed")
    for name, value in (("account_from", job.account_from), ("account_to", job.account_to)):
        if value is not None and not -32768 < value <= 32767:
            raise InvalidOption(f"{{{name}}} {value} is not an account number (a short)")
    if None not in (job.account_from, job.account_to) and job.account_to < job.account_from:  # type: ignore[operator]
        raise InvalidOption("{account_to} is below {account_from}")
    for kind in job.system_types:  # values newer than the WSDL (InvoiceLoss) are allowed
        if not kind.isascii() or not kind.isalpha():
            raise InvalidOption(
                f"{{system_types}} {kind!r} is not a SystemType name (e.g. Payment)"
            )


@dataclass
class LedgerWork:
    """One run of a :class:`TransactionJob`."""

    job: TransactionJob
    journal: Journal
    stats: RunStats
    what: str = "the window"

    def __post_init__(self) -> None:
        run_id = self.journal.state.run_id
        self.writer = TableWriter(
            self.job.out, TABLE, SPEC.schema, SPEC.partition, run_id,
            unique=(SPEC.key[0], "DateChanged"), placement=self.job.destination.placement,
        )  # fmt: skip

    @property
    def writers(self) -> Sequence[TableWriter]:
        return [self.writer]

    async def __aenter__(self) -> LedgerWork:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def plan(self, run: Run, previous: RunState | None) -> dict[str, Any]:
        """The job's windows, plus the days the last run could not fetch; a retry of a
        backfill fetches those days only, and keeps that run's as-of time."""
        carried = failed_windows(previous) if previous is not None else []
        if previous is not None and not self.job.sync:
            as_of = previous.as_of or run.clock.now().isoformat()
            return {
                "event": "plan", "windows": carried, "as_of": as_of,
                "retry_of": previous.run_id,
            }  # fmt: skip
        as_of = run.session.service_time.now().isoformat()  # the service's time: a watermark
        start = await ledger_start(run, self.job)
        windows = [w.as_json() for w in self.job.plan(start)] if start is not None else []
        event = {"event": "plan", "windows": windows, "as_of": as_of}
        if previous is not None:
            event |= {"windows": windows + carried, "retry_of": previous.run_id}
        return event

    def remaining(self, state: RunState, prefix: str) -> list[Window]:
        return remaining(state)

    def planned(self, state: RunState, remaining: Sequence[Window]) -> str:
        days = sum(window.length for window in remaining)
        self.stats.total, self.stats.done = days, 0
        return f"{counting(len(remaining), 'window')} ({counting(days, 'day')}) to fetch"

    async def fetch(self, run: Run, unit: Window, policy: RetryPolicy, root: str) -> None:
        params = self.job.params(unit)
        sink = await run.call(SPEC.operation, params, LedgerSink, policy, root)
        table = sink.table
        assert table is not None
        await asyncio.get_running_loop().run_in_executor(
            None, self.writer.stage, unit.key, table, month_of(table)
        )
        self.journal.append(
            {
                "event": "staged",
                "key": unit.key,
                "window": unit.as_json(),
                "counts": {"transactions": table.num_rows},
            }
        )
        self.stats.fetched += table.num_rows

    def failed(self, run: Run, unit: Window, error: BaseException) -> None:
        message = redact.mask(f"{type(error).__name__}: {error}")
        failed = {"event": "failed", "key": unit.key, "window": unit.as_json(), "error": message}
        self.journal.append(failed)

    async def settled(self) -> None:
        pass  # each window is staged and journaled before its fetch returns

    async def publish(self, run: Run, state: RunState) -> dict[str, int]:
        publishing = functools.partial(
            self.job.destination.publisher.publish, [self.writer], state.run_info()
        )
        return await asyncio.get_running_loop().run_in_executor(None, publishing)

    def tidy(self) -> None:
        self.writer.tidy()

    def summary(self, state: RunState, stats: RunStats) -> RunSummary:
        failed = [
            {"window": f["window"], "error": f["error"]}
            for f in state.failed.values()
            if "window" in f
        ]
        stats.fetched = state.counts.get(TABLE, 0)
        if self.job.destination.format == "parquet":
            stats.fetched = stats.written.get(TABLE, stats.fetched)  # what was written
        summary = stats.summary(Status.PARTIAL if failed else Status.COMPLETE, self.job.out)
        summary.job, summary.retry_of, summary.failures = state.fingerprint, state.retry_of, failed
        summary.counts["failed_days"] = sum(Window.from_json(f["window"]).length for f in failed)
        return summary


def remaining(state: RunState) -> list[Window]:
    """Planned windows less the days already staged or failed, as contiguous windows."""
    done: dict[str | None, set[dt.date]] = {}
    for event in (*state.staged.values(), *state.failed.values()):
        window = Window.from_json(event["window"])
        done.setdefault(window.system_type, set()).update(window.days())
    left = []
    for value in (state.plan or {}).get("windows", ()):
        window = Window.from_json(value)
        run: list[dt.date] = []
        for day in [*window.days(), None]:
            if day is not None and day not in done.get(window.system_type, set()):
                run.append(day)
            elif run:
                left.append(Window(run[0], run[-1], window.system_type))
                run = []
    return left


def failed_windows(state: RunState) -> list[list[Any]]:
    """The windows of days a run could not fetch, as journaled."""
    return [event["window"] for event in state.failed.values() if "window" in event]
