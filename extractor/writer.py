"""Hive-partitioned, zstd-compressed Parquet: one file per partition per run, renamed into place.

Batches are split by partition and buffered as Arrow; a partition's buffer becomes a row
group when it is large enough, and all buffers are flushed when their total passes the
memory budget, so memory depends on batch size, not on the size of the backfill. Files are
written under a dot-prefixed temporary name (invisible to dataset readers) and renamed when
the run closes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from extractor.errors import OutputError

NULL_PARTITION: Final = "__HIVE_DEFAULT_PARTITION__"


@dataclass(frozen=True)
class WriterLimits:
    row_group_rows: int = 100_000
    buffer_bytes: int = 96 * 1024 * 1024
    open_files: int = 256


DEFAULT_WRITER_LIMITS: Final = WriterLimits()


class PartitionedWriter:
    """Writes one table (``invoices``, ``invoice_rows``) of one run."""

    def __init__(
        self,
        directory: Path,
        schema: pa.Schema,
        partition: str,
        run_id: str,
        limits: WriterLimits = DEFAULT_WRITER_LIMITS,
    ) -> None:
        self.directory = directory
        self.schema = schema
        self.partition = partition
        self.run_id = run_id
        self.limits = limits
        self._buffers: dict[str, list[pa.Table]] = {}
        self._buffered_bytes = 0
        self._open: dict[str, tuple[pq.ParquetWriter, Path]] = {}
        self._file_counts: dict[str, int] = {}
        self.files: list[Path] = []
        self.rows_written = 0

    def write(self, table: pa.Table, keys: pa.Array) -> None:
        """Add ``table``; ``keys`` holds each record's partition value (null: no value)."""
        for key, part in _split(table, keys):
            self._buffers.setdefault(key, []).append(part)
            self._buffered_bytes += part.nbytes
            if sum(t.num_rows for t in self._buffers[key]) >= self.limits.row_group_rows:
                self._flush(key)
        if self._buffered_bytes >= self.limits.buffer_bytes:
            for key in list(self._buffers):
                self._flush(key)

    def close(self) -> list[Path]:
        """Flush everything and rename every file into place; the paths written."""
        for key in list(self._buffers):
            self._flush(key)
        for key in list(self._open):
            self._finish(key)
        return self.files

    def abort(self) -> None:
        """Close and delete every unfinished file."""
        for writer, temporary in self._open.values():
            writer.close()
            temporary.unlink(missing_ok=True)
        self._open.clear()

    def _flush(self, key: str) -> None:
        parts = self._buffers.pop(key, [])
        if not parts:
            return
        data = pa.concat_tables(parts)
        self._buffered_bytes -= sum(t.nbytes for t in parts)
        try:
            self._writer(key).write_table(data, row_group_size=self.limits.row_group_rows)
        except OSError as exc:
            raise OutputError(f"cannot write {self.directory}: {exc.strerror or exc}") from None
        self.rows_written += data.num_rows

    def _writer(self, key: str) -> pq.ParquetWriter:
        if key not in self._open:
            if len(self._open) >= self.limits.open_files:
                self._finish(next(iter(self._open)))
            number = self._file_counts.get(key, 0)
            self._file_counts[key] = number + 1
            folder = self.directory / f"{self.partition}={key}"
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create {folder}: {exc.strerror or exc}") from None
            temporary = folder / f".part-{self.run_id}-{number}.parquet.tmp"
            writer = pq.ParquetWriter(temporary, self.schema, compression="zstd")
            self._open[key] = (writer, temporary)
        return self._open[key][0]

    def _finish(self, key: str) -> None:
        writer, temporary = self._open.pop(key)
        writer.close()
        final = temporary.with_name(temporary.name.removeprefix(".").removesuffix(".tmp"))
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        temporary.rename(final)
        self.files.append(final)


def _split(table: pa.Table, keys: pa.Array) -> Iterator[tuple[str, pa.Table]]:
    if table.num_rows == 0:
        return
    for key in pc.unique(keys).to_pylist():
        mask = pc.is_null(keys) if key is None else pc.fill_null(pc.equal(keys, key), False)
        yield (NULL_PARTITION if key is None else str(key)), table.filter(mask)
