"""The data files of the extractor's Delta tables: per partition, sorted key ranges of
bounded size.

Within each partition (``order_month`` or ``date_month``) a table's records are kept in
files sorted by the table's key, each holding at most :attr:`Layout.max_records` records
(a key's records never split between two files), their key ranges disjoint. A change to a
few keys then reads and rewrites the few files whose ranges hold them, whatever the size of
the table or of the month: that is what makes a sync cost its changes (:mod:`.lakechanges`).

The extractor writes these files itself (Parquet, zstd or for a few records Snappy, the
partition column not stored, as Delta lays it out) and commits them with their statistics
(record count, nulls, and the minimum and maximum of every integer and timestamp column),
which readers use to skip files and the extractor to find them.

A fleet's tables are partitioned by ``identity_id`` first, then by month; each identity's run
reads and writes only its own partitions (its :class:`Scope`), so the runs of different
identities never touch the same files.
"""

from __future__ import annotations

import bisect
import datetime as dt
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.transaction import AddAction, RemoveAction

from extractor.arrow import cast_table, string_scalar, timestamp_scalar
from extractor.errors import OutputError
from extractor.output.parquet import RunInfo
from extractor.output.scope import IDENTITY as IDENTITY
from extractor.output.scope import WHOLE as WHOLE
from extractor.output.scope import Scope as Scope
from extractor.output.scope import partition_value as partition_value
from extractor.output.staging import NULL_PARTITION, RUN_FIELDS, TIMESTAMP, codec
from extractor.output.targets import Target


@dataclass(frozen=True)
class Layout:
    """How one table's files are cut: by ``partition``, sorted by ``order`` (``key`` first),
    at most ``max_records`` records a file."""

    key: str
    partition: str
    order: tuple[str, ...]
    max_records: int
    #: The key's type wherever keys are compared (an integer key of any width is int64).
    key_type: pa.DataType


INVOICES: Final = Layout("OrderId", "order_month", ("OrderId",), 1000, pa.int64())
INVOICE_ROWS: Final = Layout("OrderId", "order_month", ("OrderId", "_row_index"), 5000, pa.int64())
TRANSACTIONS: Final = Layout("Id", "date_month", ("Id",), 5000, pa.string())
LAYOUTS: Final = {"invoices": INVOICES, "invoice_rows": INVOICE_ROWS, "transactions": TRANSACTIONS}


def stamp(table: pa.Table, run: RunInfo, deletable: bool) -> pa.Table:
    """``table`` in the lake's types, with the run's columns (and ``_deleted_at``)."""
    lake = pa.schema([pa.field(f.name, _lake_type(f.type)) for f in table.schema])
    table = cast_table(table, lake)
    rows = table.num_rows
    table = table.append_column("_run_id", pa.repeat(string_scalar(run.run_id), rows))
    table = table.append_column("_extracted_at", pa.repeat(timestamp_scalar(run.as_of), rows))
    if deletable:
        table = table.append_column("_deleted_at", pa.nulls(rows, TIMESTAMP))
    return table


def lake_schema(schema: pa.Schema, deletable: bool) -> pa.Schema:
    """``schema`` in types Delta has, with the run's columns (and ``_deleted_at``)."""
    fields = [pa.field(f.name, _lake_type(f.type)) for f in schema]
    fields += RUN_FIELDS
    if deletable:
        fields.append(pa.field("_deleted_at", TIMESTAMP))
    return pa.schema(fields)


