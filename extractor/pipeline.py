"""The invoices backfill: login, list ids, fetch batches concurrently, write partitions."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from extractor import invoices, soap
from extractor.config import Credentials, InvoiceJob, check_output_dir
from extractor.errors import ExtractorError, OutputError, TransientError, UsageError
from extractor.invoices import Batch, OrderSink, Selection
from extractor.parser import RecordStream
from extractor.progress import Progress, RunStats, write_summary
from extractor.retry import Sleep, retrying
from extractor.session import Session
from extractor.transport import Transport
from extractor.writer import TableWriter


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
        self, operation: soap.Operation, params: Mapping[str, Any], sink: Callable[[], RecordStream]
    ) -> RecordStream:
        """One operation with retries on transient errors."""

        def count_retry(_: BaseException) -> None:
            self.stats.retries += 1

        async for attempt in retrying(self.job.retry, self.sleep, count_retry):
            with attempt:
                self.stats.requests += 1
                stream = await self.session.call(operation, params, sink)
                self.stats.bytes_received += stream.bytes_fed
        assert isinstance(stream, RecordStream)
        return stream


class _Tables:
    """The run's tables: staged from one background thread, published at the end."""

    def __init__(self, out: Path, selection: Selection, run_id: str) -> None:
        self.orders = TableWriter(
            out, "invoices", selection.order_schema, invoices.PARTITION, run_id
        )
        self.rows = (
            TableWriter(out, "invoice_rows", selection.row_schema, invoices.PARTITION, run_id)
            if selection.wants_rows
            else None
        )
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage")
        self._staging = out / "_staging"
        self._run_staging = self._staging / run_id

    def stage(self, name: str, batch: Batch) -> None:
        self.orders.stage(name, batch.orders, batch.order_partitions)
        if self.rows is not None:
            self.rows.stage(name, batch.rows, batch.row_partitions)

    def publish(self) -> int:
        files = self.orders.publish()
        if self.rows is not None:
            files += self.rows.publish()
        self._tidy()
        return len(files)

    def discard(self) -> None:
        self.orders.discard()
        if self.rows is not None:
            self.rows.discard()
        self._tidy()

    def _tidy(self) -> None:
        shutil.rmtree(self._run_staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            self._staging.rmdir()  # only when no other run left anything staged


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
    finally:
        await progress.stop()
        await transport.close()
    status = "partial" if stats.failed_ids or stats.missing_ids else "complete"
    summary = stats.summary(status, job.out)
    write_summary(summary, job.out)
    return summary


def _check_job(job: InvoiceJob) -> None:
    check_output_dir(job.out)
    if not 1 <= job.batch_size <= 1000:
        raise UsageError(f"--batch-size {job.batch_size} is outside 1..1000")
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


_DONE: Final = None


async def _fetch_all(context: _Context, ids: Sequence[int]) -> int:
    """Fetch every batch, stage it, publish the partitions; the number of files written."""
    size = context.job.batch_size
    batches: Iterator[tuple[int, Sequence[int]]] = (
        (number, ids[at : at + size]) for number, at in enumerate(range(0, len(ids), size))
    )
    tables = _Tables(context.job.out, context.selection, context.stats.run_id)
    started = time.monotonic()
    # fetched responses wait here for the staging thread; bounded, so memory is too
    staged: asyncio.Queue[tuple[int, OrderSink] | None] = asyncio.Queue(context.job.concurrency)
    try:
        try:
            async with asyncio.TaskGroup() as group:
                stager = group.create_task(_stager(context.stats, staged, tables))
                workers = [
                    group.create_task(_worker(context, batches, staged))
                    for _ in range(context.job.concurrency)
                ]
                await asyncio.gather(*workers)
                await staged.put(_DONE)
                await stager
        finally:
            tables.pool.shutdown(wait=True)
        context.stats.fetch_seconds = round(time.monotonic() - started, 3)
        started = time.monotonic()
        files = await asyncio.get_running_loop().run_in_executor(None, tables.publish)
        context.stats.publish_seconds = round(time.monotonic() - started, 3)
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
    staged: asyncio.Queue[tuple[int, OrderSink] | None],
) -> None:
    stats = context.stats
    for number, batch in batches:
        params = context.selection.params(batch)
        try:
            sink = await context.call(
                soap.GET_INVOICES, params, functools.partial(OrderSink, context.selection, batch)
            )
        except TransientError as exc:
            stats.failed_ids += len(batch)
            stats.failures.append({"ids": list(batch), "error": f"{type(exc).__name__}: {exc}"})
            stats.ids_done += len(batch)
            continue
        assert isinstance(sink, OrderSink)
        await staged.put((number, sink))


async def _stager(
    stats: RunStats, staged: asyncio.Queue[tuple[int, OrderSink] | None], tables: _Tables
) -> None:
    """Stage fetched batches on the writer thread, in the order they arrive."""
    loop = asyncio.get_running_loop()
    while (item := await staged.get()) is not _DONE:
        number, sink = item
        for part_number, part in enumerate(sink.batches):
            name = f"{number:08d}-{part_number:03d}"
            await loop.run_in_executor(tables.pool, tables.stage, name, part)
            stats.invoices += part.orders.num_rows
            stats.rows += part.rows.num_rows
            stats.api_exceptions += _api_exceptions(part)
        if sink.missing:
            stats.missing_ids += len(sink.missing)
            stats.failures.append({"ids": sink.missing, "error": "not returned by GetInvoices"})
        stats.ids_done += sink.requested


def _api_exceptions(part: Batch) -> int:
    if "APIException" not in part.orders.column_names:
        return 0
    return part.orders.num_rows - part.orders.column("APIException").null_count


def _first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_error(error)
        if isinstance(error, ExtractorError):
            return error
    return group.exceptions[0]
