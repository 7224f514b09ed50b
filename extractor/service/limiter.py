"""One rate limiter for every request of a run: our own budget, and pauses the service asks for.

- A token bucket of ``per_hour`` requests an hour with a small burst (0 turns it off).
- The service's ``APILimitRemaining`` / ``APILimitReset`` headers: when fewer requests remain
  than can be in flight at once, everyone waits for the reset instead of running into the
  quarantine.
- ``Retry-After`` and the quarantine fault pause every worker until the time they name.

The clock is injected (:mod:`extractor.clock`), so tests run without waiting.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from extractor.clock import SYSTEM, Clock
from extractor.errors import PauseTooLong

#: Seconds added to a reset or quarantine end: the service's clock is not ours.
MARGIN: Final = 1.0


@dataclass(frozen=True)
class Limits:
    per_hour: int = 7200  # the live service's budget; 0: no client-side limit
    burst: int = 20
    reserve: int = 8  # pause for the reset when the service says this few remain
    max_pause: float = 3600.0  # a longer pause asked for stops the run (PauseTooLong)


DEFAULT_LIMITS: Final = Limits()


class RateLimiter:
    """Shared by all workers; :meth:`acquire` before every request."""

    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        clock: Clock = SYSTEM,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self._tokens = float(limits.burst)
        self._filled_at = clock.time()
        self._paused_until = 0.0
        self.pause_reason = ""
        self.quarantines = 0  # quarantine faults met
        #: Told when every request starts waiting: (until, reason); the progress display says so.
        self.on_pause: Callable[[float, str], None] = lambda until, reason: None

    @property
    def paused_until(self) -> float | None:
        """When the current pause ends (wall-clock seconds), or None when not paused."""
        return self._paused_until if self._paused_until > self.clock.time() else None

    async def acquire(self) -> None:
        while (wait := self._wait()) > 0:
            await self.clock.sleep(wait)
        if self.limits.per_hour:
            self._tokens -= 1

    def pause_until(self, until: float, reason: str) -> None:
        """Hold every request until ``until`` (wall-clock seconds) plus a margin; PauseTooLong
        when that is further away than ``max_pause``."""
        if until - self.clock.time() > self.limits.max_pause:
            raise PauseTooLong(
                f"the service asked to pause until {format_when(until)} ({reason}), longer "
                f"than {{max_pause}} {self.limits.max_pause:g} s; stopped: run the same command "
                "after that time to resume"
            )
        until += MARGIN
        if until > self._paused_until:
            starts = self._paused_until <= self.clock.time()
            self._paused_until, self.pause_reason = until, reason
            if starts:
                self.on_pause(until, reason)

    def observe(self, remaining: int | None, reset: dt.datetime | None) -> None:
        """The service's rate-limit headers of one response."""
        if remaining is not None and reset is not None and remaining <= self.limits.reserve:
            self.pause_until(reset.timestamp(), f"service budget: {remaining} requests left")

    def _wait(self) -> float:
        now = self.clock.time()
        wait = self._paused_until - now
        per_hour = self.limits.per_hour
        if per_hour:
            rate = per_hour / 3600
            self._tokens = min(self.limits.burst, self._tokens + (now - self._filled_at) * rate)
            self._filled_at = now
            if self._tokens < 1:
                wait = max(wait, (1 - self._tokens) / rate)
        return wait


def format_when(moment: float) -> str:
    """A wall-clock time as a date and time in UTC, also for years no datetime holds."""
    try:
        return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):
        return "a time after the year 9999"
