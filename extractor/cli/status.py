"""``extractor status OUT``: what an output holds, without reading its files by hand.

Its finished runs (the latest of each job), an unfinished run and how far it got, who holds
its lock, the Delta tables' watermarks, the ids the latest runs could not fetch, and a
fleet's identities. Every folder a command keeps runs in is looked at: ``OUT`` itself (local
Parquet), the work directory's ``_work/<command>`` folders (Delta, ``s3://``, ``sync``), and
each identity's ``_identities/<guid>`` under any of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click
import orjson

from extractor.cli.common import stack, storage_options
from extractor.clock import utc_text
from extractor.errors import UsageError

if TYPE_CHECKING:  # what reads an output is imported when it runs: ``--help`` loads none of it
    from extractor.output.targets import Target


@click.command("status")
@click.argument("out")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of lines.")
@stack(*storage_options)
def status(out: str, as_json: bool, work_dir: Path | None, endpoint_url: str | None) -> None:
    """What OUT holds: its runs, an unfinished one, the lock's holder, Delta watermarks,
    failed ids and a fleet's identities."""
    report = describe_output(written_target(out, endpoint_url), work_dir)
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render(report))


def written_target(out: str, endpoint_url: str | None) -> Target:
    """The output ``out`` names; a local one must be a directory a command wrote."""
    from extractor.output.targets import Target

    target = Target.parse(out, endpoint_url)
    if target.local is not None and not target.local.is_dir():
        raise UsageError(f"OUT {out} is not a directory; give the --out a command wrote")
    return target


def describe_output(target: Target, work_dir: Path | None) -> dict[str, Any]:
    """The output's state as JSON values (what ``status --json`` prints)."""
    from extractor.fleet.layout import IDENTITIES_DIR

    root = target.work_dir(work_dir)
    places = []
    for folder in run_folders(root):
        place = _place(folder, root)
        if IDENTITIES_DIR in folder.relative_to(root).parts:
            place["identity_id"] = folder.relative_to(root).parts[
                -1 if folder.parent.name == IDENTITIES_DIR else -2
            ]
        if place["records"] or place["unfinished"] or place["lock"] or "identity_id" in place:
            places.append(place)
    identities = sorted({place["identity_id"] for place in places if "identity_id" in place})
    from extractor.output.tablestate import lake_state

    tables, watermarks = lake_state(target, identities)
    return {"output": target.uri, "work": str(root), "places": places,
            "target_lock": _target_lock(target, root),
            "watermarks": watermarks, "tables": tables}  # fmt: skip


def _target_lock(target: Target, root: Path) -> dict[str, Any] | None:
    """Who holds the target's own lock, when it is not the work directory's (shown with its
    place): a local OUT beside another work directory, or an s3:// target's lock object."""
    from extractor.errors import OutputError
    from extractor.output.lock import describe, target_holder

    if target.local is not None and target.local.resolve() == root.resolve():
        return None
    try:
        holder = target_holder(target)
    except OutputError as exc:
        return {"holder": None, "lease": None, "error": str(exc)}
    if holder is None:
        return None
    return {"holder": describe(holder), "lease": holder.get("lease")}


#: Folders that hold a command's runs under a work root: ``_work/<part>``,
#: ``_identities/<guid>``, and under an identity its sync's parts; nothing else is entered.
_NESTS = frozenset({"_work", "_identities"})
#: Folders inside a run's folder that are its own, not another run's.
_OWN = frozenset({"_runs", "_journal", "_staging", "_failures", "_delta_log"})
#: How deep run folders nest (``_work/_identities/<guid>/sync-invoices``).
_DEPTH: Final = 5
#: The runs each folder shows as lines (``--json``: its latest of each job among the
#: records read), and the newest records read: never every record of a long history.
RECENT: Final = 3
READ: Final = 20


def run_folders(root: Path) -> list[Path]:
    """Every folder under ``root`` a run keeps its journal or summaries in. Only the folders
    commands keep runs in are entered (not the tables, nor any other folder): fast whatever
    the lake's size, or wherever OUT is."""
    from extractor.output.lock import LOCK_FILE

    found = []

    def visit(folder: Path, depth: int) -> None:
        if (
            (folder / "_runs").is_dir()
            or (folder / "_journal").is_dir()
            or (folder / LOCK_FILE).exists()
        ):
            found.append(folder)
        if depth == 0:
            return
        nest = folder != root and (folder.name in _NESTS or folder.parent.name == "_identities")
        for child in _folders(folder):
            if child.name in _NESTS or (nest and child.name not in _OWN):
                visit(child, depth - 1)

    visit(root, _DEPTH)
    return found


def _folders(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            return sorted(
                Path(entry.path) for entry in entries
                if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".")
            )  # fmt: skip
    except OSError:
        return []


def _place(folder: Path, root: Path) -> dict[str, Any]:
    from extractor.engine.history import is_finished, records
    from extractor.output.lock import current_holder, describe

    recent = records(folder, newest=READ)
    latest: dict[str, dict[str, Any]] = {}
    for summary in recent:  # the latest of each job (fingerprint) among the newest
        if is_finished(summary):
            latest[orjson.dumps(summary.get("job"), option=orjson.OPT_SORT_KEYS).decode()] = summary
    holder = current_holder(folder)
    return {
        "folder": str(folder.relative_to(root)) if folder != root else ".",
        "runs": [_brief(summary) for summary in latest.values()],
        "recent": [_brief(summary) for summary in reversed(recent[-RECENT:])],
        "records": len(list((folder / "_runs").glob("*.json"))),
        "unfinished": _unfinished(folder),
        "lock": None if holder is None else describe(holder),
    }


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    """A run's line in the report; a summary edited by hand into another shape is said to be
    damaged, not a traceback."""
    try:
        return _brief_of(summary)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        problem = f"missing {exc}" if isinstance(exc, KeyError) else "a value of the wrong type"
        run_id = summary.get("run_id")
        return {
            "run_id": run_id if isinstance(run_id, str) else "?",
            "status": "damaged",
            "error": f"its summary in _runs/ is damaged ({problem}); it is left as it is",
        }