def _lake_type(arrow_type: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(arrow_type):
        return _lake_type(arrow_type.value_type)
    if pa.types.is_uint8(arrow_type):
        return pa.int16()
    if pa.types.is_struct(arrow_type):
        return pa.struct([pa.field(f.name, _lake_type(f.type)) for f in arrow_type])
    if pa.types.is_list(arrow_type):
        return pa.list_(_lake_type(arrow_type.value_type))
    return arrow_type


@dataclass(frozen=True)
class DataFile:
    """A committed data file: its partition (as staged: ``NULL_PARTITION`` for none), its key
    range (None: unknown, any key) and size."""

    path: str
    partition: str
    low: Any
    high: Any
    size: int

    def removed(self, layout: Layout, scope: Scope = WHOLE) -> RemoveAction:
        values = scope.values(layout, self.partition)
        return RemoveAction(self.path, True, _now_ms(), self.size, values)


class TableFiles:
    """Reads and writes the data files of the table ``name`` under ``target`` (of its part
    ``scope``)."""

    def __init__(self, target: Target, name: str, layout: Layout, scope: Scope = WHOLE) -> None:
        self.layout = layout
        self.scope = scope
        self.name = name
        self._filesystem = target.filesystem()
        self._local = target.local is not None
        self._root = str(target.local / name) if target.local is not None else target.key(name)

    def write(self, partition: str, records: pa.Table) -> list[AddAction]:
        """``records`` (the partition column not among them) as new files of ``partition``,
        sorted and cut at :attr:`Layout.max_records`; the files' add actions."""
        records = records.sort_by([(column, "ascending") for column in self.layout.order])
        return [self._write_file(partition, part) for part in self.cut(records)]

    def read(self, file: DataFile) -> pa.Table:
        try:
            with self._filesystem.open_input_file(f"{self._root}/{file.path}") as source:
                return pq.ParquetFile(source).read()
        except (OSError, pa.ArrowInvalid) as exc:
            raise OutputError(f"cannot read {self.name}/{file.path}: {exc}") from None

    def cut(self, records: pa.Table) -> Iterator[pa.Table]:
        """Sorted ``records`` in pieces of at most ``max_records``, cut between keys (a key
        holding more records than that is one piece)."""
        start, total, most = 0, records.num_rows, self.layout.max_records
        # the keys as a list only where there is a cut to place (most partitions are one file)
        keys: list[Any] = records.column(self.layout.key).to_pylist() if total > most else []
        while start < total:
            end = min(start + most, total)
            if end < total and keys[end] == keys[end - 1]:  # cut before the straddling key
                first = bisect.bisect_left(keys, keys[end], start, end)
                end = first if first > start else bisect.bisect_right(keys, keys[end], start)
            yield records.slice(start, end - start)
            start = end

    def removed(self, file: DataFile) -> RemoveAction:
        return file.removed(self.layout, self.scope)

    def _write_file(self, partition: str, records: pa.Table) -> AddAction:
        folder = self.scope.folder(self.layout, partition)
        compression = codec(records.num_rows)
        relative = f"{folder}/part-{uuid.uuid4().hex}.{compression}.parquet"
        sink = pa.BufferOutputStream()
        # no dictionaries and no Parquet statistics: a file holds too few records for either
        # to pay (one row group, whose range the Delta statistics below already give), and
        # they cost a third of the time of writing one
        pq.write_table(
            records, sink, compression=compression, use_dictionary=False, write_statistics=False
        )
        body = sink.getvalue()
        try:
            if self._local:  # on disk before the commit names it (a power cut after a
                # commit must not leave it a file the log holds and the disk lost)
                path = Path(self._root) / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("wb") as out:
                    out.write(memoryview(body))
                    out.flush()
                    os.fsync(out.fileno())
            else:  # an object store: whole once the upload returns; no folders to make
                with self._filesystem.open_output_stream(f"{self._root}/{relative}") as out:
                    out.write(body)
        except OSError as exc:
            raise OutputError(f"cannot write {self.name}/{relative}: {exc}") from None
        stats = orjson.dumps(statistics(records, self.layout.key)).decode()
        values = self.scope.values(self.layout, partition)
        return AddAction(relative, body.size, values, _now_ms(), True, stats)


def arrow_table(data: Any) -> pa.Table:
    """A pyarrow Table of what deltalake hands out (arro3 tables, DataFusion's batches),
    through the Arrow C stream. Not ``pa.table(data)``: that imports pandas to ask whether
    ``data`` is a DataFrame, 0.12 s of ``extractor status``."""
    return pa.RecordBatchReader.from_stream(data).read_all()


def current_files(
    table: DeltaTable, layout: Layout, scope: Scope = WHOLE
) -> dict[str, list[DataFile]]:
    """The table's files (of ``scope``) by partition (as staged), each partition's sorted by
    the low end of its range."""
    actions = arrow_table(table.get_add_actions(flatten=True))
    names = set(actions.column_names)

    def column(name: str) -> list[Any]:
        return actions.column(name).to_pylist() if name in names else [None] * actions.num_rows

    files: dict[str, list[DataFile]] = {}
    owners = column(f"partition.{IDENTITY}") if scope.identity else [None] * actions.num_rows
    for path, size, value, low, high, owner in zip(
        column("path"),
        column("size_bytes"),
        column(f"partition.{layout.partition}"),
        column(f"min.{layout.key}"),
        column(f"max.{layout.key}"),
        owners,
        strict=True,
    ):
        if owner != scope.identity:
            continue  # another identity's
        partition = NULL_PARTITION if value is None else value
        files.setdefault(partition, []).append(DataFile(path, partition, low, high, size))
    for group in files.values():
        group.sort(key=lambda file: (file.low is not None, file.low))
    return files


def statistics(records: pa.Table, key: str) -> dict[str, Any]:
    """Delta's per-file statistics of ``records``: count, nulls, and the range of ``key`` and
    of every integer and timestamp column (timestamps to the millisecond, widened to hold
    the range)."""
    low: dict[str, Any] = {}
    high: dict[str, Any] = {}
    counted, ranged = _statistics_columns(records.schema, key)
    columns = records.columns
    nulls = {name: columns[index].null_count for index, name in counted}
    for index, name, per_second in ranged:
        if nulls[name] == records.num_rows:
            continue
        extremes: Any = pc.min_max(columns[index])
        smallest, largest = extremes["min"], extremes["max"]
        if per_second:  # the count since the epoch: as_py of a zoned time imports pandas
            low[name] = _millisecond(smallest.value, per_second, up=False)
            high[name] = _millisecond(largest.value, per_second, up=True)
        else:
            low[name], high[name] = smallest.as_py(), largest.as_py()
    return {"numRecords": records.num_rows, "minValues": low, "maxValues": high, "nullCount": nulls}


def _statistics_columns(schema: pa.Schema, key: str) -> _Columns:
    """The columns of ``schema`` whose nulls are counted, and those whose range is kept (with
    a timestamp's ticks per second, 0 for others): worked out once per table, not per file.
    Looked up by ``equals``: hashing a schema costs more than the statistics themselves."""
    for known, known_key, columns in _KNOWN_COLUMNS:
        if known_key == key and known.equals(schema):
            return columns
    counted, ranged = [], []
    for index, field in enumerate(schema):
        if pa.types.is_nested(field.type):
            continue
        counted.append((index, field.name))
        if pa.types.is_timestamp(field.type):
            ranged.append((index, field.name, _PER_SECOND[field.type.unit]))
        elif pa.types.is_integer(field.type) or field.name == key:
            ranged.append((index, field.name, 0))
    columns = (tuple(counted), tuple(ranged))
    _KNOWN_COLUMNS[:] = [(schema, key, columns), *_KNOWN_COLUMNS[:7]]  # the tables at hand
    return columns


_Columns = tuple[tuple[tuple[int, str], ...], tuple[tuple[int, str, int], ...]]
_KNOWN_COLUMNS: Final[list[tuple[pa.Schema, str, _Columns]]] = []
_PER_SECOND: Final = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_EPOCH: Final = dt.datetime(1970, 1, 1)


def _millisecond(count: int, per_second: int, up: bool) -> str:
    """``count`` ticks since the epoch as UTC text to the millisecond, rounded down (``up``:
    up) from the microsecond."""
    micros = count * 1_000_000 // per_second
    millis = -(-micros // 1000) if up else micros // 1000
    moment = _EPOCH + dt.timedelta(milliseconds=millis)
    return moment.isoformat(timespec="milliseconds") + "Z"


def _now_ms() -> int:
    return int(time.time() * 1000)


def covering(files: Sequence[DataFile], keys: pa.Array[Any]) -> list[bool]:
    """For each file, whether its range holds one of ``keys`` (a file of unknown range
    holds every key)."""
    if not len(keys):
        return [False] * len(files)
    extremes: Any = pc.min_max(keys)
    smallest, largest = extremes["min"].as_py(), extremes["max"].as_py()
    held = []
    for file in files:
        if file.low is None or file.high is None:
            held.append(True)
        elif file.high < smallest or file.low > largest:
            held.append(False)
        else:
            above, below = pa.scalar(file.low, keys.type), pa.scalar(file.high, keys.type)
            inside = pc.and_(pc.greater_equal(keys, above), pc.less_equal(keys, below))
            held.append(bool(pc.any(inside).as_py()))
    return held
