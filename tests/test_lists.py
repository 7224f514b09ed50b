"""Whole lists (issue 25): ``transaction_types`` from GetTransactionTypes, a spec on the one
engine, as Parquet (``extractor lists``) and in ``sync``'s Delta tables; equal to the
simulator's list field by field."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extractor import schema
from extractor.engine.lists import ListJob
from extractor.errors import OutputError
from extractor.operations import SPECS, TRANSACTION_TYPES
from extractor.output import lakelists
from extractor.output.lakefiles import Scope
from extractor.output.lakelists import keep_list
from extractor.output.parquet import RunInfo
from extractor.output.targets import Target
from extractor.records import ledger, orders
from extractor.simulator.faults import FaultConfig
from tests.conftest import MEMORY_URL, InMemory, job_of, read_table
from tests.helpers import DEMO_ENV, one_line, sync
from tests.truth import assert_list_equals, read_delta

TYPES = "GetTransactionTypes"


def lists_job(out: Path, **options: Any) -> ListJob:
    return job_of(
        ListJob, out=out, specs=(TRANSACTION_TYPES,), base_url=MEMORY_URL, max_requests_per_hour=0,
        **options,
    )  # fmt: skip


def test_the_specs_are_the_wsdl_s() -> None:
    for spec in SPECS.values():
        spec.check()
    # the record modules partition as the specs say
    assert SPECS["invoices"].partition == orders.PARTITION
    assert SPECS["transactions"].partition == ledger.PARTITION
    assert SPECS["invoices"].struct == schema.invoice_order()
    assert SPECS["transactions"].struct == ledger.transaction_type()
    assert TRANSACTION_TYPES.struct.names == ("Turnover", "Title", "No", "Id")
    assert TRANSACTION_TYPES.operation.action.endswith("/GetTransactionTypes")
    types = {f.name: str(f.type) for f in TRANSACTION_TYPES.schema}
    assert types == {"Turnover": "bool", "Title": "string", "No": "int32", "Id": "int32"}


async def test_lists_as_parquet_equal_the_simulator_s(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    memory = in_memory(orders=10, seed=5)
    summary = await memory.run(lists_job(tmp_path))
    expected = memory.service.whole_list(TYPES)
    assert summary["status"] == "complete" and summary["items"] == len(expected)
    assert summary["lists"] == {"transaction_types": len(expected)}
    assert memory.service.stats[TYPES] == 1
    assert_list_equals(read_table(tmp_path, "transaction_types"), expected)
    (part,) = (tmp_path / "transaction_types").glob("*.parquet")  # one folder, no partitions
    assert part.name == f"part-{summary['run_id']}.parquet"
    again = await memory.run(lists_job(tmp_path))  # the same job into the same output
    assert again["run_id"] == summary["run_id"] and memory.service.stats[TYPES] == 1


async def test_a_list_that_keeps_failing_is_reported_and_fetched_again(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    memory = in_memory(orders=10, faults=FaultConfig(rate=1.0, kinds=("http500",)))
    first = await memory.run(lists_job(tmp_path))
    assert first["status"] == "partial" and first["items"] == 0
    assert [f["list"] for f in first["failures"]] == ["transaction_types"]
    assert not (tmp_path / "transaction_types").exists()
    memory = in_memory(orders=10)  # the service answers again
    second = await memory.run(lists_job(tmp_path))
    assert second["status"] == "complete" and second["retry_of"] == first["run_id"]
    assert_list_equals(read_table(tmp_path, "transaction_types"), memory.service.whole_list(TYPES))


async def test_a_sync_keeps_the_list_replaced_not_appended(
    start_simulator: Any, tmp_path: Path
) -> None:
    simulator = await start_simulator(orders=40)
    target = Target.parse(str(tmp_path))
    first = await sync(simulator, target, tables=("invoices", "transaction_types"))
    assert first["status"] == "complete" and "lists" in first
    assert_list_equals(read_delta(target, "transaction_types"), simulator.whole_list(TYPES))
    # the books change: a type dropped, one renamed, one added
    types = sorted(simulator.whole_list(TYPES), key=lambda entry: entry["Id"])
    dropped, renamed = types[0], types[1]
    types = [entry for entry in types if entry is not dropped]
    types[0] = renamed | {"Title": "Innbetaling (bank)"}
    types.append({"Id": 999, "No": 999, "Title": "Ny type", "Turnover": False})
    simulator.change_list(TYPES, types)
    second = await sync(simulator, target, tables=("invoices", "transaction_types"))
    rows = read_delta(target, "transaction_types")
    assert {row["_run_id"] for row in rows} == {second["lists"]["run_id"]}
    assert_list_equals(rows, types)
    assert dropped["Id"] not in {row["Id"] for row in rows}


async def test_the_lists_command_refuses_an_unknown_list_in_one_line(
    cli_beside: Any, tmp_path: Path
) -> None:
    code, _, err = await cli_beside(
        "lists", "--out", str(tmp_path), "--list", "acounts", env=DEMO_ENV
    )
    assert code == 2
    assert "--tables: 'acounts' is not a table; choose from invoices, transactions, accounts" in (
        one_line(err)
    )


async def test_the_lists_command_writes_the_tables_and_its_summary(
    start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    simulator = await start_simulator(orders=10, seed=9)
    code, out, _ = await cli_beside(
        "lists",
        "--out",
        str(tmp_path),
        "--list",
        "transaction_types",
        "--base-url",
        simulator.url,
        "--json",
        env=DEMO_ENV,
    )
    assert code == 0
    summary = orjson.loads(out)
    assert summary["lists"] == {"transaction_types": len(simulator.whole_list(TYPES))}
    assert_list_equals(read_table(tmp_path, "transaction_types"), simulator.whole_list(TYPES))


class Staged:
    """A staged list as keep_list reads it: its records, in one piece."""

    def __init__(self, ids: range) -> None:
        self.name, self.schema = TRANSACTION_TYPES.table, TRANSACTION_TYPES.schema
        self.records = [{"Id": i, "No": i, "Title": f"type {i}", "Turnover": True} for i in ids]

    def tables(self) -> Iterator[pa.Table]:
        yield pa.Table.from_pylist(self.records, self.schema)


def test_a_fleet_member_creating_the_table_never_drops_another_s_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # found by attack: two members saw no table, the second overwrote the first one's part
    target = Target(str(tmp_path), local=tmp_path)
    run = RunInfo("r-1", dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    keep_list(target, Scope("aaaa"), Staged(range(3)), run)  # type: ignore[arg-type]
    seen = iter([None])  # the second member looks before the first one's table is there
    real = lakelists._table
    monkeypatch.setattr(lakelists, "_table", lambda *a: next(seen, None) or real(*a))
    keep_list(target, Scope("bbbb"), Staged(range(10, 15)), run)  # type: ignore[arg-type]
    rows = read_delta(target, "transaction_types")
    by_identity = Counter(row["identity_id"] for row in rows)
    assert by_identity == {"aaaa": 3, "bbbb": 5}


def test_one_identity_s_list_never_replaces_a_fleet_s(tmp_path: Path) -> None:
    target = Target(str(tmp_path), local=tmp_path)
    run = RunInfo("r-1", dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    keep_list(target, Scope("aaaa"), Staged(range(3)), run)  # type: ignore[arg-type]
    with pytest.raises(OutputError, match=r"holds a fleet's lists .*give --identity all"):
        keep_list(target, Scope(), Staged(range(5)), run)  # type: ignore[arg-type]
    assert len(read_delta(target, "transaction_types")) == 3


async def test_one_identity_s_lists_into_a_fleet_s_lake_are_refused_before_any_request(
    cli_beside: Any, tmp_path: Path
) -> None:
    # found by attack: `lists --format delta` looked for the fleet in _work/lists, while a
    # fleet's sync keeps its runs in _work itself; it fetched, then replaced every identity's
    (tmp_path / "_work" / "_identities").mkdir(parents=True)  # what a fleet's sync leaves
    code, _, err = await cli_beside(
        "lists", "--out", str(tmp_path), "--format", "delta", "--base-url", "http://127.0.0.1:9",
        env=DEMO_ENV,
    )  # fmt: skip
    assert code == 2 and "holds a fleet's dataset" in one_line(err)


async def test_an_empty_list_is_an_empty_table_not_a_missing_one(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    memory = in_memory(orders=10)
    memory.service.change_list(TYPES, [])  # a company with no transaction types yet
    summary = await memory.run(lists_job(tmp_path))
    assert summary["status"] == "complete" and summary["lists"] == {"transaction_types": 0}
    (part,) = (tmp_path / "transaction_types").glob("*.parquet")
    table = pq.read_table(part)
    columns = ["Turnover", "Title", "No", "Id", "_run_id", "_extracted_at"]
    assert table.num_rows == 0 and table.schema.names == columns
