"""The simulator looks like real tenants behind real proxies: scattered ids, the WCF
dialect, accounting-shaped churn; and the tidy tenant stays available, and extracted exactly."""

from __future__ import annotations

import io
import random
import statistics
from pathlib import Path
from typing import Any

import pytest

from extractor import parser
from extractor.clock import ManualClock
from extractor.engine import runner
from extractor.jobs.invoices import InvoiceJob
from extractor.output.delta import DeltaOutput
from extractor.output.targets import Target
from extractor.records.orders import OrderSink, Selection
from extractor.simulator.config import CLUSTERED
from extractor.simulator.render import BOM
from extractor.simulator.tenant import LIVE_SERIES, MOVED_IN, RECENT_POOL, Churn, Tenant
from tests.conftest import CREDS, job_of
from tests.helpers import sync
from tests.truth import assert_lake_equals_truth, assert_matches_truth


def months_per_batch(tenant: Tenant, batch: int = 1000) -> list[int]:
    return [
        len({(tenant.registered[i].year, tenant.registered[i].month) for i in chunk})
        for chunk in (tenant.ids[at : at + batch] for at in range(0, len(tenant.ids), batch))
    ]


def test_scattered_ids_do_not_follow_dates_and_clustered_ones_do() -> None:
    scattered, clustered = Tenant(20_000, ids="scattered"), Tenant(20_000, ids="clustered")
    assert sorted(scattered.registered.values()) == sorted(clustered.registered.values())
    assert statistics.median(months_per_batch(scattered)) >= 90  # of 105 months imported
    assert max(months_per_batch(clustered)) <= 9  # 20,000 orders over 129 months
    history = [i for i in scattered.ids if i < LIVE_SERIES[0]]
    assert all(scattered.registered[i] < MOVED_IN <= scattered.changed[i] for i in history)
    for low, high in zip(LIVE_SERIES, (*LIVE_SERIES[1:], 2**31), strict=True):
        series = [i for i in scattered.ids if low <= i < high]
        dates = [scattered.registered[i] for i in series]
        assert len(series) > 500 and dates == sorted(dates), "a live series follows its dates"
        assert min(dates) >= MOVED_IN


def snapshot(tenant: Tenant) -> dict[int, dict[str, Any]]:
    return {i: tenant.wire(i) for i in tenant.ids}


@pytest.mark.parametrize(
    ("shape", "least", "most"), [("accounting", 0.8, 1.0), ("uniform", 0, 0.1)]
)
def test_churn_falls_where_its_shape_says(shape: str, least: float, most: float) -> None:
    tenant = Tenant(10_000)  # its recent pool (300) holds every recent change and deletion
    before = snapshot(tenant)
    newest = sorted(tenant.ids, key=tenant.registered.__getitem__)[-int(10_000 * RECENT_POOL) :]
    report = tenant.churn(random.Random(3), Churn(200, 40, 10), MOVED_IN, shape)  # type: ignore[arg-type]
    assert len(set(report.changed) | set(report.deleted)) == 240
    for ids in (report.changed, report.deleted):
        assert least <= len(set(ids) & set(newest)) / len(ids) <= most
    for order_id in set(report.changed) - set(newest):
        edited = {
            k for k in before[order_id] if before[order_id][k] != tenant.wire(order_id).get(k)
        }
        if shape == "accounting":  # an old invoice gets a new title or reference, nothing else
            assert edited - {"DateChanged"} <= {"InvoiceTitle", "ReferenceNumber"}, edited
        assert tenant.changed[order_id] == MOVED_IN
    assert not set(report.deleted) & set(tenant.ids)


def canned(xml: str) -> bytes:
    from benchmarks.run import canned_response

    return canned_response(400, xml=xml)[0]


def read(body: bytes, ids: list[int]) -> list[dict[str, Any]]:
    sink = OrderSink(Selection(), ids)
    for at in range(0, len(body), 4093):  # chunks that split tags and the BOM's neighbours
        sink.feed(body[at : at + 4093])
    sink.close()
    return [row for part in sink.batches for row in part.orders.to_pylist()]


@pytest.mark.parametrize("compiled", [False, True] if parser.SPEEDUPS else [False])
def test_the_wcf_dialect_carries_exactly_what_the_compact_one_does(
    compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not compiled:
        monkeypatch.setattr(parser, "SPEEDUPS", None)
    wcf, compact = canned("wcf"), canned("compact")
    assert wcf.startswith(BOM + b'<?xml version="1.0" encoding="utf-8"?>\r\n')
    for mark in (b"<soap:Header />", b"\r\n          <a:OrderId>", b'i:nil="true" />', b" />"):
        assert mark in wcf
    assert b"\r\n" not in compact.replace(b"&#13;", b"") and b"a:" not in compact
    ids = Tenant(400).ids
    assert read(wcf, ids) == read(compact, ids) and len(read(wcf, ids)) == 400


async def test_a_clustered_compact_tenant_is_extracted_exactly(
    start_simulator: Any, tmp_path: Path
) -> None:
    simulator = await start_simulator(orders=300, **CLUSTERED)
    job = job_of(
        InvoiceJob, out=tmp_path, base_url=simulator.url, max_requests_per_hour=0, batch_size=100
    )
    summary = (await runner.run(job, CREDS, log=io.StringIO(), clock=ManualClock())).as_json()
    assert summary["invoices"] == 300
    assert_matches_truth(simulator, tmp_path)


async def test_a_sync_after_uniform_churn_equals_the_truth(
    start_simulator: Any, tmp_path: Path
) -> None:
    simulator = await start_simulator(orders=200, churn="uniform")
    target = Target.parse(str(tmp_path / "lake"))
    job = job_of(InvoiceJob, out=tmp_path / "work", base_url=simulator.url,
                 output=DeltaOutput(target), max_requests_per_hour=0)  # fmt: skip
    await runner.run(job, CREDS, log=io.StringIO(), clock=ManualClock())
    churned = simulator.churn(Churn(changed=30, deleted=5, added=4))
    # the orders' churn is the point: the ledger's sync has its own tests (test_sync)
    summary = await sync(simulator, target, reconcile=True, ledger=False)
    assert summary["invoices"]["written"]["invoices"] == 30 + 4
    assert_lake_equals_truth(simulator, target, marked=set(churned.deleted), ledger=False)