def _brief_of(summary: dict[str, Any]) -> dict[str, Any]:
    from extractor.engine.history import is_finished
    from extractor.engine.summary import counted

    if not is_finished(summary):  # a failed or interrupted run's record
        error = summary["error"]
        return {"run_id": summary["run_id"], "command": summary["job"].get("command"),
                "status": summary["outcome"], "failed_at": utc_text(summary.get("failed_at")),
                "error": f"{error['type']}: {error['message']}"}  # fmt: skip
    if "identities" in summary:  # a fleet's
        statuses = [entry["status"] for entry in summary["identities"]]
        return {"run_id": summary["run_id"], "status": summary["status"],
                "finished_at": utc_text(summary.get("finished_at")),
                "identities": len(statuses), "failed": statuses.count("failed")}  # fmt: skip
    records, _ = counted(summary)
    return {
        "run_id": summary["run_id"],
        "command": (summary.get("job") or {}).get("command"),
        "status": summary["status"],
        "finished_at": utc_text(summary.get("finished_at")),
        records: summary.get(records),
        **{  # an invoices run's own counters (a ledger or list run has none of them)
            name: int(summary[name])
            for name in ("failed_ids", "missing_ids", "missing_twice_ids", "gone_ids")
            if name in summary
        },
        "failures_report": summary.get("failures_report"),
        "not_returned_report": summary.get("not_returned_report"),
    }


def _unfinished(folder: Path) -> dict[str, Any] | None:
    from extractor.engine.journal import unfinished
    from extractor.engine.state import replay

    journal = unfinished(folder)
    if journal is None:
        return None
    state = replay(journal)
    # a ledger run plans windows, an invoice run ids, a list run lists
    plan = state.plan or {}
    planned = len(plan.get("windows") or plan.get("ids") or plan.get("lists") or ())
    return {
        "run_id": state.run_id,
        "command": state.fingerprint.get("command"),
        "starts": state.starts,
        "planned": planned,
        "staged_batches": len(state.staged),
        "published": state.published,
        "journal": str(journal),
    }


def _lock_line(output: str, lock: dict[str, Any]) -> str:
    if lock["holder"] is None:
        return f"  {output}: {lock['error']}"
    lease = f"; {lock['lease']}" if lock["lease"] else ""
    return f"  {output} locked by {lock['holder']}{lease}"


def render(report: dict[str, Any]) -> str:
    """The report for people: a few lines a folder, a line a table; times in UTC."""
    lines = [f"{report['output']} (work: {report['work']})"]
    if not report["places"]:
        lines.append("  no runs here")
    for place in report["places"]:
        lines += _place_lines(place)
    if report.get("target_lock"):
        lines.append(_lock_line(report["output"], report["target_lock"]))
    if report.get("tables"):
        lines.append("  tables (records, deleted ones marked included; every identity's):")
        for name, table in report["tables"].items():
            records = table["records"]
            line = f"    {name:<20} " + (
                f"{records:>12,}" if records is not None else "  unreadable"
            )
            if table.get("error"):
                line += f"  ({table['error']})"
            if table.get("last_run"):
                line += f"  last run {table['last_run']}"
            if table.get("full_refresh_pending"):
                line += "  (full refresh at the next sync)"
            lines.append(line)
    for name, mark in report["watermarks"].items():
        lines.append(f"  watermark {name}: {mark or 'none'}")
    return "\n".join(lines)


#: A run's counters said only when they are not zero (its records always are).
_QUIET_WHEN_ZERO: Final = frozenset(
    {"failed_ids", "missing_ids", "missing_twice_ids", "gone_ids", "failed"}
)


def _place_lines(place: dict[str, Any]) -> list[str]:
    from extractor.engine.summary import counting

    shown = len(place["recent"])
    more = f"; the last {shown}:" if place["records"] > shown else ":"
    lines = [f"  {place['folder']}: {counting(place['records'], 'run')} recorded{more}"]
    if not place["records"]:
        lines[0] = f"  {place['folder']}: no run recorded"
    for run in place["recent"]:
        counts = ", ".join(
            f"{key} {value:,}" for key, value in run.items()
            if isinstance(value, int) and not isinstance(value, bool)
            and (value or key not in _QUIET_WHEN_ZERO)
        )  # fmt: skip
        when = run.get("finished_at") or run.get("failed_at")
        lines.append(
            f"    {run['run_id']}  {run['status']}  {counts}".rstrip()
            + (f"  ({when})" if when else "")
        )
        if run.get("error"):
            lines.append(f"      {run['error']}")
        for kind in ("failures_report", "not_returned_report"):
            if run.get(kind):
                lines.append(f"      {kind.replace('_', ' ')}: {run[kind]}")
    if place["unfinished"]:
        u = place["unfinished"]
        lines.append(
            f"    unfinished: {u['run_id']} ({u['command']}): {u['staged_batches']:,} "
            f"batches staged of {u['planned']:,} planned, started "
            f"{counting(u['starts'], 'time')}; the same command resumes it"
        )
    if place["lock"]:
        lines.append(f"    locked by {place['lock']}")
    return lines
