"""The Delta tables' layout: month partitions, sorted key ranges of bounded files, and merges
that rewrite only the files holding a changed key."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import shutil
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

from extractor.errors import OutputError
from extractor.output.delta import Lake
from extractor.output.lakechanges import Change, Plan, apply, conformed
from extractor.output.lakefiles import (
    LAYOUTS,
    DataFile,
    TableFiles,
    current_files,
    statistics,
)
from extractor.output.parquet import RunInfo
from extractor.output.staging import NULL_PARTITION, SMALL_FILE_RECORDS
from extractor.output.targets import Target
from extractor.simulator.tenant import Churn
from tests.helpers import sync
from tests.truth import assert_lake_equals_truth

MONTHS = {"invoices": "DateOrdered", "transactions": "Date"}
TABLES = ("invoices", "invoice_rows", "transactions")


@pytest.fixture
def small_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of a few records, so that a small tenant spreads over many files a month."""
    for name, size in (("invoices", 4), ("invoice_rows", 12), ("transactions", 8)):
        monkeypatch.setitem(LAYOUTS, name, dataclasses.replace(LAYOUTS[name], max_records=size))


def paths(target: Target, name: str) -> set[str]:
    table = Lake(target).table(name)
    assert table is not None
    return {file.path for group in current_files(table, LAYOUTS[name]).values() for file in group}


async def synced(start: Any, tmp_path: Path, orders: int, **options: Any) -> tuple[Any, Target]:
    """A simulator of ``orders`` orders and a first sync of it into ``tmp_path/lake``."""
    simulator = await start(orders=orders)
    target = Target.parse(str(tmp_path / "lake"))
    await sync(simulator, target, **options)
    return simulator, target


def assert_laid_out(target: Target, name: str) -> None:
    """Every file: in its partition's folder, sorted, within its stated key range, at most
    ``max_records`` unless one key holds more; ranges in a partition disjoint."""
    layout = LAYOUTS[name]
    table = Lake(target).table(name)
    assert table is not None and table.metadata().partition_columns == [layout.partition]
    assert target.local is not None
    for partition, group in current_files(table, layout).items():
        for before, after in itertools.pairwise(group):
            assert before.high < after.low, f"{name} {partition}: ranges overlap"
        for file in group:
            assert file.path.startswith(f"{layout.partition}={partition}/")
            records = pq.read_table(target.local / name / file.path)
            keys = records.column(layout.key).to_pylist()
            assert keys == sorted(keys) and (file.low, file.high) == (keys[0], keys[-1])
            assert len(keys) <= layout.max_records or len(set(keys)) == 1
            if name in MONTHS:
                stamps = records.column(MONTHS[name]).to_pylist()
                months = {NULL_PARTITION if m is None else m.strftime("%Y-%m") for m in stamps}
                assert months == {partition}


async def test_a_sync_rewrites_only_the_files_holding_a_change(
    start_simulator: Any, tmp_path: Path, small_files: None
) -> None:
    simulator, target = await synced(start_simulator, tmp_path, 120)
    for name in TABLES:
        assert_laid_out(target, name)
    before = {name: paths(target, name) for name in ("invoices", "invoice_rows")}
    assert len(before["invoices"]) >= 30, "120 orders in files of at most 4"

    churn = simulator.churn(Churn(changed=6, deleted=0, added=3), seed=5)
    summary = await sync(simulator, target)
    assert summary["invoices"]["written"]["invoices"] == 6 + 3
    assert_lake_equals_truth(simulator, target, marked=set())
    for name in TABLES:
        assert_laid_out(target, name)
    for name in ("invoices", "invoice_rows"):
        removed = before[name] - paths(target, name)
        # a changed order's file, or the file a new order joins: never more than one each
        assert 0 < len(removed) <= len(churn.changed) + len(churn.added), name


async def test_an_order_moved_to_another_month_leaves_its_old_partition(
    start_simulator: Any, tmp_path: Path, small_files: None
) -> None:
    simulator, target = await synced(start_simulator, tmp_path, 200, ledger=False)
    order_id = next(i for i in simulator.tenant.ids if len(simulator.tenant.truth(i).rows) > 1)
    old = simulator.tenant.truth(order_id).order["DateOrdered"]
    moved = dt.datetime(2011, 2, 3, 4, 5, 6) if old.year != 2011 else dt.datetime(2019, 7, 1)
    simulator.tenant.edits[order_id] = {"DateOrdered": moved}
    simulator.tenant.changed[order_id] = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    await sync(simulator, target, ledger=False)
    # one row per OrderId, every order and row in the partition of its DateOrdered
    assert_lake_equals_truth(simulator, target, marked=set(), ledger=False)
    assert_laid_out(target, "invoices")
    assert_laid_out(target, "invoice_rows")


