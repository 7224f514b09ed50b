"""The invoices backfill: login, list ids, fetch batches concurrently, write partitions."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from extractor import invoices, soap
from extractor.batches import CountedSink, InvoiceTables, LocalSinks, ParsePool
from extractor.config import MAX_BATCH, Credentials, InvoiceJob, check_output_dir
from extractor.errors import ExtractorError, OutputError, TransientError, UsageError
from extractor.invoices import Selection
from extractor.progress import Progress, RunStats, write_summary
from extractor.retry import Sleep, retrying
from extractor.session import Session
from extractor.transport import Sink, Transport

S = TypeVar("S", bound=Sink)


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


@dataclass
class _Context:
    job: InvoiceJob
    session: Session
    selection: Selection
    stats: RunStats
    sleep: Sleep

    async def call(
        self, operation: soap.Operation, params: Mapping[str, Any], sink: Callable[[], S]
    ) -> S:
        """One operation with retries on transient errors."""

        def count_retry(_: BaseException) -> None:
            self.stats.retries += 1

        async for attempt in retrying(self.job.retry, self.sleep, count_retry):
            with attempt:
                stream = await self.session.call(operation, params, sink)
                self.stats.bytes_received += stream.bytes_fed
        return stream


async def run_invoices(
    job: InvoiceJob,
    credentials: Credentials,
    *,
    stream: IO[str] = sys.stderr,
    sleep: Sleep = asyncio.sleep,
) -> dict[str, Any]:
    """Run a backfill; returns the summary (also written to ``OUT/_runs/<run_id>.json``)."""
    selection = Selection.checked(job.invoice_properties, job.row_properties)
    _check_job(job)
    stats = RunStats(new_run_id())
    transport = Transport(
        job.base_url,
        soap.SOAP_VERSIONS[job.soap_version],
        concurrency=job.concurrency,
        timeouts=job.timeouts,
    )
    progress = Progress(stats, stream)
    try:
        session = Session(transport, credentials, sleep)
        await session.login()
        context = _Context(job, session, selection, stats, sleep)
        ids = await _list_ids(context)
        progress.say(f"listed {len(ids):,} orders; fetching in batches of {job.batch_size}")
        progress.start()
        stats.files = await _fetch_all(context, ids)
        stats.relogins = session.logins - 1
        stats.requests = session.requests
    finally:
        await progress.stop()
        await transport.close()
    status = "partial" if stats.failed_ids or stats.missing_ids else "complete"
    summary = stats.summary(status, job.out)
    write_summary(summary, job.out)
    return summary


def _check_job(job: InvoiceJob) -> None:
    check_output_dir(job.out)
    if not 1 <= job.batch_size <= MAX_BATCH:
        raise UsageError(f"--batch-size {job.batch_size} is outside 1..{MAX_BATCH}")
    if job.concurrency < 1:
        raise UsageError(f"--concurrency {job.concurrency} must be at least 1")
    for table in ("invoices", "invoice_rows"):
        if any((job.out / table).rglob("*.parquet")):
            raise UsageError(
                f"--out {job.out} already holds a dataset ({table}/); choose a new directory"
            )
    try:
        job.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create --out {job.out}: {exc.strerror or exc}") from None


async def _list_ids(context: _Context) -> list[int]:
    params = invoices.sync_params(context.job.changed_after, context.job.registered_after)
    stream = await context.call(soap.GET_ORDER_SYNC_LIST, params, invoices.id_stream)
    ids = list(dict.fromkeys(stream.records))  # the service may repeat an id
    context.stats.ids_total = len(ids)
    return ids


async def _fetch_all(context: _Context, ids: Sequence[int]) -> int:
    """Fetch every batch, stage it, publish the partitions; the number of files written."""
    size = context.job.batch_size
    batches: Iterator[tuple[int, Sequence[int]]] = (
        (number, ids[at : at + size]) for number, at in enumerate(range(0, len(ids), size))
    )
    job, stats = context.job, context.stats
    tables = InvoiceTables(job.out, context.selection, stats.run_id)
    sinks: LocalSinks | ParsePool = (
        ParsePool(job.parse_workers, context.selection, job.out, stats.run_id)
        if job.parse_workers
        else LocalSinks(context.selection, tables, backlog=job.concurrency)
    )
    started = time.monotonic()
    try:
        async with sinks:
            async with asyncio.TaskGroup() as group:
                for _ in range(job.concurrency):
                    group.create_task(_worker(context, batches, sinks))
            await sinks.drain()
        stats.fetch_seconds = round(time.monotonic() - started, 3)
        started = time.monotonic()
        files = await asyncio.get_running_loop().run_in_executor(None, tables.publish)
        stats.publish_seconds = round(time.monotonic() - started, 3)
        return files
    except BaseExceptionGroup as group_error:
        tables.discard()
        raise _first_error(group_error) from None
    except BaseException:
        tables.discard()
        raise


async def _worker(
    context: _Context,
    batches: Iterator[tuple[int, Sequence[int]]],
    sinks: LocalSinks | ParsePool,
) -> None:
    stats = context.stats
    for number, batch in batches:
        params = context.selection.params(batch)
        opener: Callable[[], CountedSink] = functools.partial(sinks.open, batch, f"{number:08d}")
        try:
            sink = await context.call(soap.GET_INVOICES, params, opener)
        except TransientError as exc:
            stats.failed_ids += len(batch)
            stats.failures.append({"ids": list(batch), "error": f"{type(exc).__name__}: {exc}"})
            stats.ids_done += len(batch)
            continue
        counts = sink.counts
        stats.invoices += counts.invoices
        stats.rows += counts.rows
        stats.api_exceptions += counts.api_exceptions
        if counts.missing:
            stats.missing_ids += len(counts.missing)
            stats.failures.append({"ids": counts.missing, "error": "not returned by GetInvoices"})
        stats.ids_done += len(batch)


def _first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_error(error)
        if isinstance(error, ExtractorError):
            return error
    return group.exceptions[0]
