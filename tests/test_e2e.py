"""End to end against the simulator on port 0: the Parquet output equals its ground truth."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from extractor.clock import ManualClock
from extractor.engine import runner
from extractor.jobs.invoices import InvoiceJob
from extractor.output.staging import NO_PARTITION
from extractor.records.orders import REQUIRED
from extractor.records.parse_pool import ParsePool
from extractor.simulator.server import Simulator, SimulatorConfig
from extractor.soap import Soap
from tests.conftest import CREDS, job_of, read_table
from tests.truth import assert_matches_truth


async def backfill(simulator: Simulator, out: Path, **options: Any) -> dict[str, Any]:
    job = job_of(
        InvoiceJob, out=out, base_url=simulator.url, **{"max_requests_per_hour": 0, **options}
    )
    return (await runner.run(job, CREDS, log=io.StringIO(), clock=ManualClock())).as_json()


@dataclass(frozen=True)
class Backfilled:
    simulator: Simulator
    out: Path
    summary: dict[str, Any]


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory) -> Backfilled:
    """One backfill of 600 orders (scattered ids, every kind of value, orders without a date
    and with an APIException) through two parser processes, which the tests that only read
    its output share (each ran its own of 1500 orders, and proved nothing more by it)."""
    out = tmp_path_factory.mktemp("backfilled")

    async def run() -> Backfilled:
        simulator = Simulator(SimulatorConfig(orders=600))
        await simulator.start()
        try:
            summary = await backfill(simulator, out, batch_size=75, concurrency=6, parse_workers=2)
        finally:
            await simulator.stop()
        return Backfilled(simulator, out, summary)

    return asyncio.run(run())


def test_backfill_equals_ground_truth(backfilled: Backfilled) -> None:
    simulator, out, summary = backfilled.simulator, backfilled.out, backfilled.summary
    assert summary["status"] == "complete"
    assert summary["invoices"] == simulator.config.orders
    assert summary["requests"] == 1 + 8  # GetOrderSyncList + 600/75 batches
    assert_matches_truth(simulator, out)
    assert summary["rows"] == len(read_table(out, "invoice_rows"))


def test_partitions_hold_rows_with_their_order(backfilled: Backfilled) -> None:
    tmp_path = backfilled.out
    month_of = {o["OrderId"]: o["order_month"] for o in read_table(tmp_path, "invoices")}
    rows = read_table(tmp_path, "invoice_rows")
    assert rows and all(row["order_month"] == month_of[row["OrderId"]] for row in rows)
    assert NO_PARTITION in month_of.values(), "orders without DateOrdered get their own partition"
    assert (tmp_path / "invoices" / f"order_month={NO_PARTITION}").is_dir()
    files = list((tmp_path / "invoices").rglob("*.parquet"))
    folders = {f.parent for f in files}
    assert len(files) == len(folders), "one file per partition per run"
    assert not list(tmp_path.rglob("*.tmp"))
    assert not (tmp_path / "_staging").exists(), "staged batches are removed once published"


async def test_property_selection(start_simulator: Any, tmp_path: Path) -> None:
    simulator = await start_simulator(orders=300)
    props = ("CustomerName", "OrderTotalIncVat", "Addresses", "InvoiceRows")
    row_props = ("Name", "Price", "TaxSettings")
    await backfill(simulator, tmp_path, invoice_properties=props, row_properties=row_props)
    orders = read_table(tmp_path, "invoices")
    assert set(orders[0]) == {*REQUIRED, *props} - {"InvoiceRows"} | {"order_month"}
    assert_matches_truth(simulator, tmp_path, (*REQUIRED, *props), row_props)


async def test_without_invoice_rows_no_rows_are_fetched(
    simulator: Simulator, tmp_path: Path
) -> None:
    summary = await backfill(simulator, tmp_path, invoice_properties=("OrderStatus",))
    assert not (tmp_path / "invoice_rows").exists()
    assert_matches_truth(simulator, tmp_path, (*REQUIRED, "OrderStatus"))
    truth = simulator.tenant.ground_truth()
    errors = sum(1 for t in truth.values() if t.order.get("APIException") is not None)
    assert errors and summary["api_exceptions"] == errors, "APIException is always fetched"


async def test_soap_12(start_simulator: Any, tmp_path: Path) -> None:
    simulator = await start_simulator(orders=100)
    await backfill(simulator, tmp_path, soap_version=Soap.V1_2, batch_size=50)
    assert_matches_truth(simulator, tmp_path)


async def test_changed_after_lists_only_changed_orders(
    simulator: Simulator, tmp_path: Path
) -> None:
    import datetime as dt

    since = dt.datetime(2024, 6, 1)  # after a scattered tenant moved in
    summary = await backfill(simulator, tmp_path, changed_after=since)
    expected = simulator.tenant.sync_list(since, None)
    assert 0 < summary["invoices"] == len(expected) < simulator.config.orders
    assert sorted(o["OrderId"] for o in read_table(tmp_path, "invoices")) == sorted(expected)


async def test_relogin_once_for_all_workers(start_simulator: Any, tmp_path: Path) -> None:
    simulator = await start_simulator(orders=150, session_ttl_calls=3)
    try:
        summary = await backfill(simulator, tmp_path, batch_size=10, concurrency=8)
    finally:
        await simulator.stop()
    assert summary["status"] == "complete"
    assert summary["relogins"] >= 3
    expired = simulator.stats["expired"]
    # one Login to start, then one per expiry — never one per waiting worker
    assert simulator.stats["Login"] == 1 + summary["relogins"]
    assert summary["relogins"] <= expired + simulator.stats["unauthenticated"]
    served = simulator.stats["GetOrderSyncList"] + simulator.stats["GetInvoices"]
    assert summary["requests"] == served, "the request after each re-login is counted too"
    assert_matches_truth(simulator, tmp_path)


async def test_simulator_expires_sessions_on_demand(start_simulator: Any, tmp_path: Path) -> None:
    simulator = await start_simulator(orders=100)
    simulator.expire_sessions()
    await backfill(simulator, tmp_path / "a")
    simulator.expire_sessions()
    summary = await backfill(simulator, tmp_path / "b", batch_size=20)
    assert summary["relogins"] == 0  # each run logs in afresh
    assert_matches_truth(simulator, tmp_path / "b")


@pytest.mark.parametrize("orders", [0, 1])
async def test_tiny_tenants(start_simulator: Any, tmp_path: Path, orders: int) -> None:
    simulator = await start_simulator(orders=orders)
    try:
        summary = await backfill(simulator, tmp_path)
    finally:
        await simulator.stop()
    assert summary["invoices"] == orders
    if orders:
        assert_matches_truth(simulator, tmp_path)


def test_simulator_is_deterministic() -> None:
    a = Simulator(SimulatorConfig(orders=50, seed=3))
    b = Simulator(SimulatorConfig(orders=50, seed=3))
    assert a.tenant.ids == b.tenant.ids
    assert [a.render_order(i) for i in a.tenant.ids] == [b.render_order(i) for i in b.tenant.ids]


def test_parser_processes_give_the_same_dataset(backfilled: Backfilled) -> None:
    """The shared backfill parsed in two parser processes: its dataset equals the truth
    (:func:`test_backfill_equals_ground_truth`), its counts too, and staging is gone."""
    simulator, summary = backfilled.simulator, backfilled.summary
    assert summary["status"] == "complete"
    assert summary["invoices"] == simulator.config.orders
    assert summary["api_exceptions"] == sum(
        1 for t in simulator.tenant.ground_truth().values() if t.order["APIException"] is not None
    )
    assert not (backfilled.out / "_staging").exists()


async def test_parser_processes_with_expiring_sessions(
    start_simulator: Any, tmp_path: Path
) -> None:
    simulator = await start_simulator(orders=300, session_ttl_calls=2)
    summary = await backfill(simulator, tmp_path, batch_size=20, concurrency=8, parse_workers=2)
    assert summary["relogins"] >= 3 and summary["status"] == "complete"
    assert_matches_truth(simulator, tmp_path)


async def test_batches_larger_than_one_conversion_step(
    start_simulator: Any, tmp_path: Path
) -> None:
    """A 1000-order response is converted in several parts and staged as one (two batches:
    a run of one parses on the event loop, whatever ``parse_workers`` says)."""
    simulator = await start_simulator(orders=1001)
    for workers in (0, 2):
        out = tmp_path / str(workers)
        summary = await backfill(simulator, out, batch_size=1000, parse_workers=workers)
        assert summary["status"] == "complete"
        assert_matches_truth(simulator, out)


async def test_a_run_of_one_batch_starts_no_parser_process(
    start_simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One batch is one response on one core: parser processes would only cost their start."""
    started: list[ParsePool] = []
    entered = ParsePool.__aenter__

    async def counted(pool: ParsePool) -> ParsePool:
        started.append(pool)
        return await entered(pool)

    monkeypatch.setattr(ParsePool, "__aenter__", counted)
    simulator = await start_simulator(orders=40)
    for batch_size, pools in ((100, 0), (20, 1)):
        out = tmp_path / str(batch_size)
        summary = await backfill(simulator, out, batch_size=batch_size, parse_workers=2)
        assert (summary["status"], len(started)) == ("complete", pools)
        assert_matches_truth(simulator, out)


def test_duckdb_reads_the_dataset(backfilled: Backfilled) -> None:
    import duckdb

    simulator, tmp_path = backfilled.simulator, backfilled.out
    truth = simulator.tenant.ground_truth()
    glob = f"{tmp_path}/invoices/**/*.parquet"
    rows = duckdb.sql(
        f"SELECT OrderId, order_month, OrderTotalIncVat FROM read_parquet('{glob}', "
        "hive_partitioning=true)"
    ).fetchall()
    assert len(rows) == len(truth)
    for order_id, month, total in rows:
        expected = truth[order_id].order
        stamp = expected["DateOrdered"]
        assert month == (stamp.strftime("%Y-%m") if stamp else NO_PARTITION)
        assert total == expected["OrderTotalIncVat"]