async def test_reconcile_marks_in_place_and_keeps_the_layout(
    start_simulator: Any, tmp_path: Path, small_files: None
) -> None:
    simulator, target = await synced(start_simulator, tmp_path, 120, ledger=False)
    churn = simulator.churn(Churn(changed=0, deleted=5, added=0), seed=3)
    before = paths(target, "invoices")
    summary = await sync(simulator, target, ledger=False, reconcile=True)
    assert summary["invoices"]["written"]["deleted"] == 5
    assert_lake_equals_truth(simulator, target, marked=set(churn.deleted), ledger=False)
    assert_laid_out(target, "invoices")
    assert len(before - paths(target, "invoices")) <= 5


def test_files_are_cut_between_keys_never_through_one() -> None:
    layout = dataclasses.replace(LAYOUTS["invoice_rows"], max_records=3)
    files = TableFiles(Target.parse("/nonexistent"), "invoice_rows", layout)
    keys = [1, 1, 2, 2, 2, 2, 2, 3, 4, 4, 5]
    records = pa.table({"OrderId": keys, "_row_index": list(range(len(keys)))})
    pieces = [piece.column("OrderId").to_pylist() for piece in files.cut(records)]
    assert pieces == [[1, 1], [2, 2, 2, 2, 2], [3, 4, 4], [5]]


def test_statistics_hold_the_range_of_keys_and_widen_timestamps() -> None:
    moments = [dt.datetime(2024, 1, 1, 0, 0, 0, 1500, tzinfo=dt.UTC), None]
    records = pa.table({
        "Id": ["b", "a"], "Amount": [3, 7],
        "DateChanged": pa.array(moments, pa.timestamp("us", tz="UTC")), "Text": ["x", None],
    })  # fmt: skip
    stats = statistics(records, "Id")
    assert stats["numRecords"] == 2
    assert stats["minValues"] == {"Id": "a", "Amount": 3, "DateChanged": "2024-01-01T00:00:00.001Z"}
    assert stats["maxValues"] == {"Id": "b", "Amount": 7, "DateChanged": "2024-01-01T00:00:00.002Z"}
    assert stats["nullCount"] == {"Id": 0, "Amount": 0, "DateChanged": 1, "Text": 1}


def test_statistics_widen_timestamps_of_every_unit_to_the_millisecond() -> None:
    ticks = {"s": ([-1, 2], "59.000", "02.000"), "ms": ([-1, 1], "59.999", "00.001"),
             "us": ([-1001, 1001], "59.998", "00.002")}  # fmt: skip
    for unit, (values, low, high) in ticks.items():
        moments = pa.array([*values, None], pa.int64()).cast(pa.timestamp(unit))
        stats = statistics(pa.table({"Id": [1, 2, 3], "At": moments}), "Id")
        assert stats["minValues"]["At"] == f"1969-12-31T23:59:{low}Z", unit
        assert stats["maxValues"]["At"] == f"1970-01-01T00:00:{high}Z", unit
        assert stats["nullCount"] == {"Id": 0, "At": 1}


def test_conformed_records_are_those_of_a_whole_cast() -> None:
    records = pa.table({
        "OrderId": pa.array([1, None], pa.int32()),
        "Status": pa.array(["a", "b"]).dictionary_encode(), "Title": ["x", None],
    })  # fmt: skip
    schema = pa.schema({"OrderId": pa.int64(), "Status": pa.string(), "Title": pa.string()})
    assert conformed(records, schema).equals(records.cast(schema), check_metadata=True)
    assert conformed(records, records.schema) is records
    refused = pa.schema([pa.field("OrderId", pa.int64(), nullable=False), *list(schema)[1:]])
    with pytest.raises(OutputError, match="null values to non-nullable"):
        conformed(records, refused)


def test_a_first_publish_keeps_the_newest_of_a_key_staged_twice() -> None:
    """A ledger line that changed while the run fetched is staged twice (in two windows)."""
    stamp = lambda day: dt.datetime(2024, 1, day, tzinfo=dt.UTC)  # noqa: E731
    staged = pa.table({
        "Id": ["a", "b", "c", "b"], "DateChanged": [stamp(1), stamp(2), stamp(3), stamp(5)],
        "_partition": ["2024-01", "2024-01", "2024-02", "2024-03"],
    })  # fmt: skip
    plan = Plan.everything(staged, "Id", version="DateChanged")
    assert plan.changed == 3 and plan.newest is not None
    assert sorted(zip(*plan.newest.to_pydict().values(), strict=True)) == [
        ("a", "2024-01"),
        ("b", "2024-03"),
        ("c", "2024-02"),
    ]
    once = Plan.everything(staged.slice(0, 3), "Id", version="DateChanged")
    assert (once.changed, once.newest) == (3, None)  # nothing to choose: every record


