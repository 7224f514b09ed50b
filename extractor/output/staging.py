"""Staged batches, then hive-partitioned zstd Parquet: one file per partition per run.

While the run fetches, each batch of each table is staged as one Arrow IPC file,
``OUT/_staging/<run_id>/<table>/<batch>.arrow``, written once and fsynced once, whatever the
number of partitions its records fall into (a batch of orders scattered over ten years holds
a hundred months): its records sorted by partition in one record batch, each partition's
first row and length in the file's schema metadata. The files are not compressed, so that
publishing can memory-map them and cut the partitions without reading the rest: each
partition's Parquet file is written from zero-copy slices of the staged batches that hold
it (a few MB of staging per 1000 orders, removed once published), under a dot-prefixed
temporary name (invisible to dataset readers), on a small thread pool, one row group (64 MB)
at a time, so memory depends on that budget, not on the backfill; the caller syncs and then
renames them into place (:meth:`TableWriter.reveal`). A staged file must not be shortened
while it is published: a memory-mapped read past a file's new end is a SIGBUS.

Slightly over 300 lines: staging and publishing are one format.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from extractor.checkpoints import checkpoint
from extractor.errors import OutputError
from extractor.output.targets import Target

NULL_PARTITION: Final = "__HIVE_DEFAULT_PARTITION__"
#: The schema metadata of a staged batch that names its record batches' partitions, in order.
_PARTITIONS: Final = b"extractor.partitions"


@dataclass(frozen=True)
class WriterLimits:
    row_group_bytes: int = 64 * 1024 * 1024
    publish_threads: int = 2


DEFAULT_WRITER_LIMITS: Final = WriterLimits()


class TableWriter:
    """Stages and publishes one table (``invoices``, ``invoice_rows``) of one run."""

    def __init__(
        self,
        out: Path,
        name: str,
        schema: pa.Schema,
        partition: str,
        run_id: str,
        limits: WriterLimits = DEFAULT_WRITER_LIMITS,
        unique: tuple[str, str] | None = None,
        counted_as: str | None = None,
    ) -> None:
        """``unique`` (key, version): keep one record per key in each partition, the one with
        the highest version, for services that may return a record in two requests.
        ``counted_as``: the name of this table's records in a journaled batch's counts."""
        self.unique = unique
        self.counted_as = counted_as or name
        #: Only these staged batches are published (the journal's); None: every one on disk.
        self.keep: set[str] | None = None
        self.rows_written = 0
        self.directory = out / name
        self.staging = out / "_staging" / run_id / name
        self.schema = schema
        self.partition = partition
        self.run_id = run_id
        self.limits = limits
        self._written: list[Path] = []
        #: Each partition's record batches to publish: (staged file, batch number).
        self._index: dict[str, list[tuple[Path, int, int]]] = {}

    def stage(self, name: str, table: pa.Table, keys: pa.Array[Any]) -> None:
        """Stage records as ``name``; ``keys`` holds each record's partition (null: none).
        One file, one fsync: the journal will say it is done, so it must be."""
        target = self.staging / f"{name}.arrow"
        temporary = self.staging / f".{name}.arrow.tmp"
        ordered, partitions = _sorted(table, keys)
        metadata = {_PARTITIONS: orjson.dumps(partitions)}
        try:
            self.staging.mkdir(parents=True, exist_ok=True)
            with (
                pa.OSFile(str(temporary), "wb") as sink,
                pa.ipc.new_file(sink, self.schema.with_metadata(metadata)) as writer,
            ):
                writer.write_batch(ordered)
            _fsync(temporary)
            temporary.rename(target)
        except OSError as exc:
            raise OutputError(f"cannot write {self.staging}: {exc.strerror or exc}") from None

    def write_partitions(self) -> list[Path]:
        """Write each staged partition to its temporary file; the temporary paths.

        Nothing is visible to readers until :meth:`reveal` renames the files.
        """
        with ThreadPoolExecutor(self.limits.publish_threads, thread_name_prefix="publish") as pool:
            written = list(pool.map(self._write_partition, self._keys()))
        self._written = [path for path, _ in written]
        self.rows_written = sum(rows for _, rows in written)
        return self._written

    def staged_rows(self) -> dict[str, int]:
        """Records on disk per staged batch (read from each file's footer, not its data)."""
        rows: dict[str, int] = {}
        for staged in self._staged_files():
            try:
                with pa.memory_map(str(staged)) as source:
                    reader: Any = pa.ipc.open_file(source)  # the stubs lack count_rows
                    count = reader.count_rows()
            except (OSError, pa.ArrowInvalid):
                continue  # unreadable counts as absent: the batch is fetched again
            rows[staged.stem] = rows.get(staged.stem, 0) + count
        return rows

    def discard(self, batches: set[str]) -> None:
        """Remove every staged file of ``batches`` (before they are fetched again)."""
        for staged in self._staged_files():
            if staged.stem in batches:
                staged.unlink(missing_ok=True)

    def _staged_files(self) -> list[Path]:
        return sorted(self.staging.glob("*.arrow")) if self.staging.is_dir() else []

    def reveal(self) -> list[Path]:
        """Rename the written files into place; the final paths (the staging stays)."""
        finals = []
        for temporary in self._written:
            final = temporary.with_name(temporary.name.removeprefix(".").removesuffix(".tmp"))
            temporary.rename(final)
            finals.append(final)
        self._written = []
        return finals

    def tidy(self) -> None:
        """Remove this table's staging, and the run's staging folders once empty."""
        shutil.rmtree(self.staging, ignore_errors=True)
        for folder in (self.staging.parent, self.staging.parent.parent):
            with contextlib.suppress(OSError):
                folder.rmdir()

    def prune(self, staged: set[str]) -> int:
        """Remove temporary files and the staged files of batches not in ``staged``."""
        leftovers = [
            path
            for path in (self.staging.rglob("*") if self.staging.is_dir() else ())
            if path.is_file() and (path.name.endswith(".tmp") or path.stem not in staged)
        ]
        leftovers += self.directory.glob(f"*/.part-{self.run_id}.parquet.tmp")
        for path in leftovers:
            path.unlink(missing_ok=True)
        return len(leftovers)

    def _write_partition(self, key: str) -> tuple[Path, int]:
        folder = self.directory / f"{self.partition}={key}"
        temporary = folder / f".part-{self.run_id}.parquet.tmp"
        rows = 0
        try:
            folder.mkdir(parents=True, exist_ok=True)
            groups = self._partition(key)
            with pq.ParquetWriter(temporary, self.schema, compression="zstd") as writer:
                for group in groups:
                    writer.write_table(group, row_group_size=group.num_rows)
                    rows += group.num_rows
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise OutputError(f"cannot write {folder}: {exc.strerror or exc}") from None
        return temporary, rows

    def tables(self) -> Iterator[pa.Table]:
        """Every staged record, a partition's row group at a time (for the Delta tables),
        copied out of the staged files: delta-rs's arrow-rs panics on some sliced arrays
        ("end <= self.len()") handed over the C data interface."""
        for key in self._keys():
            for group in self._partition(key):
                yield group.take(pa.array(range(group.num_rows), pa.int64()))

    def _keys(self) -> list[str]:
        """The partitions that hold a batch to publish (read from each file's footer once)."""
        self._index = {}
        for staged in self._published_files():
            try:
                with pa.memory_map(str(staged)) as source:
                    metadata = pa.ipc.open_file(source).schema.metadata or {}
                    partitions = orjson.loads(metadata.get(_PARTITIONS, b"[]"))
            except (OSError, pa.ArrowInvalid) as exc:
                raise OutputError(f"cannot read the staged batch {staged}: {exc}") from None
            for key, start, length in partitions:
                self._index.setdefault(key, []).append((staged, start, length))
        return sorted(self._index)

    def _published_files(self) -> list[Path]:
        files = self._staged_files()
        return files if self.keep is None else [f for f in files if f.stem in self.keep]

    def _partition(self, key: str) -> Iterator[pa.Table]:
        groups = self._row_groups(self._index.get(key, []))
        if self.unique is not None:  # a partition of them fits in memory: one group
            groups = iter([latest(pa.concat_tables(list(groups)), *self.unique)])
        return groups

    def _row_groups(self, slices: list[tuple[Path, int, int]]) -> Iterator[pa.Table]:
        """The partition's slices (file, first row, length) of staged batches, a row group's
        worth at a time; each file mapped only while its slice is read."""
        pending: list[pa.RecordBatch] = []
        size = 0
        with contextlib.ExitStack() as mapped:
            for staged, start, length in slices:
                source = mapped.enter_context(pa.memory_map(str(staged)))
                part = pa.ipc.open_file(source).get_batch(0).slice(start, length)
                pending.append(part)
                size += part.nbytes
                if size >= self.limits.row_group_bytes:
                    yield pa.Table.from_batches(pending, self.schema)
                    pending, size = [], 0
                    mapped.close()
            if pending:
                yield pa.Table.from_batches(pending, self.schema)


def publish(writers: Sequence[TableWriter]) -> int:
    """Write every partition of ``writers``, make it durable, then rename it into place; the
    number of files.

    Idempotent: file names depend on the run and partition only, so publishing the same
    staging again (after a crash) replaces the same files. The staging stays until each
    writer's :meth:`~TableWriter.tidy`, once the journal says the run is published.
    """
    written = [path for writer in writers for path in writer.write_partitions()]
    os.sync()  # one flush for every file, instead of an fsync each
    checkpoint("publish:written")
    for writer in writers:
        writer.reveal()
    os.sync()
    return len(written)


def written_by(writers: Sequence[TableWriter], files: int) -> dict[str, int]:
    """What a Parquet publish wrote: its files, and the records of each table."""
    return {"files": files} | {writer.directory.name: writer.rows_written for writer in writers}


class Output(Protocol):
    """Where a run's staged tables go once fetched: hive Parquet, or Delta tables."""

    @property
    def format(self) -> str: ...

    @property
    def target(self) -> Target: ...

    def publish(
        self, writers: Sequence[TableWriter], run: RunInfo, present: Sequence[int] | None = None
    ) -> dict[str, int]:
        """Publish every staged record of ``writers``; what was written (``files``, or
        records per table). ``present``: every OrderId the service lists (reconcile)."""
        ...


@dataclass(frozen=True)
class RunInfo:
    """What a run's published records and commits carry."""

    run_id: str
    as_of: dt.datetime  # UTC, when the run began listing what to fetch


@dataclass(frozen=True)
class ParquetOutput:
    """Hive-partitioned Parquet under ``target``; the writers stage under a local directory,
    which is also where the files are written when the target is that directory."""

    target: Target
    format: str = "parquet"

    @classmethod
    def at(cls, out: Path) -> ParquetOutput:
        """Parquet in the local directory ``out`` (the backfill commands' default)."""
        return cls(Target(str(out), local=out))

    def publish(
        self, writers: Sequence[TableWriter], run: RunInfo, present: Sequence[int] | None = None
    ) -> dict[str, int]:
        if self.target.local is not None:
            return written_by(writers, publish(writers))
        count = 0
        for writer in writers:
            for written in writer.write_partitions():
                relative = written.relative_to(writer.directory.parent)
                name = relative.name.removeprefix(".").removesuffix(".tmp")
                self.target.upload(written, str(relative.with_name(name)))
                written.unlink()
                count += 1
        return written_by(writers, count)


def latest(table: pa.Table, key: str, version: str) -> pa.Table:
    """One row per ``key``: the one with the highest ``version``."""
    if table.num_rows == 0:
        return table
    ordered = table.sort_by([(key, "ascending"), (version, "descending")])
    keys = ordered.column(key).combine_chunks()
    previous = pa.concat_arrays([pa.array([None], keys.type), keys.slice(0, len(keys) - 1)])
    first = pc.fill_null(pc.not_equal(keys, previous), pa.scalar(True))
    return ordered.filter(first)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sorted(table: pa.Table, keys: pa.Array[Any]) -> tuple[pa.RecordBatch, list[list[Any]]]:
    """The records in one record batch, sorted by partition (sorted once, not a pass over
    the table per partition), and each partition's ``[key, first row, length]``."""
    named: Any = pc.fill_null(pc.cast(keys, pa.string()), pa.scalar(NULL_PARTITION))
    order = pc.sort_indices(named)
    ordered = table.take(order).combine_chunks()
    counts: Any = pc.value_counts(named.take(order))  # in order of first appearance: sorted
    partitions, start = [], 0
    for key, count in zip(
        counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
    ):
        partitions.append([str(key), start, count])
        start += count
    columns = [column.combine_chunks() for column in ordered.columns]
    return pa.RecordBatch.from_arrays(columns, schema=table.schema), partitions
