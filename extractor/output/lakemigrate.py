"""A Delta table written before the month layout, rewritten into it (:func:`migrate`).

Until issue 12 the tables were not partitioned and their files held any keys, so a merge
read and rewrote most of the table. Such a table is rewritten once, the first time a run
publishes into it: read a batch at a time, staged by month like a run's records, then
written as the layout's files (:mod:`.lakefiles`) in one commit that replaces the table. The
commit carries the watermark of the last run, so the next sync goes on from where the
table was; every record keeps its ``_run_id``, ``_extracted_at`` and ``_deleted_at``. A
rewrite cut short leaves the table as it was and only its staging behind, which the next
attempt removes.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, QueryBuilder
from deltalake.exceptions import DeltaError

from extractor.errors import OutputError
from extractor.output.lakechanges import Plan
from extractor.output.lakefiles import LAYOUTS
from extractor.output.staging import TableWriter

if TYPE_CHECKING:
    from extractor.output.delta import Lake

#: The column each table's month comes from (the rows': their order's DateOrdered).
MONTH_OF: Final = {"invoices": "DateOrdered", "transactions": "Date"}
MIGRATED: Final = "extractor.migrated"


def migrate(lake: Lake, name: str, scratch: Path, carried: dict[str, Any]) -> None:
    """Rewrite the table ``name`` in the month layout, in one commit carrying ``carried``
    (the last run's watermark and run id)."""
    table = lake.table(name)
    assert table is not None
    schema = pa.schema(table.schema().to_arrow())  # type: ignore[arg-type]
    month = _months_of_orders(lake) if name == "invoice_rows" else _month(MONTH_OF[name])
    shutil.rmtree(scratch, ignore_errors=True)
    writer = TableWriter(scratch, name, schema, LAYOUTS[name].partition, "migrate")
    try:
        for number, batch in enumerate(_batches(table, "SELECT * FROM t", schema)):
            writer.stage(f"{number:08d}", batch, month(batch))
        actions, _ = lake.changes(name, writer, Plan(1), {}, schema, lambda records: records)
        properties = CommitProperties(custom_metadata={**carried, MIGRATED: "month layout"})
        lake.create(name, schema, actions, properties, mode="overwrite")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _month(column: str) -> Callable[[pa.Table], pa.Array[Any]]:
    def month(records: pa.Table) -> pa.Array[Any]:
        return pc.strftime(records.column(column).combine_chunks(), format="%Y-%m")

    return month


def _months_of_orders(lake: Lake) -> Callable[[pa.Table], pa.Array[Any]]:
    """Each row's partition: its order's month, from the invoices table (either layout)."""
    invoices = lake.table("invoices")
    if invoices is None:
        raise OutputError("cannot rewrite invoice_rows by month: the invoices table is missing")
    schema = pa.schema(
        [pa.field("OrderId", pa.int64()), pa.field("DateOrdered", pa.timestamp("us", tz="UTC"))]
    )
    orders = pa.concat_tables(
        _batches(invoices, 'SELECT "OrderId", "DateOrdered" FROM t', schema), promote_options="none"
    )
    ids = orders.column("OrderId").combine_chunks()
    months = pc.strftime(orders.column("DateOrdered").combine_chunks(), format="%Y-%m")

    def month(rows: pa.Table) -> pa.Array[Any]:
        found = pc.index_in(rows.column("OrderId").cast(pa.int64()), value_set=ids)
        return months.take(found)  # a row of no known order: the null partition

    return month


def _batches(table: DeltaTable, sql: str, schema: pa.Schema) -> Iterator[pa.Table]:
    """The query's answer a batch at a time, in ``schema`` (DataFusion answers string_view)."""
    try:
        for batch in QueryBuilder().register("t", table).execute(sql):
            yield pa.Table.from_batches([pa.record_batch(batch).cast(schema)])
    except DeltaError as exc:
        raise OutputError(f"cannot read a Delta table to rewrite it: {exc}") from None
