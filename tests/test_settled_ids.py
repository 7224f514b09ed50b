"""Ids the service listed but did not return are settled, not carried forever (issue 24,
item 3): one it no longer lists is gone (not a failure; marked deleted with --reconcile),
one it still lists is asked for a second time, reported, and then not asked for again."""

from __future__ import annotations

import datetime as dt
import io
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

from extractor.engine import runner
from extractor.jobs.invoices import InvoiceJob
from extractor.jobs.sync import SyncJob, run_sync
from extractor.output.targets import Target
from extractor.simulator.memory import MemoryReply, MemoryWire
from extractor.simulator.service import SimulatedService
from extractor.simulator.tenant import Churn
from tests.conftest import CREDS, MEMORY_URL, CliResult, InMemory, job_of
from tests.helpers import asked_ids
from tests.truth import assert_lake_equals_truth

#: A DateChanged long before the runs, for ids listed and never returned.
LONG_AGO = dt.datetime(2020, 1, 1)


class Recording(MemoryWire):
    """The in-memory wire, keeping the OrderIds of every GetInvoices sent."""

    def __init__(self, service: SimulatedService) -> None:
        super().__init__(service)
        self.asked: list[int] = []

    @asynccontextmanager
    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], name: str
    ) -> AsyncIterator[MemoryReply]:
        if name == "GetInvoices":
            self.asked += asked_ids(body)
        async with super().post(url, body, headers, name) as reply:
            yield reply


async def backfill(memory: InMemory, wire: Recording, out: Path, **options: Any) -> dict[str, Any]:
    job = job_of(
        InvoiceJob, out=out, base_url=MEMORY_URL, max_requests_per_hour=0,
        **{"batch_size": 100, **options},
    )  # fmt: skip
    return (
        await runner.run(job, CREDS, log=io.StringIO(), clock=memory.clock, wire=wire)
    ).as_json()


def outcomes(summary: Mapping[str, Any]) -> dict[int, str]:
    """The not-returned report: each OrderId's outcome."""
    report = pq.read_table(summary["not_returned_report"]).to_pylist()
    return {row["OrderId"]: row["outcome"] for row in report}


