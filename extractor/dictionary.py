"""The data dictionary, ``docs/tables.md``: every table the extractor writes, each column's
Parquet and Delta type, whether it may be null, the key and partition, the source operation
and how ``sync`` keeps the table, all worked out from the specs (:mod:`extractor.operations`),
the WSDL type table and the lake's types, so that it cannot drift from them;
``tests/test_dictionary.py`` holds it to what the writers really produce.

    python -m extractor.dictionary > docs/tables.md      # make docs

The meanings of the columns the extractor adds (derived, partition and its own) are written
here, in :data:`MEANINGS` and :data:`ADDED`: the WSDLs document none of their fields. Over 300
lines: a third of it is those meanings and the page's own prose.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import orjson
import pyarrow as pa
from deltalake import Schema as DeltaSchema

from extractor import schema
from extractor.engine.spec import Keeping, Spec, Strategy
from extractor.operations import INVOICES, LISTS, TRANSACTIONS
from extractor.output.lakefiles import IDENTITY, INVOICE_ROWS, lake_schema
from extractor.output.staging import with_run_schema
from extractor.records.orders import ROW_INDEX, Selection

#: What the columns the extractor adds to a record's hold, by ``table.column`` (a nested
#: one by its dotted name): written once, here.
MEANINGS: Final = {
    "invoices.order_month": "`YYYY-MM` of the order's `DateOrdered` (UTC); none when it has no "
    "date: Parquet's folder `order_month=none`, Delta's null",
    "invoice_rows.OrderId": "the `OrderId` of the order the row is one of",
    f"invoice_rows.{ROW_INDEX}": "the row's place among its order's `InvoiceRows` as the "
    "service sent them, from 0 (a nil row is no row: its number is left out)",
    "invoice_rows.order_month": "its order's `order_month`: a row sits with its order",
    "transactions.date_month": "`YYYY-MM` of the line's `Date` (UTC); none when it has no "
    "date: Parquet's folder `date_month=none`, Delta's null",
    "dimension_values.DimensionType": "the `TypeId` of the dimension (`dimensions`) the "
    "values were asked for: `GetUserDefinedDimensionValues` is called once per dimension",
    "account_balances.FiscalYearStart": "the `StartingDate` of the fiscal year "
    "(`fiscal_years`) the balances were asked from: `GetAggregated`'s `startDate`",
    "account_balances.FiscalYearLocked": "whether that fiscal year was locked (`IsLocked`) "
    "when fetched: its balances are then final, and not asked again",
    "account_balances.PeriodAmounts": "`Periods` typed. By our reading of `GetAggregated` "
    "(the service does not document it) period Key `n` is the n-th month from "
    "`FiscalYearStart`, its Value that month's sum",
    "account_balances.PeriodAmounts[].Month": "the first day of the period's month; null "
    "when its Key is no month number (1 to 240)",
    "account_balances.PeriodAmounts[].Amount": "the period's Value, exact; null when it is no "
    "decimal of this type (`verify` says which)",
    "customers.Active": "the company's `Active` as `GetCompanySyncList` lists it "
    "(`GetCompanies` has no such field)",
}
#: The columns the lake adds to every record of a table (``_deleted_at``: of a table whose
#: deletions are marked), and a fleet's partition column.
ADDED: Final = {
    "_run_id": "the run that last wrote the record (its summary and journal carry the same id)",
    "_extracted_at": "that run's as-of time (UTC, on the service's clock): when it began "
    "listing what to fetch; a resumed run keeps it",
    "_deleted_at": "when a run with `--reconcile` found that the service no longer lists the "
    "record's key (that run's as-of time); null while it is listed",
    IDENTITY: "in a fleet's tables only: the client company's identity (a guid, as "
    "`GetIdentities` gives it), the first partition column (Delta) and the first hive folder "
    "(Parquet)",
}
#: Columns never null, and why: the keys the extractor itself holds to (it keeps only the
#: records it asked for, or makes the value), and its own columns. Other keys are as the
#: service sends them.
NOT_NULL: Final = {
    "invoices": ("OrderId",),  # only the OrderIds asked for are kept
    "invoice_rows": ("OrderId", ROW_INDEX),  # the order's; the row's place
    "customers": ("Id",),  # only the CompanyIds listed and asked for are kept
    "dimension_values": ("DimensionType",),  # a dimension without a TypeId is not asked
    "account_balances": ("FiscalYearStart",),  # a year without a StartingDate is not asked
    "": ("_run_id", "_extracted_at"),  # every table's
}
_KEPT: Final = {
    Keeping.REPLACE: "each sync's answer replaces the table when it differs",
    Keeping.UPSERT: "merged by key, the record with the latest `DateChanged` kept",
    Keeping.RECONCILE: "merged by key (an answer older by `DateChanged` than the stored record "
    "never replaces it); with `--reconcile`, what the service no longer lists is marked "
    "`_deleted_at`",
}


@dataclass(frozen=True)
class Column:
    """One column of a table (or, by its dotted name, a field of a nested one): its type in
    the Parquet files (None: not in them) and in the Delta table (Delta's JSON form)."""

    name: str
    parquet: pa.DataType | None
    delta: Any
    nullable: bool
    meaning: str
    nested: bool = False  # a field of a column's struct or list


@dataclass(frozen=True)
class Table:
    """One table as the dictionary describes it."""

    name: str
    record: str  # the WSDL type of a record
    service: schema.Service
    source: str
    operation: str  # the operation whose records the table holds
    key: tuple[str, ...]
    partition: str | None
    keeping: str
    columns: tuple[Column, ...]  # the columns, each followed by its nested fields
    left_out: dict[str, str]  # fields of the record that are not columns, and why

    @property
    def parquet(self) -> pa.Schema:
        """The columns of the table's Parquet files (a partition is a folder, not a column)."""
        return pa.schema(
            [(c.name, c.parquet) for c in self.columns if c.parquet is not None and not c.nested]
        )

    @property
    def delta(self) -> list[tuple[str, Any]]:
        """The Delta table's columns and their types (Delta's JSON form), in its order."""
        return [(c.name, c.delta) for c in self.columns if not c.nested]


def tables() -> tuple[Table, ...]:
    """Every table the extractor writes: the invoices, their rows, the ledger, the lists."""
    selection = Selection()
    rows = _table(
        INVOICES, selection.row_fields, selection.row_schema, name="invoice_rows",
        record=schema.invoice_row().name, key=INVOICE_ROWS.order,
        source="the `InvoiceRows` of each order `GetInvoices` returns (see `invoices`)",
        keeping="an order's rows are replaced as a set whenever the order changes, and "
        "marked `_deleted_at` with it",
    )  # fmt: skip
    rows_apart = {"InvoiceRows": "the table `invoice_rows`"}
    return (
        _table(INVOICES, selection.order_fields, selection.order_schema, left_out=rows_apart),
        rows,
        _table(TRANSACTIONS, TRANSACTIONS.struct.fields, TRANSACTIONS.schema),
        *(_table(spec, spec.struct.fields, spec.schema) for spec in LISTS),
    )


def _table(
    spec: Spec, fields: Sequence[schema.Field], parquet: pa.Schema, name: str = "",
    record: str = "", key: Sequence[str] = (), source: str = "", keeping: str = "",
    left_out: dict[str, str] | None = None,
) -> Table:  # fmt: skip
    name = name or spec.table
    lake = lake_schema(parquet, deletable=spec.keeping is Keeping.RECONCILE)
    parquet = with_run_schema(parquet)  # the files carry the run's columns too
    if spec.partition is not None:
        lake = lake.append(pa.field(spec.partition, pa.string()))
    delta = orjson.loads(DeltaSchema.from_arrow(lake).to_json())["fields"]
    docs = dict(_documented(fields))
    wsdl = {f.name for f in fields}
    not_null = {*NOT_NULL.get(name, ()), *NOT_NULL[""]}
    columns: list[Column] = []
    for field in delta:
        column = field["name"]
        stored = parquet.field(column).type if column in parquet.names else None
        for path, arrow, kind in _fields(column, stored, field["type"]):
            nested = path != column
            meaning = docs.get(path, "") if column in wsdl else _meaning(name, path)
            nullable = nested or column not in not_null
            columns.append(Column(path, arrow, kind, nullable, meaning, nested))
    return Table(
        name, record or spec.record, spec.operation.service, source or _source(spec),
        spec.operation.name, tuple(key or spec.key), spec.partition,
        f"`{spec.keeping}`: {keeping or _keeping(spec)}", tuple(columns),
        left_out or dict.fromkeys(spec.left_out, "never asked for nor written"),
    )  # fmt: skip


def _fields(name: str, arrow: pa.DataType | None, delta: Any) -> Iterator[tuple[str, Any, Any]]:
    """A column, then the fields nested in it by dotted name (a list's items' as
    ``Name[].Field``): each with its Arrow type (None: not in Parquet) and Delta type."""
    yield name, arrow, delta
    while isinstance(delta, dict) and delta["type"] == "array":
        delta, name = delta["elementType"], f"{name}[]"
        arrow = cast("pa.ListType[Any]", arrow).value_type if arrow is not None else None
    if isinstance(delta, dict) and delta["type"] == "struct":
        for at, field in enumerate(delta["fields"]):
            inner = arrow.field(at).type if arrow is not None else None
            yield from _fields(f"{name}.{field['name']}", inner, field["type"])


def _meaning(table: str, column: str) -> str:
    """What a column the extractor adds holds; a ValueError names one left undescribed."""
    meaning = MEANINGS.get(f"{table}.{column}") or ADDED.get(column)
    if meaning is None:
        raise ValueError(f"{table}.{column} is not the WSDL's: describe it in MEANINGS")
    return meaning


def _documented(fields: Sequence[schema.Field], prefix: str = "") -> Iterator[tuple[str, str]]:
    """The WSDL's documentation of ``fields`` and of theirs, by dotted name."""
    for field in fields:
        name = f"{prefix}{field.name}"
        if field.doc:
            yield name, field.doc
        inner = field.type.item if isinstance(field.type, schema.ListOf) else field.type
        if isinstance(inner, schema.Struct):
            listed = "[]" if isinstance(field.type, schema.ListOf) else ""
            yield from _documented(inner.fields, f"{name}{listed}.")


def _source(spec: Spec) -> str:
    """Which operations fill the table, and how they are called."""
    service, call = spec.operation.service.name, f"`{spec.operation.name}`"
    if spec.listing is not None:
        how = f"`{spec.listing.name}` lists the ids, then {call} by batches of ids"
    elif spec.strategy is Strategy.DATE_WINDOWS:
        how = f"{call} by date windows, a failing window halved down to a day"
    elif spec.per is not None:
        per = spec.per
        how = f"{call} once per row of `{per.table}`, its `{per.column}` sent as `{per.param}`"
    elif spec.changes is not None and spec.changes.listing is not None:
        how = f"`{spec.changes.listing.name}` lists the ids changed since the watermark (in "
        how += f"pages), then {call} by batches of ids"
    elif spec.changes is not None:
        after = ".".join(spec.changes.after)
        how = f"{call}, those changed since the watermark (`{after}`)"
    else:
        how = f"{call}, the whole list in one call"
    return f"{how} ({service})"


def _keeping(spec: Spec) -> str:
    per = spec.per
    if per is None or per.settled is None:
        return _KEPT[spec.keeping]
    return (
        f"the records of a `{per.table}` row not `{per.settled}` are asked again on every "
        f"sync and replace those held; those fetched once it was `{per.settled}` are final "
        "and kept"
    )


def markdown() -> str:
    """``docs/tables.md``: the preamble, an index of the tables, then each table's columns."""
    found = tables()
    lines = [*_preamble(found), "", *_index(found)]
    for table in found:
        lines += ["", *_section(table)]
    return "\n".join(lines) + "\n"


def _preamble(found: Sequence[Table]) -> list[str]:
    services = {table.service.name: table.service for table in found}.values()
    types = [t for service in services for t in service.types.values()]
    wsdl_docs = sum(1 for t in types if isinstance(t, schema.Struct) for f in t.fields if f.doc)
    added = [f"  - `{name}`: {meaning}." for name, meaning in ADDED.items()]
    if wsdl_docs:
        fields = f"the WSDLs document {wsdl_docs} fields: their text is the field's meaning here."
    else:
        fields = (
            "the WSDLs (`extractor/wsdl/`) document some operations (quoted under each table) "
            "but none of their fields: they have no `<s:annotation><s:documentation>`. A field "
            "of the service is known here by its name and type only; the meanings given are "
            "the extractor's own, of the columns it derives or adds."
        )
    return [
        "# The tables",
        "",
        "<!-- generated by `make docs` (python -m extractor.dictionary); do not edit -->",
        "",
        "Every table the extractor writes, column by column. This page is generated from the "
        "code's own truth (the specs in `extractor/operations.py`, the WSDLs' type table and "
        "the lake's types) by `make docs`, that is `python -m extractor.dictionary > "
        "docs/tables.md`; `tests/test_dictionary.py` fails when it differs from what the "
        "generator says, or the generator from what the writers write.",
        "",
        "- **Parquet type**: the Arrow type in the Parquet files (`extractor invoices`, "
        "`transactions` and `tables`), as pyarrow, DuckDB and Polars read it: enumerations "
        "are `dictionary<int32, string>` (values the WSDL does not list are kept), decimals "
        "exact `decimal128(38, 10)`, times `timestamp[us, tz=UTC]`. A partition is a hive "
        "folder (`order_month=2024-05/`), not a column of the files; `—`: not in the files.",
        "- **Delta type**: the type in the Delta tables (`sync`, `--format delta`), as Delta "
        "names it: enumerations are `string`, `uint8` is `short`, all else as in Parquet.",
        "- **Nested types**: a struct's fields are listed under it by dotted name "
        "(`Addresses.Invoice.City`), the fields of a list's items as `Name[].Field`.",
        '- **Null**: every field of the service may be absent, nil or its "not set" '
        "sentinel (`0001-01-01T00:00:00`, `-2147483648`, ...), each read as null; `no` only "
        "where the extractor guarantees a value (a key it holds to, its own columns).",
        f"- **Meaning**: {fields}",
        "- **Columns the extractor adds** to every record (`_run_id` and `_extracted_at` in "
        "Parquet and Delta, `_deleted_at` in Delta only; `identity_id` is a column in Delta "
        "and a hive folder in Parquet):",
        *added,
    ]


def _index(found: Sequence[Table]) -> list[str]:
    lines = ["| table | record (WSDL type) | source operation | key | partition |", _rule(5)]
    for t in found:
        key = ", ".join(f"`{name}`" for name in t.key)
        partition = f"`{t.partition}`" if t.partition else "none"
        lines.append(
            f"| [`{t.name}`](#{t.name}) | `{t.record}` | {t.service.name} `{t.operation}` "
            f"| {key} | {partition} |"
        )
    return lines


def _rule(columns: int) -> str:
    return "|---" * columns + "|"


def _section(table: Table) -> list[str]:
    key = ", ".join(f"`{name}`" for name in table.key)
    lines = [
        f"## {table.name}",
        "",
        f"- **Records**: `{table.record}` ({table.service.name})",
        f"- **Source**: {table.source}",
        f"- **Key**: {key}",
        f"- **Partition**: `{table.partition}`" if table.partition else "- **Partition**: none",
        f"- **`sync` keeps it**: {table.keeping}",
    ]
    for name, why in table.left_out.items():
        lines.append(f"- **Not a column**: the record's `{name}`: {why}")
    said = table.service.docs.get(table.operation)
    if said:
        lines.append(f'- **The WSDL of `{table.operation}`**: "{said}"')
    lines += ["", "| column | Parquet type | Delta type | null | role | meaning |", _rule(6)]
    for c in table.columns:
        role = "key" if c.name in table.key else "partition" if c.name == table.partition else ""
        if c.parquet is not None:
            parquet = f"`{_arrow_name(c.parquet)}`"
        else:
            parquet = "folder" if c.name == table.partition else "—"
        meaning = "the lake's own: see the top of the page" if c.name in ADDED else c.meaning
        lines.append(
            f"| `{c.name}` | {parquet} | `{_delta_name(c.delta)}` | "
            f"{'yes' if c.nullable else 'no'} | {role} | {meaning} |"
        )
    return lines


def _arrow_name(kind: pa.DataType) -> str:
    if pa.types.is_dictionary(kind):
        return f"dictionary<{kind.index_type}, {kind.value_type}>"
    if pa.types.is_struct(kind):
        return "struct"
    if pa.types.is_list(kind):
        return f"list<{_arrow_name(kind.value_type)}>"
    return str(kind)


def _delta_name(kind: Any) -> str:
    if isinstance(kind, str):
        return kind
    if kind["type"] == "array":
        return f"array<{_delta_name(kind['elementType'])}>"
    return str(kind["type"])


if __name__ == "__main__":
    sys.stdout.write(markdown())
