"""The live progress of a run: on a terminal, a line redrawn in place; otherwise a
``progress`` event now and then (:mod:`extractor.log`). It says when the run waits (a pause the
service asked for, or the client pacing itself to its hourly limit, when the ETA follows that
limit) and when it publishes."""

from __future__ import annotations

import asyncio
from typing import Any, Final

from extractor.engine.stats import RunStats
from extractor.log import Log
from extractor.service.limiter import RateLimiter, format_when

#: Seconds between progress events where the line is not redrawn (a log file, ``--log-format
#: json``); ``-v`` makes them more frequent.
LOG_EVERY: Final = 10.0
LOG_EVERY_VERBOSE: Final = 2.0


class Progress:
    """A live line on a terminal, a ``progress`` event every ``interval`` seconds otherwise."""

    def __init__(
        self,
        stats: RunStats,
        log: Log,
        interval: float | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.stats = stats
        self.log = log
        self._limiter = limiter
        if limiter is not None:
            limiter.on_pause = self._paused
        every = LOG_EVERY_VERBOSE if log.verbosity > 0 else LOG_EVERY
        self.interval = interval if interval is not None else (0.25 if log.live else every)
        self._task: asyncio.Task[None] | None = None
        self._publishing: tuple[int, float] | None = None  # batches, since (monotonic)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.log.clear()

    def say(self, event: str, message: str, **counts: Any) -> None:
        self.log.info(event, message, **counts)

    def lost(self, batches: int) -> None:
        self.log.warning(
            "refetching",
            f"{batches} staged batches were missing or short on disk; fetching them again",
            batches=batches,
        )

    def publishing(self, batches: int) -> None:
        """The fetch is over; publishing begins (the live line says so from now on)."""
        self._publishing = (batches, self.stats.clock.monotonic())
        self.log.info(
            "publishing",
            f"publishing {batches:,} staged batches ({self.stats.fetched:,} "
            f"{self.stats.records} fetched)",
            batches=batches,
        )

    def line(self) -> tuple[str, dict[str, Any]]:
        """What the live line says now, and its counts."""
        stats = self.stats
        counts: dict[str, Any] = {
            "units": stats.units, "done": stats.done, "total": stats.total,
            stats.records: stats.fetched, "retries": stats.retries,
        }  # fmt: skip
        if self._publishing is not None:
            batches, since = self._publishing
            seconds = stats.clock.monotonic() - since
            counts.update(phase="publishing", publish_seconds=round(seconds, 1))
            return f"publishing {batches:,} staged batches ({seconds:,.0f} s)", counts
        limiter = self._limiter
        paused = limiter.paused_until if limiter is not None else None
        rate = limiter.pacing_rate if limiter is not None and paused is None else None
        pacing = (rate, limiter.sent) if limiter is not None and rate is not None else None
        counts.update(phase="fetching", paused_until=paused)
        if rate is not None:
            counts["paced_per_hour"] = round(rate * 3600)
        return stats.line(paused, pacing), counts

    async def _run(self) -> None:
        while True:
            # a refresh rate on real time; what the line shows is on the run's clock
            await asyncio.sleep(self.interval)
            text, counts = self.line()
            self.log.status(text, **counts)

    def _paused(self, until: float, reason: str) -> None:
        """Every worker waits (quarantine, Retry-After, service budget): say so at once."""
        self.log.warning(
            "paused", f"paused until {format_when(until)}: {reason}", until=until, reason=reason
        )
