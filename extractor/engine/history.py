"""The runs that finished in an output: their summaries in ``OUT/_runs/``, in the order they
finished; whether this very job already ran; what a partial run left for the next to fetch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from extractor.engine.journal import RUNS_DIR, unfinished
from extractor.engine.state import RunState, replay
from extractor.errors import UsageError


def finished_runs(out: Path) -> Iterator[dict[str, Any]]:
    """The summaries of the finished runs in ``out``, in the order they finished (two runs
    can begin in the same second, so their ids alone do not tell)."""
    folder = out / RUNS_DIR
    found = []
    for path in folder.glob("*.json") if folder.is_dir() else ():
        with contextlib.suppress(OSError, orjson.JSONDecodeError):
            summary = orjson.loads(path.read_bytes())
            if not isinstance(summary, dict):  # edited by hand into something else
                continue
            found.append((str(summary.get("finished_at", "")), path.stat().st_mtime_ns, summary))
    found.sort(key=lambda entry: entry[:2])
    yield from (summary for *_, summary in found)


def finished_job(
    out: Path, fingerprint: Mapping[str, Any], tables: Sequence[Path]
) -> dict[str, Any] | None:
    """The summary of a finished run of this very job in ``out``; UsageError when one of
    the directories ``tables`` holds data of another job (and no unfinished run to resume)."""
    if unfinished(out) is not None:
        return None
    summaries: list[dict[str, Any]] = list(finished_runs(out))
    matching = [summary for summary in summaries if summary.get("job") == fingerprint]
    if matching:
        return matching[-1]  # the latest
    for table in tables:
        if any(table.rglob("*.parquet")):
            raise UsageError(
                f"{{out}} {table.parent} already holds a dataset of another job "
                f"({table.name}/); choose a new directory"
            )
    return None


def partial_run(out: Path, summary: Mapping[str, Any] | None) -> RunState | None:
    """The journal of the finished run of ``summary``, kept beside its summary, when that run
    was partial (its job reads what it left to fetch again); None when it was complete."""
    if summary is None or summary.get("status") == "complete":
        return None
    path = out / RUNS_DIR / f"{summary['run_id']}.journal.jsonl"
    return replay(path) if path.is_file() else None


def latest_run(out: Path) -> dict[str, Any] | None:
    """The summary of the last run that finished in ``out``, whatever its job."""
    runs = list(finished_runs(out))
    latest: dict[str, Any] | None = runs[-1] if runs else None
    return latest
