"""The lists: every table but the invoices and the ledger, each fetched as one unit of a run.

A :class:`ListJob` runs any number of :class:`~extractor.engine.spec.Spec` of the list
strategies on the one engine (:func:`~extractor.engine.runner.run`): the plan is the lists'
tables, each list is a unit keyed by its table, staged as one batch and journaled; a list
whose calls keep failing is reported, the others published. Nothing here names an operation:
a new list is a spec in :mod:`extractor.operations`. How a unit is fetched follows its
strategy:

- a whole list: one call;
- once per row of another list: the parent list is fetched first in the same run (a unit
  waits for its parent's), then one call per parent row; a settled parent row (a locked
  fiscal year) whose records the lake already holds is not asked again;
- the changes since the table's watermark (``since``): one call with the change filter, or
  the pages of a listing then the records in batches of ids. With ``reconcile`` every key is
  listed, so that the ones the service no longer has are marked deleted.

Published as Parquet, each list is ``OUT/<table>/part-<run_id>.parquet`` (a fleet member's
under ``identity_id=<guid>/``); into Delta, each table takes its records as its spec keeps it
(:class:`~extractor.output.parquet.Keep`, :mod:`extractor.output.lakelists`): replaced,
replaced for the parent rows fetched, or merged by key; a table whose records did not change
gets no commit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from extractor import redact, schema, soap
from extractor.arrow import empty
from extractor.config import DEFAULT_SERVICE, RetryPolicy, ServiceConfig
from extractor.engine.destination import Destination
from extractor.engine.journal import Journal
from extractor.engine.spec import Changes, Spec, Strategy, merged
from extractor.engine.state import RunState
from extractor.engine.stats import RunStats
from extractor.engine.summary import RunSummary, Status
from extractor.engine.workers import Run, first_error
from extractor.errors import InvalidOption, ListingUnsound
from extractor.output.parquet import Keep
from extractor.output.staging import TableWriter
from extractor.records.tables import TableSink

T = TypeVar("T")
#: What a list run counts: the items of its lists.
RECORDS: Final = "items"
#: Pages a listing reads at most (ten million ids at a thousand a page); past it, the list fails.
MAX_PAGES: Final = 10_000
#: The strategies a list run fetches.
LIST_STRATEGIES: Final = (Strategy.WHOLE_LIST, Strategy.PER_ROW, Strategy.CHANGES)


@dataclass(frozen=True)
class ListJob:
    """Fetch lists (``specs``, parents before the lists per their rows) into their tables."""

    destination: Destination
    specs: tuple[Spec, ...]
    service: ServiceConfig = DEFAULT_SERVICE
    sync: bool = False  # part of a sync: every list again, whatever ran before
    command: str = "lists"
    #: A table kept by its changes: the time (ISO, the service's) since which to fetch them
    #: (its watermark less the overlap); a table not named is fetched whole.
    since: Mapping[str, str] = field(default_factory=dict)
    #: List every key of the tables kept by their changes, to mark the ones that vanished.
    reconcile: bool = False
    #: A list per parent rows: the settled parents (their values, ISO for a time) whose
    #: records the lake holds already, not asked again.
    held: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

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
        seen: set[str] = set()
        for spec in self.specs:
            if spec.strategy not in LIST_STRATEGIES:
                raise InvalidOption(f"{{lists}}: {spec.table} is not a list")
            spec.check()
            if spec.per is not None and spec.per.table not in seen:
                raise InvalidOption(
                    f"{{lists}}: {spec.table} is fetched per row of {spec.per.table}: "
                    f"fetch {spec.per.table} too, before it"
                )
            if spec.table in seen:
                raise InvalidOption("{lists}: a list is given twice")
            seen.add(spec.table)

    def fingerprint(self) -> dict[str, Any]:
        found: dict[str, Any] = {"command": "lists", "lists": sorted(self.tables)}
        if self.since:
            found["since"] = dict(sorted(self.since.items()))
        if self.reconcile:
            found["reconcile"] = True
        if any(self.held.values()):
            found["held"] = {name: list(held) for name, held in sorted(self.held.items())}
        return found

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
class ListUnit:
    """One list, fetched by however many calls its strategy makes; it cannot be halved."""

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
    #: Requests made for each table in this invocation, every attempt counted.
    requests: Counter[str] = field(default_factory=Counter)

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
        self._settled = {spec.table: asyncio.Event() for spec in self.job.specs}

    @property
    def writers(self) -> Sequence[TableWriter]:
        return list(self.by_table.values())

    async def __aenter__(self) -> ListWork:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def plan(self, run: Run, previous: RunState | None) -> dict[str, Any]:
        """Every list (a sync's, or a first run's); a retry of a partial run, the lists it
        could not fetch and their parents, as of that run's time."""
        if previous is not None and not self.job.sync:
            as_of = previous.as_of or run.clock.now().isoformat()
            again = _with_parents(_failed(previous), self.job.specs)
            return {
                "event": "plan", "lists": again, "as_of": as_of, "retry_of": previous.run_id,
            }  # fmt: skip
        as_of = run.session.service_time.now().isoformat()
        return {"event": "plan", "lists": list(self.job.tables), "as_of": as_of}

    def remaining(self, state: RunState, prefix: str) -> list[ListUnit]:
        planned = (state.plan or {}).get("lists", ())
        for name in {*state.staged, *state.failed} & self._settled.keys():
            self._settled[name].set()  # settled by an earlier start of this run
        done = set(state.staged) | set(state.failed)
        specs = {spec.table: spec for spec in self.job.specs}
        return [ListUnit(specs[name]) for name in planned if name not in done]

    def planned(self, state: RunState, remaining: Sequence[ListUnit]) -> str:
        total = len((state.plan or {}).get("lists", ()))
        self.stats.total, self.stats.done = total, total - len(remaining)
        names = ", ".join(unit.key for unit in remaining) or "none"
        return f"{total:,} lists planned, {len(remaining):,} to fetch ({names})"

    async def fetch(self, run: Run, unit: ListUnit, policy: RetryPolicy, root: str) -> None:
        spec = unit.spec
        try:
            if spec.strategy is Strategy.PER_ROW:
                found = await self._per_row(run, spec, policy, root)
            elif spec.strategy is Strategy.CHANGES:
                found = await self._changes(run, spec, policy, root)
            else:
                found = _Found(await self._call(run, spec, spec.operation, spec.params(), policy))
            if found is None:
                return  # its parent could not be fetched: reported failed
            table, noted = _one_per_key(found.table, spec.key), found.noted
            keys = pa.nulls(table.num_rows, pa.string())
            writer = self.by_table[spec.table]
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, writer.stage, unit.key, table, keys)
            self.journal.append(
                {"event": "staged", "key": unit.key, "counts": {spec.table: table.num_rows}} | noted
            )
            self.stats.fetched += table.num_rows
        finally:
            self._settled[spec.table].set()

    def failed(self, run: Run, unit: ListUnit, error: BaseException) -> None:
        message = redact.mask(f"{type(error).__name__}: {error}")
        self.journal.append({"event": "failed", "key": unit.key, "error": message})
        self.stats.failures = _failures(self.journal.state)
        self._settled[unit.key].set()

    async def _call(
        self,
        run: Run,
        spec: Spec,
        operation: soap.Operation,
        params: Mapping[str, Any],
        policy: RetryPolicy,
        sink: Callable[[], TableSink] | None = None,
    ) -> pa.Table:
        """One call for ``spec``'s table (counted as its request, every attempt); the
        records of its answer."""
        answer = await run.call(
            operation, params, sink or functools.partial(ListSink, spec), policy,
            attempted=functools.partial(self.requests.update, (spec.table,)),
        )  # fmt: skip
        assert answer.table is not None
        return answer.table

    async def _per_row(self, run: Run, spec: Spec, policy: RetryPolicy, root: str) -> _Found | None:
        """One call per row of the parent list (staged by this run), its value the request
        field; a settled parent row whose records the lake holds is skipped."""
        per = spec.per
        assert per is not None
        await self._settled[per.table].wait()
        state = self.journal.state
        if per.table not in state.staged:
            self.failed(run, ListUnit(spec), _ParentFailed(f"{per.table} could not be fetched"))
            return None
        pieces = list(self.by_table[per.table].tables())
        rows = pa.concat_tables(pieces).to_pylist() if pieces else []
        held = set(self.job.held.get(spec.table, ()))
        wanted = [row for row in rows if row.get(per.column) is not None]
        asking = [
            row
            for row in wanted
            if not (per.settled and row.get(per.settled) and _plain(row[per.column]) in held)
        ]
        answers = await _all(
            self._call(run, spec, spec.operation, spec.params({per.param: row[per.column]}), policy)
            for row in asking
        )
        derived = spec.derived
        tables = [
            table if derived is None else derived.add(table, row)
            for table, row in zip(answers, asking, strict=True)
        ]
        table = pa.concat_tables(tables) if tables else empty(spec.schema)
        asked = [_plain(row[per.column]) for row in asking]
        return _Found(table, {"parents": asked, "whole": len(asking) == len(wanted)})

    async def _changes(self, run: Run, spec: Spec, policy: RetryPolicy, root: str) -> _Found:
        """The records changed since the table's ``since`` (all of them without one); with
        ``reconcile``, every key the service lists (``present``)."""
        changes = spec.changes
        assert changes is not None
        since_text = self.job.since.get(spec.table)
        since = dt.datetime.fromisoformat(since_text) if since_text else None
        reconcile = self.job.reconcile and since is not None
        if changes.listing is None:
            after = {} if since is None or reconcile else _nested(changes.after, since)
            table = await self._call(run, spec, spec.operation, spec.params(after), policy)
            if spec.derived is not None:
                table = spec.derived.add(table, None)
            noted = {"present": _keys(table, spec.key[0])} if reconcile else {}
            return _Found(table, noted)
        counted = functools.partial(self.requests.update, (spec.table,))
        listed = await listing(run, changes, None if reconcile else since, policy, counted)
        ids = [
            row[changes.id]
            for row in listed.values()
            if since is None or not reconcile or _after(row.get("DateChanged"), since)
        ]
        tables = await _all(
            self._call(run, spec, spec.operation, spec.params(_nested(changes.ids, batch)), policy)
            for batch in (ids[at : at + changes.batch] for at in range(0, len(ids), changes.batch))
        )
        table = (
            pa.concat_tables(tables)
            if tables
            else empty(spec.schema).drop_columns(
                [f.name for f in spec.derived.fields] if spec.derived else []
            )
        )
        _check_answered(spec, ids, table)
        asked = pa.array(ids, table.schema.field(spec.key[0]).type)
        table = table.filter(pc.is_in(table.column(spec.key[0]), asked))  # not what it added
        if spec.derived is not None:
            table = spec.derived.add(table, listed)  # what the listing says of each
        return _Found(table, {"present": list(listed)} if reconcile else {})

    async def settled(self) -> None:
        pass  # each list is staged and journaled before its fetch returns

    async def publish(self, run: Run, state: RunState) -> dict[str, int]:
        staged = [self.by_table[name] for name in state.staged]
        specs = {spec.table: spec for spec in self.job.specs}
        keeping = {name: _keep(specs[name], event) for name, event in state.staged.items()}
        publisher = self.job.destination.publisher
        publishing = functools.partial(publisher.publish, staged, state.run_info(), keeping=keeping)
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
        summary.table_requests = {name: self.requests.get(name, 0) for name in planned}
        return summary


