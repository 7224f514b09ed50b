"""The invoices backfill: login, plan, fetch batches concurrently, publish; resumable.

Every step that matters is in the run's journal first (:mod:`extractor.runs.journal`): the plan of
ids, each batch once its staged files are on disk, each id that failed alone. A run that
stops for any reason, SIGKILL included, continues from there when the same command runs again.

Ids that fail alone (:mod:`extractor.jobs.batching`) are reported in
``OUT/_failures/<run_id>.jsonl``, and the run's status is then ``partial``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import secrets
import sys
import time
from typing import IO, Any, Final

import orjson

from extractor import redact
from extractor.config import MAX_BATCH, Credentials, InvoiceJob, check_output_dir
from extractor.errors import OutputError, UsageError
from extractor.ids import ids_of, unique
from extractor.jobs.batching import FetchContext, fetch_all, first_error, list_ids, until_all_staged
from extractor.jobs.parsing import InvoiceTables, LocalSinks, ParsePool
from extractor.output.lock import OutputLock
from extractor.output.staging import Output, ParquetOutput
from extractor.records.orders import Selection
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
from extractor.service.retry import Sleep
from extractor.service.session import Session
from extractor.service.transport import Transport

FAILURES_DIR: Final = "_failures"


def new_run_id() -> str:
    return now().strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def output_of(job: InvoiceJob) -> Output:
    """Where the job publishes: its output, by default hive Parquet in ``out``."""
    return job.output or ParquetOutput.at(job.out)


def fingerprint(job: InvoiceJob) -> dict[str, Any]:
    """What decides which records a run fetches: the same fingerprint, the same run."""
    return {
        "command": "invoices",
        "changed_after": job.changed_after.isoformat() if job.changed_after else None,
        "registered_after": job.registered_after.isoformat() if job.registered_after else None,
        "invoice_properties": list(job.invoice_properties),
        "row_properties": list(job.row_properties),
    } | ({"output": job.output.target.uri, "format": job.output.format} if job.output else {})


async def run_invoices(
    job: InvoiceJob,
    credentials: Credentials,
    *,
    stream: IO[str] = sys.stderr,
    sleep: Sleep = asyncio.sleep,
) -> dict[str, Any]:
    """Run (or resume) a backfill; the summary, also written to ``OUT/_runs/<run_id>.json``."""
    selection = Selection.checked(job.invoice_properties, job.row_properties)
    _check_job(job)
    # a sync holds its target's lock for all its parts
    with contextlib.nullcontext() if job.sync else OutputLock.take(job.out, "invoices"):
        return await _run_locked(job, credentials, selection, stream, sleep)


async def _run_locked(
    job: InvoiceJob,
    credentials: Credentials,
    selection: Selection,
    stream: IO[str],
    sleep: Sleep,
) -> dict[str, Any]:
    job_print = fingerprint(job)
    output = output_of(job)
    datasets = ("invoices", "invoice_rows") if output.format == "parquet" else ()
    # a sync lists what changed and adds what its last run could not fetch; a backfill that
    # finished partial fetches again exactly what it could not fetch
    done = latest_run(job.out) if job.sync else finished_job(job.out, job_print, datasets)
    carried = carried_over(job.out, done) if unfinished(job.out) is None else None
    if done is not None and carried is None and not job.sync:
        stream.write(f"run {done['run_id']} already finished this job ({done['status']}); ")
        stream.write("nothing to do\n")
        return done
    if carried is not None:
        stream.write(
            f"run {carried.run_id} could not fetch {len(carried.ids):,} ids; fetching them again\n"
        )
    journal = Journal.open(job.out, new_run_id(), job_print)
    try:
        summary = await _run(job, credentials, selection, journal, stream, sleep, carried)
    finally:
        journal.close()  # a run stopped before its plan leaves nothing to resume: discarded
    journal.finish()
    return summary


async def _run(
    job: InvoiceJob,
    credentials: Credentials,
    selection: Selection,
    journal: Journal,
    stream: IO[str],
    sleep: Sleep,
    carried: Carried | None,
) -> dict[str, Any]:
    state = journal.state
    stats = RunStats(state.run_id)
    stats.restore(state)
    transport = Transport.for_run(
        job.base_url,
        job.soap_version,
        concurrency=job.concurrency,
        timeouts=job.timeouts,
        max_requests_per_hour=job.max_requests_per_hour,
        insecure=job.insecure,
    )
    limiter = transport.limiter
    tables = InvoiceTables(job.out, selection, state.run_id)
    progress = Progress(stats, stream, limiter=limiter)
    try:
        if state.starts > 1:
            removed = tables.prune(set(state.staged))
            progress.say(
                f"resuming run {state.run_id}: {len(state.staged)} batches on disk, "
                f"{removed} unfinished files removed"
            )
        session = Session(transport, credentials, sleep)
        await session.login()
        if not state.published:
            await _fetch_and_publish(
                job, session, selection, journal, stats, tables, progress, sleep, carried
            )
        stats.relogins = session.logins - 1
        stats.requests = session.requests
        stats.quarantines = limiter.quarantines
    finally:
        await progress.stop()
        await transport.close()
    tables.tidy()
    return _finish(job, journal.state, stats)


async def _fetch_and_publish(
    job: InvoiceJob,
    session: Session,
    selection: Selection,
    journal: Journal,
    stats: RunStats,
    tables: InvoiceTables,
    progress: Progress,
    sleep: Sleep,
    carried: Carried | None,
) -> None:
    state = journal.state
    sinks: LocalSinks | ParsePool = (
        ParsePool(job.parse_workers, selection, job.out, state.run_id)
        if job.parse_workers
        else LocalSinks(selection, tables, backlog=job.concurrency)
    )
    context = FetchContext(job, session, selection, stats, sleep, journal, sinks)
    if state.plan is None:
        journal.append(await _plan(context, carried))
    remaining = state.remaining()
    stats.ids_total = len(state.plan or ())
    stats.ids_done = stats.ids_total - len(remaining)
    progress.say(f"{stats.ids_total:,} orders planned, {len(remaining):,} to fetch")
    progress.start()
    started = time.monotonic()
    prefix = f"{state.starts:02d}"

    async def refetch(round_: int) -> None:
        await fetch_all(context, state.remaining(), prefix=f"{prefix}r{round_}")

    try:
        async with sinks:
            await fetch_all(context, remaining, prefix=prefix)
            await until_all_staged(journal, tables.writers, refetch, progress.say)
    except BaseExceptionGroup as group_error:
        raise first_error(group_error) from None
    stats.fetch_seconds = round(time.monotonic() - started, 3)
    present = await list_ids(context, None) if job.reconcile else None
    started = time.monotonic()
    output = output_of(job)
    publishing = functools.partial(output.publish, tables.writers, state.run_info(), present)
    stats.written = await asyncio.get_running_loop().run_in_executor(None, publishing)
    stats.files = stats.written.get("files", 0)
    journal.append({"event": "published", "written": stats.written})
    stats.publish_seconds = round(time.monotonic() - started, 3)


async def _plan(context: FetchContext, carried: Carried | None) -> dict[str, Any]:
    """The plan event: the listed ids (a sync's, or a first backfill's), plus the ids the
    last run could not fetch; a retry of a backfill keeps that run's as-of time."""
    job = context.job
    if carried is not None and not job.sync:
        as_of = carried.as_of or now().isoformat()
        ids = ids_of(carried.ids)
        return {"event": "plan", "ids": ids, "as_of": as_of, "retry_of": carried.run_id}
    as_of = now().isoformat()
    ids = await list_ids(context, job.changed_after)
    if carried is None:
        return {"event": "plan", "ids": ids, "as_of": as_of}
    ids = unique(ids + ids_of(carried.ids))
    return {"event": "plan", "ids": ids, "as_of": as_of, "retry_of": carried.run_id}


