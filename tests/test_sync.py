"""``extractor sync``: Delta tables that equal the simulator's current truth after churn."""

from __future__ import annotations

import datetime as dt
import io
import signal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from extractor.clock import ManualClock
from extractor.engine import runner
from extractor.jobs.invoices import InvoiceJob
from extractor.jobs.ledger import TransactionJob
from extractor.output.delta import DeltaOutput, Lake
from extractor.output.targets import Target
from extractor.simulator.server import Simulator
from extractor.simulator.tenant import Churn
from tests.conftest import CREDS, job_of
from tests.helpers import SYNC_SINCE, credentials_env, killed_at, sync
from tests.truth import assert_lake_equals_truth, read_delta, without_run


def assert_polars_reads_the_same(target: Target, deltalake_read: list[dict[str, Any]]) -> None:
    frame = pl.read_delta(target.table_uri("invoices"), storage_options=target.storage_options())
    assert frame.height == len(deltalake_read)
    by_id = {order["OrderId"]: order for order in deltalake_read}
    for order in frame.to_dicts():
        assert order == by_id[order["OrderId"]], f"order {order['OrderId']} read by Polars"


async def test_backfill_churn_sync_churn_sync_equals_truth(
    start_simulator: Any, tmp_path: Path
) -> None:
    clock = ManualClock()  # the service's: its DateChanged stamps move when the test says
    simulator = await start_simulator(orders=250, clock=clock)
    target = Target.parse(str(tmp_path / "lake"))
    output = DeltaOutput(target)
    # the backfill commands seed the tables that sync continues
    invoices = job_of(InvoiceJob, 
        out=tmp_path / "work-invoices", base_url=simulator.url, output=output,
        max_requests_per_hour=0,
    )  # fmt: skip
    await runner.run(invoices, CREDS, log=io.StringIO(), clock=ManualClock())
    ledger = job_of(TransactionJob, 
        out=tmp_path / "work-ledger", date_from=SYNC_SINCE, date_to=dt.date.today(),
        date_field="changed", base_url=simulator.url, output=output, max_requests_per_hour=0,
    )  # fmt: skip
    await runner.run(ledger, CREDS, log=io.StringIO(), clock=ManualClock())
    assert_lake_equals_truth(simulator, target, marked=set())

    # a minute between the churns: an order changed twice in one second would carry one
    # DateChanged for two versions, and a sync keeps the one it holds
    clock.advance(60)
    first = simulator.churn(Churn(changed=16, deleted=3, added=6), seed=1)
    summary = await sync(simulator, target)
    assert summary["status"] == "complete"
    assert summary["invoices"]["written"]["invoices"] == 16 + 6
    assert summary["transactions"]["written"]["transactions"] > 0
    assert_lake_equals_truth(simulator, target, marked=set(), stale=set(first.deleted))

    clock.advance(60)
    second = simulator.churn(Churn(changed=10, deleted=2, added=3), seed=2)
    summary = await sync(simulator, target, reconcile=True)
    assert summary["invoices"]["written"]["deleted"] == 3 + 2
    assert_lake_equals_truth(simulator, target, marked=set(first.deleted) | set(second.deleted))
    run_id = summary["invoices"]["run_id"]
    orders = read_delta(target, "invoices")
    assert {o["OrderId"] for o in orders if o["_run_id"] == run_id} == set(
        second.changed + second.added + first.deleted + second.deleted
    ), "changed, added and newly marked orders carry this run's id"
    assert_polars_reads_the_same(target, orders)

    earlier = summary["watermarks"]
    names = ("invoices", "invoice_rows", "transactions")
    versions = {name: Lake(target).table(name).version() for name in names}
    files = {name: set(Lake(target).table(name).file_uris()) for name in names}
    summary = await sync(simulator, target, reconcile=True)
    assert summary["invoices"]["written"] == {
        "invoices": 0, "invoice_rows": 0, "deleted": 0, "stale_records": 0
    }  # fmt: skip
    # nothing new: a table's commit, if any, holds only the watermark (the service's time in
    # whole seconds: in the same second as the last, none), which never goes back
    for name in names:
        assert Lake(target).table(name).version() - versions[name] in (0, 1)
    assert {n: set(Lake(target).table(n).file_uris()) for n in names} == files
    assert all(summary["watermarks"][name] >= earlier[name] for name in earlier)


async def test_rows_removed_from_an_order_disappear(start_simulator: Any, tmp_path: Path) -> None:
    simulator = await start_simulator(orders=300)
    target = Target.parse(str(tmp_path))
    await sync(simulator, target, ledger=False)
    order_id = next(i for i in simulator.tenant.ids if len(simulator.tenant.truth(i).rows) > 3)
    simulator.tenant.edits[order_id] = {"InvoiceRows": [1]}
    simulator.tenant.changed[order_id] = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    await sync(simulator, target, ledger=False)
    rows = [r for r in read_delta(target, "invoice_rows") if r["OrderId"] == order_id]
    month = simulator.tenant.truth(order_id).order["DateOrdered"].strftime("%Y-%m")
    assert {r.pop("order_month") for r in rows} == {month}
    assert [without_run(r) for r in rows] == simulator.tenant.truth(order_id).rows


async def cli_sync(simulator: Simulator, out: str, *extra: str, kill_at: str = "") -> int:
    """The real ``extractor sync`` into ``out``, killed at ``kill_at`` if given; its exit
    status (a run that hangs fails the test with its stacks: :func:`tests.helpers.ended`)."""
    args = (
        "sync", "--out", out, "--base-url", simulator.url, "--since", SYNC_SINCE.isoformat(),
        "--max-requests-per-hour", "0", "--parse-workers", "0",
        "--tables", "invoices,transactions", *extra,  # the lists: test_picture
    )  # fmt: skip
    return await killed_at(kill_at or None, *args, env=credentials_env(simulator.config.password))


@pytest.mark.parametrize("point", ["before-commits", "between-commits"])
async def test_a_crash_between_fetch_and_commit_loses_nothing(
    start_simulator: Any, tmp_path: Path, point: str
) -> None:
    simulator = await start_simulator(orders=250)
    target = Target.parse(str(tmp_path))
    await sync(simulator, target)
    churned = simulator.churn(Churn(changed=12, deleted=2, added=4))
    assert await cli_sync(simulator, str(tmp_path), "--reconcile", kill_at=point) == -signal.SIGKILL
    fetched = simulator.stats["GetInvoices"]
    assert await cli_sync(simulator, str(tmp_path), "--reconcile") == 0
    assert simulator.stats["GetInvoices"] == fetched, "resumed: no staged batch fetched again"
    assert_lake_equals_truth(simulator, target, marked=set(churned.deleted))
    assert not list((tmp_path / "_work").glob("*/_journal/*.jsonl")), "every run finished"
