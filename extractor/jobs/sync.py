"""``extractor sync``: keep the Delta tables current: invoices, their rows, the ledger and the
lists (:data:`~extractor.operations.LISTS`: the reference lists, the balances, customers and
products), every one of them or those ``tables`` names.

Each sync reads the watermarks committed with the data (:mod:`extractor.output.lakemarks`).
With none, it backfills everything (invoices, and ledger lines changed since ``--since``);
otherwise it lists the orders changed after the watermark less ``--overlap`` and the ledger
lines changed since that day, fetches them (and the orders the last sync was answered stale)
through the same resumable pipeline as the backfill commands, and merges them.
``--reconcile`` also lists every OrderId the service has and marks the orders that vanished
(and so for customers and products).

The lists are one part, a run of :class:`~extractor.engine.lists.ListJob`: the reference
lists replaced (no commit when unchanged), the balances of the open fiscal years asked
again (a year's fetched once it was locked are final), customers and products by their
changes since their own watermarks.

A watermark is the service's time when its run began listing (its clock, from the ``Date``
of its answers: :mod:`extractor.service.servicetime`), so a service whose clock runs behind
ours loses nothing; a skew larger than ``--overlap`` is said all the same (``clock_skew``),
and a service that sends no ``Date`` leaves the watermark on our clock, which is said too.

A sync's journal lives in the work directory, under ``_work/sync-invoices`` and
``_work/sync-transactions``. Running ``sync`` again after a crash resumes it while the
watermark is where the crashed run found it; an unfinished sync of another plan (its data
was committed after all, or the options changed) is discarded, which only costs refetching.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from extractor.clock import SYSTEM, Clock, new_run_id, utc_text
from extractor.config import DEFAULT_SERVICE, DEFAULT_SINCE, MAX_BATCH, Credentials, ServiceConfig
from extractor.engine.destination import Destination
from extractor.engine.history import failed_record
from extractor.engine.journal import unfinished
from extractor.engine.lists import ListJob
from extractor.engine.runner import fingerprint_of, run
from extractor.engine.spec import Spec, Strategy
from extractor.engine.state import replay
from extractor.engine.stats import RunStats
from extractor.engine.summary import (
    FAILED,
    INTERRUPTED,
    RunSummary,
    Status,
    SyncSummary,
    attach,
    attached,
)
from extractor.errors import InvalidOption
from extractor.jobs.invoices import InvoiceJob
from extractor.jobs.ledger import TransactionJob
from extractor.log import Log, claim_run
from extractor.operations import LISTS, TABLES
from extractor.output.staging import Placement
from extractor.output.targets import Target
from extractor.service.limiter import Gate, RateLimiter
from extractor.service.session import connected
from extractor.service.transport import Wire

if TYPE_CHECKING:
    from extractor.output.delta import Lake

#: A sync's own run id: ``sync-`` and a run id (each part's run has its own).
SYNC_PREFIX: Final = "sync-"

INVOICE_TABLES: Final = ("invoices", "invoice_rows")
LEDGER_TABLES: Final = ("transactions",)
DEFAULT_OVERLAP: Final = dt.timedelta(minutes=10)
#: The ledger is asked up to this many days past our today: the service's may be later.
LEDGER_AHEAD: Final = dt.timedelta(days=1)
#: A sync's parts, in the order they run: each is a run of its own under the work folder.
PARTS: Final = ("invoices", "transactions", "lists")


@dataclass(frozen=True)
class SyncJob:
    """Everything ``extractor sync`` was asked to do."""

    target: Target
    work_dir: Path | None = None
    service: ServiceConfig = DEFAULT_SERVICE
    overlap: dt.timedelta = DEFAULT_OVERLAP
    since: dt.date = DEFAULT_SINCE
    reconcile: bool = False
    ledger: bool = True
    batch_size: int = MAX_BATCH
    parse_workers: int = 0
    #: A fleet member's: its identity (its part of the tables), and where its runs live (the
    #: fleet holds the target's lock for it).
    identity: str | None = None
    member_work: Path | None = None
    command: str = "sync"
    #: The tables kept (:func:`~extractor.operations.choose`; default every one).
    tables: tuple[str, ...] = TABLES

    def check(self) -> None:
        """Refuse settings no sync can run with, before any request."""
        if self.overlap < dt.timedelta(0):
            raise InvalidOption("{overlap} must not be negative")

    @property
    def work(self) -> Path:
        return self.member_work or self.target.work_dir(self.work_dir) / "_work"

    @property
    def out(self) -> Path:
        """Where the sync's runs live (a fleet's member keeps its log there)."""
        return self.work

    @property
    def destination(self) -> Destination:
        """The sync's Delta tables, its work folder, and (a fleet member's) its identity's
        part of the tables, the fleet holding the target."""
        from extractor.output.delta import DeltaOutput  # delta-rs only where it is used

        output = DeltaOutput(self.target, identity=self.identity)
        if self.identity is not None:
            return Destination(
                self.work, output, None, Placement(None, self.identity), enclosed=True
            )
        return Destination(self.work, output, self.target.work_dir(self.work_dir))


async def run_sync(
    job: SyncJob,
    credentials: Credentials,
    *,
    log: Log | IO[str] | None = None,
    clock: Clock = SYSTEM,
    wire: Wire | None = None,
    gate: Gate | None = None,
    watch: Callable[[RunStats, RateLimiter], None] | None = None,
) -> SyncSummary:
    """One sync; its summary (each part's also under the work directory's ``_runs/``), with
    the sync's own ``run_id`` (``sync-...``; each part has its run's). ``log``, ``clock``,
    ``wire``, ``gate`` and ``watch`` as for :func:`~extractor.engine.runner.run`."""
    job.check()
    run_id = SYNC_PREFIX + new_run_id(clock)
    claim_run(run_id)
    out = Log.to(log).bind(run_id=run_id, command="sync")
    summary = SyncSummary(run_id, job.target.uri)
    try:
        with job.destination.locked("sync"):  # for all its parts
            # one session for every part: one login, one budget
            async with connected(
                job.service, credentials, clock=clock, wire=wire, gate=gate, login=False
            ) as session:
                given = functools.partial(
                    run, log=out, clock=clock, wire=wire, gate=gate, watch=watch, session=session
                )
                await _sync_locked(job, credentials, out, clock, given, summary)
    except (Exception, asyncio.CancelledError) as exc:
        _record_failure(summary, exc, clock)
        raise
    out.info(
        "finished", f"sync {run_id} {summary.status}", status=str(summary.status),
        watermarks=summary.watermarks,
    )  # fmt: skip
    return summary


async def _sync_locked(
    job: SyncJob,
    credentials: Credentials,
    log: Log,
    clock: Clock,
    running: Callable[..., Awaitable[RunSummary]],
    summary: SyncSummary,
) -> None:
    """Each part in turn into ``summary``; then its status and watermarks."""
    from extractor.output.delta import Lake  # delta-rs only where it is used
    from extractor.output.lakefiles import Scope

    lake = Lake(job.target, scope=Scope(job.identity))
    parts = summary.parts
    if "invoices" in job.tables:
        invoice_job = _invoice_job(job, lake.watermark(INVOICE_TABLES), lake.refetch())
        _discard_stale(invoice_job.out, fingerprint_of(invoice_job), log)
        again = len(invoice_job.refetch)
        plan = _plan("invoices", invoice_job.changed_after, again)
        log.info("sync_plan", plan, part="invoices", refetch=again)
        parts["invoices"] = await running(invoice_job, credentials)
        summary.clock_skew_seconds = _said_skew(parts["invoices"], job.overlap, log)
    if job.ledger and "transactions" in job.tables:
        today = clock.now().date() + LEDGER_AHEAD
        ledger_job = _ledger_job(job, lake.watermark(LEDGER_TABLES), today)
        _discard_stale(ledger_job.out, fingerprint_of(ledger_job), log)
        log.info("sync_plan", _plan("ledger lines", ledger_job.date_from), part="transactions")
        parts["transactions"] = await running(ledger_job, credentials)
    lists = tuple(spec for spec in LISTS if spec.table in job.tables)
    if lists:
        lists_job = _lists_job(job, lists, lake)
        _discard_stale(lists_job.out, fingerprint_of(lists_job), log)
        log.info("sync_plan", _lists_plan(lists_job), part="lists")
        parts["lists"] = await running(lists_job, credentials)
        if summary.clock_skew_seconds is None:
            summary.clock_skew_seconds = parts["lists"].clock_skew_seconds
    complete = all(part.complete for part in parts.values())
    summary.status = Status.COMPLETE if complete else Status.PARTIAL
    summary.stale_records = sum(part.written.get("stale_records", 0) for part in parts.values())
    kept = {"invoices": INVOICE_TABLES, "transactions": LEDGER_TABLES} | {
        spec.table: (spec.table,) for spec in lists if spec.strategy is Strategy.CHANGES
    }
    summary.watermarks = {
        name: _iso(lake.watermark(tables))
        for name, tables in kept.items()
        if name in job.tables and (name != "transactions" or job.ledger)
    }


def _record_failure(summary: SyncSummary, error: BaseException, clock: Clock) -> None:
    """Hand the sync's record along with the error that stopped it: the sync's id, the error,
    the parts that finished, and the record of the part that failed (written in its
    ``_runs/``)."""
    outcome = INTERRUPTED if isinstance(error, asyncio.CancelledError) else FAILED
    known = {"output": summary.output, "format": summary.format,
             "failed_at": clock.now().isoformat(),
             **{name: part.as_json() for name, part in summary.parts.items()}}  # fmt: skip
    part = attached(error)
    if part is not None:
        known["failed_part"] = part
    attach(error, failed_record(summary.run_id, error, outcome, known))


def _lists_job(job: SyncJob, lists: tuple[Spec, ...], lake: Lake) -> ListJob:
    """The sync's lists part: the tables kept by their changes since their watermarks (less
    the overlap), the balances of the settled years the lake holds not asked again."""
    from extractor.output.lakelists import held_parents  # delta-rs only where it is used

    since = {}
    for spec in lists:
        mark = lake.watermark((spec.table,)) if spec.strategy is Strategy.CHANGES else None
        if mark is not None:
            since[spec.table] = (mark - job.overlap).isoformat()
    held = {  # none while a full refresh waits: every parent row is asked again
        spec.table: held_parents(lake.target, lake.scope, spec.table, spec.per.held_by)
        for spec in lists
        if spec.per is not None and spec.per.held_by is not None
        and not lake.refreshing((spec.table,))
    }  # fmt: skip
    return ListJob(
        job.destination.part(job.work / "sync-lists"), lists, job.service, sync=True,
        since=since, reconcile=job.reconcile, held=held,
    )  # fmt: skip


def _lists_plan(lists: ListJob) -> str:
    changing = ", ".join(f"{name} changed since {since}" for name, since in lists.since.items())
    held = sum(len(values) for values in lists.held.values())
    said = [f"sync: {len(lists.specs)} lists ({', '.join(lists.tables)})"]
    if changing:
        said.append(changing)
    if held:
        said.append(f"{held} settled fiscal years' balances held, not asked again")
    return "; ".join(said)


def _invoice_job(
    job: SyncJob, watermark: dt.datetime | None, refetch: tuple[int, ...]
) -> InvoiceJob:
    changed_after = None
    if watermark is not None:
        changed_after = (watermark - job.overlap).astimezone(dt.UTC).replace(tzinfo=None)
    return InvoiceJob(
        job.destination.part(job.work / "sync-invoices"), service=job.service,
        changed_after=changed_after, batch_size=job.batch_size,
        parse_workers=job.parse_workers, reconcile=job.reconcile and watermark is not None,
        sync=True, refetch=refetch if watermark is not None else (),
    )  # fmt: skip


def _said_skew(part: RunSummary, overlap: dt.timedelta, log: Log) -> float | None:
    """How far the service's clock is ahead of ours (from the part's run); a skew beyond
    ``overlap``, or none known, is said (the watermark is the service's time either way)."""
    skew = part.clock_skew_seconds
    if skew is None:
        log.warning(
            "clock_unknown",
            "the service sent no Date header: the watermark is this machine's time, and "
            "--overlap must cover how far the service's clock may be behind it",
        )
    elif abs(skew) > overlap.total_seconds():
        way = "behind" if skew < 0 else "ahead of"
        log.warning(
            "clock_skew",
            f"the service's clock is {_minutes(abs(skew))} {way} this machine's (more than "
            f"--overlap {_minutes(overlap.total_seconds())}); the watermark is kept in the "
            "service's time",
            skew_seconds=skew,
        )
    return skew


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:,.0f} min" if seconds >= 60 else f"{seconds:,.0f} s"


