"""Every table reads with the readers a data team reaches for first, with their defaults:
pandas, pyarrow, DuckDB and Polars, for the Parquet output and the Delta tables."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from extractor.jobs.invoices import InvoiceJob
from extractor.jobs.ledger import TransactionJob
from extractor.jobs.sync import SyncJob, run_sync
from extractor.output.staging import NO_PARTITION
from extractor.output.targets import Target
from tests.conftest import CREDS, MEMORY_URL, InMemory, job_of
from tests.helpers import SYNC_SINCE

PARQUET_TABLES = {"invoices": "order_month", "invoice_rows": "order_month"}


@pytest.fixture
async def parquet_out(in_memory: Any, tmp_path: Path) -> tuple[InMemory, Path]:
    """A small backfill of invoices (some orders without DateOrdered) and of the ledger."""
    service = in_memory(orders=150)
    out = tmp_path / "out"
    flags = {"base_url": MEMORY_URL, "max_requests_per_hour": 0}
    await service.run(job_of(InvoiceJob, out=out, batch_size=50, parse_workers=0, **flags))
    ledger = job_of(
        TransactionJob, out=tmp_path / "ledger", date_from=SYNC_SINCE,
        date_to=service.clock.now().date(), **flags,
    )  # fmt: skip
    await service.run(ledger)
    return service, out


def _expected(service: InMemory) -> dict[str, Counter[str | None]]:
    """Each table's records by partition value, from the simulator's truth."""
    truth = service.service.tenant.ground_truth()
    months = Counter(_month(t.order.get("DateOrdered")) for t in truth.values())
    rows = Counter(_month(t.order.get("DateOrdered")) for t in truth.values() for _ in t.rows)
    assert months[NO_PARTITION], "the tenant has orders without DateOrdered"
    return {"invoices": months, "invoice_rows": rows}


def _month(stamp: dt.datetime | None) -> str:
    return stamp.strftime("%Y-%m") if stamp else NO_PARTITION


def _read(reader: str, folder: Path, column: str) -> list[str]:
    """The partition column of the Parquet table in ``folder`` as ``reader`` reads it."""
    if reader == "pandas":
        return [str(value) for value in pd.read_parquet(folder)[column]]
    if reader == "pyarrow":
        return [str(value) for value in pq.read_table(folder)[column].to_pylist()]
    if reader == "dataset":
        table = ds.dataset(folder, partitioning="hive").to_table()
        return [str(value) for value in table[column].to_pylist()]
    files = f"{folder}/**/*.parquet"
    if reader == "duckdb":
        query = f"SELECT {column} FROM read_parquet('{files}', hive_partitioning=true)"
        return [str(value) for (value,) in duckdb.sql(query).fetchall()]
    return [str(value) for value in pl.read_parquet(files, hive_partitioning=True)[column]]


async def test_parquet_reads_with_every_reader(parquet_out: tuple[InMemory, Path]) -> None:
    service, out = parquet_out
    expected = _expected(service)
    for table, column in PARQUET_TABLES.items():
        for reader in ("pandas", "pyarrow", "dataset", "duckdb", "polars"):
            found = Counter(_read(reader, out / table, column))
            assert found == expected[table], f"{table} read by {reader}"
    lines = service.service.ledger.ground_truth()
    frame = pd.read_parquet(out.parent / "ledger" / "transactions")
    assert sorted(frame["Id"].tolist()) == sorted(lines)
    assert Counter(frame["date_month"].astype(str)) == Counter(
        line["Date"].strftime("%Y-%m") for line in lines.values()
    )


async def test_delta_reads_with_every_reader(in_memory: Any, tmp_path: Path) -> None:
    service = in_memory(orders=150)
    target = Target.parse(str(tmp_path / "lake"))
    job = job_of(SyncJob, target, base_url=MEMORY_URL, since=SYNC_SINCE, max_requests_per_hour=0)
    summary = (
        await run_sync(job, CREDS, log=service.stream, clock=service.clock, wire=service.wire)
    ).as_json()
    assert summary["status"] == "complete"
    truth = service.service.tenant.ground_truth()
    undated = sum(1 for t in truth.values() if t.order.get("DateOrdered") is None)
    assert undated, "the tenant has orders without DateOrdered"
    for table in ("invoices", "invoice_rows", "transactions"):
        uri = target.table_uri(table)
        frames = {
            "pandas": DeltaTable(uri).to_pandas(),
            "polars": pl.read_delta(uri).to_pandas(),
            "duckdb": duckdb.from_arrow(DeltaTable(uri).to_pyarrow_dataset()).df(),
        }
        sizes = {reader: len(frame) for reader, frame in frames.items()}
        assert len(set(sizes.values())) == 1 and sizes["pandas"] > 0, (table, sizes)
    orders = DeltaTable(target.table_uri("invoices")).to_pandas()
    assert len(orders) == len(truth)
    assert int(orders["order_month"].isna().sum()) == undated, "null month: no DateOrdered"
