"""A fleet of identities (issue 13): each identity one run, as a task on an embedded Dask
cluster on 127.0.0.1, its partitions under ``identity_id=<guid>``; compared with each
identity's own ground truth field by field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow.dataset as ds
import pytest
from deltalake import DeltaTable

from extractor.errors import OutputError
from extractor.fleet import roster
from extractor.fleet.budget import LEASE
from extractor.jobs.invoices import InvoiceJob
from extractor.output.delta import DeltaOutput
from extractor.output.lock import OutputLock
from extractor.output.staging import Placement
from extractor.output.targets import Target
from extractor.simulator.identities import Company
from extractor.simulator.ledger import search
from extractor.simulator.server import Simulator
from extractor.simulator.tenant import Churn
from tests.conftest import MEMORY_URL, job_of, read_records
from tests.helpers import DEMO_ENV, events, extractor, unstamped
from tests.truth import (
    assert_lake_part_equals,
    assert_list_equals,
    assert_records_match,
    read_delta,
)

NO_LIMIT = ("--max-requests-per-hour", "0")


def by_identity(out: Path, table: str) -> dict[str, list[dict[str, Any]]]:
    """The table's records, by the identity_id partition they were read from."""
    dataset = ds.dataset(out / table, format="parquet", partitioning="hive")
    found: dict[str, list[dict[str, Any]]] = {}
    for record in read_records(dataset):
        found.setdefault(record.pop("identity_id"), []).append(record)
    return found


def assert_each_equals_its_truth(companies: list[Company], out: Path) -> None:
    """Each identity's partition holds exactly its own truth, and no other identity has one."""
    orders, rows = by_identity(out, "invoices"), by_identity(out, "invoice_rows")
    assert set(orders) == {company.identity_id for company in companies}
    for company in companies:
        assert_records_match(company.tenant, orders[company.identity_id], rows[company.identity_id])


def fleet_summary(err: str, out: Path) -> dict[str, Any]:
    """The fleet's summary, found by the run id its log names (as text, or JSON Lines)."""
    if err.startswith("{"):
        run_id = next(e["run_id"] for e in events(err) if e["event"] == "fleet_plan")
    else:
        run_id = next(
            line.split()[1].rstrip(":") for line in unstamped(err) if line.startswith("fleet ")
        )
    summary: dict[str, Any] = orjson.loads((out / "_runs" / f"{run_id}.json").read_bytes())
    return summary


async def test_identities_each_equal_their_own_truth_and_a_blocked_one_is_reported(
    start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    # two that finish and one blocked between them prove what five did (each a simulated
    # company of its own, made in a third of a second)
    simulator: Simulator = await start_simulator(orders=100, identities=3, blocked_identities=(2,))
    out = tmp_path / "fleet"
    code, stdout, err = await cli_beside(
        "invoices", "--base-url", simulator.url, "--out", str(out), "--identity", "all",
        "--workers", "1", *NO_LIMIT, env=DEMO_ENV,
    )  # fmt: skip
    assert code == 3, err
    blocked = simulator.company(2)
    done = [company for company in simulator.companies if company is not blocked]
    assert_each_equals_its_truth(done, out)
    assert f"{blocked.identity_id}  {blocked.name}: failed" in stdout
    assert "IdentityId is blocked" in stdout
    assert "fleet was partial" in err
    summary = fleet_summary(err, out)
    statuses = {entry["identity_id"]: entry["status"] for entry in summary["identities"]}
    assert statuses == {
        c.identity_id: "failed" if c is blocked else "complete" for c in simulator.companies
    }
    table = {row["identity_id"]: row for row in roster.read(Target.parse(str(out)))}
    assert table[blocked.identity_id]["status"] == "failed"
    assert "blocked" in table[blocked.identity_id]["error"]
    for company in done:
        row = table[company.identity_id]
        assert (row["client_id"], row["client_name"], row["command"]) == (
            company.client_id, company.name, "invoices",
        )  # fmt: skip
        assert row["records"] == len(company.tenant.ids)
        assert row["last_run_id"] == next(
            entry["summary"]["run_id"] for entry in summary["identities"]
            if entry["identity_id"] == company.identity_id
        )  # fmt: skip
    fetched = simulator.stats["GetInvoices"]

    # a rerun does only what is unfinished: the done identities have nothing to do
    code, _, err = await cli_beside(
        "invoices", "--base-url", simulator.url, "--out", str(out), "--identity", "all",
        "--workers", "1", *NO_LIMIT, env=DEMO_ENV,
    )  # fmt: skip
    assert code == 3
    assert simulator.stats["GetInvoices"] == fetched
    for company in done:
        log = (out / "_identities" / company.identity_id / "run.log").read_text()
        assert "already finished this job (complete); nothing to do" in log
    assert_each_equals_its_truth(done, out)
    assert DEMO_ENV["TFSO_PASSWORD"] not in err + stdout


async def test_a_worker_killed_mid_run_is_replaced_and_the_run_resumes(
    start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    simulator: Simulator = await start_simulator(orders=250, identities=2)
    out = tmp_path / "fleet"
    # the first worker process to stage its third batch (of five) dies there, SIGKILL, once
    kill = {
        "EXTRACTOR_KILL_AT": "journal:staged@3",
        "EXTRACTOR_KILL_ONCE": str(tmp_path / "killed"),
    }
    code, stdout, err = await cli_beside(
        "invoices", "--base-url", simulator.url, "--out", str(out), "--identity", "all",
        "--workers", "2", "--identities-per-worker", "1", "--batch-size", "50", *NO_LIMIT,
        env=DEMO_ENV | kill,
    )  # fmt: skip
    assert (tmp_path / "killed").exists(), "a worker was killed"
    assert code == 0, stdout + err
    assert_each_equals_its_truth(simulator.companies, out)
    logs = [
        (out / "_identities" / c.identity_id / "run.log").read_text() for c in simulator.companies
    ]
    assert sum("resuming run" in log for log in logs) == 1, logs


async def test_the_ledger_of_a_fleet_under_a_shared_budget(
    start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    simulator: Simulator = await start_simulator(orders=150, identities=2)
    out = tmp_path / "ledger"
    code, _, err = await cli_beside(
        "transactions", "--base-url", simulator.url, "--out", str(out),
        "--identity", simulator.company(1).identity_id, "--identity",
        simulator.company(2).identity_id, "--from", "2024-01-01", "--to", "2025-12-31",
        "--workers", "1", "--fleet-requests-per-hour", "360000", *NO_LIMIT,
        "--log-format", "json", env=DEMO_ENV,
    )  # fmt: skip
    assert code == 0, err
    # the fleet's log: every line JSON with the fleet's run id; one event an identity
    said = events(err)
    assert {e["run_id"] for e in said} == {said[0]["run_id"]}
    assert said[0]["run_id"].startswith("fleet-") and said[-1]["event"] == "finished"
    ended = {e["identity_id"]: e["status"] for e in said if e["event"] == "identity_finished"}
    assert ended == {c.identity_id: "complete" for c in simulator.companies}
    found = by_identity(out, "transactions")
    # two years of windows (the ledger's budget is spent the same way over ten)
    asked = {"DateStart": "2024-01-01T00:00:00", "DateEnd": "2025-12-31T23:59:59"}
    for company in simulator.companies:
        truth = company.ledger.ground_truth(iter(search(company.ledger, asked)))
        assert truth
        lines = found[company.identity_id]
        assert len(lines) == len(truth)
        for line in lines:
            assert line.pop("date_month") == line["Date"].strftime("%Y-%m")
            assert line == truth[line["Id"]], line["Id"]
    summary = fleet_summary(err, out)
    runs = [entry["summary"] for entry in summary["identities"]]
    sent = sum(run["requests"] + run["relogins"] + 1 for run in runs)  # calls and logins
    granted = summary["fleet_budget"]["granted"]
    # every request took one of the budget's; a run may end with some of its lease unspent,
    # and a run the cluster started again (a worker that missed its heartbeats on a loaded
    # machine) also spent its first start's
    assert sent <= granted
    logs = [
        (out / "_identities" / c.identity_id / "run.log").read_text() for c in simulator.companies
    ]
    if all(log.count("to fetch") == 1 for log in logs):  # each run started once
        assert granted <= sent + len(runs) * (LEASE - 1)


async def test_one_identity_keeps_the_layout_of_one(
    start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    simulator: Simulator = await start_simulator(orders=200, identities=3)
    second = simulator.company(2)
    code, _, err = await cli_beside(
        "invoices", "--base-url", simulator.url, "--out", str(tmp_path), "--identity",
        second.identity_id.upper(), "--parse-workers", "0", *NO_LIMIT, env=DEMO_ENV,
    )  # fmt: skip
    assert code == 0, err
    assert not (tmp_path / "_identities").exists()
    dataset = ds.dataset(tmp_path / "invoices", format="parquet", partitioning="hive")
    assert "identity_id" not in dataset.schema.names
    rows = ds.dataset(tmp_path / "invoice_rows", format="parquet", partitioning="hive")
    assert_records_match(second.tenant, read_records(dataset), read_records(rows))
    assert second.stats["GetInvoices"] > 0 and simulator.company(1).stats["GetInvoices"] == 0

    # a fleet does not go into a dataset of one identity
    code, _, err = await cli_beside(
        "invoices", "--base-url", simulator.url, "--out", str(tmp_path), "--identity", "all",
        *NO_LIMIT, env=DEMO_ENV,
    )  # fmt: skip
    assert code == 2 and "holds the dataset of one identity" in err and err.count("\n") == 1


async def test_an_output_holding_a_fleet_needs_the_identities(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "_identities" / "236cc028-573c-4a27-9db0-8278a08d73b0").mkdir(parents=True)
    code, _, err = cli("invoices", "--out", str(tmp_path), env=DEMO_ENV)
    assert code == 2 and "holds a fleet's dataset" in err and "--identity all" in err


def test_a_local_path_with_a_remote_scheduler_is_refused(cli: Any, tmp_path: Path) -> None:
    code, out, err = cli(
        "invoices", "--out", str(tmp_path), "--identity", "all",
        "--scheduler", "tcp://127.0.0.1:8786", env=DEMO_ENV,
    )  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "cannot all reach the local path" in err and "s3://" in err


def test_exclude_without_all_is_refused(cli: Any, tmp_path: Path) -> None:
    code, _, err = cli(
        "invoices", "--out", str(tmp_path), "--exclude-identity",
        "236cc028-573c-4a27-9db0-8278a08d73b0", env=DEMO_ENV,
    )  # fmt: skip
    assert code == 2 and "--identity all" in err


def lake_by_identity(target: Target) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Each identity's records of the fleet's Delta tables, its identity_id taken off."""
    parts: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name in ("invoices", "invoice_rows", "transactions"):
        for record in read_delta(target, name):
            parts.setdefault(record.pop("identity_id"), {}).setdefault(name, []).append(record)
    return parts


async def test_a_sync_of_three_identities_after_churn_on_each_equals_their_truth(
    start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    simulator: Simulator = await start_simulator(orders=40, identities=3)
    lake = tmp_path / "lake"
    target = Target.parse(str(lake))
    # one worker process runs the three identities at once (a thread each); the real CLI, so
    # that a fleet that hangs is stopped after a deadline with every process's stacks
    args = (
        "sync", "--out", str(lake), "--base-url", simulator.url, "--since", "2015-01-01",
        "--identity", "all", "--workers", "1", "--reconcile", *NO_LIMIT,
        "--tables", "invoices,transactions,transaction_types",  # every list: test_picture
    )  # fmt: skip
    code, _, err = await extractor(*args, env=DEMO_ENV)  # the first sync backfills
    assert code == 0, err
    parts = lake_by_identity(target)
    for company in simulator.companies:
        assert_lake_part_equals(company.tenant, company.ledger, parts[company.identity_id], set())
    deleted: dict[str, set[int]] = {}
    for number, company in enumerate(simulator.companies, start=1):
        report = simulator.churn(
            Churn(changed=8 + number, deleted=2, added=3), seed=number, identity=number
        )
        deleted[company.identity_id] = set(report.deleted)
    code, _, err = await extractor(*args, env=DEMO_ENV)  # three runs commit at once
    assert code == 0, err
    parts = lake_by_identity(target)
    assert set(parts) == {company.identity_id for company in simulator.companies}
    for company in simulator.companies:
        assert_lake_part_equals(
            company.tenant, company.ledger, parts[company.identity_id],
            marked=deleted[company.identity_id],
        )  # fmt: skip
    invoices = DeltaTable(target.table_uri("invoices"))
    assert invoices.metadata().partition_columns == ["identity_id", "order_month"]
    assert {row["command"] for row in roster.read(target, delta=True)} == {"sync"}
    # each identity's transaction types, replaced by its own runs in its own part
    types = read_delta(target, "transaction_types")
    for company in simulator.companies:
        mine = [row for row in types if row["identity_id"] == company.identity_id]
        assert_list_equals(mine, simulator.whole_list("GetTransactionTypes", company.number))

    # a sync of one identity without --identity is refused: the tables are a fleet's
    code, _, err = await cli_beside(
        "sync", "--out", str(lake), "--base-url", simulator.url, *NO_LIMIT, env=DEMO_ENV
    )
    assert code == 2 and "holds a fleet's dataset" in err


async def test_the_demo_shows_a_fleet_and_a_later_demo_clears_it(
    cli_beside: Any, tmp_path: Path
) -> None:
    out = tmp_path / "demo"
    code, shown, err = await cli_beside(
        "demo", "--out", str(out), "--orders", "40", "--identities", "2", "--workers", "1"
    )
    assert code == 0, err
    assert "fleet fleet-" in shown and "identities    2: 2 complete" in shown
    counts = {guid: len(orders) for guid, orders in by_identity(out, "invoices").items()}
    assert sorted(counts.values()) == [40, 40]
    # the real CLI: a demo of one identity parses in processes, which a thread cannot start
    code, _, err = await extractor("demo", "--out", str(out), "--orders", "30")
    assert code == 0, err
    assert not (out / "_identities").exists() and not (out / "identities").exists()
    assert ds.dataset(out / "invoices", partitioning="hive").count_rows() == 30


async def test_a_second_fleet_into_the_same_output_at_once_is_refused(
    start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    simulator: Simulator = await start_simulator(orders=50, identities=2)
    out = tmp_path / "fleet"
    with OutputLock.take(out, "invoices (fleet)"):  # the first fleet, still running
        code, _, err = await cli_beside(
            "invoices", "--base-url", simulator.url, "--out", str(out), "--identity", "all",
            *NO_LIMIT, env=DEMO_ENV,
        )  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "is in use by 'extractor invoices (fleet)'" in err
    assert simulator.stats["GetInvoices"] == 0 and not (out / "invoices").exists()


async def test_a_fleets_delta_tables_and_one_identitys_are_never_mixed(
    in_memory: Any, tmp_path: Path
) -> None:
    served = in_memory(orders=40, identities=2)
    guid = served.service.company(2).identity_id

    def job(out: Path, target: Target, identity: str | None) -> InvoiceJob:
        return job_of(
            InvoiceJob, out=out, base_url=MEMORY_URL, max_requests_per_hour=0,
            output=DeltaOutput(target, identity=identity), placement=Placement(None, identity),
        )  # fmt: skip

    alone, fleet = Target.parse(str(tmp_path / "alone")), Target.parse(str(tmp_path / "fleet"))
    await served.run(job(tmp_path / "w1", alone, None))
    await served.run(job(tmp_path / "w2", fleet, guid))
    with pytest.raises(OutputError, match="holds one identity's data"):
        await served.run(job(tmp_path / "w3", alone, guid))
    with pytest.raises(OutputError, match="holds a fleet's data"):
        await served.run(job(tmp_path / "w4", fleet, None))
    assert len(read_delta(alone, "invoices")) == len(read_delta(fleet, "invoices")) == 40


def test_a_fleet_sync_counts_what_each_part_fetched_its_lists_too() -> None:
    # found by attack: a sync's count left its lists out (`sync --tables customers`: none)
    sync = {
        "invoices": {"records": "invoices", "invoices": 5},
        "transactions": {"records": "transactions", "transactions": 3},
        "lists": {"records": "items", "items": 7},
    }
    assert roster.records(sync, "sync") == 15
    assert roster.records({"lists": sync["lists"]}, "sync") == 7
    assert roster.records({"records": "items", "items": 4}, "tables") == 4
