"""A run's summary: its failures in brief, its file (``OUT/_runs/<run_id>.json``), and how
it reads for people (one renderer for every job: the counts are named after what it counts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from extractor import redact


def counted(summary: dict[str, Any]) -> tuple[str, str]:
    """What a summary's run fetched and counted its work in: ``(invoices, ids)`` or
    ``(transactions, days)``."""
    return summary["records"], summary["units"]


def render_summary(summary: dict[str, Any]) -> str:
    """What a run did, for people; the lines a job's counts do not apply to are left out."""
    records, units = counted(summary)
    retry = summary.get("retry_of")
    lines = [
        f"run {summary['run_id']}: {summary['status']}"
        + (f" (fetched again what run {retry} could not)" if retry else ""),
        f"  {records:<13} {summary[records]:,} (of {summary[f'{units}_total']:,} {units} "
        + ("listed)" if units == "ids" else "planned)"),
    ]
    if "rows" in summary:
        lines.append(f"  invoice rows  {summary['rows']:,}")
    resumed = summary.get("resumed")
    if resumed:
        lines.append(
            f"  resumed       start {resumed['starts']} of this run: the counts above are the "
            f"whole run's; requests, time and rates below this invocation's "
            f"({resumed[f'{records}_this_invocation']:,} {records} fetched now)"
        )
    lines += [
        f"  received      {summary['bytes_received'] / 1e6:,.1f} MB "
        f"in {summary['requests']:,} requests",
        f"  time          {summary['seconds']:,.1f} s  "
        f"({summary[f'{records}_per_second']:,.0f} {records}/s, "
        f"{summary['mb_per_second']:.1f} MB/s)",
        f"  retries       {summary['retries']}   gave up {summary['give_ups']}   "
        f"split {'batches' if units == 'ids' else 'windows'} {summary['splits']}   "
        f"re-logins {summary['relogins']}   quarantines {summary['quarantines']}",
    ]
    if "failed_ids" in summary:
        lines.append(
            f"  api errors    {summary['api_exceptions']}   missing ids {summary['missing_ids']}"
            f"   failed ids {summary['failed_ids']}"
        )
    if summary.get("gone_ids") or summary.get("missing_twice_ids"):
        lines.append(
            f"  settled       {summary['gone_ids']} no longer listed   "
            f"{summary['missing_twice_ids']} not returned twice (not asked for again)"
        )
    if "failed_days" in summary:
        lines.append(f"  failed days   {summary['failed_days']}")
    lines.append(f"  written       {_written(summary)} under {summary['output']}")
    if summary.get("failures_report"):
        lines.append(f"  failures      {summary['failures_report']}")
    if summary.get("not_returned_report"):
        lines.append(f"  not returned  {summary['not_returned_report']}")
    return "\n".join(lines)


def finished(summary: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The ``finished`` event of a run: its line, and the counts a scheduler reads."""
    records, units = counted(summary)
    counts = {
        key: summary[key]
        for key in (
            "status", records, f"{units}_total", "rows", "requests", "retries", "give_ups",
            "failed_ids", "missing_ids", "missing_twice_ids", "gone_ids", "api_exceptions",
            "failed_days", "seconds",
        )
        if key in summary
    }  # fmt: skip
    line = (
        f"run {summary['run_id']} {summary['status']}: {summary[records]:,} {records} "
        f"in {summary['seconds']:,.1f} s ({summary['requests']:,} requests)"
    )
    return line, counts


def _written(summary: dict[str, Any]) -> str:
    """``12 files``, or records per Delta table (``invoices 40, invoice_rows 155``)."""
    written = summary.get("written") or {"files": summary.get("files", 0)}
    if summary.get("format") == "delta":
        return "Delta: " + ", ".join(f"{name} {count:,}" for name, count in written.items())
    return f"{written.get('files', 0)} files"


def write_summary(summary: dict[str, Any], out: Path) -> Path:
    folder = out / "_runs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{summary['run_id']}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_bytes(redact.mask_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2)))
    temporary.rename(path)
    return path
