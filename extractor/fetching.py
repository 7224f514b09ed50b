"""Fetching a run's batches: bounded workers, retries, and batches split in halves on failure.

A batch that still fails after its retries is fetched again in halves, each once, down to
single ids, which get their full retries; when the first half succeeds, the second must hold
the failure and is split at once. Ids that fail alone are journaled as failed; every other
order of the batch is written. A batch counts as done only once the journal holds it, which
happens after its staged files are on disk.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from extractor import invoices, redact, soap
from extractor.batches import BatchCounts, CountedSink, LocalSinks, ParsePool
from extractor.config import InvoiceJob, RetryPolicy
from extractor.errors import (
    DataError,
    ExtractorError,
    OutputError,
    ResponseTooLarge,
    TransientError,
)
from extractor.invoices import Selection
from extractor.journal import Journal, forget_lost
from extractor.progress import RunStats
from extractor.retry import Sleep, persistently
from extractor.session import Session
from extractor.transport import Sink
from extractor.writer import TableWriter

S = TypeVar("S", bound=Sink)
#: What makes a batch split in halves rather than stop the run.
SPLITTABLE: Final = (TransientError, DataError, ResponseTooLarge)


@dataclass
class FetchContext:
    job: InvoiceJob
    session: Session
    selection: Selection
    stats: RunStats
    sleep: Sleep
    journal: Journal
    sinks: LocalSinks | ParsePool
    journaling: list[asyncio.Task[None]] = field(default_factory=list)

    async def call(
        self,
        operation: soap.Operation,
        params: Mapping[str, Any],
        sink: Callable[[], S],
        policy: RetryPolicy | None = None,
    ) -> S:
        """One operation with retries on transient errors, sitting out quarantines."""

        def count_retry(_: BaseException) -> None:
            self.stats.retries += 1

        async def attempt() -> S:
            return await self.session.call(operation, params, sink)

        stream = await persistently(attempt, policy or self.job.retry, self.sleep, count_retry)
        self.stats.bytes_received += stream.bytes_fed
        return stream

    def fail(self, ids: Sequence[int], error: BaseException) -> None:
        message = redact.mask(f"{type(error).__name__}: {error}")
        self.journal.append({"event": "failed", "ids": list(ids), "error": message})
        self.stats.failed_ids += len(ids)
        self.stats.ids_done += len(ids)

    async def journal_when_staged(
        self, staged: asyncio.Future[None], key: str, ids: Sequence[int], counts: BatchCounts
    ) -> None:
        """Once the batch is on disk, journal it: the journal is what a resume trusts."""
        await staged
        self.journal.append(
            {
                "event": "staged",
                "key": key,
                "ids": list(ids),
                "counts": {
                    "invoices": counts.invoices,
                    "rows": counts.rows,
                    "api_exceptions": counts.api_exceptions,
                },
                "missing": counts.missing,
            }
        )


async def list_ids(context: FetchContext, changed_after: dt.datetime | None) -> list[int]:
    """GetOrderSyncList: the ids changed after ``changed_after`` (None: every id), within the
    job's RegisteredAfter."""
    params = invoices.sync_params(changed_after, context.job.registered_after)
    stream = await context.call(soap.GET_ORDER_SYNC_LIST, params, invoices.id_stream)
    return list(dict.fromkeys(stream.records))  # the service may repeat an id


async def fetch_all(context: FetchContext, ids: Sequence[int], prefix: str) -> None:
    """Fetch every batch with ``concurrency`` workers; wait until each is staged."""
    size = context.job.batch_size
    batches: Iterator[tuple[str, Sequence[int]]] = (
        (f"{prefix}-{number:08d}", ids[at : at + size])
        for number, at in enumerate(range(0, len(ids), size))
    )
    async with asyncio.TaskGroup() as group:
        for _ in range(context.job.concurrency):
            group.create_task(_worker(context, batches))
    await asyncio.gather(context.sinks.drain(), *context.journaling)


async def _worker(context: FetchContext, batches: Iterator[tuple[str, Sequence[int]]]) -> None:
    for key, ids in batches:
        await _fetch_or_split(context, ids, key, context.job.retry)


async def _fetch(context: FetchContext, ids: Sequence[int], key: str, policy: RetryPolicy) -> None:
    """Fetch ``ids`` in one request; journal them once their staged files are on disk."""
    opener = functools.partial(context.sinks.open, ids, key)
    sink: CountedSink = await context.call(
        soap.GET_INVOICES, context.selection.params(ids), opener, policy
    )
    counts, stats = sink.counts, context.stats
    stats.invoices += counts.invoices
    stats.rows += counts.rows
    stats.api_exceptions += counts.api_exceptions
    stats.missing_ids += len(counts.missing)
    stats.ids_done += len(ids)
    context.journaling.append(
        asyncio.create_task(context.journal_when_staged(sink.staged, key, ids, counts))
    )


async def _fetch_or_split(
    context: FetchContext, ids: Sequence[int], key: str, policy: RetryPolicy
) -> None:
    try:
        await _fetch(context, ids, key, policy)
        return
    except SPLITTABLE as exc:
        context.stats.give_ups += 1
        if len(ids) == 1:
            context.fail(ids, exc)
            return
    context.stats.splits += 1
    await _split(context, ids, key)


async def _split(context: FetchContext, ids: Sequence[int], key: str) -> None:
    """``ids`` failed together: fetch the halves once each; recurse into the failing ones.

    When the first half succeeds, the second must hold the failure and is split at once.
    A single id always gets its own full retries before it is reported.
    """
    full, once = context.job.retry, context.job.retry.single()
    half = (len(ids) + 1) // 2
    first, second = ids[:half], ids[half:]
    try:
        await _fetch(context, first, f"{key}a", full if len(first) == 1 else once)
    except SPLITTABLE as exc:
        context.stats.give_ups += 1
        if len(first) == 1:
            context.fail(first, exc)
        else:
            context.stats.splits += 1
            await _split(context, first, f"{key}a")
        await _fetch_or_split(context, second, f"{key}b", full if len(second) == 1 else once)
        return
    if len(second) == 1:
        await _fetch_or_split(context, second, f"{key}b", full)
    else:
        context.stats.splits += 1
        await _split(context, second, f"{key}b")


#: Rounds of fetching again batches whose staged files vanished, before the run gives up.
MAX_REFETCH_ROUNDS: Final = 3


async def until_all_staged(
    journal: Journal,
    writers: Sequence[TableWriter],
    refetch: Callable[[int], Awaitable[None]],
    say: Callable[[str], None],
) -> None:
    """Before anything is published: every batch the journal lists must be on disk with the
    records it journaled; a missing or short one is fetched again (``refetch(round)``), never
    published short. Then only the journal's batches are published."""
    for round_ in range(1, MAX_REFETCH_ROUNDS + 2):
        lost = forget_lost(journal, writers)
        if not lost:
            break
        if round_ > MAX_REFETCH_ROUNDS:
            raise OutputError(
                f"{len(lost)} staged batches vanished from {writers[0].staging.parent} again "
                f"after {MAX_REFETCH_ROUNDS} rounds of fetching them; is something else "
                "deleting files there? Run the same command again to resume"
            )
        say(f"{len(lost)} staged batches were missing or short on disk; fetching them again")
        await refetch(round_)
    for writer in writers:
        writer.keep = set(journal.state.batches)


def first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return first_error(error)
        if isinstance(error, ExtractorError):
            return error
    return group.exceptions[0]