@dataclass(frozen=True)
class _Found:
    """A unit's records, and what its staged event notes of how they were fetched."""

    table: pa.Table
    noted: dict[str, Any] = field(default_factory=dict)


class _ParentFailed(Exception):
    """The list a list is fetched per row of could not be fetched."""


async def _all(calls: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Every call's result, in order: made at once (the transport holds them to the
    concurrency); the first error that stops one stops all, raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except BaseExceptionGroup as errors:
        raise first_error(errors) from None
    return [task.result() for task in tasks]


async def listing(
    run: Run,
    changes: Changes,
    since: dt.datetime | None,
    policy: RetryPolicy,
    attempted: Callable[[], object] | None = None,
) -> dict[Any, dict[str, Any]]:
    """Every item of a paged listing (changed after ``since``; None: every one), by its id;
    an item listed on two pages (the list moved while it was read) is taken once."""
    operation = changes.listing
    assert operation is not None
    result = operation.service.elements[f"{operation.name}Response"].fields[0]
    page_type = _typed_only(result.type)
    tag = f"{{{operation.service.namespace}}}{result.name}"
    sink = functools.partial(TableSink, tag, page_type, operation.service.namespace)
    items = next(f.name for f in page_type.fields if isinstance(f.type, schema.ListOf))
    listed: dict[Any, dict[str, Any]] = {}
    page, more = 1, True
    while more:
        if page > MAX_PAGES:
            raise ListingUnsound(f"{operation.name}: more than {MAX_PAGES:,} pages; stopped")
        params = merged(
            changes.fixed,
            _nested(changes.page, page),
            _nested(changes.after, since) if since is not None else {},
        )
        answer = await run.call(operation, params, sink, policy, attempted=attempted)
        assert answer.table is not None
        found = (answer.table.to_pylist() or [{}])[0]
        given = [
            item for item in found.get(items) or [] if item and item.get(changes.id) is not None
        ]
        new = {item[changes.id] for item in given} - listed.keys()
        listed |= {item[changes.id]: item for item in given}
        # the page count or the item count said, whichever goes further (either may be 0
        # while items come); a page with no new id (empty, or one answered before) ends it
        pages, total = int(found.get(changes.pages) or 0), int(found.get(changes.total) or 0)
        more = bool(new) and (page < pages or len(listed) < total)
        page += 1
    return listed


