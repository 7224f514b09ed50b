"""Where a run writes, and the one place its locks are taken.

A :class:`Destination` is frozen once a command has parsed its flags: the run's work folder
(journal, staging, summaries; a local Parquet output's tables too), the output its tables
are published to, its part of a fleet's tables, whether ``--resume`` insists on an
unfinished run, and whether what runs it (a sync, a fleet) already holds the target. The
runner checks it, fingerprints it, locks it and publishes to it; commands, the sync and the
fleet only describe it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from extractor.engine.journal import unfinished
from extractor.errors import InvalidOption
from extractor.output.lock import OutputLock, target_lock
from extractor.output.parquet import Output, ParquetOutput
from extractor.output.staging import ALONE, Placement
from extractor.output.targets import Target, check_output_dir

FORMATS: Final = ("parquet", "delta")


@dataclass(frozen=True)
class Destination:
    """Where one run writes (see the module)."""

    work: Path  # the run's folder: journal, staging, summaries (local Parquet: the tables)
    output: Output | None = None  # None: hive Parquet in ``work``
    root: Path | None = None  # the target's work root, locked with the target (--work-dir)
    placement: Placement = ALONE  # a fleet member's: its identity's part of the tables
    resume: bool = False  # insist on resuming (the same command again resumes anyway)
    enclosed: bool = False  # the target is locked by what runs this run (a sync, a fleet)

    @classmethod
    def of(
        cls,
        out: str,
        output_format: str,
        work_dir: Path | None,
        endpoint_url: str | None,
        group: str,
        *,
        resume: bool = False,
    ) -> Destination:
        """A command's destination: ``--out`` in ``--format``; an s3:// or Delta output keeps
        its runs under the work root's ``_work/<group>``."""
        if output_format not in FORMATS:
            raise InvalidOption(f"{{output_format}} {output_format!r}: use parquet or delta")
        target = Target.parse(out, endpoint_url)
        if output_format == "parquet" and target.local is not None:
            if work_dir is not None:
                raise InvalidOption(
                    "{work_dir} is for s3:// or {output_format} delta; a local {out} holds its run"
                )
            return cls(target.local, resume=resume)
        root = target.work_dir(work_dir)
        output: Output
        if output_format == "parquet":
            output = ParquetOutput(target)
        else:  # imported here: delta-rs adds 17 MB to every process that loads it
            from extractor.output.delta import DeltaOutput

            output = DeltaOutput(target)
        return cls(root / "_work" / group, output, root, resume=resume)

    @property
    def publisher(self) -> Output:
        """Where the run publishes: its output, by default hive Parquet in ``work``."""
        return self.output or ParquetOutput.at(self.work)

    @property
    def target(self) -> Target:
        return self.publisher.target

    @property
    def format(self) -> str:
        return self.publisher.format

    def part(self, work: Path) -> Destination:
        """A part of this run's work (a sync's invoices or ledger run), under its lock."""
        return replace(self, work=work, resume=False, enclosed=True)

    def member(self, work: Path, identity: str) -> Destination:
        """One identity's run of a fleet into this destination: its own work folder, its
        part of the tables; the fleet holds the target."""
        if self.output is None:  # local Parquet: the tables are in the fleet's root
            return Destination(
                work, ParquetOutput.at(self.work), None, Placement(self.work, identity),
                enclosed=True,
            )  # fmt: skip
        output = self.output
        if output.format == "delta":  # its part of the fleet's tables
            output = replace(output, identity=identity)  # type: ignore[type-var]
        return Destination(work, output, None, Placement(None, identity), enclosed=True)

    def check(self) -> None:
        """Refuse a work folder that cannot be one, or ``--resume`` with nothing to resume."""
        check_output_dir(self.work)
        if self.resume and unfinished(self.work) is None:
            raise InvalidOption(f"{{resume}}: {{out}} {self.work} holds no unfinished run")

    def fingerprint(self) -> dict[str, Any]:
        """What of the destination decides a run's records: an output of its own."""
        if self.output is None:
            return {}
        return {"output": self.output.target.uri, "format": self.output.format}

    def datasets(self, tables: Sequence[str]) -> list[Path]:
        """The table directories a local Parquet run writes, which another job's data must
        not be mixed into."""
        if self.format != "parquet":
            return []
        return [self.placement.directory(self.work, table) for table in tables]

    @contextlib.contextmanager
    def locked(self, command: str) -> Iterator[None]:
        """Every lock the run needs, taken here and nowhere else: the target's (its work
        root, its local directory, an s3:// lease), unless what runs this holds it; then the
        run's own folder. Refused (OutputLocked, naming the holder) while another run has
        any of them."""
        with contextlib.ExitStack() as held:
            if self.output is not None and not self.enclosed:
                held.enter_context(target_lock(self.output.target, self.root, command))
            held.enter_context(OutputLock.take(self.work, command))
            yield
