"""Delta Lake tables (delta-rs): the current state of every invoice and ledger line, merged.

``invoices`` are upserted on OrderId, the ``invoice_rows`` of every changed order are replaced
as a set (one commit: rows removed from an order disappear), ``transactions`` are upserted on
Id. A record whose key and ``DateChanged`` the table already holds is left alone; one the
table holds newer (a lagging replica's answer) is not written either, and is counted
(``stale_records``). Every record carries ``_run_id`` and ``_extracted_at`` (the run's as-of
time); invoices and rows carry ``_deleted_at``, set by :meth:`Lake.reconcile` when the service
no longer has the order. Columns another writer added to a table are kept: null in the
records written, their values kept in the files rewritten.

The watermark is committed with the data (:mod:`.lakemarks`): each commit's metadata holds
``extractor.watermark`` (the as-of time of the run that wrote it, on the service's clock).
The rows commit comes before the invoices commit, and a table group's watermark is the
oldest of its tables', so a crash between the two repeats the work and never skips a change.
A table the run wrote nothing into gets a commit of the watermark alone, so a quiet tenant's
next sync does not list and fetch the same changes again. A full refresh asked by a reset
(:mod:`.lakereset`) makes the next publish replace the tables (this scope's part) with what
it fetched, in one commit each, instead of merging.

Layout and merges (:mod:`.lakefiles`, :mod:`.lakechanges`): invoices and rows are
partitioned by ``order_month`` (the order's DateOrdered; a row sits with its order),
transactions by ``date_month``, each partition in files sorted by key of at most a thousand
orders (five thousand rows or lines). A publish finds where its keys are stored with one
narrow scan (key, partition, DateChanged) filtered a batch at a time, then rewrites only the
files holding a changed key, a partition's changes at a time from the staging's spill files,
and commits all of a table's removes and adds at once. So a sync costs its changes (plus
that scan), and memory is one partition's changes, not the table. An order whose month
changed leaves its old partition in the same commit. The extractor writes the files itself,
with their statistics, and commits them through delta-rs. Delta's own merge was not used:
it coalesces what it rewrites into one file a partition, and finds the files to read from
the source's overall key range, which for scattered ids is the whole table.

A fleet's tables (:class:`~.lakefiles.Scope`): partitioned by ``identity_id``, then by month;
each identity's run plans, merges, reconciles and keeps its watermark (its commits carry
``extractor.identity``) in its own partitions only. Many runs commit to one table at once;
delta-rs refuses a commit whose table moved on since it was read ("a concurrent
transaction deleted data this operation read": it cannot know the commit read only its own
partitions), so the commit is made again on the table as it now is, with the same actions:
no other run touches those partitions, so they are still right.

Delta has no unsigned or dictionary types: uint8 is stored as int16 and enumerations as
plain strings; everything else keeps the types of the Parquet output. A table not laid out
this way is refused. Over 300 lines: :class:`Lake` is one concept, every publish's plan and
commits, and its parts are already their own modules.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
import time
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.transaction import create_table_with_add_actions

from extractor.arrow import string_scalar, timestamp_scalar
from extractor.checkpoints import checkpoint
from extractor.errors import OutputError, first_line
from extractor.ids import as_arrow
from extractor.output.lakechanges import (
    Change,
    Plan,
    apply,
    by_partition,
    stored_keys,
    stored_plan,
    with_theirs,
)
from extractor.output.lakefiles import (
    IDENTITY,
    LAYOUTS,
    WHOLE,
    DataFile,
    Layout,
    Scope,
    TableFiles,
    current_files,
    lake_schema,
    stamp,
)
from extractor.output.lakelists import keep_list
from extractor.output.lakemarks import (
    RUN_ID,
    WATERMARK,
    commit,
    full_refresh,
    open_table,
    refetch,
    watermark,
)
from extractor.output.lease import ensure_held
from extractor.output.parquet import Keep, RunInfo
from extractor.output.staging import TableWriter
from extractor.output.targets import Target

__all__ = ["RUN_ID", "WATERMARK", "DeltaOutput", "Lake"]
#: Commits tried again on a table other runs of a fleet committed to in the meantime.
COMMIT_ATTEMPTS: Final = 30
INVOICE_TABLES: Final = ("invoice_rows", "invoices")  # in the order a publish commits them


class Lake:
    """The Delta tables under one target (one identity's part of them: ``scope``)."""

    def __init__(self, target: Target, scope: Scope = WHOLE) -> None:
        self.target = target
        self.scope = scope
        self.committed: set[str] = set()  # the tables this publish committed to
        #: OrderIds answered older than stored in this publish, fetched again next sync
        self.stale: tuple[int, ...] = ()

    def table(self, name: str) -> DeltaTable | None:
        """The table ``name``, or None before its first commit."""
        return open_table(self.target, name)

    def watermark(self, names: Sequence[str]) -> dt.datetime | None:
        """The oldest of the tables' watermarks; None when one has none (never synced)."""
        marks = []
        for name in names:
            table = self.table(name)
            mark = watermark(table, self.scope) if table is not None else None
            if mark is None:
                return None
            marks.append(mark)
        return min(marks) if marks else None

    def refetch(self) -> tuple[int, ...]:
        """The OrderIds the last sync's invoices commit says to fetch again (stale answers)."""
        table = self.table("invoices")
        return () if table is None else refetch(table, self.scope)

    def publish_invoices(
        self, orders: TableWriter, rows: TableWriter | None, run: RunInfo
    ) -> dict[str, int]:
        """Upsert the orders and replace the rows of each changed one (rows first); the
        records written per table."""
        checkpoint("before-commits")
        table = self._laid_out("invoices")
        if table is not None:  # else the rows a cut-short first publish left are replaced
            self._laid_out("invoice_rows")
        full = table is not None and self.refreshing(INVOICE_TABLES)
        if table is None or full:  # everything; rows a cut-short first publish left go
            plan = Plan.everything(orders.columns(["OrderId"]), "OrderId")
        else:
            plan = stored_plan(
                table, LAYOUTS["invoices"], orders.columns(["OrderId", "DateChanged"]),
                self.scope,
            )  # fmt: skip
        self.stale = tuple(key for key in plan.stale.to_pylist() if key is not None)
        written = {"invoices": 0, "invoice_rows": 0, "stale_records": len(plan.stale)}
        if not plan.changed:
            if full:  # the service has no order left: a refresh leaves none either
                for name in INVOICE_TABLES:
                    self._emptied(name, run)
            return written
        if rows is not None:
            replace = table is None or full
            written["invoice_rows"] = self._merge("invoice_rows", rows, plan, run, replace)
        checkpoint("between-commits")
        written["invoices"] = self._merge("invoices", orders, plan, run, full)
        return written

    def publish_transactions(self, lines: TableWriter, run: RunInfo) -> dict[str, int]:
        """Upsert ledger lines on Id, one per Id (the latest DateChanged)."""
        table = self._laid_out("transactions")
        staged = lines.columns(["Id", "DateChanged"])
        full = table is not None and self.refreshing(("transactions",))
        if table is None or full:
            plan = Plan.everything(staged, "Id", version="DateChanged")
        else:
            plan = stored_plan(table, LAYOUTS["transactions"], staged, self.scope)
        written = {"transactions": 0, "stale_records": len(plan.stale)}
        if plan.changed:
            written["transactions"] = self._merge("transactions", lines, plan, run, full)
        elif full:
            self._emptied("transactions", run)
        return written

    def refreshing(self, names: Sequence[str]) -> bool:
        """Whether a full refresh of one of the tables ``names`` (this scope's part) waits for
        this publish: it then replaces them, instead of merging (:mod:`.lakereset`)."""
        tables = (self.table(name) for name in names)
        return any(table is not None and full_refresh(table, self.scope) for table in tables)

    def _emptied(self, name: str, run: RunInfo) -> None:
        """A full refresh that fetched nothing: every record of the table (this scope's
        part) goes, in one commit of the run."""
        table = self.table(name)
        if table is None:
            return
        files = self._files(name)
        stored = current_files(table, LAYOUTS[name], self.scope)
        gone = [files.removed(file) for group in stored.values() for file in group]
        self._transaction(name, gone, self._commit_of(name, run), table, empty=True)

    def mark(self, name: str, properties: CommitProperties) -> None:
        """Commit ``properties`` alone to the table ``name`` (a reset's), whatever its layout
        (a list's too); in a fleet, again while other identities' commits come in between."""

        def commit(_: int) -> None:
            table = self.table(name)
            if table is None:
                return
            ensure_held(self.target)
            table.create_write_transaction(
                [], "append", table.schema(),
                partition_by=table.metadata().partition_columns,
                commit_properties=properties,
            )  # fmt: skip

        _retried(name, commit, conflicts=True)

    def keep_watermark(self, names: Sequence[str], run: RunInfo, fetched: bool) -> None:
        """Commit the run's watermark alone to each table of ``names`` this publish wrote
        nothing into, when the run ``fetched`` records (the next sync would fetch them again
        from the older watermark) or the ids to fetch again changed. A table not there yet
        has no watermark to keep, and a watermark never goes backwards; a run that listed
        nothing leaves the watermark, as a later one would list nothing more from it."""
        for name in names:
            table = self.table(name) if name not in self.committed else None
            if table is None:
                continue
            moved = fetched or refetch(table, self.scope) != self._refetch_of(name)
            stored = watermark(table, self.scope)
            if moved and (stored is None or stored < run.as_of):
                self._transaction(name, [], self._commit_of(name, run), table, empty=True)

    def reconcile(self, present: Iterable[int], run: RunInfo) -> int:
        """Mark the orders the service no longer lists (``present``: every id it lists) and
        their rows deleted; the number of orders marked."""
        invoices = self._laid_out("invoices")
        if invoices is None:
            return 0
        # Arrow's own hash set (a Python set of a million ids would be ~60 MB)
        listed = as_arrow(present) if isinstance(present, array) else pa.array(present, pa.int64())
        vanished = stored_keys(
            invoices, LAYOUTS["invoices"], lambda keys: pc.invert(pc.is_in(keys, listed)),
            self.scope,
        )  # fmt: skip
        vanished = vanished.filter(vanished.column("live"))
        if not vanished.num_rows:
            return 0
        edit = functools.partial(_marked_deleted, run=run)
        for name in ("invoice_rows", "invoices"):  # invoices last, as in every publish
            table = self._laid_out(name)
            if table is None:
                continue
            layout, files = LAYOUTS[name], current_files(table, LAYOUTS[name], self.scope)
            actions: list[Any] = []
            for partition, keys in by_partition(vanished).items():
                change = Change(edited=keys, edit=edit)
                removes, adds = apply(
                    self._files(name), files.get(partition, []), partition, change,
                    _data_schema(table, layout, self.scope),
                )  # fmt: skip
                actions += removes + adds
            self._transaction(name, actions, self._commit_of(name, run), table)
        return vanished.num_rows

    def _commit_of(self, name: str, run: RunInfo) -> CommitProperties:
        """A commit of ``run`` to ``name``: the invoice tables' also name the stale ids."""
        return commit(run, self.scope, self._refetch_of(name))

    def _refetch_of(self, name: str) -> tuple[int, ...]:
        return tuple(sorted(self.stale)) if name in INVOICE_TABLES else ()

    @property
    def _options(self) -> dict[str, str]:
        return self.target.storage_options()

    def _files(self, name: str) -> TableFiles:
        return TableFiles(self.target, name, LAYOUTS[name], self.scope)

    def _laid_out(self, name: str) -> DeltaTable | None:
        """The table ``name`` (None before its first commit), refused unless it is partitioned
        as this extractor lays it out; a fleet's table and a table of one identity are not
        mixed."""
        table = self.table(name)
        layout = LAYOUTS[name]
        if table is None or table.metadata().partition_columns == self.scope.columns(layout):
            return table
        if self.scope.identity or IDENTITY in table.metadata().partition_columns:
            held = "a fleet's" if self.scope.identity is None else "one identity's"
            raise OutputError(
                f"the Delta table {name} holds {held} data (partitioned by "
                f"{', '.join(table.metadata().partition_columns)}): a fleet and one identity "
                "do not share tables; choose another {out}"
                + (", or give --identity all" if self.scope.identity is None else "")
            )
        raise OutputError(
            f"the Delta table {name} is not partitioned by {layout.partition}, as this "
            "extractor writes it; choose another {out}"
        )

    def _merge(
        self, name: str, writer: TableWriter, plan: Plan, run: RunInfo, replace: bool = False
    ) -> int:
        """One commit: the records of ``plan``'s changed keys in ``name`` are exactly the
        staged ones afterwards (``replace``: the staged records replace the table, whatever
        its layout); the records written."""
        layout, deletable = LAYOUTS[name], name != "transactions"
        scoped = self.scope.identity is not None
        table = None if replace and not scoped else self.table(name)
        stored = current_files(table, layout, self.scope) if table is not None else {}
        gone: list[Any] = []
        if replace and scoped:  # this identity's files go, whatever they hold; others' stay
            files = self._files(name)
            gone = [files.removed(file) for group in stored.values() for file in group]
            stored = {}
        schema = lake_schema(writer.schema, deletable)
        if table is not None:  # another writer's columns are kept
            schema = with_theirs(schema, _data_schema(table, layout, self.scope))
        prepare = functools.partial(stamp, run=run, deletable=deletable)
        actions, written = self._changes(name, writer, plan, stored, schema, prepare)
        properties = self._commit_of(name, run)
        if table is None:
            mode: Literal["error", "overwrite"] = "overwrite" if replace and not scoped else "error"
            self._create(name, schema, actions, properties, mode)
        else:
            self._transaction(name, gone + actions, properties, table)
        return written

    def _changes(
        self, name: str, writer: TableWriter, plan: Plan, stored: dict[str, list[DataFile]],
        schema: pa.Schema, prepare: Callable[[pa.Table], pa.Table],
    ) -> tuple[list[Any], int]:  # fmt: skip
        """The actions that write ``plan``'s staged records (each partition's made ready by
        ``prepare``) over the ``stored`` files; and the number of records written."""
        files, key = self._files(name), LAYOUTS[name].key
        spills = writer.spill()

        def one(partition: str) -> tuple[list[Any], int]:
            added = None
            if partition in spills:
                added = prepare(plan.kept(writer.spilled(spills[partition]), partition, key))
            change = Change(drop=plan.drops.get(partition, _NO_KEYS), add=added)
            removes, adds = apply(files, stored.get(partition, []), partition, change, schema)
            written = 0 if added is None else added.num_rows
            del change, added
            pa.default_memory_pool().release_unused()  # else mimalloc keeps what it freed
            return [*removes, *adds], written

        # a partition at a time on each thread: reading and writing Parquet release the GIL
        threads = writer.limits.publish_threads
        with ThreadPoolExecutor(threads, thread_name_prefix="merge") as pool:
            done = list(pool.map(one, sorted(set(spills) | set(plan.drops))))
        return [action for actions, _ in done for action in actions], sum(n for _, n in done)

    def _create(
        self, name: str, schema: pa.Schema, adds: list[Any], properties: CommitProperties,
        mode: Literal["error", "overwrite"] = "error",
    ) -> None:  # fmt: skip
        """Create the table ``name`` of these files (``mode="overwrite"``: in place of the
        table there, whatever its layout), unless there are none."""
        if not adds:
            return  # nothing staged: no table yet
        ensure_held(self.target)  # a run that lost an s3:// target's lock commits nothing
        columns = self.scope.columns(LAYOUTS[name])
        for column in columns:
            schema = schema.append(pa.field(column, pa.string()))
        create = functools.partial(
            create_table_with_add_actions,
            self.target.table_uri(name),
            DeltaSchema.from_arrow(schema),
            adds,
            mode=mode,
            partition_by=columns,
            storage_options=self._options,
            commit_properties=properties,
        )
        if self.scope.identity is None:
            self._commit(name, create)
            self.committed.add(name)
            return
        try:  # a fleet: another identity's run may create the table first
            create()
            self.committed.add(name)
        except (DeltaError, OSError) as exc:
            if self.table(name) is None:
                raise OutputError(
                    f"cannot create the Delta table {name}: {first_line(exc)}"
                ) from None
            self._transaction(name, adds, properties)

    def _transaction(
        self, name: str, actions: list[Any], properties: CommitProperties,
        read: DeltaTable | None = None, empty: bool = False,
    ) -> None:  # fmt: skip
        """Commit ``actions`` to the table ``name`` (as ``read``, else as it is now; none
        only when ``empty``: the commit's metadata alone); in a fleet, again on the table as
        it is now while other identities' commits came in between (module docstring)."""
        if not actions and not empty:
            return
        self.committed.add(name)
        layout, columns = LAYOUTS[name], self.scope.columns(LAYOUTS[name])

        def commit(attempt: int) -> None:
            table = read if read is not None and attempt == 1 else self.table(name)
            assert table is not None
            schema = _data_schema(table, layout, self.scope)
            for column in columns:
                schema = schema.append(pa.field(column, pa.string()))
            ensure_held(self.target)
            table.create_write_transaction(
                actions, "append", DeltaSchema.from_arrow(schema), partition_by=columns,
                commit_properties=properties,
            )  # fmt: skip

        _retried(name, commit, conflicts=self.scope.identity is not None)

    @staticmethod
    def _commit(name: str, action: Callable[[], Any]) -> None:
        try:
            action()
        except (DeltaError, OSError) as exc:
            raise OutputError(
                f"cannot commit to the Delta table {name}: {first_line(exc)}"
            ) from None


_NO_KEYS: Final = pa.nulls(0)  # pa.array from a Python list imports pandas


def _marked_deleted(records: pa.Table, run: RunInfo) -> pa.Table:
    rows = records.num_rows
    index = records.schema.get_field_index("_deleted_at")
    records = records.set_column(index, "_deleted_at", pa.repeat(timestamp_scalar(run.as_of), rows))
    index = records.schema.get_field_index("_run_id")
    return records.set_column(index, "_run_id", pa.repeat(string_scalar(run.run_id), rows))


def _data_schema(table: DeltaTable, layout: Layout, scope: Scope = WHOLE) -> pa.Schema:
    """The table's schema less its partition columns: the schema of its data files."""
    schema = pa.schema(cast(Any, table.schema().to_arrow()))
    for column in scope.columns(layout):
        schema = schema.remove(schema.get_field_index(column))
    return schema


@dataclass(frozen=True)
class DeltaOutput:
    """The tables as Delta tables under ``target``, merged (:class:`Lake`); in a fleet, one
    identity's part of them (``identity``)."""

    target: Target
    format: str = "delta"
    identity: str | None = None

    def publish(
        self,
        writers: Sequence[TableWriter],
        run: RunInfo,
        present: Sequence[int] | None = None,
        keeping: Mapping[str, Keep] | None = None,
    ) -> dict[str, int]:
        lake = Lake(self.target, Scope(self.identity))
        by_name = {writer.name: writer for writer in writers}
        written: dict[str, int] = {}
        if "invoices" in by_name:
            written |= lake.publish_invoices(by_name["invoices"], by_name.get("invoice_rows"), run)
            if present is not None:
                written["deleted"] = lake.reconcile(present, run)
            lake.keep_watermark(INVOICE_TABLES, run, _staged(by_name["invoices"]))
        if "transactions" in by_name:
            written |= lake.publish_transactions(by_name["transactions"], run)
            lake.keep_watermark(("transactions",), run, _staged(by_name["transactions"]))
        for name in by_name.keys() - {*INVOICE_TABLES, "transactions"}:  # the lists
            keep = (keeping or {}).get(name)
            written[name] = keep_list(lake.target, lake.scope, by_name[name], run, keep)
        return written


def _staged(writer: TableWriter) -> bool:
    """Whether the run staged any record of ``writer``'s table."""
    return any(writer.staged_rows().values())


def _retried(name: str, commit: Callable[[int], None], conflicts: bool) -> None:
    """``commit(attempt)`` to the table ``name``; when another writer committed in between
    (a conflict) and ``conflicts`` are to be ridden out, again on the table as it is now, up
    to :data:`COMMIT_ATTEMPTS` times."""
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            commit(attempt)
            return
        except CommitFailedError as exc:
            if not conflicts or attempt == COMMIT_ATTEMPTS:
                raise OutputError(
                    f"cannot commit to the Delta table {name}: {first_line(exc)}"
                ) from None
            time.sleep(random.uniform(0.0, 0.05 * attempt))  # others are committing
        except (DeltaError, OSError) as exc:
            raise OutputError(
                f"cannot commit to the Delta table {name}: {first_line(exc)}"
            ) from None
