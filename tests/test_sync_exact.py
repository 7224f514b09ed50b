"""``extractor sync`` exact at the edges (issue 24): the service's clock, a lagging replica,
another writer's column, a quiet tenant. Every sync here runs on the in-memory wire and a
manual clock the simulator shares, so time is what the test says it is."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable, Field

from extractor.clock import ManualClock
from extractor.jobs.sync import SyncJob, run_sync
from extractor.output.targets import Target
from extractor.service.servicetime import ServiceTime
from extractor.service.session import Session
from extractor.service.transport import Transport
from extractor.simulator.config import SimulatorConfig
from extractor.simulator.memory import MemoryWire
from extractor.simulator.service import SimulatedService
from extractor.simulator.tenant import Churn
from extractor.soap import SOAP11
from tests.conftest import CREDS, MEMORY_URL, job_of
from tests.helpers import SYNC_SINCE
from tests.truth import assert_lake_equals_truth, assert_lake_part_equals, read_delta

#: A day long after the simulated ledger's last change (April 2026), at midnight UTC.
DAY = dt.datetime(2026, 11, 10, tzinfo=dt.UTC).timestamp()
HOUR = 3600.0


class Service:
    """A simulated service on a manual clock, and syncs of it into ``target``."""

    def __init__(self, target: Target, start: float = DAY + 12 * HOUR, **config: Any) -> None:
        self.clock = ManualClock(start)
        config = {"orders": 120, **config}
        self.simulated = SimulatedService(SimulatorConfig(**config), clock=self.clock)
        self.target = target
        self.log = io.StringIO()

    async def sync(self, **options: Any) -> dict[str, Any]:
        job = job_of(
            SyncJob, self.target, base_url=MEMORY_URL, since=SYNC_SINCE,
            max_requests_per_hour=0, **options,
        )  # fmt: skip
        wire = MemoryWire(self.simulated)
        return (await run_sync(job, CREDS, log=self.log, clock=self.clock, wire=wire)).as_json()

    def churn(self, seed: int, **changes: int) -> Any:
        return self.simulated.churn(Churn(**changes), seed=seed)


@pytest.mark.parametrize(
    ("offset", "start"),
    [
        (-30 * 60, DAY + 20 * 60),  # ours 00:20, the service's 23:50 the day before
        (+30 * 60, DAY - 25 * 60),  # ours 23:35, the service's 00:05 the day after
    ],
    ids=["service-30-min-behind", "service-30-min-ahead"],
)
async def test_a_skewed_service_clock_loses_no_change(
    tmp_path: Path, offset: float, start: float
) -> None:
    service = Service(Target.parse(str(tmp_path)), start, clock_offset=offset)
    first = await service.sync()
    service.clock.advance(60)
    churned = service.churn(1, changed=30, deleted=5, added=10)
    service.clock.advance(60)
    second = await service.sync(reconcile=True)
    assert second["status"] == "complete"
    assert_lake_equals_truth(service.simulated, service.target, marked=set(churned.deleted))
    assert second["invoices"]["written"]["invoices"] == 30 + 10
    assert second["invoices"]["written"]["deleted"] == 5
    assert second["transactions"]["written"]["transactions"] > 0, "the churn's ledger lines"
    # the watermark is the service's time when the first sync listed; the skew is said
    listed = dt.datetime.fromtimestamp(start + offset, dt.UTC).isoformat()
    assert first["watermarks"] == {"invoices": listed, "transactions": listed}
    assert first["clock_skew_seconds"] == second["clock_skew_seconds"] == offset
    said = service.log.getvalue()
    assert said.count("30 min") == 2, "a skew beyond --overlap is never silent: once a sync"


async def test_a_stale_answer_never_replaces_a_newer_record(tmp_path: Path) -> None:
    service = Service(Target.parse(str(tmp_path)), stale_replica=1.0)
    replica = service.simulated.replica
    replica.lagging = False
    await service.sync(ledger=False)
    service.clock.advance(60)
    service.churn(1, changed=20)
    service.clock.advance(60)
    await service.sync(ledger=False)  # the first changes, from the primary
    service.clock.advance(HOUR)  # past --overlap: they are not listed again
    changed = service.churn(2, changed=20).changed
    service.clock.advance(60)
    await service.sync(ledger=False)  # the second changes, from the primary
    service.clock.advance(60)

    replica.lagging = True  # listed again (within --overlap), answered from the past
    lagged = await service.sync(ledger=False)
    assert service.simulated.stats["stale_answers"] == len(changed)
    assert lagged["invoices"]["written"] == {"invoices": 0, "invoice_rows": 0, "stale_records": 20}
    assert lagged["stale_records"] == 20
    assert_lake_equals_truth(service.simulated, service.target, marked=set(), ledger=False)

    replica.lagging = False
    service.clock.advance(HOUR)  # no longer listed: fetched again because they were stale
    asked = service.simulated.stats["GetInvoices"]
    again = await service.sync(ledger=False)
    assert again["invoices"]["ids_total"] == len(changed)
    assert service.simulated.stats["GetInvoices"] == asked + 1
    assert again["stale_records"] == 0
    assert_lake_equals_truth(service.simulated, service.target, marked=set(), ledger=False)
    service.clock.advance(HOUR)
    assert (await service.sync(ledger=False))["invoices"]["ids_total"] == 0, "settled"


NOTE = "note"


def add_a_column(target: Target, name: str, where: str) -> None:
    """What another writer does: a nullable column, set on the records ``where`` says."""
    table = DeltaTable(target.table_uri(name))
    table.alter.add_columns([Field(NOTE, "string", nullable=True)])
    DeltaTable(target.table_uri(name)).update(updates={NOTE: "'kept'"}, predicate=where)


def notes(target: Target, name: str, key: str) -> dict[Any, str | None]:
    return {record[key]: record[NOTE] for record in read_delta(target, name)}


def assert_equals_truth_besides_the_note(service: Service, marked: set[int]) -> None:
    tables = {}
    for name in ("invoices", "invoice_rows", "transactions"):
        records = read_delta(service.target, name)
        for record in records:
            record.pop(NOTE, None)
        tables[name] = records
    simulated = service.simulated
    assert_lake_part_equals(simulated.tenant, simulated.ledger, tables, marked)


async def test_a_column_another_writer_added_is_kept(tmp_path: Path) -> None:
    service = Service(Target.parse(str(tmp_path)))
    await service.sync()
    target = service.target
    add_a_column(target, "invoices", "TRUE")
    add_a_column(target, "transactions", "TRUE")
    service.clock.advance(60)
    first = service.churn(1, changed=20, deleted=3, added=5)
    service.clock.advance(60)
    lines_before = set(notes(target, "transactions", "Id"))
    plain = await service.sync()
    assert plain["status"] == "complete"
    service.clock.advance(HOUR)
    second = service.churn(2, changed=10, deleted=2, added=4)
    service.clock.advance(60)
    reconciled = await service.sync(reconcile=True)
    assert reconciled["status"] == "complete"
    deleted = set(first.deleted + second.deleted)
    assert reconciled["invoices"]["written"]["deleted"] == len(deleted)
    assert_equals_truth_besides_the_note(service, deleted)

    rewritten = set(first.changed + first.added + second.changed + second.added)
    orders = notes(target, "invoices", "OrderId")
    assert {i for i, note in orders.items() if note is None} == rewritten, "new records: null"
    assert {i for i, note in orders.items() if note == "kept"} == set(orders) - rewritten
    lines = notes(target, "transactions", "Id")
    kept = {i for i, note in lines.items() if note == "kept"}
    assert kept and kept <= lines_before and len(kept) < len(lines_before), "changed lines: null"
    assert {i for i, note in lines.items() if note is None} >= set(lines) - lines_before


async def test_a_quiet_tenant_is_not_fetched_again(tmp_path: Path) -> None:
    service = Service(Target.parse(str(tmp_path)))
    await service.sync(ledger=False)
    service.clock.advance(60)
    service.churn(1, changed=20, added=5)
    service.clock.advance(60)
    stats = service.simulated.stats
    fetched, times = [], []
    for _ in range(3):  # hourly: the churn is within --overlap of the first only
        asked = stats["GetInvoices"]
        times.append(dt.datetime.fromtimestamp(service.clock.time(), dt.UTC).isoformat())
        summary = await service.sync()
        fetched.append((summary["invoices"]["ids_total"], stats["GetInvoices"] - asked))
        service.clock.advance(HOUR)
    assert fetched == [(25, 1), (25, 1), (0, 0)]
    # the second fetched what it had and committed its watermark alone; the third listed
    # nothing, so had no reason to; the ledger's day was fetched again by each
    assert summary["watermarks"] == {"invoices": times[1], "transactions": times[2]}
    service.churn(2, changed=7, added=3)
    service.clock.advance(60)
    found = await service.sync()
    assert found["invoices"]["written"]["invoices"] == 10
    assert_lake_equals_truth(service.simulated, service.target, marked=set())


async def test_the_service_time_comes_from_the_date_of_its_replies(start_simulator: Any) -> None:
    simulator = await start_simulator(orders=20, clock_offset=-1800.0)
    transport = Transport(simulator.url, SOAP11)
    try:
        session = Session(transport, CREDS)
        await session.login()
        seen = session.service_time
        assert seen.offset is not None and -1805.0 <= seen.offset <= -1800.0  # a loaded machine
        behind = dt.datetime.now(dt.UTC) - seen.now()
        assert dt.timedelta(seconds=1799) <= behind <= dt.timedelta(seconds=1805)
    finally:
        await transport.close()
    silent = ServiceTime(ManualClock(DAY))
    silent.observe("")
    silent.observe("not a date")
    assert silent.offset is None and silent.now().timestamp() == DAY, "ours, when it never said"
    silent.observe("Tue, 10 Nov 2026 00:00:05 GMT")
    silent.observe("Tue, 10 Nov 2026 00:00:03 GMT")
    assert silent.offset == 3.0, "the smallest offset: never later than the service's clock"
