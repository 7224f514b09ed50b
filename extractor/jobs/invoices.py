"""The invoices job: list the OrderIds (GetOrderSyncList), fetch them in batches of up to
1000 (GetInvoices), publish ``invoices`` and ``invoice_rows``; run by
:func:`~extractor.engine.runner.run`.

Ids that fail alone are reported in ``OUT/_failures/<run_id>.jsonl``, the ids the service
did not return in ``OUT/_failures/<run_id>.not-returned.parquet``, and the run's status is
then ``partial``; a rerun lists them again and fetches those still listed
(:mod:`extractor.jobs.listing`: what the service no longer lists, or did not return twice,
is settled).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from extractor import redact
from extractor.config import DEFAULT_SERVICE, MAX_BATCH, RetryPolicy, ServiceConfig
from extractor.engine.destination import Destination
from extractor.engine.journal import Journal
from extractor.engine.state import RunState
from extractor.engine.stats import RunStats
from extractor.engine.summary import RunSummary, Status
from extractor.engine.workers import Run
from extractor.errors import InvalidOption
from extractor.ids import Ids, ids_of, unique
from extractor.jobs.failures import brief_failures, write_failures, write_not_returned
from extractor.jobs.listing import OrderRun, gone_from, list_ids, oldest, relist
from extractor.operations import INVOICES
from extractor.output.staging import TableWriter
from extractor.records.orders import Selection
from extractor.records.parse_pool import ParsePool
from extractor.records.parsing import BatchCounts, CountedSink, InvoiceTables, LocalSinks

#: The operation, as the engine knows it; its rows are a table beside it.
SPEC: Final = INVOICES
TABLES: Final = (SPEC.table, "invoice_rows")


@dataclass(frozen=True)
class InvoiceJob:
    """Everything ``extractor invoices`` was asked to do."""

    destination: Destination
    service: ServiceConfig = DEFAULT_SERVICE
    changed_after: dt.datetime | None = None
    registered_after: dt.datetime | None = None
    batch_size: int = MAX_BATCH
    invoice_properties: tuple[str, ...] = ()
    row_properties: tuple[str, ...] = ()
    parse_workers: int = 0  # 0: parse on the event loop; N: in N parser processes
    reconcile: bool = False  # list every OrderId after fetching; the output marks the vanished
    sync: bool = False  # part of a sync: a finished run of the same plan is no reason to stop
    command: str = "invoices"
    #: A sync's: ids fetched whether listed or not (the last sync was answered them stale).
    refetch: tuple[int, ...] = ()

    @property
    def out(self) -> Path:
        """The run's folder: its journal, staging, reports (local Parquet: the tables)."""
        return self.destination.work

    def check(self) -> None:
        Selection.checked(self.invoice_properties, self.row_properties)
        if self.changed_after and self.registered_after:
            raise InvalidOption("give {changed_after} or {registered_after}, not both")
        if self.destination.format == "delta" and (self.invoice_properties or self.row_properties):
            raise InvalidOption(
                "{output_format} delta keeps whole records (what sync merges into); "
                "drop {invoice_properties} and {row_properties}"
            )
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise InvalidOption(f"{{batch_size}} {self.batch_size} is outside 1..{MAX_BATCH}")

    def fingerprint(self) -> dict[str, Any]:
        def iso(value: dt.datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "command": "invoices",
            "changed_after": iso(self.changed_after),
            "registered_after": iso(self.registered_after),
            "invoice_properties": list(self.invoice_properties),
            "row_properties": list(self.row_properties),
        }

    @property
    def tables(self) -> Sequence[str]:
        return TABLES

    def retrying(self, previous: RunState) -> str:
        carried = OrderRun(previous).carried()
        if not carried.ids:
            return (
                f"run {carried.run_id} left nothing to fetch again ({carried.settled:,} ids "
                "settled: no longer listed, or not returned twice); finishing the job"
            )
        return (
            f"run {carried.run_id} could not fetch {len(carried.ids):,} ids; listing them "
            "again and fetching those still listed"
        )

    def start(self, journal: Journal, stats: RunStats) -> InvoiceWork:
        restore(stats, journal.state)
        selection = Selection.checked(self.invoice_properties, self.row_properties)
        return InvoiceWork(self, journal, stats, selection)


