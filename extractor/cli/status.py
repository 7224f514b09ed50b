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
from typing import TYPE_CHECKING, Any

import click
import orjson

from extractor.cli.common import stack, storage_options
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
        if place["runs"] or place["unfinished"] or place["lock"] or "identity_id" in place:
            places.append(place)
    identities = sorted({place["identity_id"] for place in places if "identity_id" in place})
    return {"output": target.uri, "work": str(root), "places": places,
            "target_lock": _target_lock(target, root),
            "watermarks": _watermarks(target, identities),
            "tables": _tables(target)}  # fmt: skip


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


#: Folders at an output's root that hold data, not runs.
_TABLES = frozenset({"invoices", "invoice_rows", "transactions", "identities"})
#: Folders inside a run's folder that are its own, not another run's.
_OWN = frozenset({"_runs", "_journal", "_staging", "_failures", "_delta_log"})


def run_folders(root: Path) -> list[Path]:
    """Every folder under ``root`` a run keeps its journal or summaries in."""
    from extractor.output.lock import LOCK_FILE

    found = []
    for folder, names, _ in os.walk(root):
        here = Path(folder)
        names[:] = sorted(
            name for name in names
            if name not in _OWN and not (here == root and name in _TABLES)
            and not name.startswith(".")
        )  # fmt: skip
        if (here / "_runs").is_dir() or (here / "_journal").is_dir() or (here / LOCK_FILE).exists():
            found.append(here)
    return found


def _place(folder: Path, root: Path) -> dict[str, Any]:
    from extractor.engine.history import finished_runs
    from extractor.output.lock import current_holder, describe

    runs = list(finished_runs(folder))
    latest: dict[str, dict[str, Any]] = {}
    for summary in runs:  # the latest of each job (fingerprint)
        latest[orjson.dumps(summary.get("job"), option=orjson.OPT_SORT_KEYS).decode()] = summary
    holder = current_holder(folder)
    return {
        "folder": str(folder.relative_to(root)) if folder != root else ".",
        "runs": [_brief(summary) for summary in latest.values()],
        "finished_runs": len(runs),
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
    from extractor.engine.summary import counted

    if "identities" in summary:  # a fleet's
        statuses = [entry["status"] for entry in summary["identities"]]
        return {"run_id": summary["run_id"], "status": summary["status"],
                "finished_at": summary.get("finished_at"), "identities": len(statuses),
                "failed": statuses.count("failed")}  # fmt: skip
    records, _ = counted(summary)
    return {
        "run_id": summary["run_id"],
        "command": (summary.get("job") or {}).get("command"),
        "status": summary["status"],
        "finished_at": summary.get("finished_at"),
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


def _watermarks(target: Target, identities: list[str]) -> dict[str, str | None]:
    """Each Delta table's watermark (a fleet's: each identity's, as ``table identity``)."""
    local = target.local
    tables = ("invoices", "transactions")
    if local is not None and not any((local / t / "_delta_log").is_dir() for t in tables):
        return {}
    from extractor.output.delta import Lake  # delta-rs only where there are Delta tables
    from extractor.output.lakefiles import IDENTITY, Scope

    marks = {}
    for name in ("invoices", "invoice_rows", "transactions", "customers", "products"):
        table = Lake(target).table(name)
        if table is None:
            continue
        fleet = IDENTITY in table.metadata().partition_columns
        for identity in identities if fleet else [None]:
            mark = Lake(target, scope=Scope(identity)).watermark([name])
            key = f"{name} {identity}" if identity else name
            marks[key] = mark.isoformat() if mark else None
    return marks


def _tables(target: Target) -> dict[str, int]:
    """The records of each Delta table under ``target`` (every identity's), from the Delta
    log's statistics: no data file is read."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from extractor.operations import TABLES

    local = target.local
    names = [name for name in (*TABLES, "invoice_rows") if name != "invoices"]
    names.insert(0, "invoices")
    if local is not None:
        names = [name for name in names if (local / name / "_delta_log").is_dir()]
    if not names:
        return {}
    from extractor.output.delta import Lake  # delta-rs only where there are Delta tables

    counts = {}
    for name in names:
        table = Lake(target).table(name)
        if table is not None:
            actions = pa.table(table.get_add_actions(flatten=True))
            counts[name] = int(pc.sum(actions.column("num_records")).as_py() or 0)
    return counts


def _lock_line(output: str, lock: dict[str, Any]) -> str:
    if lock["holder"] is None:
        return f"  {output}: {lock['error']}"
    lease = f"; {lock['lease']}" if lock["lease"] else ""
    return f"  {output} locked by {lock['holder']}{lease}"


def render(report: dict[str, Any]) -> str:
    from extractor.engine.summary import counting

    lines = [f"{report['output']} (work: {report['work']})"]
    if not report["places"]:
        lines.append("  no runs here")
    for place in report["places"]:
        lines.append(f"  {place['folder']}: {counting(place['finished_runs'], 'finished run')}")
        for run in place["runs"]:
            counts = ", ".join(
                f"{key} {value:,}" for key, value in run.items()
                if isinstance(value, int)
            )  # fmt: skip
            lines.append(f"    {run['run_id']}  {run['status']}  {counts}".rstrip())
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
    if report.get("target_lock"):
        lines.append(_lock_line(report["output"], report["target_lock"]))
    for name, mark in report["watermarks"].items():
        lines.append(f"  watermark {name}: {mark or 'none'}")
    if report.get("tables"):
        lines.append("  tables (records, every identity's, deleted ones marked included):")
        lines += [f"    {name:<20} {count:>12,}" for name, count in report["tables"].items()]
    return "\n".join(lines)
