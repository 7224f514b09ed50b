"""Staged batches, then hive-partitioned Parquet: one file per partition per run.

While the run fetches, each batch of each table is staged as one Arrow IPC file,
``OUT/_staging/<run_id>/<table>/<batch>.arrow``, written once and fsynced once, whatever the
number of partitions its records fall into (a batch of orders scattered over ten years holds
a hundred months): its records sorted by partition in one record batch, each partition's
first row and length in the file's schema metadata.

Publishing reads the staged files in rounds (:meth:`TableWriter._rounds`): each file once,
its partitions kept as zero-copy slices until the round's budget is read; then each
partition's pieces are appended to that partition's spill file (an Arrow stream next to the
staging). Cutting partition by partition instead costs a file open per (file, partition):
for batches scattered over a hundred months, that was three quarters of a 100,000-order
backfill. Pass two writes each partition's Parquet file from its spill in row groups, under
a dot-prefixed temporary name (invisible to dataset readers); the caller syncs and then
renames them into place (:meth:`TableWriter.reveal`). The Delta tables read the spills a
partition at a time instead (:mod:`.delta`). Memory is the round's budget and a row group,
not the backfill. Records kept unique per partition (the ledger's) go through the same
rounds and spills, and are made unique when a partition's spill is read back whole. (Read a
partition at a time from memory-mapped slices of every staged file, as they were, each
slice's hundred column buffers faulted in 64 KB of their file each: 120 MB of a 600,000-line
ledger's publish resident at once, the peak of its sync.)

``parquet.py`` publishes the spills as hive Parquet, ``delta.py`` into Delta tables. Over 300
lines: the staged format and the rounds and spills that read it back are one format.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import shutil
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, cast

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from extractor import memory
from extractor.arrow import empty, string_scalar, strings, timestamp_scalar, true_scalar
from extractor.errors import OutputError
from extractor.output.scope import NULL_PARTITION as NULL_PARTITION

#: The Parquet output's folder for records without a partition value (``order_month=none``).
#: Not hive's null folder: pyarrow reads that as a dictionary holding a null, which
#: ``to_pandas`` (so ``pandas.read_parquet``) cannot merge with the other partitions' values.
NO_PARTITION: Final = "none"
#: Parquet files of fewer records are written with Snappy, of as many or more with zstd
#: (:func:`codec`). zstd starts afresh for each column chunk: on ``invoices``' columns that
#: fixed cost is about half of a small file's writing and reading (``make bench``'s
#: ``files:`` lines: 3.5 against 2.1 ms to write 10 records, 5.7 against 2.1 at 32), for a
#: file no more than 6 % smaller below this size (23.3 against 23.4 KB at 10 records, 30.3
#: against 32.0 KB at 32); from a few hundred records zstd writes a quarter less. A tenant's
#: sparse months, ten years of them, are mostly such files; every Parquet reader has Snappy.
SMALL_FILE_RECORDS: Final = 32
#: The schema metadata of a staged batch that names its record batches' partitions, in order.
_PARTITIONS: Final = b"extractor.partitions"
TIMESTAMP: Final = pa.timestamp("us", tz="UTC")
#: The columns every published record carries, in Parquet as in Delta: the run that wrote
#: it, and that run's as-of time (when it began listing what to fetch).
RUN_FIELDS: Final = (pa.field("_run_id", pa.string()), pa.field("_extracted_at", TIMESTAMP))


@dataclass(frozen=True)
class WriterLimits:
    #: Arrow bytes of a Parquet row group (about 80,000 invoice rows, a fifth of it on disk);
    #: each publishing thread holds about three times this while it encodes one.
    row_group_bytes: int = 8 * 1024 * 1024
    publish_threads: int = 2
    #: Staged batches read per publishing round (memory grows about 4x this, the allocator's
    #: own included); each round adds a batch to the spill of every partition it holds.
    round_bytes: int = 16 * 1024 * 1024


DEFAULT_WRITER_LIMITS: Final = WriterLimits()


@dataclass(frozen=True)
class Placement:
    """Where a run's tables are published, when it is one identity of a fleet: under
    ``dataset`` (None: the run's own ``out``, which holds its staging), each table's
    partitions under ``identity_id=<identity>``."""

    dataset: Path | None = None
    identity: str | None = None

    @property
    def leading(self) -> str:
        """The hive directory every partition of the identity's tables goes under."""
        return f"identity_id={self.identity}" if self.identity else ""

    def root(self, out: Path) -> Path:
        return self.dataset or out

    def directory(self, out: Path, table: str) -> Path:
        """Where the run's part of ``table`` is published."""
        top = self.root(out) / table
        return top / self.leading if self.identity else top


#: A run of one identity: its tables in its own ``out``.
ALONE: Final = Placement()


class TableWriter:
    """Stages and publishes one table (``invoices``, ``invoice_rows``) of one run."""

    def __init__(
        self,
        out: Path,
        name: str,
        schema: pa.Schema,
        partition: str | None,
        run_id: str,
        limits: WriterLimits = DEFAULT_WRITER_LIMITS,
        unique: tuple[str, str] | None = None,
        counted_as: str | None = None,
        placement: Placement = ALONE,
    ) -> None:
        """``unique`` (key, version): keep one record per key in each partition, the one with
        the highest version, for services that may return a record in two requests.
        ``counted_as``: the name of this table's records in a journaled batch's counts.
        ``placement``: a fleet member's part of the table (else ``out/<name>``, next to the
        staging)."""
        self.unique = unique
        self.name = name
        self.counted_as = counted_as or name
        #: Only these staged batches are published (the journal's); None: every one on disk.
        self.keep: set[str] | None = None
        self.rows_written = 0
        self.placement = placement
        self.dataset = placement.root(out)
        self.directory = placement.directory(out, name)
        self.staging = out / "_staging" / run_id / name
        self.schema = schema
        self.partition = partition
        self.run_id = run_id
        self.limits = limits
        self._written: list[Path] = []

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

    def write_partitions(self, as_of: dt.datetime) -> list[Path]:
        """Write each staged partition to its temporary file, each record with the run's
        columns (:data:`RUN_FIELDS`, ``as_of`` the run's); the temporary paths.

        Two passes: the rounds (:meth:`_rounds`) append each partition's pieces to its own
        spill file (an Arrow stream, next to the staging); then each partition's Parquet
        file is written from its spill, a row group (:attr:`WriterLimits.row_group_bytes`)
        at a time. Writing the rounds straight into Parquet gave a row group per partition
        per round, whose metadata every open writer keeps until it closes: at 1,000,000
        orders, hundreds of MB. Nothing is visible to readers until :meth:`reveal` renames
        the files.
        """
        spills = self.spill()
        memory.trim()  # the rounds' buffers, before the row groups need theirs
        threads = self.limits.publish_threads
        write = functools.partial(self._write_partition, as_of=as_of)
        with ThreadPoolExecutor(threads, thread_name_prefix="publish") as pool:
            written = list(pool.map(write, spills.items()))
        if not written and self.partition is None and self._published_files():
            # an unpartitioned table staged empty (a whole list with nothing in it): one
            # file without records, so that readers find the table and its columns
            written = [self._write_empty()]
        self._written = [path for path, _ in written]
        self.rows_written = sum(rows for _, rows in written)
        return self._written

    def spill(self) -> dict[str, Spill]:
        """Pass one: every partition's records into its spill file (an Arrow stream, read
        back by :func:`read_spill`); the spills by partition."""
        spills: dict[str, Spill] = {}
        folder = self.staging / "spill"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with ThreadPoolExecutor(self.limits.publish_threads) as pool:
                for held in self._rounds():
                    for key in held:
                        if key not in spills:
                            spills[key] = Spill(folder / f"{len(spills)}.tmp", self.schema)
                    items = list(held.items())
                    held.clear()  # the round's batches go as soon as their pieces are written
                    list(pool.map(lambda item: spills[item[0]].append(item[1]), items))
                    del items
                    pa.default_memory_pool().release_unused()  # else the allocator keeps it
        except OSError as exc:
            raise OutputError(f"cannot write {folder}: {exc.strerror or exc}") from None
        finally:
            for spill in spills.values():
                spill.close()
        return spills

    def columns(self, names: list[str]) -> pa.Table:
        """The ``names`` columns of every staged record to publish, and each record's
        partition (``_partition``). Read from memory-mapped files, so only those columns'
        pages are read, then copied out whole (a slice of a file read into memory would
        keep all of the file). A staged file must not be shortened meanwhile: a mapped read
        past a file's new end is a SIGBUS."""
        parts = []
        for staged in self._published_files():
            try:
                with pa.memory_map(str(staged)) as source:
                    reader = pa.ipc.open_file(source)
                    metadata = reader.schema.metadata or {}
                    partitions = orjson.loads(metadata.get(_PARTITIONS, b"[]"))
                    part = pa.Table.from_batches([reader.get_batch(0).select(names)])
            except (OSError, pa.ArrowInvalid) as exc:
                raise OutputError(f"cannot read the staged batch {staged}: {exc}") from None
            keys = [pa.repeat(string_scalar(key), length) for key, _, length in partitions]
            column = pa.concat_arrays(keys) if keys else strings([])
            parts.append(part.append_column("_partition", column))
        fields = [*(self.schema.field(n) for n in names), pa.field("_partition", pa.string())]
        schema = pa.schema(fields)
        return _copied(pa.concat_tables(parts) if parts else empty(schema))

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

    def folder(self, key: str) -> Path:
        """The Parquet folder of the partition staged as ``key`` (an unpartitioned table's
        own directory)."""
        if self.partition is None:
            return self.directory
        return self.directory / f"{self.partition}={NO_PARTITION if key == NULL_PARTITION else key}"

    def reveal(self) -> list[Path]:
        """Rename the written files into place, and the files an earlier release put in
        hive's null folder into :data:`NO_PARTITION`'s; the final paths (the staging stays)."""
        if self.partition is not None:
            legacy = self.directory / f"{self.partition}={NULL_PARTITION}"
            for found in sorted(legacy.glob("*.parquet")):
                self.folder(NULL_PARTITION).mkdir(exist_ok=True)
                found.rename(self.folder(NULL_PARTITION) / found.name)
            with contextlib.suppress(OSError):
                legacy.rmdir()
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
        leftovers += self.directory.glob(f".part-{self.run_id}.parquet.tmp")
        for path in leftovers:
            path.unlink(missing_ok=True)
        return len(leftovers)

    def _write_empty(self) -> tuple[Path, int]:
        folder = self.folder(NULL_PARTITION)
        temporary = folder / f".part-{self.run_id}.parquet.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            import pyarrow.parquet as pq  # here: parser processes stage but never publish

            pq.write_table(empty(with_run_schema(self.schema)), temporary, compression=codec(0))
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise OutputError(f"cannot write {folder}: {exc.strerror or exc}") from None
        return temporary, 0

    @functools.cached_property
    def _file_layout(self) -> tuple[pa.Schema, list[str]]:
        """The Parquet files' schema, and the columns dictionary-encoded in them."""
        schema = with_run_schema(self.schema)
        return schema, dictionary_columns(schema)

    def _write_partition(self, item: tuple[str, Spill], as_of: dt.datetime) -> tuple[Path, int]:
        """Pass two: one partition's spill as its Parquet file, in row groups."""
        key, spill = item
        schema, dictionary = self._file_layout
        folder = self.folder(key)
        temporary = folder / f".part-{self.run_id}.parquet.tmp"
        rows = 0
        try:
            folder.mkdir(parents=True, exist_ok=True)
            import pyarrow.parquet as pq  # here: parser processes stage but never publish

            if self.unique is not None:  # a partition of them fits in memory: one group
                groups: Iterable[pa.RecordBatch] = self.spilled(spill).combine_chunks().to_batches()
            else:
                groups = _spilled_groups(spill.path, self.limits.row_group_bytes)
            with pq.ParquetWriter(
                temporary, schema, compression=codec(spill.records),
                use_dictionary=cast(Any, dictionary),
            ) as writer:  # fmt: skip
                for group in groups:
                    group = with_run(group, self.run_id, as_of)
                    writer.write_batch(group, row_group_size=max(group.num_rows, 1))
                    rows += group.num_rows
            spill.path.unlink(missing_ok=True)  # a unique table's went as it was read whole
            pa.default_memory_pool().release_unused()  # else the allocator keeps it
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise OutputError(f"cannot write {folder}: {exc.strerror or exc}") from None
        return temporary, rows

    def spilled(self, spill: Spill) -> pa.Table:
        """A partition's spill whole (then removed): one record per key, the latest, where
        the table keeps its records unique."""
        records = read_spill(spill.path)
        return records if self.unique is None else latest(records, *self.unique)

    def tables(self) -> Iterator[pa.Table]:
        """Every staged record, a partition's part of a round at a time (for the Delta
        tables), in fresh arrays: delta-rs's arrow-rs panics on some sliced arrays
        ("end <= self.len()") handed over the C data interface."""
        for held in self._rounds():
            for pieces in held.values():
                yield pa.Table.from_batches([_joined(pieces)], self.schema)

    def _rounds(self) -> Iterator[dict[str, list[pa.RecordBatch]]]:
        """Every staged record as rounds of pieces by partition.

        Each staged file is read whole, once (not mapped: its pieces outlive the file), and
        its partitions kept as zero-copy slices until the files read reach the round's
        budget (:attr:`WriterLimits.round_bytes`); then the round goes out (to the spill
        files, or to Delta) and the files are released. So reading costs a read per file and
        a slice per partition in it, and memory the budget, whatever the number of files or
        partitions."""
        held: dict[str, list[pa.RecordBatch]] = {}
        size = 0
        for staged in self._published_files():
            batch, partitions = _read_staged(staged)
            for key, start, length in partitions:
                held.setdefault(key, []).append(batch.slice(start, length))
            size += batch.nbytes
            if size >= self.limits.round_bytes:
                yield held
                held, size = {}, 0
        if held:
            yield held

    def _published_files(self) -> list[Path]:
        files = self._staged_files()
        return files if self.keep is None else [f for f in files if f.stem in self.keep]


class Spill:
    """One partition's records of a run, as an Arrow stream of a batch per round; appended
    to by one thread at a time."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.records = 0
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, schema)

    def append(self, pieces: list[pa.RecordBatch]) -> None:
        joined = _joined(pieces)
        self._writer.write_batch(joined)
        self.records += joined.num_rows

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


def codec(records: int) -> Literal["snappy", "zstd"]:
    """The compression of a Parquet file of ``records`` (see :data:`SMALL_FILE_RECORDS`)."""
    return "snappy" if records < SMALL_FILE_RECORDS else "zstd"


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The Parquet column paths of ``schema``'s dictionary (enumeration) fields: the only
    columns worth Parquet's dictionary encoding. For the free text, names and numbers
    around them, zstd alone writes files as small or smaller, for 15-25 % less CPU a file
    (measured on the simulator's invoices, 8 to 2,000 records a partition). pyarrow reads
    every column back in the type it was written either way (the Arrow schema is stored)."""
    found: list[str] = []

    def visit(kind: pa.DataType, path: str) -> None:
        if pa.types.is_dictionary(kind):
            found.append(path)
        elif pa.types.is_struct(kind):
            for field in kind:
                visit(field.type, f"{path}.{field.name}")
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
            visit(kind.value_type, f"{path}.list.element")

    for field in schema:
        visit(field.type, field.name)
    return found


def with_run_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the run's columns after its own."""
    return pa.schema([*schema, *RUN_FIELDS], metadata=cast(Any, schema.metadata))


def with_run(batch: pa.RecordBatch, run_id: str, as_of: dt.datetime) -> pa.RecordBatch:
    """``batch`` with the run's columns: every record ``run_id`` and ``as_of``."""
    rows = batch.num_rows
    columns: list[pa.Array[Any]] = [
        pa.repeat(string_scalar(run_id), rows),
        pa.repeat(timestamp_scalar(as_of), rows),
    ]
    return pa.RecordBatch.from_arrays(
        [*batch.columns, *columns], schema=with_run_schema(batch.schema)
    )


def read_spill(spill: Path) -> pa.Table:
    """A partition's spill file whole, then removed."""
    with pa.OSFile(str(spill), "rb") as source:
        table = pa.ipc.open_stream(source).read_all()
    spill.unlink()
    return table


def _spilled_groups(spill: Path, budget: int) -> Iterator[pa.RecordBatch]:
    """A spill file's batches joined into row groups of about ``budget`` bytes."""
    pending: list[pa.RecordBatch] = []
    size = 0
    with pa.OSFile(str(spill), "rb") as source:
        for batch in pa.ipc.open_stream(source):
            pending.append(batch)
            size += batch.nbytes
            if size >= budget:
                yield _joined(pending)
                pending, size = [], 0
    if pending:
        yield _joined(pending)


def _copied(table: pa.Table) -> pa.Table:
    """``table`` in fresh buffers of its own (none left pointing into a mapped file)."""
    nothing = empty(table.schema)
    return pa.concat_tables([table, nothing]).combine_chunks() if table.num_rows else nothing


def _joined(pieces: list[pa.RecordBatch]) -> pa.RecordBatch:
    """The pieces as one batch of fresh, contiguous arrays (Parquet encodes a chunk at a
    time, so one chunk is several times faster to write than a hundred small ones)."""
    joined: pa.RecordBatch = pa.concat_batches(pieces)  # type: ignore[attr-defined]
    return joined


def _read_staged(staged: Path) -> tuple[pa.RecordBatch, list[tuple[str, int, int]]]:
    """A staged batch read into memory, and its partitions (key, first row, length)."""
    try:
        with pa.OSFile(str(staged), "rb") as source:
            reader = pa.ipc.open_file(source)
            metadata = reader.schema.metadata or {}
            return reader.get_batch(0), orjson.loads(metadata.get(_PARTITIONS, b"[]"))
    except (OSError, pa.ArrowInvalid) as exc:
        raise OutputError(f"cannot read the staged batch {staged}: {exc}") from None


def latest(table: pa.Table, key: str, version: str) -> pa.Table:
    """One row per ``key``: the one with the highest ``version``."""
    if table.num_rows == 0:
        return table
    ordered = table.sort_by([(key, "ascending"), (version, "descending")])
    keys = ordered.column(key).combine_chunks()
    previous = pa.concat_arrays([pa.nulls(1, keys.type), keys.slice(0, len(keys) - 1)])
    first = pc.fill_null(pc.not_equal(keys, previous), true_scalar())
    return ordered.filter(cast(Any, first))


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sorted(table: pa.Table, keys: pa.Array[Any]) -> tuple[pa.RecordBatch, list[list[Any]]]:
    """The records in one record batch, sorted by partition (sorted once, not a pass over
    the table per partition), and each partition's ``[key, first row, length]``."""
    named: Any = pc.fill_null(pc.cast(keys, pa.string()), string_scalar(NULL_PARTITION))
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
