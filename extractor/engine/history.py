"""The runs that ended in an output: their records in ``OUT/_runs/``, in the order they ended;
whether this very job already ran; what a partial run left for the next to fetch; the record
of a run that failed; and how many of them are kept.

A record's ``outcome`` says how its run ended (:data:`~extractor.engine.summary.FINISHED`,
``failed``, ``interrupted``). Only a finished run's summary counts as a run that finished:
a failed run's record is there for whoever watches (a scheduler, ``status``), and its
journal, still in ``_journal/``, makes the next run of the command resume it (when the run
resumes and finishes, its summary replaces the record, under the same name).

Pruning (:func:`prune`, at the end of every finished run, under the output's lock): a folder
keeps the records of its last :data:`KEEP_RUNS` runs, and whatever else a later run reads:
the latest finished summary of each job (what says "already finished", and what a sync or a
retry follows) and, when that run was partial, its journal (what the next run fetches
again); and the journal of the latest finished run, to look at how it went. Every other
finished journal is removed: nothing reads it again. An unfinished
run's journal (``_journal/``) is never touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from extractor import redact
from extractor.engine.journal import RUNS_DIR, unfinished
from extractor.engine.state import RunState, replay
from extractor.engine.summary import FINISHED, write_summary
from extractor.errors import ExtractorError, UsageError

#: The records a folder keeps in ``_runs/`` (besides what a later run reads: see the module).
KEEP_RUNS: Final = 50
JOURNAL_SUFFIX: Final = ".journal.jsonl"


def records(out: Path, newest: int | None = None) -> list[dict[str, Any]]:
    """Every run's record in ``out/_runs/`` (the ``newest`` written, when given), finished or
    not, in the order they ended (two runs can begin in the same second, so their ids alone
    do not tell)."""
    folder = out / RUNS_DIR
    paths = list(folder.glob("*.json")) if folder.is_dir() else []
    if newest is not None:
        paths = sorted(paths, key=_written_at, reverse=True)[:newest]
    found = []
    for path in paths:
        with contextlib.suppress(OSError, orjson.JSONDecodeError):
            record = orjson.loads(path.read_bytes())
            if not isinstance(record, dict):  # edited by hand into something else
                continue
            ended = record.get("finished_at") or record.get("failed_at") or ""
            found.append((str(ended), path.stat().st_mtime_ns, path.name, record))
    found.sort(key=lambda entry: entry[:2])
    return [record for *_, record in found]


def _written_at(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:  # removed meanwhile
        return 0


def is_finished(record: Mapping[str, Any]) -> bool:
    """Whether ``record`` is a finished run's summary (not a failed run's record)."""
    return bool(record.get("outcome", FINISHED) == FINISHED)


def finished_runs(out: Path) -> Iterator[dict[str, Any]]:
    """The summaries of the finished runs in ``out``, in the order they finished."""
    yield from (record for record in records(out) if is_finished(record))


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
    path = out / RUNS_DIR / f"{summary['run_id']}{JOURNAL_SUFFIX}"
    return replay(path) if path.is_file() else None


def latest_run(out: Path) -> dict[str, Any] | None:
    """The summary of the last run that finished in ``out``, whatever its job."""
    runs = list(finished_runs(out))
    latest: dict[str, Any] | None = runs[-1] if runs else None
    return latest


def failed_record(
    run_id: str, error: BaseException, outcome: str, known: Mapping[str, Any]
) -> dict[str, Any]:
    """The record of a run that stopped on ``error`` (``outcome``: failed or interrupted):
    its id, the error's type and message (credentials masked), and what else is ``known``
    of it (its job, output, when it started and stopped)."""
    message = error.naming(_flag) if isinstance(error, ExtractorError) else str(error)
    return {
        "run_id": run_id, "outcome": outcome, "status": outcome,
        "error": {"type": type(error).__name__, "message": redact.mask(message)},
        **known,
    }  # fmt: skip


def _flag(field: str) -> str:
    """A setting named in an error, as its flag (``batch_size``: ``--batch-size``)."""
    return "--" + field.replace("_", "-")


def write_failed(record: Mapping[str, Any], out: Path) -> Path | None:
    """``record`` as ``out/_runs/<run_id>.json``, unless a finished summary of that run is
    there already (a record never replaces a summary), or the folder cannot be written (the
    error being recorded may be just that: it is what the run stops with all the same)."""
    path = out / RUNS_DIR / f"{record['run_id']}.json"
    with contextlib.suppress(OSError, orjson.JSONDecodeError):
        if path.is_file() and is_finished(orjson.loads(path.read_bytes())):
            return None
    with contextlib.suppress(OSError):
        return write_summary(record, out)
    return None


def prune(out: Path, keep: int = KEEP_RUNS) -> list[Path]:
    """Remove the records and finished journals in ``out/_runs/`` that no run reads again
    (see the module); the paths removed. Call it under the output's lock."""
    folder = out / RUNS_DIR
    ended = records(out)
    kept = {str(record.get("run_id")) for record in ended[-keep:]}
    latest: dict[bytes, dict[str, Any]] = {}
    for record in ended:
        if is_finished(record):
            latest[orjson.dumps(record.get("job"), option=orjson.OPT_SORT_KEYS)] = record
    needed = {str(record.get("run_id")) for record in latest.values()}
    journals = {
        str(record.get("run_id")) for record in latest.values()
        if record.get("status") != "complete"
    }  # fmt: skip
    last = [record for record in ended if is_finished(record)][-1:]
    for record in last:  # the latest run's, whatever its job: a sync follows it
        needed.add(str(record.get("run_id")))
        journals.add(str(record.get("run_id")))  # and its journal, to look at how it went
    removed = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        name = path.name
        if name.endswith(JOURNAL_SUFFIX):
            gone = name.removesuffix(JOURNAL_SUFFIX) not in journals
        elif name.endswith(".json"):
            gone = name.removesuffix(".json") not in kept | needed
        else:
            continue
        if gone:
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed
