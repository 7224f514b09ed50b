"""The workers of every job: as many as the concurrency may reach take units of work (a batch
of ids, a date window, a batch of updates) and fetch each, splitting the ones that keep failing.

A unit that still fails after its retries with a :class:`~extractor.errors.SplitsBatch` is
fetched again in halves, each once, down to what cannot be halved, which gets its full
retries before the job reports it. When the first half succeeds the second must hold the
failure and is split at once. Halves that fail the same way, split after split, mean the
service is failing, not a record (:class:`~extractor.service.health.Health`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Self, TypeVar

from extractor import soap
from extractor.clock import Clock
from extractor.config import RetryPolicy, ServiceConfig
from extractor.engine.stats import RunStats
from extractor.errors import (
    ExtractorError,
    ParserDied,
    Quarantined,
    SessionExpired,
    SplitsBatch,
    first_line,
)
from extractor.log import Log
from extractor.parser import Sink
from extractor.service.health import Health, same_failure
from extractor.service.retry import persistently
from extractor.service.session import Session

S = TypeVar("S", bound=Sink)
T = TypeVar("T")


class Unit(Protocol):
    """A piece of a job fetched in one request."""

    @property
    def key(self) -> str: ...

    @property
    def size(self) -> int:
        """What it counts for in the progress line (ids, days, updates)."""
        ...

    def halves(self) -> tuple[Self, Self] | None:
        """Its two halves; None when it cannot be halved (one id, one day, any update)."""
        ...


U = TypeVar("U", bound=Unit)
U_contra = TypeVar("U_contra", bound=Unit, contravariant=True)


class Fetcher(Protocol[U_contra]):
    """What a job does with one unit: fetch it with ``policy``, or report it failed."""

    @property
    def what(self) -> str:
        """How a unit is named in messages ("batch", "the window")."""
        ...

    async def fetch(self, run: Run, unit: U_contra, policy: RetryPolicy, root: str) -> None: ...

    def failed(self, run: Run, unit: U_contra, error: BaseException) -> None: ...


@dataclass
class Run:
    """What every worker of one run shares: the session, its counters, its judgement of the
    service and the run's clock."""

    service: ServiceConfig
    session: Session
    stats: RunStats
    clock: Clock
    health: Health
    log: Log | None = None  # debug events: each retry, each batch given up

    async def call(
        self,
        operation: soap.Operation,
        params: Mapping[str, Any],
        sink: Callable[[], S],
        policy: RetryPolicy | None = None,
        batch: str | None = None,
        attempted: Callable[[], object] | None = None,
    ) -> S:
        """One operation with retries on transient errors, sitting out quarantines; each
        attempt of a ``batch`` tells the run's :class:`Health` (and ``attempted``)."""

        def count_retry(error: BaseException) -> None:
            self.stats.retries += 1
            if self.log is not None:
                self.log.debug(
                    "retry", f"{operation.name}{f' {batch}' if batch else ''}: retrying after "
                    f"{first_line(error)}", operation=operation.name, batch=batch,
                )  # fmt: skip

        async def attempt() -> S:
            if attempted is not None:
                attempted()
            call = self.session.call(operation, params, sink)
            return await (call if batch is None else observed(self.health, batch, call))

        stream = await persistently(
            attempt, policy or self.service.retry, self.clock.sleep, count_retry
        )
        self.stats.bytes_received += stream.bytes_fed
        return stream


async def work_through(run: Run, fetcher: Fetcher[U], units: Iterable[U]) -> None:
    """Every unit, by as many requests in flight as the concurrency lets (fixed, or adapted to
    the service by the transport's :class:`~extractor.service.concurrency.Slots`) and half as
    many more workers; the first error that stops one stops all."""
    queue: Iterator[U] = iter(units)

    async def worker() -> None:
        for unit in queue:
            await _fetch_or_split(run, fetcher, unit, run.service.retry, unit.key)

    # more workers than requests in flight (the transport holds those to the concurrency, and
    # the calls in progress to half as many more): a worker whose body is in finishes its
    # parse while another's request goes out
    most = run.service.most_in_flight
    workers = most + max(1, most // 2)
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())
    except BaseExceptionGroup as errors:
        raise first_error(errors) from None


async def _tried(
    run: Run, fetcher: Fetcher[U], unit: U, policy: RetryPolicy, root: str
) -> BaseException | None:
    """Fetch ``unit``; the error it still failed with after its retries, or None."""
    try:
        await fetcher.fetch(run, unit, policy, root)
    except SplitsBatch as exc:
        run.stats.give_ups += 1
        return exc
    run.stats.done += unit.size
    return None


async def _fetch_or_split(
    run: Run, fetcher: Fetcher[U], unit: U, policy: RetryPolicy, root: str
) -> None:
    error = await _tried(run, fetcher, unit, policy, root)
    if error is None:
        return
    halves = unit.halves()
    if halves is None:
        _failed(run, fetcher, unit, error)
        return
    run.stats.splits += 1
    await _split(run, fetcher, halves, root)


async def _split(
    run: Run, fetcher: Fetcher[U], halves: tuple[U, U], root: str, levels: int = 0
) -> None:
    """The halves of a unit that failed: each fetched once (what cannot be halved with its
    full retries); recurse into the failing ones."""
    first, second = halves
    first_error = await _tried(run, fetcher, first, _policy(run, first), root)
    if first_error is None:
        await _split_or_fetch(run, fetcher, second, root, levels=0)
        return
    second_error = await _tried(run, fetcher, second, _policy(run, second), root)
    levels = levels + 1 if same_failure(first_error, second_error) else 0
    run.health.halves_failed(levels, f"{fetcher.what} {root}")
    for part, error in zip(halves, (first_error, second_error), strict=True):
        if error is None:
            continue
        parts = part.halves()
        if parts is None:
            _failed(run, fetcher, part, error)
        else:
            run.stats.splits += 1
            await _split(run, fetcher, parts, root, levels)


async def _split_or_fetch(run: Run, fetcher: Fetcher[U], unit: U, root: str, levels: int) -> None:
    """The half left holding a failure: split at once, or fetched with full retries."""
    parts = unit.halves()
    if parts is None:
        await _fetch_or_split(run, fetcher, unit, run.service.retry, root)
        return
    run.stats.splits += 1
    await _split(run, fetcher, parts, root, levels)


def _policy(run: Run, unit: Unit) -> RetryPolicy:
    full = run.service.retry
    return full if unit.halves() is None else full.single()


def _failed(run: Run, fetcher: Fetcher[U], unit: U, error: BaseException) -> None:
    if run.log is not None:
        run.log.debug(
            "gave_up", f"{fetcher.what} {unit.key}: gave up: {first_line(error)}",
            unit=unit.key, size=unit.size,
        )  # fmt: skip
    fetcher.failed(run, unit, error)
    run.stats.done += unit.size


async def observed(health: Health | None, batch: str, call: Awaitable[T]) -> T:
    """``call``, its outcome told to ``health`` (a quarantine or an expiry is neither)."""
    try:
        result = await call
    except SplitsBatch as exc:
        throttled = isinstance(exc, Quarantined) or getattr(exc, "status", None) == 429
        expired = isinstance(exc, SessionExpired)  # a new login answers it, not the service
        ours = isinstance(exc, ParserDied)  # the run's own parser, not the service, failed
        if health is not None and not (throttled or expired or ours):  # not the service's
            health.failed(batch, exc)
        raise
    if health is not None:
        health.succeeded()
    return result


def first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return first_error(error)
        if isinstance(error, ExtractorError):
            return error
    return group.exceptions[0]