def _keep(spec: Spec, staged: Mapping[str, Any]) -> Keep:
    """How ``spec``'s table takes what its staged event says was fetched."""
    present = staged.get("present")
    if spec.strategy is Strategy.CHANGES:
        return Keep(spec.key, upsert=True, present=None if present is None else tuple(present))
    if spec.per is not None and spec.per.held_by is not None and not staged.get("whole", True):
        column = spec.per.held_by[0]
        return Keep(spec.key, column=column, parents=tuple(staged.get("parents", ())))
    return Keep(spec.key)


def _one_per_key(table: pa.Table, key: Sequence[str]) -> pa.Table:
    """A record per key, the last answered of a key sent twice (a table kept by its key
    must hold it once)."""
    last: dict[tuple[Any, ...], int] = {}
    columns = [table.column(name).to_pylist() for name in key]
    for at, values in enumerate(zip(*columns, strict=True)):
        last[values] = at
    if len(last) == table.num_rows:
        return table
    return table.take(sorted(last.values()))


def _check_answered(spec: Spec, ids: Sequence[Any], table: pa.Table) -> None:
    """Every id listed was answered: one listed but not answered would be lost for good, the
    watermark passing it (the next sync lists it again, if the service still has it)."""
    missing = set(ids) - set(table.column(spec.key[0]).to_pylist())
    if missing:
        first = ", ".join(str(i) for i in sorted(missing)[:5])
        raise ListingUnsound(
            f"{spec.operation.name}: {len(missing):,} of the {len(ids):,} ids listed were not "
            f"answered ({first})"
        )


