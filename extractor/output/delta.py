"""Delta Lake tables (delta-rs): the current state of every invoice and ledger line, merged.

``invoices`` are upserted on OrderId, the ``invoice_rows`` of every changed order are replaced
as a set (one commit: rows removed from an order disappear), ``transactions`` are upserted on
Id. A record whose key and ``DateChanged`` the table already holds is left alone, so a sync
that finds nothing new commits nothing. Every record carries ``_run_id`` and
``_extracted_at`` (the run's as-of time); invoices and rows carry ``_deleted_at``, set by
:meth:`Lake.reconcile` when the service no longer has the order.

The watermark is committed with the data: each commit's metadata holds
``extractor.watermark`` (the as-of time of the run that wrote it). The rows commit comes
before the invoices commit, and a table group's watermark is the oldest of its tables', so a
crash between the two repeats the work and never skips a change.

Delta has no unsigned or dictionary types: uint8 is stored as int16 and enumerations as
plain strings; everything else keeps the types of the Parquet output. Tables are not
partitioned (Delta's advice below a terabyte); the hive partition columns are not stored.

Over 300 lines as one concept, the Delta tables and every write into them: the merge path is
issue 12's to rework (bounded slices, partition pruning), which is where it will split.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, QueryBuilder, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from extractor.checkpoints import checkpoint
from extractor.errors import OutputError
from extractor.output.parquet import RunInfo
from extractor.output.staging import TableWriter
from extractor.output.staging import latest as _latest
from extractor.output.targets import Target

WATERMARK: Final = "extractor.watermark"
RUN_ID: Final = "extractor.run_id"
TIMESTAMP: Final = pa.timestamp("us", tz="UTC")
#: Look this far back in a table's history for the last commit of a run, then everywhere.
RECENT_COMMITS: Final = 100


def commit(run: RunInfo) -> CommitProperties:
    """The commit's metadata: the run, and the watermark it advances to."""
    return CommitProperties(custom_metadata={WATERMARK: run.as_of.isoformat(), RUN_ID: run.run_id})


def stamp(table: pa.Table, run: RunInfo, deletable: bool) -> pa.Table:
    """``table`` in the lake's types, with the run's columns (and ``_deleted_at``)."""
    table = table.cast(pa.schema([pa.field(f.name, _lake_type(f.type)) for f in table.schema]))
    rows = table.num_rows
    table = table.append_column("_run_id", pa.array([run.run_id] * rows, pa.string()))
    table = table.append_column("_extracted_at", pa.array([run.as_of] * rows, TIMESTAMP))
    if deletable:
        table = table.append_column("_deleted_at", pa.nulls(rows, TIMESTAMP))
    return table


def lake_schema(schema: pa.Schema, deletable: bool) -> pa.Schema:
    """``schema`` in types Delta has, with the run's columns (and ``_deleted_at``)."""
    fields = [pa.field(f.name, _lake_type(f.type)) for f in schema]
    fields += [pa.field("_run_id", pa.string()), pa.field("_extracted_at", TIMESTAMP)]
    if deletable:
        fields.append(pa.field("_deleted_at", TIMESTAMP))
    return pa.schema(fields)


