"""The live progress line: on a terminal, redrawn in place; otherwise a log line now and then."""

from __future__ import annotations

import asyncio
import sys
from typing import IO

from extractor.runs.stats import RunStats
from extractor.service.limiter import RateLimiter, format_when


class Progress:
    """A live line on a terminal, a plain log line every ``interval`` seconds otherwise."""

    def __init__(
        self,
        stats: RunStats,
        stream: IO[str] | None = None,
        interval: float | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.stats = stats
        self.stream = stream = stream or sys.stderr  # at run time: a test may capture it
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
            # a refresh rate on real time; what the line shows is on the run's clock
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
