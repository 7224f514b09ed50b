"""The general ledger: GetTransactions over date windows fetched concurrently; resumable.

The range is cut into windows (a month, week or day each) that meet without gaps or overlaps:
each window asks from its first day at ``T00:00:00`` to its last day at ``T23:59:59``, as the
service needs to include that day. A window that fails after its retries is split in halves
and fetched again, down to a day; a day that still fails is reported. The same spine as the
invoices backfill serves it: session, rate limiter, retries, streaming parse, journal,
staged then published Parquet (``OUT/transactions/date_month=YYYY-MM/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from extractor import arrow, redact, schema, soap
from extractor.config import (
    DEFAULT_BASE_URL,
    DEFAULT_RETRY,
    DEFAULT_TIMEOUTS,
    Credentials,
    RetryPolicy,
    Timeouts,
    check_output_dir,
)
from extractor.errors import DataError, OutputError, TransientError, UsageError
from extractor.jobs.batching import first_error, observed, until_all_staged
from extractor.jobs.invoices import new_run_id, now
from extractor.output.lock import OutputLock
from extractor.output.staging import Output, ParquetOutput, TableWriter
from extractor.parser import RecordStream, struct_columns
from extractor.runs.journal import (
    Carried,
    Journal,
    RunState,
    carried_over,
    finished_job,
    latest_run,
    unfinished,
)
from extractor.runs.progress import Progress, RunStats, write_summary
from extractor.service.health import Health, same_failure
from extractor.service.retry import Sleep, persistently
from extractor.service.session import Session
from extractor.service.transport import Transport

NAMESPACE: Final = schema.service("transactionService").namespace
TRANSACTION_TAG: Final = f"{{{NAMESPACE}}}Transaction"
TABLE: Final = "transactions"
PARTITION: Final = "date_month"
WINDOW_SIZES: Final = ("month", "week", "day")
DATE_FIELDS: Final = {"entry": "EntryDate", "changed": "DateChangedUTC"}
#: What makes a window split in halves rather than stop the run.
SPLITTABLE: Final = (TransientError, DataError)


def transaction_type() -> schema.Struct:
    return schema.service("transactionService").type("Transaction")


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

    def halves(self) -> tuple[Window, Window]:
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

    out: Path
    date_from: dt.date
    date_to: dt.date
    base_url: str = DEFAULT_BASE_URL
    date_field: str = "entry"
    window: str = "month"
    account_from: int | None = None
    account_to: int | None = None
    system_types: tuple[str, ...] = ()
    concurrency: int = 8
    soap_version: str = "1.1"
    max_requests_per_hour: int = 7200
    retry: RetryPolicy = DEFAULT_RETRY
    timeouts: Timeouts = DEFAULT_TIMEOUTS
    resume: bool = False
    insecure: bool = False
    output: Output | None = None  # None: hive Parquet in ``out``, which also holds the journal
    until_now: bool = False  # a sync's: ``date_to`` is today, and a resume keeps its plan
    sync: bool = False  # part of a sync: a finished run of the same plan is no reason to stop

    def fingerprint(self) -> dict[str, Any]:
        print_ = {
            "command": "transactions",
            "from": self.date_from.isoformat(),
            "to": "now" if self.until_now else self.date_to.isoformat(),
            "date_field": self.date_field,
            "accounts": [self.account_from, self.account_to],
            "system_types": list(self.system_types),
        }
        if self.output is not None:
            print_.update(output=self.output.target.uri, format=self.output.format)
        return print_

    def publisher(self) -> Output:
        return self.output or ParquetOutput.at(self.out)

    def plan(self) -> list[Window]:
        windows = cut(self.date_from, self.date_to, self.window)
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


def check(job: TransactionJob) -> None:
    """Refuse what cannot be done as asked, before any request."""
    check_output_dir(job.out)
    if job.date_to < job.date_from:
        raise UsageError(f"--to {job.date_to} is before --from {job.date_from}")
    if job.window not in WINDOW_SIZES:
        raise UsageError(f"--window {job.window!r}: use one of {', '.join(WINDOW_SIZES)}")
    if job.date_field not in DATE_FIELDS:
        raise UsageError(f"--date-field {job.date_field!r}: use entry or changed")
    for name, value in (("--account-from", job.account_from), ("--account-to", job.account_to)):
        if value is not None and not -32768 < value <= 32767:
            raise UsageError(f"{name} {value} is not an account number (a short)")
    if None not in (job.account_from, job.account_to) and job.account_to < job.account_from:  # type: ignore[operator]
        raise UsageError("--account-to is below --account-from")
    for kind in job.system_types:  # values newer than the WSDL (InvoiceLoss) are allowed
        if not kind.isascii() or not kind.isalpha():
            raise UsageError(f"--system-type {kind!r} is not a SystemType name (e.g. Payment)")
    if job.resume and unfinished(job.out) is None:
        raise UsageError(f"--resume: --out {job.out} holds no unfinished run")


class LedgerSink(RecordStream):
    """A GetTransactions body to one typed table while it arrives."""

    def __init__(self) -> None:
        self._columns = struct_columns(transaction_type(), NAMESPACE, _RAW_TYPE)
        super().__init__(TRANSACTION_TAG, self._columns.add)
        self.table: pa.Table | None = None

    def complete(self) -> None:
        super().complete()
        raw = self._columns.finish()
        self.table = arrow.table(transaction_type().fields, raw)

    def abort(self) -> None:
        super().abort()
        self._columns.finish()


_RAW_TYPE: Final = arrow.raw_type(transaction_type())


def month_of(table: pa.Table) -> pa.Array[Any]:
    return pc.strftime(table.column("Date").combine_chunks(), format="%Y-%m")


@dataclass
class _Run:
    job: TransactionJob
    session: Session
    journal: Journal
    writer: TableWriter
    stats: RunStats
    sleep: Sleep
    health: Health

    async def fetch(self, window: Window, policy: RetryPolicy, root: str) -> None:
        async def attempt() -> LedgerSink:
            params = self.job.params(window)
            call = self.session.call(soap.GET_TRANSACTIONS, params, LedgerSink)
            return await observed(self.health, root, call)

        sink = await persistently(attempt, policy, self.sleep, self._count_retry)
        self.stats.bytes_received += sink.bytes_fed
        table = sink.table
        assert table is not None
        await asyncio.get_running_loop().run_in_executor(
            None, self.writer.stage, window.key, table, month_of(table)
        )
        self.journal.append(
            {
                "event": "staged",
                "key": window.key,
                "ids": [],
                "window": window.as_json(),
                "counts": {"transactions": table.num_rows},
                "missing": [],
            }
        )
        self.stats.invoices += table.num_rows
        self.stats.ids_done += window.length

    async def fetch_or_split(self, window: Window) -> None:
        """The window; after its retries, its halves, down to a day."""
        error = await self._tried(window, self.job.retry, window.key)
        if error is not None:
            await self._failed(window, window.key, error, levels=0)

    async def _tried(self, window: Window, policy: RetryPolicy, root: str) -> BaseException | None:
        try:
            await self.fetch(window, policy, root)
        except SPLITTABLE as exc:
            self.stats.give_ups += 1
            return exc
        return None

    async def _failed(self, window: Window, root: str, error: BaseException, levels: int) -> None:
        """``window`` failed after its retries: a day is reported, a longer window split in
        halves, each fetched once (a day with its full retries); halves failing the same way,
        ``levels`` splits in a row, mean the service, not a day, is failing."""
        if window.start == window.end:
            message = redact.mask(f"{type(error).__name__}: {error}")
            self.journal.append({"event": "failed", "window": window.as_json(), "error": message})
            self.stats.failed_ids += 1
            return
        self.stats.splits += 1
        halves = window.halves()
        once = self.job.retry.single()
        errors = [
            await self._tried(half, self.job.retry if half.length == 1 else once, root)
            for half in halves
        ]
        levels = levels + 1 if same_failure(*errors) else 0
        self.health.halves_failed(levels, f"the window {root}")
        for half, half_error in zip(halves, errors, strict=True):
            if half_error is not None:
                await self._failed(half, root, half_error, levels)

    def _count_retry(self, _: BaseException) -> None:
        self.stats.retries += 1


def remaining(state: RunState) -> list[Window]:
    """Planned windows less the days already staged or failed, as contiguous windows."""
    done: dict[str | None, set[dt.date]] = {}
    for value in state.done_windows:
        window = Window.from_json(value)
        done.setdefault(window.system_type, set()).update(window.days())
    left = []
    for value in state.windows or ():
        window = Window.from_json(value)
        run: list[dt.date] = []
        for day in [*window.days(), None]:
            if day is not None and day not in done.get(window.system_type, set()):
                run.append(day)
            elif run:
                left.append(Window(run[0], run[-1], window.system_type))
                run = []
    return left


async def run_transactions(
    job: TransactionJob,
    credentials: Credentials,
    *,
    stream: IO[str] = sys.stderr,
    sleep: Sleep = asyncio.sleep,
) -> dict[str, Any]:
    """Extract (or resume extracting) the ledger; the summary, also under ``OUT/_runs/``."""
    check(job)
    with contextlib.nullcontext() if job.sync else OutputLock.take(job.out, "transactions"):
        return await _run_locked(job, credentials, stream, sleep)


async def _run_locked(
    job: TransactionJob, credentials: Credentials, stream: IO[str], sleep: Sleep
) -> dict[str, Any]:
    fingerprint = job.fingerprint()
    tables = () if job.output else (TABLE,)
    done = latest_run(job.out) if job.sync else finished_job(job.out, fingerprint, tables)
    carried = carried_over(job.out, done) if unfinished(job.out) is None else None
    if done is not None and carried is None and not job.sync:
        stream.write(f"run {done['run_id']} already finished this job; nothing to do\n")
        return done
    if carried is not None:
        days = sum(Window.from_json(w).length for w in carried.windows)
        stream.write(f"run {carried.run_id} could not fetch {days:,} days; fetching them again\n")
    try:
        job.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create --out {job.out}: {exc.strerror or exc}") from None
    journal = Journal.open(job.out, new_run_id(), fingerprint)
    try:
        summary = await _extract(job, credentials, journal, stream, sleep, carried)
    finally:
        journal.close()  # a run stopped before its plan leaves nothing to resume: discarded
    journal.finish()
    return summary


async def _extract(
    job: TransactionJob,
    credentials: Credentials,
    journal: Journal,
    stream: IO[str],
    sleep: Sleep,
    carried: Carried | None,
) -> dict[str, Any]:
    state = journal.state
    schema_ = arrow.schema_for(transaction_type().fields)
    writer = TableWriter(
        job.out, TABLE, schema_, PARTITION, state.run_id, unique=("Id", "DateChanged")
    )
    stats = RunStats(state.run_id, units="days", records="transactions")
    transport = Transport.for_run(
        job.base_url, job.soap_version, concurrency=job.concurrency, timeouts=job.timeouts,
        max_requests_per_hour=job.max_requests_per_hour, insecure=job.insecure,
    )  # fmt: skip
    limiter = transport.limiter
    progress = Progress(stats, stream, limiter=limiter)
    try:
        if state.starts > 1:
            writer.prune(set(state.staged))
        session = Session(transport, credentials, sleep)
        await session.login()
        if state.windows is None:
            journal.append(_plan(job, carried))
        run = _Run(job, session, journal, writer, stats, sleep, Health.for_workers(job.concurrency))
        if not state.published:
            await _fetch_all(run, remaining(state), progress)

            async def refetch(_: int) -> None:
                await _fetch_all(run, remaining(state), progress)

            await until_all_staged(journal, [writer], refetch, progress.say)
            publishing = functools.partial(job.publisher().publish, [writer], state.run_info())
            stats.written = await asyncio.get_running_loop().run_in_executor(None, publishing)
            stats.files = stats.written.get("files", 0)
            journal.append({"event": "published", "written": stats.written})
        stats.requests, stats.relogins = session.requests, session.logins - 1
        stats.quarantines = limiter.quarantines
    finally:
        await progress.stop()
        await transport.close()
    writer.tidy()
    failed = [f for f in journal.state.failures if "window" in f]
    summary = stats.summary("partial" if failed else "complete", job.out)
    summary["output"], summary["format"] = job.publisher().target.uri, job.publisher().format
    for invoice_only in ("invoices", "rows", "api_exceptions", "missing_ids", "failed_ids"):
        summary.pop(invoice_only)
    summary.update(
        job=state.fingerprint,
        retry_of=state.retry_of,
        transactions=stats.written.get(TABLE, journal.state.counts.get("transactions", 0))
        if job.publisher().format == "parquet"
        else journal.state.counts.get("transactions", 0),
        transactions_per_second=summary.pop("invoices_per_second"),
        days_total=summary.pop("ids_total"),
        days_done=summary.pop("ids_done"),
        failed_days=sum(Window.from_json(f["window"]).length for f in failed),
        failures=failed,
    )
    write_summary(summary, job.out)
    return summary


def _plan(job: TransactionJob, carried: Carried | None) -> dict[str, Any]:
    """The plan event: the job's windows, plus the days the last run could not fetch; a
    retry of a backfill fetches those days only, and keeps that run's as-of time."""
    if carried is not None and not job.sync:
        as_of = carried.as_of or now().isoformat()
        return {
            "event": "plan", "windows": carried.windows, "as_of": as_of,
            "retry_of": carried.run_id,
        }  # fmt: skip
    windows = [w.as_json() for w in job.plan()]
    event = {"event": "plan", "windows": windows, "as_of": now().isoformat()}
    if carried is not None:
        event |= {"windows": windows + carried.windows, "retry_of": carried.run_id}
    return event


async def _fetch_all(run: _Run, windows: list[Window], progress: Progress) -> None:
    days = sum(w.length for w in windows)
    run.stats.ids_total = days
    progress.say(f"{len(windows):,} windows ({days:,} days) to fetch")
    progress.start()
    queue = iter(windows)

    async def worker() -> None:
        for window in queue:
            await run.fetch_or_split(window)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(run.job.concurrency):
                group.create_task(worker())
    except BaseExceptionGroup as errors:
        raise first_error(errors) from None
