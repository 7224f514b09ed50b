"""What a run counts while it runs: every worker adds to one :class:`RunStats`."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extractor.clock import SYSTEM, Clock
from extractor.engine.summary import Resumed, RunSummary, Status
from extractor.service.limiter import format_when


@dataclass
class RunStats:
    """Counters every worker updates; read by the display and the summary."""

    run_id: str
    units: str = "ids"  # what the job counts its work in: ``ids``, ``days``
    records: str = "invoices"  # what it fetches: ``invoices``, ``transactions``
    total: int = 0  # units planned
    done: int = 0  # units fetched or given up
    fetched: int = 0  # records
    bytes_received: int = 0
    requests: int = 0
    retries: int = 0
    relogins: int = 0
    give_ups: int = 0  # requests that still failed after their retries
    splits: int = 0  # batches fetched again in halves after failing their retries
    quarantines: int = 0  # requests that met the service's quarantine and waited it out
    #: How far the service's clock is ahead of ours, from its replies' Date (None: no Date).
    clock_skew_seconds: float | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # the job's own (rows, failed ids)
    files: int = 0
    written: dict[str, int] = field(default_factory=dict)  # what the output wrote
    fetch_seconds: float = 0.0
    publish_seconds: float = 0.0
    clock: Clock = field(default=SYSTEM, repr=False, compare=False)
    started: float = 0.0  # on the clock's monotonic time
    started_at: str = ""
    starts: int = 1  # this invocation's number among the run's (2 and more: resumed)
    carried: int = 0  # of ``fetched``, the records earlier invocations of the run fetched
    done_before: int = 0  # of ``done``, the units earlier invocations did

    def __post_init__(self) -> None:
        self.started = self.clock.monotonic()
        self.started_at = self.clock.now().isoformat()

    @property
    def seconds(self) -> float:
        return self.clock.monotonic() - self.started

    def rates(self) -> tuple[float, float]:
        """Records per second and MB per second so far, of this invocation."""
        elapsed = max(self.seconds, 1e-9)
        return self.fetched_now / elapsed, self.bytes_received / elapsed / 1e6

    @property
    def fetched_now(self) -> int:
        """Records this invocation fetched (``fetched`` also counts a resumed run's earlier)."""
        return max(0, self.fetched - self.carried)

    def line(
        self, paused_until: float | None = None, pacing: tuple[float, int] | None = None
    ) -> str:
        """The live line. ``pacing``: the requests a second our hourly limit allows while it
        holds requests back, and the requests sent so far; the ETA then follows that limit."""
        per_second, mb_per_second = self.rates()
        left = self.total - self.done
        done_per_second = (self.done - self.done_before) / max(self.seconds, 1e-9)
        seconds_left = left / done_per_second if done_per_second > 0 and left else None
        paced = ""
        if pacing is not None and left:
            allowed, sent = pacing
            now = self.done - self.done_before  # this invocation's, as ``sent`` is
            per_request = now / sent if sent and now else 1.0
            at_limit = left / max(per_request, 1e-9) / allowed  # the requests still to send
            seconds_left = max(seconds_left or 0.0, at_limit)
            paced = f"  paced to {allowed * 3600:,.0f} req/h"
        eta = f"{seconds_left:.0f}s" if seconds_left is not None else "-"
        if paused_until is not None:  # no rate says when a pause the service asked for ends
            eta = f"- (paused until {format_when(paused_until)})"
        return (
            f"{self.done:,}/{self.total:,} {self.units}  "
            f"{per_second:,.0f} {self.records}/s  "
            f"{mb_per_second:.1f} MB/s  retries {self.retries}{paced}  ETA {eta}"
        )

    def summary(self, status: Status, out: Path) -> RunSummary:
        """The run's summary: its counts, named after what the job counts (``invoices``,
        ``ids``; ``transactions``, ``days``), its rates and times."""
        per_second, mb_per_second = self.rates()
        if self.starts == 1:  # the run's records as written (a resumed one: those fetched now)
            per_second = self.fetched / max(self.seconds, 1e-9)
        return RunSummary(
            run_id=self.run_id, status=status, records=self.records, units=self.units,
            fetched=self.fetched, total=self.total, done=self.done,
            per_second=round(per_second, 1), output=str(out), counts=dict(self.counts),
            failures=copy.deepcopy(self.failures), bytes_received=self.bytes_received,
            requests=self.requests, retries=self.retries, relogins=self.relogins,
            give_ups=self.give_ups, splits=self.splits, quarantines=self.quarantines,
            clock_skew_seconds=self.clock_skew_seconds, files=self.files,
            written=dict(self.written), fetch_seconds=self.fetch_seconds,
            publish_seconds=self.publish_seconds, started_at=self.started_at,
            finished_at=self.clock.now().isoformat(), seconds=round(self.seconds, 3),
            mb_per_second=round(mb_per_second, 2),
            resumed=Resumed(self.starts, self.fetched_now) if self.starts > 1 else None,
        )  # fmt: skip