async def test_a_rerun_lists_again_and_settles_an_id_deleted_before_its_fetch(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    memory = in_memory(orders=300)
    service, wire = memory.service, Recording(memory.service)
    vanished = service.tenant.ids[150]
    service.vanish_after_listing([vanished])
    first = await backfill(memory, wire, tmp_path)
    assert first["status"] == "partial" and first["missing_ids"] == 1
    assert outcomes(first) == {vanished: "not returned"}
    wire.asked.clear()
    listings = service.stats["GetOrderSyncList"]
    second = await backfill(memory, wire, tmp_path)  # the same command
    assert service.stats["GetOrderSyncList"] == listings + 1, "listed again"
    assert wire.asked == [], "the id the service no longer lists is not asked for"
    assert second["status"] == "complete" and second["retry_of"] == first["run_id"]
    assert (second["gone_ids"], second["missing_ids"], second["failures"]) == (1, 0, [])
    assert second["failures_report"] is None
    assert outcomes(second) == {vanished: "no longer listed"}
    third = await backfill(memory, wire, tmp_path)
    assert third["run_id"] == second["run_id"] and wire.asked == []  # nothing to do


async def test_an_id_listed_but_never_returned_is_asked_twice_then_settled(
    in_memory: Callable[..., InMemory], tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    memory = in_memory(orders=300)
    service, wire = memory.service, Recording(memory.service)
    phantom = service.tenant.issued + 7
    service.tenant.phantoms[phantom] = LONG_AGO  # listed, never returned
    first = await backfill(memory, wire, tmp_path)
    assert first["status"] == "partial" and first["missing_ids"] == 1
    wire.asked.clear()
    second = await backfill(memory, wire, tmp_path)
    assert wire.asked == [phantom], "still listed: asked for once more"
    assert second["status"] == "partial"  # reported, the first time it is settled
    assert (second["missing_ids"], second["missing_twice_ids"], second["gone_ids"]) == (0, 1, 0)
    assert [f["ids"] for f in second["failures"]] == [[phantom]]
    assert outcomes(second) == {phantom: "not returned twice"}
    code, shown, _ = cli("status", str(tmp_path), "--json")
    (place,) = orjson.loads(shown)["places"]
    assert code == 0 and [
        (run["status"], run["missing_twice_ids"], run["not_returned_report"])
        for run in place["runs"]
    ] == [("partial", 1, second["not_returned_report"])]
    wire.asked.clear()
    third = await backfill(memory, wire, tmp_path)
    assert wire.asked == [] and third["status"] == "complete"
    assert third["retry_of"] == second["run_id"] and third["ids_total"] == 0
    assert third["failures_report"] is None and third["not_returned_report"] is None
    fourth = await backfill(memory, wire, tmp_path)
    assert fourth["run_id"] == third["run_id"] and wire.asked == []


async def test_millions_never_returned_are_asked_twice_then_cost_nothing(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    """At test scale: 20,000 listed ids the service never returns, beside 200 orders."""
    memory = in_memory(orders=200)
    service, wire = memory.service, Recording(memory.service)
    phantoms = random.Random(3).sample(range(90_000_000, 91_000_000), 20_000)
    service.tenant.phantoms.update(dict.fromkeys(phantoms, LONG_AGO))
    runs, journals = [], []
    for _ in range(3):
        wire.asked.clear()
        before = service.stats["requests"]
        summary = await backfill(memory, wire, tmp_path, batch_size=1000)
        journal = tmp_path / "_runs" / f"{summary['run_id']}.journal.jsonl"
        runs.append((summary, service.stats["requests"] - before, len(wire.asked)))
        journals.append(journal.stat().st_size)
    (first, sent1, asked1), (second, sent2, asked2), (third, sent3, asked3) = runs
    assert (first["missing_ids"], second["missing_twice_ids"]) == (20_000, 20_000)
    assert asked1 == 20_200 and asked2 == 20_000 and asked3 == 0
    assert sent1 == 23 and sent2 == 22, "Login, listings, GetInvoices of 1,000 ids"
    assert sent3 == 1, "the third run only logs in: nothing is asked for again"
    assert third["status"] == "complete" and third["ids_total"] == 0
    for summary in (first, second):  # compact: the same ids as JSON lines took ~57 bytes each
        report = Path(summary["not_returned_report"])
        assert report.stat().st_size < 20_000 * 2, report.stat().st_size
        assert summary["failures_report"] is None
    assert sorted(outcomes(second)) == sorted(phantoms)
    assert journals[2] < 1_000 < 400_000 < journals[1] <= journals[0], journals
    assert not (tmp_path / "_failures" / f"{third['run_id']}.not-returned.parquet").exists()


async def sync(memory: InMemory, wire: Recording, out: Path, **options: Any) -> dict[str, Any]:
    job = job_of(
        SyncJob, Target.parse(str(out)), base_url=MEMORY_URL, max_requests_per_hour=0,
        ledger=False, batch_size=100, **options,
    )  # fmt: skip
    return (await run_sync(job, CREDS, log=io.StringIO(), clock=memory.clock, wire=wire)).as_json()


async def synced_then_vanishing(memory: InMemory, wire: Recording, out: Path) -> int:
    """A first sync into ``out``, then a churn one of whose changed orders is deleted between
    the next listing and its GetInvoices; that order's id."""
    await sync(memory, wire, out)
    memory.clock.advance(3600)
    vanished = memory.service.churn(Churn(changed=5), seed=1).changed[0]
    memory.service.vanish_after_listing([vanished])
    return vanished


async def test_three_syncs_after_a_vanished_id_report_it_once(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    memory = in_memory(orders=300)
    service, wire = memory.service, Recording(memory.service)
    vanished = await synced_then_vanishing(memory, wire, tmp_path)
    memory.clock.advance(60)
    statuses, asked = [], []
    for reconcile in (False, False, True):
        wire.asked.clear()
        summary = await sync(memory, wire, tmp_path, reconcile=reconcile)
        statuses.append((summary["status"], summary["invoices"]["gone_ids"]))
        asked.append(vanished in wire.asked)
        memory.clock.advance(3600)
    assert statuses == [("partial", 0), ("complete", 1), ("complete", 0)]
    assert asked == [True, False, False], "asked for by the first sync only"
    target = Target.parse(str(tmp_path))
    assert_lake_equals_truth(service, target, marked={vanished}, ledger=False)


async def test_a_reconciling_sync_settles_a_vanished_id_at_once(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    memory = in_memory(orders=300)
    service, wire = memory.service, Recording(memory.service)
    vanished = await synced_then_vanishing(memory, wire, tmp_path)
    summary = await sync(memory, wire, tmp_path, reconcile=True)
    invoices = summary["invoices"]
    assert summary["status"] == "complete" and invoices["gone_ids"] == 1
    assert invoices["written"]["deleted"] == 1 and invoices["missing_ids"] == 0
    assert_lake_equals_truth(service, Target.parse(str(tmp_path)), marked={vanished}, ledger=False)
