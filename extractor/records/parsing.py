"""Where a GetInvoices body goes: parsed while it arrives, staged, counted.

Two places with one interface (``open(ids, name)`` returns a
:class:`~extractor.parser.Sink` whose ``counts`` are set once ``finish`` returns):

- :class:`LocalSinks` parses on the event loop and stages on a writer thread;
- :class:`~extractor.records.parse_pool.ParsePool` forwards each chunk, as it arrives, to one of
  N parser processes that run the same :class:`~extractor.parser.PartStream` and send back
  its raw parts, so parsing uses every core while the event loop keeps all HTTP (session,
  retries) in one place; the parts are typed on a thread here and staged.

Both stage through one :class:`Stager`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import pyarrow as pa

from extractor.output.staging import ALONE, Placement, TableWriter
from extractor.parser import Sink
from extractor.records import orders
from extractor.records.orders import Batch, OrderSink, Selection


@dataclass
class BatchCounts:
    """What one fetched batch added to the dataset."""

    invoices: int = 0
    rows: int = 0
    api_exceptions: int = 0
    missing: list[int] = field(default_factory=list)


class CountedSink(Sink, Protocol):
    """A sink that, once finished, says what its batch added, and when that is on disk."""

    counts: BatchCounts
    staged: asyncio.Future[None]  # set by ``finish``; done once every staged file is renamed


class InvoiceTables:
    """A run's ``invoices`` and ``invoice_rows`` tables: staged per batch, published at the end."""

    def __init__(
        self, out: Path, selection: Selection, run_id: str, placement: Placement = ALONE
    ) -> None:
        partition = orders.PARTITION
        self.orders = TableWriter(
            out, "invoices", selection.order_schema, partition, run_id, placement=placement
        )
        self.rows = (
            TableWriter(
                out,
                "invoice_rows",
                selection.row_schema,
                partition,
                run_id,
                counted_as="rows",
                placement=placement,
            )
            if selection.wants_rows
            else None
        )
        self._staging = out / "_staging"
        self._run_staging = self._staging / run_id

    def stage(self, batch: Batch | None, name: str) -> None:
        """Stage one fetched batch under ``name``."""
        if batch is None:
            return
        self.orders.stage(name, batch.orders, batch.order_partitions)
        if self.rows is not None:
            self.rows.stage(name, batch.rows, batch.row_partitions)

    @property
    def writers(self) -> list[TableWriter]:
        return [self.orders] if self.rows is None else [self.orders, self.rows]

    def prune(self, staged: set[str]) -> int:
        """Before a resume: remove what a killed run left half-done; the number of files."""
        return sum(writer.prune(staged) for writer in self.writers)

    def tidy(self) -> None:
        shutil.rmtree(self._run_staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            self._staging.rmdir()  # only when no other run left anything staged


def count(batch: Batch | None, missing: list[int]) -> BatchCounts:
    """What a fetched batch adds to the dataset."""
    if batch is None:
        return BatchCounts(missing=missing)
    table = batch.orders
    api = table.column("APIException").null_count if "APIException" in table.column_names else 0
    exceptions = table.num_rows - api if "APIException" in table.column_names else 0
    return BatchCounts(table.num_rows, batch.rows.num_rows, int(exceptions), missing)


#: Typed batches waiting to be staged, at most (a 1000-order batch of every field: ~2.5 MB;
#: 16 MB held more at the tree's peak, for no speed).
BACKLOG_BYTES: Final = 8 * 1024 * 1024


class Stager:
    """Stages fetched batches on one writer thread, behind the fetching. At most ``backlog``
    batches, and :data:`BACKLOG_BYTES` of them, wait in memory for it: a wave of small
    batches is queued at once (their fetches go on), a few large ones hold the next back."""

    def __init__(self, tables: InvoiceTables, backlog: int) -> None:
        self.tables = tables
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage")
        self._backlog = backlog
        self._queued = 0  # batches queued, not yet on disk
        self._held = 0  # and their bytes
        self._room = asyncio.Event()
        self._staging: set[asyncio.Future[None]] = set()  # since the last drain

    async def stage_later(self, batch: Batch | None, name: str) -> asyncio.Future[None]:
        """Queue ``batch`` for staging (waiting while the backlog is full); done once on disk."""
        size = 0 if batch is None else batch.orders.nbytes + batch.rows.nbytes
        while self._queued and (self._queued >= self._backlog or self._held + size > BACKLOG_BYTES):
            self._room.clear()
            await self._room.wait()
        self._queued += 1
        self._held += size
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.pool, self._stage, batch, name)
        self._staging.add(future)
        future.add_done_callback(lambda _: self._staged(size))
        return future

    def _staged(self, size: int) -> None:
        self._queued -= 1
        self._held -= size
        self._room.set()

    async def drain(self) -> None:
        """Wait until every fetched batch is staged; raise the first staging error."""
        await asyncio.gather(*self._staging)
        self._staging.clear()

    def _stage(self, batch: Batch | None, name: str) -> None:
        self.tables.stage(batch, name)
        del batch
        pa.default_memory_pool().release_unused()  # mimalloc keeps freed pages otherwise

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class LocalSink(OrderSink):
    """Parses on the event loop; stages on the writer thread when the body is complete."""

    def __init__(self, owner: LocalSinks, ids: Sequence[int], name: str) -> None:
        super().__init__(owner.selection, ids)
        self._owner, self._name = owner, name
        self.counts = BatchCounts()

    async def finish(self) -> None:
        await super().finish()
        batch = self.combined()
        self.counts = count(batch, self.missing)
        self.staged = await self._owner.stager.stage_later(batch, self._name)


class LocalSinks:
    """Everything in this process: parsing on the event loop, staging by a :class:`Stager`."""

    def __init__(self, selection: Selection, tables: InvoiceTables, backlog: int) -> None:
        self.selection = selection
        self.stager = Stager(tables, backlog)

    def open(self, ids: Sequence[int], name: str) -> CountedSink:
        return LocalSink(self, ids, name)

    async def drain(self) -> None:
        await self.stager.drain()

    async def __aenter__(self) -> LocalSinks:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stager.close()