def _lake_type(arrow_type: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(arrow_type):
        return _lake_type(arrow_type.value_type)
    if pa.types.is_uint8(arrow_type):
        return pa.int16()
    if pa.types.is_struct(arrow_type):
        return pa.struct([pa.field(f.name, _lake_type(f.type)) for f in arrow_type])
    if pa.types.is_list(arrow_type):
        return pa.list_(_lake_type(arrow_type.value_type))
    return arrow_type


TableSource = Callable[[], Iterator[pa.Table]]
"""A table's staged records, read afresh on each call (:meth:`TableWriter.tables`)."""


class Lake:
    """The Delta tables under one target."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def table(self, name: str) -> DeltaTable | None:
        """The table ``name``, or None before its first commit."""
        try:
            return DeltaTable(self.target.table_uri(name), storage_options=self._options)
        except TableNotFoundError:
            return None
        except (DeltaError, OSError) as exc:
            raise OutputError(f"cannot read the Delta table {name}: {_first_line(exc)}") from None

    def watermark(self, names: Sequence[str]) -> dt.datetime | None:
        """The oldest of the tables' watermarks; None when one has none (never synced)."""
        marks = []
        for name in names:
            table = self.table(name)
            mark = _watermark(table) if table is not None else None
            if mark is None:
                return None
            marks.append(mark)
        return min(marks) if marks else None

    def publish_invoices(
        self, orders: TableWriter, rows: TableWriter | None, run: RunInfo
    ) -> dict[str, int]:
        """Upsert the orders and replace the rows of each changed one (rows first); the
        records written per table."""
        checkpoint("before-commits")
        table = self.table("invoices")
        if table is None:  # the first publish: streamed, nothing to merge
            written = {"invoice_rows": 0}
            if rows is not None:  # overwrite: a first publish cut short may have left rows
                written["invoice_rows"] = self._stream(
                    "invoice_rows", rows.tables, rows.schema, run, "overwrite"
                )
            written["invoices"] = self._stream(
                "invoices", orders.tables, orders.schema, run, "append"
            )
            return written
        written = {"invoices": 0, "invoice_rows": 0}
        source = _concat(orders.tables())
        if source is None:
            return written
        source = _unchanged_removed(table, source, "OrderId")
        written["invoices"] = source.num_rows
        if not source.num_rows:
            return written
        changed = source.column("OrderId").combine_chunks()
        if rows is not None:
            new_rows = _concat(rows.tables())  # None: the changed orders have no rows now
            if new_rows is not None:
                new_rows = new_rows.filter(pc.is_in(new_rows.column("OrderId"), changed))
            written["invoice_rows"] = self._replace_rows(new_rows, changed, run)
        checkpoint("between-commits")
        self._upsert(table, "invoices", stamp(source, run, deletable=True), "OrderId", run)
        return written

    def publish_transactions(self, lines: TableWriter, run: RunInfo) -> dict[str, int]:
        """Upsert ledger lines on Id, one per Id (the latest DateChanged)."""
        table = self.table("transactions")
        if table is None:
            unique = functools.partial(_unique, lines.tables, "Id", "DateChanged")
            count = self._stream("transactions", unique, lines.schema, run, "append")
            return {"transactions": count}
        source = _concat(lines.tables())
        if source is None:
            return {"transactions": 0}
        source = _unchanged_removed(table, _latest(source, "Id", "DateChanged"), "Id")
        if source.num_rows:
            self._upsert(table, "transactions", stamp(source, run, deletable=False), "Id", run)
        return {"transactions": source.num_rows}

    def reconcile(self, present: Iterable[int], run: RunInfo) -> int:
        """Mark the orders the service no longer lists (``present``: every id it lists) and
        their rows deleted; the number of orders marked."""
        invoices = self.table("invoices")
        if invoices is None:
            return 0
        stored = _query(invoices, "SELECT OrderId FROM t WHERE _deleted_at IS NULL")
        listed = set(present)
        ids: list[int] = stored.column("OrderId").to_pylist()  # type: ignore[assignment]
        vanished = sorted(i for i in ids if i not in listed)
        if not vanished:
            return 0
        predicate = f"OrderId IN ({', '.join(map(str, vanished))})"
        values: dict[str, Any] = {"_deleted_at": run.as_of, "_run_id": run.run_id}
        for name in ("invoice_rows", "invoices"):  # invoices last, as in every publish
            table = self.table(name)
            if table is not None:
                self._commit(
                    name,
                    functools.partial(
                        table.update,
                        new_values=values,
                        predicate=predicate,
                        commit_properties=commit(run),
                    ),
                )
        return len(vanished)

    @property
    def _options(self) -> dict[str, str]:
        return self.target.storage_options()

    def _stream(
        self, name: str, tables: TableSource, schema: pa.Schema, run: RunInfo, mode: str
    ) -> int:
        """Write every staged record of ``tables`` in one commit, a batch at a time."""
        deletable = name != "transactions"
        staged = tables()
        first = next(staged, None)
        if first is None:
            return 0  # nothing staged: no table yet
        count = 0

        def stamped() -> Iterator[pa.RecordBatch]:
            nonlocal count
            for table in itertools.chain([first], staged):
                count += table.num_rows
                yield from stamp(table, run, deletable).to_batches()

        reader = pa.RecordBatchReader.from_batches(lake_schema(schema, deletable), stamped())
        self._write(name, reader, run, mode=mode)
        return count

    def _replace_rows(self, rows: pa.Table | None, orders: pa.Array[Any], run: RunInfo) -> int:
        """One commit: the rows of ``orders`` are exactly ``rows`` afterwards."""
        table = self.table("invoice_rows")
        predicate = f"OrderId IN ({', '.join(map(str, orders.to_pylist()))})"
        if rows is None:
            if table is not None:
                self._commit(
                    "invoice_rows",
                    functools.partial(table.delete, predicate, commit_properties=commit(run)),
                )
            return 0
        stamped = stamp(rows, run, deletable=True)
        if table is None:
            self._write("invoice_rows", stamped, run, mode="append")
        else:
            self._write("invoice_rows", stamped, run, mode="overwrite", predicate=predicate)
        return rows.num_rows

    def _upsert(
        self, table: DeltaTable, name: str, source: pa.Table, key: str, run: RunInfo
    ) -> None:
        def merge() -> None:
            merger = table.merge(
                source,
                predicate=f"t.{key} = s.{key}",
                source_alias="s",
                target_alias="t",
                commit_properties=commit(run),
            )
            merger.when_matched_update_all().when_not_matched_insert_all().execute()

        self._commit(name, merge)

    def _write(self, name: str, data: Any, run: RunInfo, **options: Any) -> None:
        self._commit(
            name,
            functools.partial(
                write_deltalake,
                self.target.table_uri(name),
                data,
                storage_options=self._options,
                commit_properties=commit(run),
                **options,
            ),
        )

    @staticmethod
    def _commit(name: str, action: Callable[[], Any]) -> None:
        try:
            action()
        except (DeltaError, OSError) as exc:
            raise OutputError(
                f"cannot commit to the Delta table {name}: {_first_line(exc)}"
            ) from None


def _query(table: DeltaTable, sql: str) -> pa.Table:
    """A DataFusion query over ``table`` (as ``t``), read whole."""
    return pa.table(QueryBuilder().register("t", table).execute(sql).read_all())


def _unchanged_removed(table: DeltaTable | None, source: pa.Table, key: str) -> pa.Table:
    """``source`` less the records the table holds already, same key and DateChanged, live."""
    if table is None or not source.num_rows:
        return source
    stored = _query(table, f"SELECT {key}, DateChanged FROM t" + _live(table))
    if not stored.num_rows:
        return source
    keys = source.select([key, "DateChanged"])
    stored = stored.rename_columns([key, "_stored"]).cast(
        pa.schema([keys.schema.field(key), pa.field("_stored", keys.schema.field(1).type)])
    )  # DataFusion answers in its own types (string_view)
    pairs = keys.join(stored, key, join_type="inner")
    same = pairs.filter(
        pc.fill_null(pc.equal(pairs["DateChanged"], pairs["_stored"]), pa.scalar(False))
    )
    return source.filter(pc.invert(pc.is_in(source.column(key), same.column(key))))


def _live(table: DeltaTable) -> str:
    names = {field.name for field in table.schema().fields}
    return " WHERE _deleted_at IS NULL" if "_deleted_at" in names else ""


def _concat(tables: Iterator[pa.Table]) -> pa.Table | None:
    parts = list(tables)
    return pa.concat_tables(parts) if parts else None


def _unique(tables: TableSource, key: str, version: str) -> Iterator[pa.Table]:
    """The staged records, one per ``key`` (the highest ``version``): a second read keeps
    aside the few keys staged in more than one partition and settles them at the end."""
    keys = [chunk for table in tables() for chunk in table.column(key).chunks]
    if not keys:
        return
    counts: Any = pc.value_counts(pa.concat_arrays(keys))
    twice = counts.filter(pc.greater(counts.field("counts"), pa.scalar(1, pa.int64())))
    twice = twice.field("values")
    if not len(twice):
        yield from tables()
        return
    kept_aside = []
    for table in tables():
        mask = pc.is_in(table.column(key), twice)
        kept_aside.append(table.filter(mask))
        yield table.filter(pc.invert(mask))
    yield _latest(pa.concat_tables(kept_aside), key, version)


def _watermark(table: DeltaTable) -> dt.datetime | None:
    commit = _last_run_commit(table)
    return None if commit is None else dt.datetime.fromisoformat(str(commit[WATERMARK]))


def _last_run_commit(table: DeltaTable) -> dict[str, Any] | None:
    for limit in (RECENT_COMMITS, None):
        for commit in table.history(limit):
            if WATERMARK in commit and RUN_ID in commit:
                return commit
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


@dataclass(frozen=True)
class DeltaOutput:
    """The tables as Delta tables under ``target``, merged (:class:`Lake`)."""

    target: Target
    format: str = "delta"

    def publish(
        self, writers: Sequence[TableWriter], run: RunInfo, present: Sequence[int] | None = None
    ) -> dict[str, int]:
        lake = Lake(self.target)
        by_name = {writer.directory.name: writer for writer in writers}
        written: dict[str, int] = {}
        if "invoices" in by_name:
            written |= lake.publish_invoices(by_name["invoices"], by_name.get("invoice_rows"), run)
            if present is not None:
                written["deleted"] = lake.reconcile(present, run)
        if "transactions" in by_name:
            written |= lake.publish_transactions(by_name["transactions"], run)
        return written
