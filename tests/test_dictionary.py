"""The data dictionary: ``docs/tables.md`` is what its generator makes now, and the generator
says what the writers write (the Parquet files' and the Delta tables' columns, in order and
type, their partitions, and the columns it says are never null)."""

from __future__ import annotations

import datetime as dt
import difflib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from extractor import dictionary
from extractor.engine.lists import ListJob
from extractor.jobs.invoices import InvoiceJob
from extractor.jobs.ledger import TransactionJob
from extractor.jobs.sync import SyncJob, run_sync
from extractor.operations import COMPANIONS, SPECS, choose, chosen_lists
from extractor.output.targets import Target
from tests.conftest import CREDS, MEMORY_URL, InMemory, job_of
from tests.helpers import ROOT, SYNC_SINCE

#: The tables written and compared: the facts, and a list of each kind (a whole list, a list
#: per row of another, one kept by its changes with deletions marked); a parent comes too.
LISTED = ("accounts", "account_balances", "customers")
WRITTEN = ("invoices", "invoice_rows", "transactions", *LISTED)


def test_docs_tables_md_is_what_the_generator_makes_now() -> None:
    written = (ROOT / "docs" / "tables.md").read_text().splitlines()
    made = dictionary.markdown().splitlines()
    if written != made:
        diff = list(
            difflib.unified_diff(written, made, "docs/tables.md", "generated", n=0, lineterm="")
        )
        pytest.fail(
            "docs/tables.md is not what the code says: run `make docs`\n" + "\n".join(diff[:20])
        )


def test_every_table_is_described_once_and_every_column_the_extractor_adds_has_a_meaning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = [table.name for table in dictionary.tables()]
    assert sorted(names) == sorted({*SPECS, *COMPANIONS["invoices"]})
    assert len(names) == len(set(names)) == 18
    monkeypatch.delitem(dictionary.MEANINGS, "customers.Active")
    with pytest.raises(ValueError, match=r"customers\.Active .* describe it in MEANINGS"):
        dictionary.tables()


async def test_the_dictionary_states_what_the_writers_write(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    memory = in_memory(orders=20)
    fetched = await _written(memory, tmp_path)
    lake = Target(str(tmp_path / "lake"), local=tmp_path / "lake")
    described = {table.name: table for table in dictionary.tables()}
    for name in WRITTEN:
        table = described[name]
        folder = fetched[name]
        files = sorted(folder.rglob("*.parquet"))
        assert files, f"{name}: no Parquet written"
        for file in files:
            assert _columns(pq.read_schema(file)) == _columns(table.parquet), f"{name}: {file}"
        parquet = ds.dataset(folder, format="parquet", partitioning="hive").to_table()
        delta = DeltaTable(lake.table_uri(name))
        assert [(f["name"], f["type"]) for f in _fields(delta)] == table.delta, name
        assert delta.metadata().partition_columns == ([table.partition] if table.partition else [])
        if table.partition:
            assert all(f.parent.name.startswith(f"{table.partition}=") for f in files)
            assert parquet.schema.field(table.partition).type == pa.string()
        records = pa.table(delta.to_pyarrow_table())
        assert records.num_rows > 0 and parquet.num_rows > 0, name
        for column in (c.name for c in table.columns if not c.nullable):  # never null
            assert records.column(column).null_count == 0, (name, column)
            if column in parquet.column_names:
                assert parquet.column(column).null_count == 0, (name, column)


async def _written(memory: InMemory, out: Path) -> dict[str, Path]:
    """Write every table of :data:`WRITTEN` as Parquet (the backfills and ``tables``) and as
    Delta (a sync into ``out/lake``); each table's Parquet folder."""
    common: dict[str, Any] = {"base_url": MEMORY_URL, "max_requests_per_hour": 0}
    ledger = job_of(TransactionJob, out=out / "ledger", date_from=SYNC_SINCE,
                    date_to=dt.date.today(), **common)  # fmt: skip
    jobs = (
        job_of(InvoiceJob, out=out / "invoices", **common),
        ledger,
        job_of(ListJob, out=out / "lists", specs=chosen_lists(",".join(LISTED)), **common),
    )
    for job in jobs:
        summary = await memory.run(job)
        assert summary["status"] == "complete", summary
    lake = Target(str(out / "lake"), local=out / "lake")
    sync = job_of(SyncJob, lake, since=SYNC_SINCE, tables=choose(",".join(WRITTEN)), **common)
    summary = await run_sync(sync, CREDS, log=io.StringIO(), clock=memory.clock, wire=memory.wire)
    assert summary.as_json()["status"] == "complete"
    folders = {"invoices": out / "invoices", "invoice_rows": out / "invoices"}
    folders |= {"transactions": out / "ledger"} | {name: out / "lists" for name in LISTED}
    return {name: folder / name for name, folder in folders.items()}


def _columns(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    return [(field.name, field.type) for field in schema]


def _fields(table: DeltaTable) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = orjson.loads(table.schema().to_json())["fields"]
    return fields
