"""The whole accounting picture (issue 26): every list table equal to the simulator's ground
truth field by field, from ``extractor tables`` (Parquet) and from ``sync`` (Delta) after a
first sync, after churn and a second sync, in a fleet of two; a sync with nothing new commits
nothing and sends a request per list; and ``verify`` proves the lake complete, or names what
was lost."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from deltalake import DeltaTable

from extractor.engine.journal import unfinished
from extractor.engine.lists import ListJob
from extractor.engine.spec import Strategy
from extractor.engine.state import replay
from extractor.jobs.sync import SyncJob, run_sync
from extractor.jobs.verify import render, verify
from extractor.operations import LISTS, SPECS, TABLES
from extractor.output.targets import Target
from extractor.simulator.memory import MemoryReply, MemoryWire
from extractor.simulator.register import MasterChurn
from extractor.simulator.tenant import Churn
from tests.conftest import CREDS, MEMORY_URL, InMemory, job_of, read_table
from tests.helpers import DEMO_ENV, SYNC_SINCE, one_line
from tests.truth import read_delta

#: Columns the extractor adds to every record, and a fleet's partition column.
ADDED = ("_run_id", "_extracted_at", "_deleted_at", "identity_id")


def keyed(
    table: str, rows: list[dict[str, Any]], live: bool = True
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The rows by the table's key, less the extractor's own columns (and, if ``live``, the
    ones marked deleted)."""
    key = SPECS[table].key
    found = {}
    for row in rows:
        if live and row.get("_deleted_at") is not None:
            continue
        found[tuple(row[name] for name in key)] = {k: v for k, v in row.items() if k not in ADDED}
    assert len(found) == len([r for r in rows if not (live and r.get("_deleted_at"))]), (
        f"{table}: a key twice"
    )
    return found


def assert_table_equals(
    table: str, rows: list[dict[str, Any]], truth: dict[tuple[Any, ...], dict[str, Any]]
) -> None:
    held = keyed(table, rows)
    assert held.keys() == truth.keys(), f"{table}: keys differ"
    for key, expected in truth.items():
        assert held[key] == expected, f"{table} {key}"


