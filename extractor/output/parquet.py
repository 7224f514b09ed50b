"""Publishing staged tables as hive-partitioned Parquet (:class:`ParquetOutput`), and what
every output offers a run (:class:`Output`, :class:`RunInfo`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from extractor.checkpoints import checkpoint
from extractor.output.runinfo import RunInfo as RunInfo  # where the outputs import it
from extractor.output.staging import TableWriter
from extractor.output.targets import Target


def publish(writers: Sequence[TableWriter], run: RunInfo) -> int:
    """Write every partition of ``writers``, make it durable, then rename it into place; the
    number of files.

    Idempotent: file names depend on the run and partition only, so publishing the same
    staging again (after a crash) replaces the same files. The staging stays until each
    writer's :meth:`~TableWriter.tidy`, once the journal says the run is published.
    """
    written = [path for writer in writers for path in writer.write_partitions(run.as_of)]
    os.sync()  # one flush for every file, instead of an fsync each
    checkpoint("publish:written")
    for writer in writers:
        writer.reveal()
    os.sync()
    return len(written)


def written_by(writers: Sequence[TableWriter], files: int) -> dict[str, int]:
    """What a Parquet publish wrote: its files, and the records of each table."""
    return {"files": files} | {writer.name: writer.rows_written for writer in writers}


class Output(Protocol):
    """Where a run's staged tables go once fetched: hive Parquet, or Delta tables."""

    @property
    def format(self) -> str: ...

    @property
    def target(self) -> Target: ...

    def publish(
        self,
        writers: Sequence[TableWriter],
        run: RunInfo,
        present: Sequence[int] | None = None,
        keeping: Mapping[str, Keep] | None = None,
    ) -> dict[str, int]:
        """Publish every staged record of ``writers``; what was written (``files``, or
        records per table). ``present``: every OrderId the service lists (reconcile);
        ``keeping``: how a list's table takes its staged records (Delta; a Parquet run
        writes each table's own file)."""
        ...


@dataclass(frozen=True)
class Keep:
    """How a list's staged records go into its table.

    - ``replace``: they are the table (a fleet member's: its part);
    - with ``column``: they replace the records whose ``column`` is one of ``parents``
      (the rows of the parent rows fetched), the others kept;
    - ``upsert``: they replace the records of their keys, the others kept; with
      ``present`` (every key the service lists), the kept ones not present are marked
      ``_deleted_at``.
    """

    key: tuple[str, ...]
    upsert: bool = False
    column: str | None = None
    parents: tuple[Any, ...] = ()
    present: tuple[Any, ...] | None = None


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
        self,
        writers: Sequence[TableWriter],
        run: RunInfo,
        present: Sequence[int] | None = None,
        keeping: Mapping[str, Keep] | None = None,
    ) -> dict[str, int]:
        if self.target.local is not None:
            return written_by(writers, publish(writers, run))
        count = 0
        for writer in writers:
            for written in writer.write_partitions(run.as_of):
                relative = written.relative_to(writer.dataset)
                name = relative.name.removeprefix(".").removesuffix(".tmp")
                self.target.upload(written, str(relative.with_name(name)))
                written.unlink()
                count += 1
        return written_by(writers, count)