@dataclass(frozen=True)
class IdBatch:
    """Up to ``batch_size`` OrderIds, fetched in one GetInvoices."""

    key: str
    ids: Sequence[int]

    @property
    def size(self) -> int:
        return len(self.ids)

    def halves(self) -> tuple[IdBatch, IdBatch] | None:
        if len(self.ids) < 2:
            return None
        half = (len(self.ids) + 1) // 2
        return IdBatch(f"{self.key}a", self.ids[:half]), IdBatch(f"{self.key}b", self.ids[half:])


def cut(ids: Ids, size: int, prefix: str) -> list[IdBatch]:
    """``ids`` in batches of ``size``, keyed ``<prefix>-<number>``: views into ``ids``, not
    copies of it (a million planned ids are 8 MB once, not twice)."""
    view = memoryview(ids)
    return [
        IdBatch(f"{prefix}-{number:08d}", view[at : at + size])
        for number, at in enumerate(range(0, len(ids), size))
    ]


@dataclass
class InvoiceWork:
    """One run of an :class:`InvoiceJob`."""

    job: InvoiceJob
    journal: Journal
    stats: RunStats
    selection: Selection
    what: str = "batch"
    sinks: LocalSinks | ParsePool | None = None
    journaling: list[asyncio.Task[None]] = field(default_factory=list)
    #: Batches the last plan left to fetch: one is parsed on the event loop (:meth:`_sinks`).
    to_fetch: int = 0
    _starting: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        job = self.job
        run_id = self.journal.state.run_id
        self.tables = InvoiceTables(job.out, self.selection, run_id, job.destination.placement)

    @property
    def writers(self) -> Sequence[TableWriter]:
        return self.tables.writers

    async def __aenter__(self) -> InvoiceWork:
        return self  # where bodies are parsed is chosen at the first fetch (:meth:`_sinks`)

    async def _sinks(self) -> LocalSinks | ParsePool:
        """Where bodies go: parser processes (``parse_workers``), unless the run fetches one
        batch, which is one response on one core either way (starting the processes cost
        more than that batch's parse: 0.2-0.3 CPU-s, an hourly sync of a few changes)."""
        async with self._starting:
            if self.sinks is None:
                job = self.job
                backlog = job.service.most_in_flight
                sinks: LocalSinks | ParsePool = (
                    ParsePool(job.parse_workers, self.selection, self.tables, backlog)
                    if job.parse_workers and self.to_fetch > 1
                    else LocalSinks(self.selection, self.tables, backlog=backlog)
                )
                await sinks.__aenter__()
                self.sinks = sinks
            return self.sinks

    async def __aexit__(self, *exc: object) -> None:
        if self.sinks is not None:
            await self.sinks.__aexit__(*exc)

    async def plan(self, run: Run, previous: RunState | None) -> dict[str, Any]:
        """The listed ids (a sync's, or a first backfill's) and the ids a sync is asked to
        fetch again (stale answers), plus those the last run could not fetch that the service
        still lists; a retry of a backfill fetches only those, and keeps that run's as-of time."""
        job = self.job
        carried = OrderRun(previous).carried() if previous is not None else None
        as_of = run.session.service_time.now().isoformat()  # the service's time: a watermark
        since = _iso(job.changed_after)
        if carried is not None and not job.sync:
            as_of, since, listed = carried.as_of or as_of, carried.since, ids_of(())
        else:
            listed = await list_ids(run, job.changed_after, job.registered_after)
        if job.refetch:
            listed = unique(listed + ids_of(job.refetch))
        event: dict[str, Any] = {"event": "plan", "ids": listed, "as_of": as_of, "since": since}
        if carried is None:
            return event
        relisted = await relist(run, carried, listed, job.registered_after)
        ids = unique(listed + relisted.kept)
        since = oldest(since, carried.since)
        return event | relisted.journaled(ids) | {"retry_of": carried.run_id, "since": since}

    def remaining(self, state: RunState, prefix: str) -> list[IdBatch]:
        batches = cut(OrderRun(state).remaining(), self.job.batch_size, prefix)
        self.to_fetch = len(batches)
        return batches

    def planned(self, state: RunState, remaining: Sequence[IdBatch]) -> str:
        stats = self.stats
        stats.total = len(OrderRun(state).planned)
        stats.done = stats.total - sum(batch.size for batch in remaining)
        return f"{stats.total:,} orders planned, {stats.total - stats.done:,} to fetch"

    async def fetch(self, run: Run, unit: IdBatch, policy: RetryPolicy, root: str) -> None:
        """``unit`` in one request; journaled once its staged files are on disk."""
        opener = functools.partial((await self._sinks()).open, unit.ids, unit.key)
        params = self.selection.params(unit.ids)
        sink: CountedSink = await run.call(SPEC.operation, params, opener, policy, root)
        counts, tally = sink.counts, self.stats.counts
        self.stats.fetched += counts.invoices
        tally["rows"] += counts.rows
        tally["api_exceptions"] += counts.api_exceptions
        tally["missing_ids"] += len(counts.missing)
        self.journaling.append(asyncio.create_task(self._journal_when_staged(sink, unit)))

    async def _journal_when_staged(self, sink: CountedSink, unit: IdBatch) -> None:
        """Once the batch is on disk, journal it: the journal is what a resume trusts."""
        await sink.staged
        self.journal.append(
            {"event": "staged", "key": unit.key, "ids": list(unit.ids)} | _counted(sink.counts)
        )

    def failed(self, run: Run, unit: IdBatch, error: BaseException) -> None:
        message = redact.mask(f"{type(error).__name__}: {error}")
        failed = {"event": "failed", "key": unit.key, "ids": list(unit.ids), "error": message}
        self.journal.append(failed)
        self.stats.counts["failed_ids"] += unit.size

    async def settled(self) -> None:
        draining = [self.sinks.drain()] if self.sinks is not None else []
        await asyncio.gather(*draining, *self.journaling)
        self.journaling.clear()

    async def publish(self, run: Run, state: RunState) -> dict[str, int]:
        """Every staged batch; with ``reconcile``, every OrderId the service still lists, so
        the output can mark the orders that vanished."""
        present = (
            await list_ids(run, None, self.job.registered_after) if self.job.reconcile else None
        )
        gone = gone_from(OrderRun(state), present) if present is not None else None
        if gone:  # settled now: the service no longer has them
            self.journal.append({"event": "gone", "ids": gone})
        publishing = functools.partial(
            self.job.destination.publisher.publish, self.writers, state.run_info(), present
        )
        return await asyncio.get_running_loop().run_in_executor(None, publishing)

    def tidy(self) -> None:
        self.tables.tidy()

    def summary(self, state: RunState, stats: RunStats) -> RunSummary:
        restore(stats, state)  # the journal's counts: every batch of the run, resumed or not
        if self.job.destination.format == "parquet" and "invoices" in stats.written:
            stats.fetched = stats.written["invoices"]  # what was written, not what was meant
            stats.counts["rows"] = stats.written.get("invoice_rows", 0)
        orders = OrderRun(state)
        short = orders.still_failed or orders.not_returned or orders.missing_twice
        summary = stats.summary(Status.PARTIAL if short else Status.COMPLETE, self.job.out)
        summary.job, summary.retry_of = state.fingerprint, state.retry_of
        summary.reports = {
            "failures_report": write_failures(self.job.out, orders),
            "not_returned_report": write_not_returned(self.job.out, orders),
        }
        return summary


def restore(stats: RunStats, state: RunState) -> None:
    """The counts of every batch the run's journal holds (resumed runs included)."""
    counts, orders = state.counts, OrderRun(state)
    stats.fetched = counts.get("invoices", 0)
    stats.counts = {
        "rows": counts.get("rows", 0),
        "api_exceptions": counts.get("api_exceptions", 0),
        "missing_ids": len(orders.not_returned),
        "missing_twice_ids": len(orders.missing_twice),
        "gone_ids": len(orders.gone),
        "failed_ids": len(orders.still_failed),
    }
    stats.failures = brief_failures(orders)


def _counted(counts: BatchCounts) -> dict[str, Any]:
    return {
        "counts": {
            "invoices": counts.invoices,
            "rows": counts.rows,
            "api_exceptions": counts.api_exceptions,
        },
        "missing": counts.missing,
    }


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()