def truth(service: Any, table: str, identity: int = 1) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The simulator's truth of ``table``; a balance also says whether its fiscal year is
    locked (``FiscalYearLocked``, the product's own column)."""
    rows = service.table_truth(table, identity)
    if table == "account_balances":
        years = service.table_truth("fiscal_years", identity).values()
        locked = {year["StartingDate"]: year["IsLocked"] for year in years}
        rows = {
            key: row | {"FiscalYearLocked": locked[row["FiscalYearStart"]]}
            for key, row in rows.items()
        }
    return dict(rows)


async def synced(memory: InMemory, out: Path, **options: Any) -> dict[str, Any]:
    options.setdefault("tables", TABLES)
    job = job_of(SyncJob, Target(str(out), local=out), base_url=MEMORY_URL, since=SYNC_SINCE,
                 max_requests_per_hour=0, **options)  # fmt: skip
    creds = dataclasses.replace(CREDS, identity_id=job.identity)  # a fleet member's login
    summary = await run_sync(job, creds, log=memory.stream, clock=memory.clock, wire=memory.wire)
    return summary.as_json()


def list_tables() -> list[str]:
    return [spec.table for spec in LISTS]


#: A fleet's lists: every kind of keeping (products are kept as customers are, and cost the
#: most to simulate twice)
FLEET_TABLES = tuple(name for name in list_tables() if name != "products")


async def test_tables_as_parquet_equal_the_simulator_s_and_count_their_requests(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    memory = in_memory(orders=100, seed=11)
    job = job_of(ListJob, out=tmp_path, specs=LISTS, base_url=MEMORY_URL, max_requests_per_hour=0)
    summary = await memory.run(job)
    assert summary["status"] == "complete", summary["failures"]
    service = memory.service
    for table in list_tables():
        assert_table_equals(table, read_table(tmp_path, table), truth(service, table))
        assert len(list((tmp_path / table).glob("*.parquet"))) == 1  # one folder, one file
    requests = summary["requests_by_table"]
    dimensions = len(truth(service, "dimensions"))
    years = len(truth(service, "fiscal_years"))
    assert requests["accounts"] == 1 and requests["dimension_values"] == dimensions
    assert requests["account_balances"] == years
    assert (
        requests["customers"] == service.stats["GetCompanySyncList"] + service.stats["GetCompanies"]
    )
    assert summary["lists"]["customers"] == len(truth(service, "customers"))


async def test_sync_keeps_every_table_current_cheaply_and_equal_to_the_truth_through_churn(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    memory = in_memory(orders=60)  # seed 7: the pools other tests made
    tables = tuple(name for name in TABLES if name != "transactions")  # verify's test has it
    first = await synced(memory, tmp_path, tables=tables)
    assert first["status"] == "complete"
    target = Target(str(tmp_path), local=tmp_path)
    for table in list_tables():
        assert_table_equals(table, read_delta(target, table), truth(memory.service, table))
    # nothing new: no commit anywhere, a request a list, a dimension and an open year, and a
    # listing a changing table (about 20 for this tenant)
    names = ["invoices", "invoice_rows", *list_tables()]
    versions = {name: DeltaTable(target.table_uri(name)).version() for name in names}
    before = Counter(memory.service.stats)
    memory.clock.advance(3600)
    again = await synced(memory, tmp_path, tables=tables)
    assert again["status"] == "complete"
    assert {name: DeltaTable(target.table_uri(name)).version() for name in names} == versions
    sent = Counter(memory.service.stats) - before
    dimensions = len(truth(memory.service, "dimensions"))
    years = truth(memory.service, "fiscal_years").values()
    open_years = sum(1 for year in years if not year["IsLocked"])
    whole = [spec.operation.name for spec in LISTS if spec.strategy is Strategy.WHOLE_LIST]
    assert all(sent[name] == 1 for name in whole), {name: sent[name] for name in whole}
    assert sent["GetUserDefinedDimensionValues"] == dimensions
    assert sent["GetAggregated"] == open_years < len(years)
    assert sent["GetCompanySyncList"] == 1 and sent["GetCompanies"] == 0
    assert sent["GetProducts"] == 1 and sent["GetOrderSyncList"] == 1 and sent["GetInvoices"] == 0
    assert sent["Login"] == 1 and sent["GetTransactions"] <= 2
    assert (
        sent["requests"] == 1 + len(whole) + dimensions + open_years + 3 + sent["GetTransactions"]
    )
    assert sent["requests"] <= 25
    # churn of customers, products and orders; a reconciling sync follows it exactly
    report = memory.service.churn_master(
        customers=MasterChurn(changed=4, deleted=2, added=3, deactivated=1),
        products=MasterChurn(changed=3, deleted=1, added=2),
    )
    memory.service.churn(Churn(changed=5, added=2))
    memory.clock.advance(3600)
    second = await synced(memory, tmp_path, reconcile=True, tables=tables)
    assert second["status"] == "complete"
    for table in list_tables():
        rows = read_delta(target, table)
        assert_table_equals(table, rows, truth(memory.service, table))
    customers = {row["Id"]: row for row in read_delta(target, "customers")}
    churned = report["customers"]
    assert churned.deleted and churned.deactivated
    for gone in churned.deleted:
        assert customers[gone]["_deleted_at"] is not None
    for number in churned.deactivated:
        assert customers[number]["Active"] is False and customers[number]["_deleted_at"] is None
    products = {row["Id"]: row for row in read_delta(target, "products")}
    assert all(products[gone]["_deleted_at"] is not None for gone in report["products"].deleted)
    # only what changed is fetched again (and what the overlap catches: nothing here)
    fetched = len({*churned.changed, *churned.added, *churned.deactivated})
    assert second["lists"]["lists"]["customers"] == fetched


async def test_a_fleet_of_two_keeps_each_identity_s_tables(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    memory = in_memory(orders=40, identities=2)
    service = memory.service
    for company in service.companies:
        summary = await synced(memory, tmp_path, identity=company.identity_id,
                               member_work=tmp_path / "_work" / company.identity_id,
                               tables=FLEET_TABLES)  # fmt: skip
        assert summary["status"] == "complete"
    target = Target(str(tmp_path), local=tmp_path)
    for table in FLEET_TABLES:
        rows = read_delta(target, table)
        for company in service.companies:
            mine = [row for row in rows if row["identity_id"] == company.identity_id]
            assert_table_equals(table, mine, truth(service, table, company.number))


async def test_verify_holds_on_a_complete_lake_and_names_exactly_what_was_lost(
    in_memory: Callable[..., InMemory], start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    memory = in_memory(orders=80, seed=11)  # a July fiscal year
    await synced(memory, tmp_path)
    target = Target(str(tmp_path), local=tmp_path)
    service = memory.service
    config = job_of(SyncJob, target, base_url=MEMORY_URL, max_requests_per_hour=0).service
    run = lambda: verify(target, CREDS, config, clock=memory.clock, wire=memory.wire)  # noqa: E731
    complete = await run()
    assert complete.holds, [c.as_json() for c in complete.checks if not c.holds]
    assert {c.name for c in complete.checks if c.skipped} == set()
    # lose two lines of one voucher, one invoice and one customer by hand
    lines = read_delta(target, "transactions")
    voucher = Counter(line["TransactionNo"] for line in lines).most_common(1)[0][0]
    lost = sorted(
        (line for line in lines if line["TransactionNo"] == voucher), key=lambda found: found["Id"]
    )[:1]
    DeltaTable(target.table_uri("transactions")).delete(f"\"Id\" = '{lost[0]['Id']}'")
    invoice = read_delta(target, "invoices")[0]["OrderId"]
    DeltaTable(target.table_uri("invoices")).delete(f'"OrderId" = {invoice}')
    unused = sorted(
        set(truth(service, "customers"))
        - {(row["CustomerId"],) for row in read_delta(target, "invoices")}
    )
    customer = unused[0][0]
    DeltaTable(target.table_uri("customers")).delete(f'"Id" = {customer}')
    found = await run()
    assert not found.holds
    by_name = {check.name: check for check in found.checks}
    assert by_name["invoices"].named == [f"missing {invoice}"]
    assert by_name["vouchers"].mismatches == 1 and by_name["vouchers"].named[0].startswith(
        f"voucher {voucher} "
    )
    assert by_name["customers"].named == [f"missing {customer}"]
    assert by_name["products"].holds and by_name["invoices.CustomerId"].holds
    assert by_name["balances"].mismatches >= 1 and "assumption" not in by_name["balances"].note
    # the command: a service of the same books, one line a check, exit 3, the same in JSON
    said = render(found).splitlines()
    assert said[0].endswith(": MISMATCH") and len(said) == 1 + len(found.checks) == 10
    assert any(f"missing {invoice}" in line for line in said if line.strip().startswith("invoices"))
    server = await start_simulator(orders=80, seed=11)
    base = ("--base-url", server.url, "--max-requests-per-hour", "0")
    code, out, _ = await cli_beside("verify", str(tmp_path), *base, "--json", env=DEMO_ENV)
    assert out.count("\n") == 1, "one JSON line: what a scheduler reads as the last line"
    document = orjson.loads(out)
    assert code == 3 and document["status"] == "mismatch"
    (customers,) = [check for check in document["checks"] if check["check"] == "customers"]
    assert customers["first"] == [f"missing {customer}"] and customers["mismatches"] == 1


async def test_the_tables_command_refuses_an_unknown_table_in_one_line(
    cli_beside: Any, tmp_path: Path
) -> None:
    code, _, err = await cli_beside(
        "tables", "--out", str(tmp_path), "--tables", "acounts", env=DEMO_ENV
    )
    assert code == 2
    assert "'acounts' is not a table; choose from" in one_line(err)


class PowerCut(Exception):
    """The run stops at once, a request on its way (as at a kill, without the process)."""


class CutWire(MemoryWire):
    """The in-memory wire, stopping the run at the ``at``-th call of ``operation``; every
    call's operation kept."""

    def __init__(self, memory: InMemory, operation: str = "", at: int = 0) -> None:
        super().__init__(memory.service)
        self.operation, self.at, self.sent = operation, at, Counter[str]()

    @asynccontextmanager
    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], name: str
    ) -> AsyncIterator[MemoryReply]:
        self.sent[name] += 1
        if name == self.operation and self.sent[name] == self.at:
            raise PowerCut(f"cut at {name} {self.at}")
        async with super().post(url, body, headers, name) as reply:
            yield reply


async def test_a_sync_cut_in_its_lists_resumes_without_fetching_a_staged_list_again(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    memory = in_memory(orders=60)
    tables = FLEET_TABLES  # customers, and the lists before and after them
    job = job_of(SyncJob, Target(str(tmp_path), local=tmp_path), base_url=MEMORY_URL,
                 max_requests_per_hour=0, concurrency=1, tables=tables)  # fmt: skip
    cut = CutWire(memory, "GetCompanies", at=2)  # after the lists before customers are staged
    with pytest.raises(PowerCut):
        await run_sync(job, CREDS, log=memory.stream, clock=memory.clock, wire=cut)
    journal = unfinished(tmp_path / "_work" / "sync-lists")
    assert journal is not None
    staged = set(replay(journal).staged)
    assert {"accounts", "dimension_values"} <= staged and "customers" not in staged
    again = CutWire(memory)
    summary = await run_sync(job, CREDS, log=memory.stream, clock=memory.clock, wire=again)
    assert summary.complete and summary.parts["lists"].resumed is not None
    assert again.sent["GetAccountList"] == 0 and again.sent["GetUserDefinedDimensionValues"] == 0
    assert again.sent["GetCompanies"] >= 1
    target = Target(str(tmp_path), local=tmp_path)
    for table in tables:
        assert_table_equals(table, read_delta(target, table), truth(memory.service, table))


@pytest.mark.parametrize("offset", [-1800.0, 1800.0], ids=["service-behind", "service-ahead"])
async def test_customers_changed_under_a_skewed_service_clock_are_all_synced(
    in_memory: Callable[..., InMemory], tmp_path: Path, offset: float
) -> None:
    # the customers' and products' watermark is the service's time, as the invoices' is: a
    # clock 30 minutes off ours (more than --overlap) loses no change
    memory = in_memory(orders=20, clock_offset=offset)
    tables = ("customers", "products")
    await synced(memory, tmp_path, tables=tables)
    memory.clock.advance(120)
    report = memory.service.churn_master(
        customers=MasterChurn(changed=3, added=2), products=MasterChurn(changed=2, added=1)
    )
    memory.clock.advance(120)
    second = await synced(memory, tmp_path, tables=tables)
    assert second["lists"]["lists"] == {"customers": 5, "products": 3}
    target = Target(str(tmp_path), local=tmp_path)
    for table in tables:
        assert_table_equals(table, read_delta(target, table), truth(memory.service, table))
    assert report["customers"].changed
