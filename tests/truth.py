"""What the tests compare an output with: the simulator's ground truth, field by field."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder

from extractor.engine.spec import Spec
from extractor.operations import TRANSACTION_TYPES
from extractor.output.staging import NO_PARTITION
from extractor.output.targets import Target
from extractor.simulator import values
from extractor.simulator.ledger import Ledger, search
from extractor.simulator.service import SimulatedService
from extractor.simulator.tenant import Tenant
from tests.conftest import read_table

RUN_COLUMNS = ("_run_id", "_extracted_at", "_deleted_at")


def assert_matches_truth(
    simulator: SimulatedService,
    out: Path,
    props: tuple[str, ...] = (),
    row_props: tuple[str, ...] = (),
    leaving_out: frozenset[int] | set[int] = frozenset(),
) -> None:
    """``out``'s invoices and rows equal the simulator's truth, but the orders ``leaving_out``
    (ids that failed, and are reported instead)."""
    rows = read_table(out, "invoice_rows") if (out / "invoice_rows").exists() else None
    orders = read_table(out, "invoices")
    assert_records_match(simulator.tenant, orders, rows, props, row_props, leaving_out)


def assert_records_match(
    tenant: Tenant,
    orders: list[dict[str, Any]],
    rows: list[dict[str, Any]] | None,
    props: tuple[str, ...] = (),
    row_props: tuple[str, ...] = (),
    leaving_out: frozenset[int] | set[int] = frozenset(),
) -> None:
    """The records read back (their partition columns still on) equal ``tenant``'s truth
    field by field: every OrderId once (but those ``leaving_out``), each row once (``rows``
    None: no rows table)."""
    truth = tenant.ground_truth(invoice_properties=props, row_properties=row_props)
    truth = {order_id: t for order_id, t in truth.items() if order_id not in leaving_out}
    counts = Counter(order["OrderId"] for order in orders)
    assert counts == Counter(list(truth)), "every OrderId exactly once"
    for order in orders:
        expected = truth[order["OrderId"]].order
        month = order.pop("order_month")
        stamp = expected.get("DateOrdered")
        assert month == (stamp.strftime("%Y-%m") if stamp else NO_PARTITION)
        assert order == expected, f"order {order['OrderId']}"
    expected_rows = [row for t in truth.values() for row in t.rows]
    if not expected_rows and rows is None:
        return
    assert rows is not None, "the rows table is missing"
    for row in rows:
        row.pop("order_month")
    key = lambda row: (row["OrderId"], row["_row_index"])  # noqa: E731
    assert sorted(rows, key=key) == sorted(expected_rows, key=key)


def read_delta(target: Target, name: str) -> list[dict[str, Any]]:
    """The table's current state, read with deltalake (DataFusion inside delta-rs)."""
    table = DeltaTable(target.table_uri(name), storage_options=target.storage_options())
    result = QueryBuilder().register("t", table).execute("SELECT * FROM t").read_all()
    return pa.table(result).to_pylist()


def assert_lake_equals_truth(
    simulator: SimulatedService,
    target: Target,
    marked: set[int],
    stale: set[int] = frozenset(),
    ledger: bool = True,
) -> None:
    """Live orders, their rows and the ledger equal the truth field by field, one row per key;
    the orders in ``marked`` carry ``_deleted_at``; those in ``stale`` (deleted, not yet
    reconciled) are still there unmarked."""
    names = ("invoices", "invoice_rows") + (("transactions",) if ledger else ())
    tables = {name: read_delta(target, name) for name in names}
    assert_lake_part_equals(simulator.tenant, simulator.ledger, tables, marked, stale, ledger)


def assert_lake_part_equals(
    tenant: Tenant,
    books: Ledger,
    tables: dict[str, list[dict[str, Any]]],
    marked: set[int],
    stale: set[int] = frozenset(),
    ledger: bool = True,
) -> None:
    """:func:`assert_lake_equals_truth` for the records of ``tables`` (one identity's, in a
    fleet's tables, its ``identity_id`` column taken off) against ``tenant`` and ``books``."""
    truth = tenant.ground_truth()
    orders = tables["invoices"]
    assert set(Counter(o["OrderId"] for o in orders).values()) == {1}, "one row per OrderId"
    live, deleted = {}, set()
    months = {}
    for order in orders:
        run_id, extracted, deleted_at = (order.pop(name) for name in RUN_COLUMNS)
        assert run_id and extracted is not None
        months[order["OrderId"]] = order.pop("order_month")
        assert months[order["OrderId"]] == _month(order["DateOrdered"]), "partitioned by month"
        if deleted_at is not None:
            deleted.add(order["OrderId"])
        else:
            live[order["OrderId"]] = order
    assert deleted == marked, "exactly the deleted orders are marked"
    assert set(live) == set(truth) | stale
    for order_id, expected in truth.items():
        assert live[order_id] == expected.order, f"order {order_id}"
    rows = [row for row in tables["invoice_rows"] if row["OrderId"] in truth]
    for row in rows:
        for name in RUN_COLUMNS:
            row.pop(name)
        assert row.pop("order_month") == months[row["OrderId"]], "in its order's partition"
    key = lambda row: (row["OrderId"], row["_row_index"])  # noqa: E731
    assert sorted(rows, key=key) == sorted((r for t in truth.values() for r in t.rows), key=key)
    if not ledger:
        return
    lines = tables["transactions"]
    assert len(lines) == len({line["Id"] for line in lines}), "one row per Id"
    for line in lines:
        assert line.pop("date_month") == _month(line["Date"]), "partitioned by month"
    expected = books.ground_truth()
    assert {line.pop("Id"): without_run(line) for line in lines} == {
        line_id: {k: v for k, v in line.items() if k != "Id"} for line_id, line in expected.items()
    }


def without_run(record: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in record.items() if name not in RUN_COLUMNS}


def _month(moment: Any) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m")


def assert_ledger_equals(simulator: SimulatedService, out: Path, params: dict[str, str]) -> None:
    """OUT/transactions equals the simulator's ledger lines that ``params`` (GetTransactions'
    search parameters) select, field by field, each line once."""
    lines = search(simulator.ledger, params)
    truth = simulator.ledger.ground_truth(iter(lines))
    rows = read_table(out, "transactions")
    assert Counter(row["Id"] for row in rows) == Counter(list(truth)), "every Id exactly once"
    for row in rows:
        month = row.pop("date_month")
        assert month == row["Date"].strftime("%Y-%m")
        assert row == truth[row["Id"]], row["Id"]


def assert_list_equals(
    rows: list[dict[str, Any]], expected: list[dict[str, Any]], spec: Spec = TRANSACTION_TYPES
) -> None:
    """A whole list's table (its rows as read back, whatever else they carry: ``_run_id``,
    ``identity_id``) equals ``expected`` (the simulator's list, as it answers it) field by
    field, one row per key."""
    fields = spec.struct.fields
    (key,) = spec.key
    truth = {
        entry[key]: {f.name: values.truth(f.type, entry.get(f.name)) for f in fields}
        for entry in expected
    }
    got = Counter(row[key] for row in rows)
    assert got == Counter(list(truth)), "every key exactly once"
    for row in rows:
        assert {f.name: row[f.name] for f in fields} == truth[row[key]], row[key]
