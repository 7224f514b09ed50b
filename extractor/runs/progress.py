"""Run statistics, the live progress line, and the end-of-run summary (text and JSON)."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import orjson

from extractor import redact
from extractor.runs.journal import RunState
from extractor.service.limiter import RateLimiter, format_when


@dataclass
class RunStats:
    """Counters every worker updates; read by the display and the summary."""

    run_id: str
    ids_total: int = 0
    ids_done: int = 0
    invoices: int = 0
    rows: int = 0
    bytes_received: int = 0
    requests: int = 0
    retries: int = 0
    relogins: int = 0
    api_exceptions: int = 0
    missing_ids: int = 0
    failed_ids: int = 0
    give_ups: int = 0  # requests that still failed after their retries
    splits: int = 0  # batches fetched again in halves after failing their retries
    quarantines: int = 0  # requests that met the service's quarantine and waited it out
    failures: list[dict[str, Any]] = field(default_factory=list)
    files: int = 0
    written: dict[str, int] = field(default_factory=dict)  # what the output wrote
    fetch_seconds: float = 0.0
    publish_seconds: float = 0.0
    units: str = "ids"  # what ids_total / ids_done count, for the progress line
    records: str = "invoices"  # what ``invoices`` counts, for the progress line
    started: float = field(default_factory=time.monotonic)
    started_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    def restore(self, state: RunState) -> None:
        """Take the counts of every batch the run's journal holds (resumed runs included)."""
        self.invoices = state.counts.get("invoices", 0)
        self.rows = state.counts.get("rows", 0)
        self.api_exceptions = state.counts.get("api_exceptions", 0)
        self.missing_ids = len(state.missing)
        self.failed_ids = len(state.failed_ids)
        self.failures = brief_failures(state)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def rates(self) -> tuple[float, float]:
        """Invoices per second and MB per second so far."""
        elapsed = max(self.seconds, 1e-9)
        return self.invoices / elapsed, self.bytes_received / elapsed / 1e6

    def line(self, paused_until: float | None = None) -> str:
        per_second, mb_per_second = self.rates()
        left = self.ids_total - self.ids_done
        done_per_second = self.ids_done / max(self.seconds, 1e-9)
        eta = f"{left / done_per_second:.0f}s" if done_per_second > 0 and left else "-"
        if paused_until is not None:  # no rate says when a pause the service asked for ends
            eta = f"- (paused until {format_when(paused_until)})"
        return (
            f"{self.ids_done:,}/{self.ids_total:,} {self.units}  "
            f"{per_second:,.0f} {self.records}/s  "
            f"{mb_per_second:.1f} MB/s  retries {self.retries}  ETA {eta}"
        )

    def summary(self, status: str, out: Path) -> dict[str, Any]:
        per_second, mb_per_second = self.rates()
        data = asdict(self)
        for internal in ("started", "units", "records"):
            data.pop(internal)
        data.update(
            status=status,
            output=str(out),
            finished_at=dt.datetime.now(dt.UTC).isoformat(),
            seconds=round(self.seconds, 3),
            invoices_per_second=round(per_second, 1),
            mb_per_second=round(mb_per_second, 2),
        )
        return data


#: Ids of each error named in a summary; every one is in the failures report.
SUMMARY_SAMPLE: Final = 20


def brief_failures(state: RunState) -> list[dict[str, Any]]:
    """A run's failures for its summary: a ledger's windows, and each error of ids with how
    many ids it stopped and the first few (the failures report holds them all)."""
    windows = [failure for failure in state.failures if "window" in failure]
    by_error: dict[str, list[int]] = {}
    for failure in state.failures:
        by_error.setdefault(failure["error"], []).extend(failure.get("ids", ()))
    missing = state.missing
    groups = [(error, ids) for error, ids in by_error.items() if ids]
    if missing:
        groups.append(("not returned by GetInvoices", list(missing[:SUMMARY_SAMPLE])))
    counts = {error: len(ids) for error, ids in by_error.items()}
    counts["not returned by GetInvoices"] = len(missing)
    return windows + [
        {"error": error, "count": counts[error], "ids": ids[:SUMMARY_SAMPLE]}
        for error, ids in groups
    ]


def render_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"run {summary['run_id']}: {summary['status']}"
        + (
            f" (fetched again what run {summary['retry_of']} could not)"
            if summary.get("retry_of")
            else ""
        ),
        f"  invoices      {summary['invoices']:,} (of {summary['ids_total']:,} ids listed)",
        f"  invoice rows  {summary['rows']:,}",
        f"  received      {summary['bytes_received'] / 1e6:,.1f} MB "
        f"in {summary['requests']:,} requests",
        f"  time          {summary['seconds']:,.1f} s  "
        f"({summary['invoices_per_second']:,.0f} invoices/s, {summary['mb_per_second']:.1f} MB/s)",
        f"  retries       {summary['retries']}   gave up {summary['give_ups']}   "
        f"split batches {summary['splits']}   re-logins {summary['relogins']}   "
        f"quarantines {summary['quarantines']}",
        f"  api errors    {summary['api_exceptions']}   missing ids {summary['missing_ids']}   "
        f"failed ids {summary['failed_ids']}",
        f"  written       {_written(summary)} under {summary['output']}",
    ]
    if summary.get("failures_report"):
        lines.append(f"  failures      {summary['failures_report']}")
    return "\n".join(lines)


def render_ledger_summary(summary: dict[str, Any]) -> str:
    return (
        f"run {summary['run_id']}: {summary['status']}\n"
        f"  transactions  {summary['transactions']:,}\n"
        f"  received      {summary['bytes_received'] / 1e6:,.1f} MB "
        f"in {summary['requests']:,} requests\n"
        f"  retries       {summary['retries']}   split windows {summary['splits']}   "
        f"failed days {summary['failed_days']}\n"
        f"  written       {_written(summary)} under {summary['output']}"
    )


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


class Progress:
    """A live line on a terminal, a plain log line every ``interval`` seconds otherwise."""

    def __init__(
        self,
        stats: RunStats,
        stream: IO[str] = sys.stderr,
        interval: float | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.stats = stats
        self.stream = stream
        self._limiter = limiter
        if limiter is not None:
            limiter.on_pause = self._paused
        self.live = stream.isatty()
        self.interval = interval if interval is not None else (0.25 if self.live else 10.0)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def say(self, message: str) -> None:
        prefix = "\r\033[K" if self.live else ""
        self.stream.write(f"{prefix}{message}\n")
        self.stream.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            paused = self._limiter.paused_until if self._limiter is not None else None
            line = self.stats.line(paused)
            if self.live:
                self.stream.write(f"\r\033[K{line}")
            else:
                self.stream.write(f"progress: {line}\n")
            self.stream.flush()

    def _paused(self, until: float, reason: str) -> None:
        """Every worker waits (quarantine, Retry-After, service budget): say so at once."""
        self.say(f"paused until {format_when(until)}: {reason}")