def _nested(path: Sequence[str], value: Any) -> dict[str, Any]:
    """``value`` at ``path`` in a request (``("searchParams", "CompanyIds")``)."""
    found: Any = value
    for name in reversed(path):
        found = {name: found}
    return dict(found)


def _typed_only(found: schema.FieldType) -> schema.Struct:
    """A listing's page type without its untyped fields (``Context``: anything at all)."""
    assert isinstance(found, schema.Struct)
    kept = tuple(
        f
        for f in found.fields
        if not (isinstance(f.type, schema.Scalar) and f.type.xsd == "anyType")
    )
    return schema.Struct(found.name, kept)


def _plain(value: Any) -> Any:
    """A parent value as the journal and the fingerprint hold it (a time as ISO text)."""
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else value


def _after(changed: dt.datetime | None, since: dt.datetime) -> bool:
    if changed is None:
        return True  # no change time: fetched, to be sure
    since = since if since.tzinfo else since.replace(tzinfo=dt.UTC)
    return changed > since


def _keys(table: pa.Table, key: str) -> list[Any]:
    return [value for value in table.column(key).to_pylist() if value is not None]


def _with_parents(tables: Iterable[str], specs: Sequence[Spec]) -> list[str]:
    """``tables`` and the lists they are fetched per row of, in the job's order."""
    wanted = set(tables)
    for spec in reversed(specs):
        if spec.table in wanted and spec.per is not None:
            wanted.add(spec.per.table)
    return [spec.table for spec in specs if spec.table in wanted]


def _failed(state: RunState) -> list[str]:
    """The lists a run could not fetch, by table."""
    return sorted(state.failed)


def _failures(state: RunState) -> list[dict[str, str]]:
    return [{"list": name, "error": event["error"]} for name, event in sorted(state.failed.items())]
