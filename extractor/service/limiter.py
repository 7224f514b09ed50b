"""One rate limiter for every request of a run: our own budget, and pauses the service asks for.

- A token bucket of ``per_hour`` requests an hour with a small burst (0 turns it off).
- The service's ``APILimitRemaining`` / ``APILimitReset`` headers: the budget is spent down
  to the last request and no further. Each answer says how many requests the service will
  still take until its reset; every request sent after the answered one is taken off that
  (it is not counted in it yet), and so is every one sent before it and still in flight (it
  may have overtaken them); each new request takes one more, and at none left everyone
  waits for the reset instead of running into the quarantine.
- ``Retry-After`` and the quarantine fault pause every worker until the time they name.
- In a fleet with a shared budget, a :class:`Gate` to it after all of these; a pause the
  service asks of this run pauses the fleet too (:mod:`extractor.fleet.budget`).

The clock is injected (:mod:`extractor.clock`), so tests run without waiting.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from extractor.clock import SYSTEM, Clock
from extractor.errors import PauseTooLong

#: Seconds added to a reset or quarantine end: the service's clock is not ours.
MARGIN: Final = 1.0
#: Of a budget window's length, the most the margin after its reset may take (a 10 s window
#: loses 0.1 s, not 1 s of every 10).
WINDOW_MARGIN: Final = 0.01


@dataclass(frozen=True)
class Limits:
    per_hour: int = 7200  # the live service's budget; 0: no client-side limit
    burst: int = 20
    max_pause: float = 3600.0  # a longer pause asked for stops the run (PauseTooLong)


DEFAULT_LIMITS: Final = Limits()


class Gate(Protocol):
    """A budget shared with other runs (a fleet's)."""

    @property
    def paused_until(self) -> float: ...

    async def take(self) -> None:
        """Wait until the shared budget lets one request go."""
        ...

    def pause(self, until: float, reason: str) -> None:
        """Hold every run sharing the budget until ``until``."""
        ...


class RateLimiter:
    """Shared by all workers; :meth:`acquire` before every request."""

    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        clock: Clock = SYSTEM,
        gate: Gate | None = None,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.gate = gate
        self._tokens = float(limits.burst)
        self._filled_at = clock.time()
        self._paused_until = 0.0
        self._sent = 0  # requests let through so far: each one's ticket is its number
        self._in_flight: set[int] = set()
        self._left: int | None = None  # requests the service still takes before _reset
        self._reset = 0.0
        self._seen = 0  # the ticket whose answer the current count comes from
        self._window = 0.0  # the length of the service's budget window, once seen
        self.pause_reason = ""
        self.quarantines = 0  # quarantine faults met
        self._paced_at: float | None = None  # when a request last waited for our own budget
        #: Told when every request starts waiting: (until, reason); the progress display says so.
        self.on_pause: Callable[[float, str], None] = lambda until, reason: None

    @property
    def paused_until(self) -> float | None:
        """When the current pause ends (wall-clock seconds), or None when not paused."""
        until = max(self._paused_until, self.gate.paused_until if self.gate else 0.0)
        return until if until > self.clock.time() else None

    @property
    def pacing_rate(self) -> float | None:
        """Requests a second our own hourly limit lets through, while it holds requests back
        (a request waited for it within the last few of its intervals); None otherwise."""
        per_hour = self.limits.per_hour
        if not per_hour or self._paced_at is None:
            return None
        rate = per_hour / 3600
        return rate if self.clock.time() - self._paced_at < 1.0 + 3 / rate else None

    @property
    def service_budget(self) -> tuple[int, float] | None:
        """What the service's budget headers last said: requests left, and when its window
        resets (wall-clock seconds); None when no answer carried them."""
        return None if self._left is None else (self._left, self._reset)

    @property
    def sent(self) -> int:
        """Requests let through so far."""
        return self._sent

    async def acquire(self) -> int:
        """Wait until a request may be sent; its ticket, in flight until :meth:`release`."""
        while True:
            while (wait := self._wait()) > 0:
                await self.clock.sleep(wait)
            if self._budget_allows():
                break
        if self.gate is not None:
            await self.gate.take()
        if self.limits.per_hour:
            self._tokens -= 1
        self._sent += 1
        self._in_flight.add(self._sent)
        return self._sent

    def release(self, ticket: int) -> None:
        """The request of ``ticket`` has its answer (or failed)."""
        self._in_flight.discard(ticket)

    def _budget_allows(self) -> bool:
        """Take one request from the service's budget; False (and a pause until the reset)
        when none is left."""
        if self._left is None:
            return True
        if self.clock.time() >= self._reset:
            self._left = None  # a new window: its first answer will say what it holds
            return True
        if self._left <= 0:
            margin = min(MARGIN, WINDOW_MARGIN * self._window) if self._window else MARGIN
            self._pause(self._reset, "service budget: 0 requests left", margin)
            return False
        self._left -= 1
        return True

    def pause_until(self, until: float, reason: str) -> None:
        """Hold every request until ``until`` (wall-clock seconds) plus a margin; PauseTooLong
        when that is further away than ``max_pause``."""
        self._pause(until, reason, MARGIN)

    def _pause(self, until: float, reason: str, margin: float) -> None:
        if until - self.clock.time() > self.limits.max_pause:
            raise PauseTooLong(
                f"the service asked to pause until {format_when(until)} ({reason}), longer "
                f"than {{max_pause}} {self.limits.max_pause:g} s; stopped: run the same command "
                "after that time to resume"
            )
        until += margin
        if until > self._paused_until:
            if self.gate is not None:
                self.gate.pause(until, reason)
            starts = self._paused_until <= self.clock.time()
            self._paused_until, self.pause_reason = until, reason
            if starts:
                self.on_pause(until, reason)

    def observe(self, remaining: int | None, reset: dt.datetime | None, ticket: int) -> None:
        """The service's rate-limit headers of the answer to the request of ``ticket``."""
        if remaining is None or reset is None:
            return
        ends = reset.timestamp()
        now = self.clock.time()
        before = sum(1 for other in self._in_flight if other < ticket)
        left = remaining - (self._sent - ticket) - before  # what it cannot have counted
        if ends <= now:  # the service's clock is behind ours: its reset is still to come
            self._reset = max(self._reset, now + MARGIN)
            self._left = left if self._left is None else min(self._left, left)
            self._seen = max(self._seen, ticket)
            return
        if ends > self._reset + 0.5:  # a later window than the one known
            # its length: the step between resets, or at least what is left of it now
            self._window = ends - self._reset if self._reset else ends - now
            self._reset, self._left, self._seen = ends, left, ticket
        elif self._left is None or ticket > self._seen:
            self._left, self._seen = left, ticket  # the newest answer knows best
        else:
            self._left = min(self._left, left)  # an older one, overtaken: count it too

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
                self._paced_at = now
        return wait


def format_when(moment: float) -> str:
    """A wall-clock time as a date and time in UTC, also for years no datetime holds."""
    try:
        return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):
        return "a time after the year 9999"