def test_a_lake_file_of_few_records_is_snappy_and_a_larger_one_zstd(tmp_path: Path) -> None:
    layout = dataclasses.replace(LAYOUTS["invoices"], max_records=SMALL_FILE_RECORDS)
    files = TableFiles(Target.parse(str(tmp_path)), "invoices", layout)
    keys = list(range(SMALL_FILE_RECORDS + SMALL_FILE_RECORDS - 1))  # one file full, one not
    adds = files.write("2024-01", pa.table({"OrderId": pa.array(keys, pa.int32())}))
    found = {}
    for add in adds:
        metadata = pq.ParquetFile(tmp_path / "invoices" / add.path).metadata
        compression = metadata.row_group(0).column(0).compression
        assert add.path.endswith(f".{compression.lower()}.parquet")
        found[metadata.num_rows] = compression
    assert found == {SMALL_FILE_RECORDS: "ZSTD", SMALL_FILE_RECORDS - 1: "SNAPPY"}


def test_a_change_rewrites_the_files_holding_its_keys_and_keeps_ranges_apart(
    tmp_path: Path,
) -> None:
    layout = dataclasses.replace(LAYOUTS["invoices"], max_records=3)
    files = TableFiles(Target.parse(str(tmp_path)), "invoices", layout)
    schema = pa.schema([pa.field("OrderId", pa.int32()), pa.field("Title", pa.string())])

    def records(*keys: int, title: str = "old") -> pa.Table:
        return pa.table({"OrderId": list(keys), "Title": [title] * len(keys)}, schema)

    def stored(adds: list[Any]) -> list[DataFile]:
        made = []
        for add in adds:
            stats = orjson.loads(add.stats)
            low, high = stats["minValues"]["OrderId"], stats["maxValues"]["OrderId"]
            made.append(DataFile(add.path, "2024-01", low, high, add.size))
        return sorted(made, key=lambda file: file.low)

    first = stored(files.write("2024-01", records(10, 20, 30, 40, 50, 60, 70)))
    assert [(f.low, f.high) for f in first] == [(10, 30), (40, 60), (70, 70)]
    # 20 changes, 5 (below every file) and 45 (between 40 and 60) are new, 70 goes
    change = Change(drop=pa.array([20, 70, 5, 45]), add=records(20, 5, 45, title="new"))
    removes, adds = apply(files, first, "2024-01", change, schema)
    assert sorted(r.path for r in removes) == sorted(f.path for f in first)
    after = stored(adds)
    for before, later in itertools.pairwise(after):
        assert before.high < later.low
    read = pa.concat_tables([files.read(f) for f in after]).sort_by("OrderId")
    assert read.to_pylist() == [
        {"OrderId": 5, "Title": "new"}, {"OrderId": 10, "Title": "old"},
        {"OrderId": 20, "Title": "new"}, {"OrderId": 30, "Title": "old"},
        {"OrderId": 40, "Title": "old"}, {"OrderId": 45, "Title": "new"},
        {"OrderId": 50, "Title": "old"}, {"OrderId": 60, "Title": "old"},
    ]  # fmt: skip
    untouched = Change(drop=pa.array([50]), add=records(50, title="again"))
    removes, _ = apply(files, after, "2024-01", untouched, schema)
    assert [r.path for r in removes] == [f.path for f in after if f.low <= 50 <= f.high]


async def test_rows_a_first_sync_left_without_invoices_are_replaced(
    start_simulator: Any, tmp_path: Path, small_files: None
) -> None:
    """A first sync cut short between its two commits: its rows table and no invoices
    table. The next sync is a first one again."""
    simulator, target = await synced(start_simulator, tmp_path, 150, ledger=False)
    shutil.rmtree(target.table_uri("invoices"))
    shutil.rmtree(tmp_path / "lake" / "_work")
    await sync(simulator, target, ledger=False)
    assert_lake_equals_truth(simulator, target, marked=set(), ledger=False)
    assert_laid_out(target, "invoice_rows")


def test_a_table_laid_out_otherwise_is_refused(tmp_path: Path) -> None:
    target = Target.parse(str(tmp_path))
    write_deltalake(target.table_uri("invoices"), pa.table({"OrderId": [1, 2]}))
    run = RunInfo("r", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(OutputError, match="invoices is not partitioned by order_month"):
        Lake(target).reconcile([1], run)