def _ledger_job(job: SyncJob, watermark: dt.datetime | None, today: dt.date) -> TransactionJob:
    start = job.since if watermark is None else (watermark - job.overlap).date()
    return TransactionJob(
        job.destination.part(job.work / "sync-transactions"), date_from=start,
        date_to=max(today, start), service=job.service, date_field="changed",
        window="month", until_now=True, sync=True,
    )  # fmt: skip


def _discard_stale(work: Path, expected: dict[str, Any], log: Log) -> None:
    """Remove an unfinished sync run of another plan; its work is simply done again."""
    found = unfinished(work)
    if found is None:
        return
    state = replay(found)
    if state.fingerprint == expected:
        return
    log.warning(
        "discarding",
        f"discarding the unfinished sync {state.run_id}: the tables moved on since",
        discarded=state.run_id,
    )
    shutil.rmtree(work / "_staging" / state.run_id, ignore_errors=True)
    found.unlink()


def _plan(what: str, since: dt.datetime | dt.date | None, again: int = 0) -> str:
    if since is None:
        return f"sync: no watermark for {what}; backfilling them all"
    stale = f", and {again:,} answered older than stored last time" if again else ""
    when = utc_text(since) if isinstance(since, dt.datetime) else since.isoformat()
    return f"sync: {what} changed since {when}{stale}"


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()
