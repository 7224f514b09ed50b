"""Staging whose cost is per batch: one file per batch and table, partitions cut at publish."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from extractor.output.parquet import RunInfo, publish
from extractor.output.staging import (
    NO_PARTITION,
    SMALL_FILE_RECORDS,
    Placement,
    TableWriter,
    WriterLimits,
)

SCHEMA = pa.schema([("OrderId", pa.int32()), ("Title", pa.string())])
RUN = RunInfo("run-1", dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC))


def batch(ids: range, months: list[str | None]) -> tuple[pa.Table, pa.Array]:  # type: ignore[type-arg]
    table = pa.table(
        {"OrderId": pa.array(list(ids), pa.int32()), "Title": [f"t{i}" for i in ids]}, SCHEMA
    )
    keys = pa.array([months[i % len(months)] for i in range(len(ids))], pa.string())
    return table, keys


def test_a_batch_over_many_partitions_is_one_staged_file(tmp_path: Path) -> None:
    writer = TableWriter(tmp_path, "invoices", SCHEMA, "order_month", "run-1")
    months = [f"20{year:02d}-{month:02d}" for year in range(14, 24) for month in (1, 6)] + [None]
    writer.stage("00000000", *batch(range(0, 1000), months))
    writer.stage("00001000", *batch(range(1000, 1500), months[:3]))
    assert sorted(path.name for path in writer.staging.iterdir()) == [
        "00000000.arrow",
        "00001000.arrow",
    ]
    assert writer.staged_rows() == {"00000000": 1000, "00001000": 500}
    writer.keep = {"00000000", "00001000"}
    assert publish([writer], RUN) == len(months)  # one Parquet file per partition
    dataset = ds.dataset(tmp_path / "invoices", format="parquet", partitioning="hive")
    rows = dataset.to_table().to_pylist()
    assert sorted(row["OrderId"] for row in rows) == list(range(1500))
    for row in rows:
        order_id = row["OrderId"]
        staged_with = months if order_id < 1000 else months[:3]
        month = staged_with[(order_id % 1000) % len(staged_with)]
        assert row["order_month"] == (month or NO_PARTITION), row
        assert row["Title"] == f"t{order_id}"
        assert (row["_run_id"], row["_extracted_at"]) == ("run-1", RUN.as_of)
    assert (tmp_path / "invoices" / f"order_month={NO_PARTITION}").is_dir()


def test_publishing_reads_the_staging_in_rounds_then_writes_row_groups(tmp_path: Path) -> None:
    # a round per staged batch, and row groups smaller than a partition
    limits = WriterLimits(round_bytes=4096, row_group_bytes=8192)
    writer = TableWriter(tmp_path, "invoices", SCHEMA, "order_month", "run-1", limits)
    for start in range(0, 3000, 500):
        writer.stage(f"{start:08d}", *batch(range(start, start + 500), ["2024-01", "2024-02"]))
    assert publish([writer], RUN) == 2
    assert not list(writer.staging.rglob("*.tmp")), "the spill files are gone"
    for path in (tmp_path / "invoices").rglob("*.parquet"):
        assert 1 < pq.ParquetFile(path).num_row_groups < 6
        assert pq.read_table(path).column("OrderId").to_pylist() == [
            order_id for order_id in range(3000) if order_id % 2 == int(path.parent.name[-1]) - 1
        ]


def test_only_the_journaled_batches_are_published(tmp_path: Path) -> None:
    writer = TableWriter(tmp_path, "invoices", SCHEMA, "order_month", "run-1")
    writer.stage("a", *batch(range(0, 10), ["2024-01"]))
    writer.stage("b", *batch(range(10, 20), ["2024-01", "2024-02"]))
    writer.keep = {"a"}
    publish([writer], RUN)
    rows = ds.dataset(tmp_path / "invoices", format="parquet", partitioning="hive").to_table()
    assert sorted(rows.column("OrderId").to_pylist()) == list(range(10))
    writer.discard({"b"})
    assert writer.staged_rows() == {"a": 10}


def test_a_null_partition_of_an_earlier_release_joins_the_none_folder(tmp_path: Path) -> None:
    # releases before 0.2 wrote hive's null folder, which pandas.read_parquet cannot read
    legacy = tmp_path / "invoices" / "order_month=__HIVE_DEFAULT_PARTITION__"
    legacy.mkdir(parents=True)
    pq.write_table(batch(range(0, 5), [None])[0], legacy / "part-old.parquet")
    writer = TableWriter(tmp_path, "invoices", SCHEMA, "order_month", "run-1")
    writer.stage("a", *batch(range(5, 10), [None, "2024-01"]))
    writer.keep = {"a"}
    publish([writer], RUN)
    assert not legacy.exists()
    assert sorted(p.name for p in (tmp_path / "invoices" / "order_month=none").iterdir()) == [
        "part-old.parquet",
        "part-run-1.parquet",
    ]
    assert len(pd.read_parquet(tmp_path / "invoices")) == 10


def test_a_publish_cut_off_in_its_second_pass_leaves_nothing_a_resume_keeps(
    tmp_path: Path,
) -> None:
    writer = TableWriter(tmp_path, "invoices", SCHEMA, "order_month", "run-1")
    writer.stage("a", *batch(range(0, 10), ["2024-01", "2024-02"]))
    spills = writer.spill()  # pass one done, pass two never ran: the spills are left
    assert len(spills) == 2 and all(spill.path.is_file() for spill in spills.values())
    assert writer.prune({"a"}) == 2, "a resume removes the spills, keeps the staged batch"
    assert writer.staged_rows() == {"a": 10}
    assert publish([writer], RUN) == 2
    rows = ds.dataset(tmp_path / "invoices", format="parquet", partitioning="hive").to_table()
    assert sorted(rows.column("OrderId").to_pylist()) == list(range(10))


async def test_the_stager_queues_a_wave_of_batches_and_holds_back_past_its_backlog() -> None:
    import asyncio
    import threading

    from extractor.records.parsing import Stager

    release, staged = threading.Event(), []

    class SlowTables:
        def stage(self, batch: object, name: str) -> None:
            release.wait(timeout=30)
            staged.append(name)

    stager = Stager(SlowTables(), backlog=3)  # type: ignore[arg-type]
    try:
        for name in ("a", "b", "c"):  # a wave: queued at once, the fetches go on
            await asyncio.wait_for(stager.stage_later(None, name), timeout=5)
        fourth = asyncio.ensure_future(stager.stage_later(None, "d"))
        await asyncio.sleep(0)
        assert not fourth.done()  # past the backlog: held until one is on disk
        release.set()
        await asyncio.wait_for(fourth, timeout=30)
        await stager.drain()
        assert staged == ["a", "b", "c", "d"]
    finally:
        release.set()
        stager.close()


def test_a_leading_partition_puts_one_identity_under_the_fleet_table(tmp_path: Path) -> None:
    """A fleet's identity stages under its own folder and publishes under
    ``OUT/invoices/identity_id=<guid>/``: readers see the identity as a column."""
    guid = "236cc028-573c-4a27-9db0-8278a08d73b0"
    own = tmp_path / "_identities" / guid
    writer = TableWriter(
        own,
        "invoices",
        SCHEMA,
        "order_month",
        "run-1",
        placement=Placement(tmp_path, guid),
    )
    writer.stage("00000000", *batch(range(0, 10), ["2024-01", "2024-02"]))
    assert writer.staging.is_relative_to(own)
    assert publish([writer], RUN) == 2
    assert sorted(p.parent.name for p in (tmp_path / "invoices").rglob("*.parquet")) == [
        "order_month=2024-01",
        "order_month=2024-02",
    ]
    dataset = ds.dataset(tmp_path / "invoices", format="parquet", partitioning="hive")
    rows = dataset.to_table().to_pylist()
    assert sorted(row["OrderId"] for row in rows) == list(range(10))
    assert {row["identity_id"] for row in rows} == {guid}
    assert {row["order_month"] for row in rows} == {"2024-01", "2024-02"}


def test_a_file_of_few_records_is_snappy_and_a_larger_one_zstd(tmp_path: Path) -> None:
    """zstd's fixed cost a column chunk buys nothing in a file of a few records."""
    writer = TableWriter(tmp_path, "invoices", SCHEMA, "order_month", "run-1")
    sizes = {"2024-01": SMALL_FILE_RECORDS - 1, "2024-02": SMALL_FILE_RECORDS, "2024-03": 1}
    start = 0
    for month, size in sizes.items():
        writer.stage(f"{start:08d}", *batch(range(start, start + size), [month]))
        start += size
    writer.keep = {f"{n:08d}" for n in (0, sizes["2024-01"], start - 1)}
    assert publish([writer], RUN) == 3
    for month, size in sizes.items():
        (path,) = (tmp_path / "invoices" / f"order_month={month}").glob("*.parquet")
        metadata = pq.ParquetFile(path).metadata
        assert metadata.num_rows == size
        expected = "SNAPPY" if size < SMALL_FILE_RECORDS else "ZSTD"
        chunks = metadata.row_group(0)
        assert {chunks.column(i).compression for i in range(chunks.num_columns)} == {expected}


