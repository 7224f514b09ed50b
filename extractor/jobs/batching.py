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

from extractor import redact, soap
from extractor.config import InvoiceJob, RetryPolicy
from extractor.errors import (
    DataError,
    ExtractorError,
    OutputError,
    Quarantined,
    ResponseTooLarge,
    TransientError,
)
from extractor.ids import Ids, unique
from extractor.jobs.parsing import BatchCounts, CountedSink, LocalSinks, ParsePool
from extractor.output.staging import TableWriter
from extractor.records import orders
from extractor.records.orders import Selection
from extractor.runs.journal import Journal, forget_lost
from extractor.runs.progress import RunStats
from extractor.service.health import Health, same_failure
from extractor.service.retry import Sleep, persistently
from extractor.service.session import Session
from extractor.service.transport import Sink

S = TypeVar("S", bound=Sink)
T = TypeVar("T")
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
    health: Health | None = None

    def __post_init__(self) -> None:
        if self.health is None:
            self.health = Health.for_workers(self.job.concurrency)

    async def call(
        self,
        operation: soap.Operation,
        params: Mapping[str, Any],
        sink: Callable[[], S],
        policy: RetryPolicy | None = None,
        batch: str | None = None,
    ) -> S:
        """One operation with retries on transient errors, sitting out quarantines; each
        attempt of a ``batch`` tells the run's :class:`Health`."""

        def count_retry(_: BaseException) -> None:
            self.stats.retries += 1

        async def attempt() -> S:
            if batch is None:
                return await self.session.call(operation, params, sink)
            return await observed(self.health, batch, self.session.call(operation, params, sink))

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


async def list_ids(context: FetchContext, changed_after: dt.datetime | None) -> Ids:
    """GetOrderSyncList: the ids changed after ``changed_after`` (None: every id), within the
    job's RegisteredAfter; each once (the service may repeat one)."""
    params = orders.sync_params(changed_after, context.job.registered_after)
    stream = await context.call(soap.GET_ORDER_SYNC_LIST, params, orders.id_stream)
    return unique(stream.ids)


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
        await _fetch_or_split(context, ids, key, context.job.retry, key)


async def _fetch(
    context: FetchContext, ids: Sequence[int], key: str, policy: RetryPolicy, root: str
) -> None:
    """Fetch ``ids`` in one request; journal them once their staged files are on disk."""
    opener = functools.partial(context.sinks.open, ids, key)
    sink: CountedSink = await context.call(
        soap.GET_INVOICES, context.selection.params(ids), opener, policy, batch=root
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


async def _tried(
    context: FetchContext, ids: Sequence[int], key: str, policy: RetryPolicy, root: str
) -> BaseException | None:
    """Fetch ``ids``; the error it still failed with after its retries, or None."""
    try:
        await _fetch(context, ids, key, policy, root)
    except SPLITTABLE as exc:
        context.stats.give_ups += 1
        return exc
    return None


async def _fetch_or_split(
    context: FetchContext, ids: Sequence[int], key: str, policy: RetryPolicy, root: str
) -> None:
    error = await _tried(context, ids, key, policy, root)
    if error is None:
        return
    if len(ids) == 1:
        context.fail(ids, error)
        return
    context.stats.splits += 1
    await _split(context, ids, key, root)


async def _split(
    context: FetchContext, ids: Sequence[int], key: str, root: str, levels: int = 0
) -> None:
    """``ids`` failed together: fetch the halves once each; recurse into the failing ones.

    When the first half succeeds, the second must hold the failure and is split at once.
    A single id always gets its own full retries before it is reported. Halves that fail
    the same way, ``levels`` splits in a row, mean the service is failing: the run stops.
    """
    full, once = context.job.retry, context.job.retry.single()
    half = (len(ids) + 1) // 2
    parts = ((ids[:half], f"{key}a"), (ids[half:], f"{key}b"))
    (first, first_key), (second, second_key) = parts
    first_error = await _tried(context, first, first_key, full if len(first) == 1 else once, root)
    if first_error is None:
        if len(second) == 1:
            await _fetch_or_split(context, second, second_key, full, root)
        else:
            context.stats.splits += 1
            await _split(context, second, second_key, root)
        return
    policy = full if len(second) == 1 else once
    second_error = await _tried(context, second, second_key, policy, root)
    levels = levels + 1 if same_failure(first_error, second_error) else 0
    assert context.health is not None
    context.health.halves_failed(levels, f"batch {root}")
    for (part, part_key), error in zip(parts, (first_error, second_error), strict=True):
        if error is None:
            continue
        if len(part) == 1:
            context.fail(part, error)
        else:
            context.stats.splits += 1
            await _split(context, part, part_key, root, levels)


async def observed(health: Health | None, batch: str, call: Awaitable[T]) -> T:
    """``call``, its outcome told to ``health`` (a quarantine or an expiry is neither)."""
    try:
        result = await call
    except SPLITTABLE as exc:
        throttled = isinstance(exc, Quarantined) or getattr(exc, "status", None) == 429
        if health is not None and not throttled:  # rate limits are waited out, not failures
            health.failed(batch, exc)
        raise
    if health is not None:
        health.succeeded()
    return result


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
