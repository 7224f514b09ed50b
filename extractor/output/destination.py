"""Which output a backfill command writes, and where its journal lives."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from extractor.errors import InvalidOption
from extractor.output.parquet import Output, ParquetOutput
from extractor.output.targets import Target

FORMATS: Final = ("parquet", "delta")


def destination(
    out: str, output_format: str, work_dir: Path | None, endpoint_url: str | None, group: str
) -> tuple[Path, Output | None]:
    """Where a backfill command keeps its journal, and its output (None: Parquet in there)."""
    if output_format not in FORMATS:
        raise InvalidOption(f"{{output_format}} {output_format!r}: use parquet or delta")
    target = Target.parse(out, endpoint_url)
    if output_format == "parquet" and target.local is not None:
        if work_dir is not None:
            raise InvalidOption(
                "{work_dir} is for s3:// or {output_format} delta; a local {out} holds its run"
            )
        return target.local, None
    work = target.work_dir(work_dir) / "_work" / group
    if output_format == "parquet":
        return work, ParquetOutput(target)
    # imported here: delta-rs adds 17 MB to every process that loads it
    from extractor.output.delta import DeltaOutput

    return work, DeltaOutput(target)