def _finish(job: InvoiceJob, state: RunState, stats: RunStats) -> dict[str, Any]:
    stats.restore(state)  # the journal's counts: every batch of the run, resumed or not
    if output_of(job).format == "parquet" and "invoices" in stats.written:
        stats.invoices = stats.written["invoices"]  # what was written, not what was meant to be
        stats.rows = stats.written.get("invoice_rows", 0)
    status = "partial" if state.failures or state.missing else "complete"
    summary = stats.summary(status, job.out)
    summary["output"], summary["format"] = output_of(job).target.uri, output_of(job).format
    summary["job"] = state.fingerprint
    summary["retry_of"] = state.retry_of
    summary["failures_report"] = _write_failures(job, state)
    write_summary(summary, job.out)
    return summary


def _write_failures(job: InvoiceJob, state: RunState) -> str | None:
    """``OUT/_failures/<run_id>.jsonl``: one line per id the run could not fetch, streamed
    (a run may leave millions), each error encoded once for all the ids it stopped."""
    groups = [(failure["ids"], failure["error"]) for failure in state.failures]
    groups.append((state.missing, "not returned by GetInvoices"))
    if not any(ids for ids, _ in groups):
        return None
    path = job.out / FAILURES_DIR / f"{state.run_id}.jsonl"
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("wb") as report:
            for ids, error in groups:
                tail = b',"error":' + redact.mask_bytes(orjson.dumps(error)) + b"}\n"
                for at in range(0, len(ids), 10_000):
                    report.write(
                        b"".join(b'{"OrderId":%d%s' % (i, tail) for i in ids[at : at + 10_000])
                    )
        temporary.rename(path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return str(path)


def _check_job(job: InvoiceJob) -> None:
    check_output_dir(job.out)
    if not 1 <= job.batch_size <= MAX_BATCH:
        raise UsageError(f"--batch-size {job.batch_size} is outside 1..{MAX_BATCH}")
    if job.concurrency < 1:
        raise UsageError(f"--concurrency {job.concurrency} must be at least 1")
    if job.max_requests_per_hour < 0:
        raise UsageError("--max-requests-per-hour must be 0 (no limit) or more")
    if job.resume and unfinished(job.out) is None:
        raise UsageError(f"--resume: --out {job.out} holds no unfinished run")
    try:
        job.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create --out {job.out}: {exc.strerror or exc}") from None
