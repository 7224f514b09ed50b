"""The whole-list strategy: one call returns a whole list; a run fetches each of its lists once.

A :class:`ListJob` runs any number of :class:`~extractor.engine.spec.Spec` of
:attr:`~extractor.engine.spec.Strategy.WHOLE_LIST` on the one engine
(:func:`~extractor.engine.runner.run`): the plan is the lists' tables, each list is a unit
keyed by its table, staged as one batch and journaled; a list whose call keeps failing is
reported, the others published. Nothing here names an operation: a new reference list is a
spec in :mod:`extractor.operations`.

Published as Parquet, each list is ``OUT/<table>/part-<run_id>.parquet`` (a fleet member's
under ``identity_id=<guid>/``); into Delta, each list replaces its table (its identity's part
of it), as ``sync`` keeps them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Self

import pyarrow as pa

from extractor import redact
from extractor.config import DEFAULT_SERVICE, RetryPolicy, ServiceConfig
from extractor.engine.destination import Destination
from extractor.engine.journal import Journal
from extractor.engine.spec import Spec, Strategy
from extractor.engine.state import RunState
from extractor.engine.stats import RunStats
from extractor.engine.summary import RunSummary, Status
from extractor.engine.workers import Run
from extractor.errors import InvalidOption
from extractor.output.staging import TableWriter
from extractor.records.tables import TableSink

#: What a list run counts: the items of its lists.
RECORDS: Final = "items"


@dataclass(frozen=True)
class ListJob:
    """Fetch whole lists (``specs``) into their tables."""

    destination: Destination
    specs: tuple[Spec, ...]
    service: ServiceConfig = DEFAULT_SERVICE
    sync: bool = False  # part of a sync: every list again, whatever ran before
    command: str = "lists"

    @property
    def out(self) -> Path:
        """The run's folder: its journal, staging and summaries."""
        return self.destination.work

    @property
    def tables(self) -> Sequence[str]:
        return [spec.table for spec in self.specs]

    def check(self) -> None:
        if not self.specs:
            raise InvalidOption("{lists}: give at least one list")
        for spec in self.specs:
            if spec.strategy is not Strategy.WHOLE_LIST:
                raise InvalidOption(f"{{lists}}: {spec.table} is not a whole list")
            spec.check()
        if len(set(self.tables)) != len(self.specs):
            raise InvalidOption("{lists}: a list is given twice")

    def fingerprint(self) -> dict[str, Any]:
        return {"command": "lists", "lists": sorted(self.tables)}

    def retrying(self, previous: RunState) -> str:
        left = _failed(previous)
        lists = ", ".join(left) or "no list"
        them = "it" if len(left) == 1 else "them"
        return f"run {previous.run_id} could not fetch {lists}; fetching {them} again"

    def start(self, journal: Journal, stats: RunStats) -> ListWork:
        stats.units, stats.records = "lists", RECORDS
        stats.fetched = sum(journal.state.counts.values())
        stats.failures = _failures(journal.state)
        return ListWork(self, journal, stats)


@dataclass(frozen=True)
class WholeList:
    """One list, fetched in one request; it cannot be halved."""

    spec: Spec

    @property
    def key(self) -> str:
        return self.spec.table

    @property
    def size(self) -> int:
        return 1

    def halves(self) -> tuple[Self, Self] | None:
        return None


class ListSink(TableSink):
    """A whole list's body to one typed table once it is complete."""

    def __init__(self, spec: Spec) -> None:
        super().__init__(spec.tag, spec.struct, spec.operation.service.namespace)


@dataclass
class ListWork:
    """One run of a :class:`ListJob`."""

    job: ListJob
    journal: Journal
    stats: RunStats
    what: str = "the list"

    def __post_init__(self) -> None:
        run_id, where = self.journal.state.run_id, self.job.destination
        self.by_table = {
            spec.table: TableWriter(
                where.work,
                spec.table,
                spec.schema,
                spec.partition,
                run_id,
                placement=where.placement,
            )
            for spec in self.job.specs
        }

    @property
    def writers(self) -> Sequence[TableWriter]:
        return list(self.by_table.values())

    async def __aenter__(self) -> ListWork:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def plan(self, run: Run, previous: RunState | None) -> dict[str, Any]:
        """Every list (a sync's, or a first run's); a retry of a partial run, the lists it
        could not fetch, as of that run's time."""
        if previous is not None and not self.job.sync:
            as_of = previous.as_of or run.clock.now().isoformat()
            return {
                "event": "plan", "lists": _failed(previous), "as_of": as_of,
                "retry_of": previous.run_id,
            }  # fmt: skip
        as_of = run.session.service_time.now().isoformat()
        return {"event": "plan", "lists": list(self.job.tables), "as_of": as_of}

    def remaining(self, state: RunState, prefix: str) -> list[WholeList]:
        planned = (state.plan or {}).get("lists", ())
        done = set(state.staged) | set(state.failed)
        specs = {spec.table: spec for spec in self.job.specs}
        return [WholeList(specs[name]) for name in planned if name not in done]

    def planned(self, state: RunState, remaining: Sequence[WholeList]) -> str:
        total = len((state.plan or {}).get("lists", ()))
        self.stats.total, self.stats.done = total, total - len(remaining)
        names = ", ".join(unit.key for unit in remaining) or "none"
        return f"{total:,} lists planned, {len(remaining):,} to fetch ({names})"

    async def fetch(self, run: Run, unit: WholeList, policy: RetryPolicy, root: str) -> None:
        spec = unit.spec
        sink = await run.call(
            spec.operation, spec.request, functools.partial(ListSink, spec), policy, root
        )
        table = sink.table
        assert table is not None
        keys = pa.nulls(table.num_rows, pa.string())
        writer = self.by_table[spec.table]
        await asyncio.get_running_loop().run_in_executor(None, writer.stage, unit.key, table, keys)
        self.journal.append(
            {"event": "staged", "key": unit.key, "counts": {spec.table: table.num_rows}}
        )
        self.stats.fetched += table.num_rows

    def failed(self, run: Run, unit: WholeList, error: BaseException) -> None:
        message = redact.mask(f"{type(error).__name__}: {error}")
        self.journal.append({"event": "failed", "key": unit.key, "error": message})
        self.stats.failures = _failures(self.journal.state)

    async def settled(self) -> None:
        pass  # each list is staged and journaled before its fetch returns

    async def publish(self, run: Run, state: RunState) -> dict[str, int]:
        staged = [self.by_table[name] for name in state.staged]
        publisher = self.job.destination.publisher
        publishing = functools.partial(publisher.publish, staged, state.run_info())
        return await asyncio.get_running_loop().run_in_executor(None, publishing)

    def tidy(self) -> None:
        for writer in self.writers:
            writer.tidy()

    def summary(self, state: RunState, stats: RunStats) -> RunSummary:
        counts = state.counts
        stats.fetched = sum(counts.values())
        failures = _failures(state)
        status = Status.PARTIAL if failures else Status.COMPLETE
        summary = stats.summary(status, self.job.destination.work)
        summary.job, summary.retry_of = state.fingerprint, state.retry_of
        summary.failures = failures
        planned = (state.plan or {}).get("lists", ())
        summary.lists = {name: counts.get(name, 0) for name in planned}
        return summary


def _failed(state: RunState) -> list[str]:
    """The lists a run could not fetch, by table."""
    return sorted(state.failed)


def _failures(state: RunState) -> list[dict[str, str]]:
    return [{"list": name, "error": event["error"]} for name, event in sorted(state.failed.items())]