def test_a_unique_table_keeps_the_latest_record_of_a_key_in_each_partition(
    tmp_path: Path,
) -> None:
    """The ledger's: a line returned in two windows (it changed between them) is written once."""
    schema = pa.schema([("Id", pa.string()), ("Version", pa.int64()), ("Title", pa.string())])
    writer = TableWriter(
        tmp_path, "transactions", schema, "date_month", "run-1", unique=("Id", "Version")
    )

    def lines(*records: tuple[str, int, str]) -> pa.Table:
        ids, versions, titles = zip(*records, strict=True)
        return pa.table({"Id": list(ids), "Version": list(versions), "Title": list(titles)}, schema)

    first = lines(("a", 1, "old"), ("b", 1, "b"), ("c", 1, "c"))
    writer.stage("00000000", first, pa.array(["2024-01", "2024-01", "2024-02"]))
    second = lines(("c", 0, "older"), ("a", 2, "new"), ("d", 1, "d"))
    writer.stage("00000001", second, pa.array(["2024-02", "2024-01", "2024-01"]))
    writer.keep = {"00000000", "00000001"}
    assert publish([writer], RUN) == 2
    assert writer.rows_written == 4
    dataset = ds.dataset(tmp_path / "transactions", format="parquet", partitioning="hive")
    found = {(r["date_month"], r["Id"]): r["Title"] for r in dataset.to_table().to_pylist()}
    assert found == {
        ("2024-01", "a"): "new", ("2024-01", "b"): "b", ("2024-01", "d"): "d",
        ("2024-02", "c"): "c",
    }  # fmt: skip
