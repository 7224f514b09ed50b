"""One rate limiter for every request of a run: our own budget, and pauses the service asks for.

- A token bucket of ``per_hour`` requests an hour with a small burst (0 turns it off).
- The service's ``APILimitRemaining`` / ``APILimitReset`` headers, authoritative for the
  requests not yet in flight (:mod:`extractor.service.budget`): spent to the last request and
  no further, waited out to the reset, and followed after it at the rate, never in a burst.
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
from extractor.config import DEFAULT_MAX_REQUESTS_PER_HOUR
from extractor.errors import PauseTooLong
from extractor.service.budget import MARGIN, TICK, ServiceBudget, Told

__all__ = ["DEFAULT_LIMITS", "MARGIN", "Gate", "Limits", "RateLimiter", "Told", "format_when"]


@dataclass(frozen=True)
class Limits:
    per_hour: int = DEFAULT_MAX_REQUESTS_PER_HOUR  # the live service's; 0: no client-side limit
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
        self.budget = ServiceBudget()
        self._tokens = float(limits.burst)
        self._filled_at = clock.time()
        self._paused_until = 0.0
        self._held_until = 0.0  # our record of the service's window holds requests until then
        self._sent = 0  # requests let through so far: each one's ticket is its number
        self.pause_reason = ""
        self.quarantines = 0  # quarantine faults met
        #: When a request last waited for a rate (ours or the service's), and that rate a second.
        self._paced: tuple[float, float] | None = None
        #: Told when every request starts waiting: (until, reason); the progress display says so.
        self.on_pause: Callable[[float, str], None] = lambda until, reason: None

    @property
    def paused_until(self) -> float | None:
        """When the current pause ends (wall-clock seconds), or None when not paused."""
        until = max(self._paused_until, self.gate.paused_until if self.gate else 0.0)
        return until if until > self.clock.time() else None

    @property
    def pacing_rate(self) -> float | None:
        """Requests a second a rate lets through (our hourly limit, or the service's window),
        while it holds requests back (one waited within the last few of its intervals)."""
        if self._paced is None:
            return None
        at, rate = self._paced
        return rate if self.clock.time() - at < 1.0 + 3 / rate else None

    @property
    def service_budget(self) -> tuple[int, float] | None:
        """What the service's budget headers last said: requests left, and when its window
        resets (wall-clock seconds); None when no answer carried them."""
        return self.budget.known

    @property
    def sent(self) -> int:
        """Requests let through so far."""
        return self._sent

    async def acquire(self) -> int:
        """Wait until a request may be sent; its ticket, in flight until :meth:`release`."""
        while True:
            while (wait := self._wait()) > TICK:
                await self.clock.sleep(wait)
            if self._budget_allows():
                break
        if self.limits.per_hour:
            self._tokens -= 1
        self._sent += 1
        ticket = self._sent
        try:
            if self.gate is not None:
                await self.gate.take()
        finally:
            self.budget.went(ticket, self.clock.time())
        return ticket

    def release(self, ticket: int) -> None:
        """The request of ``ticket`` has its answer (or failed)."""
        self.budget.ended(ticket)

    def observe(self, told: Told, ticket: int) -> None:
        """The service's budget headers on the answer to the request of ``ticket``."""
        self.budget.observe(told, ticket, self.clock.time())

    def pause_until(self, until: float, reason: str) -> None:
        """Hold every request until ``until`` (wall-clock seconds) plus a margin; PauseTooLong
        when that is further away than ``max_pause``."""
        self._pause(until, reason, MARGIN)

    def _budget_allows(self) -> bool:
        """Take one request from the service's budget; False (and a wait) when it has none
        now: a pause until its window's end, or until our own record lets one go."""
        now = self.clock.time()
        hold = self.budget.until(now)
        if hold.until + hold.slack <= now + TICK:
            self.budget.take()
            return True
        if hold.spent:
            self._pause(hold.until, "service budget: 0 requests left", hold.slack)
        else:
            self._held_until = hold.until
            self._paced = now, self.budget.limit / self.budget.window
        return False

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

    def _wait(self) -> float:
        now = self.clock.time()
        wait = max(self._paused_until, self._held_until) - now
        per_hour = self.limits.per_hour
        if per_hour:
            rate = per_hour / 3600
            self._tokens = min(self.limits.burst, self._tokens + (now - self._filled_at) * rate)
            self._filled_at = now
            if self._tokens < 1 - TICK:
                wait = max(wait, (1 - self._tokens) / rate)
                self._paced = now, rate
        return wait


def format_when(moment: float) -> str:
    """A wall-clock time as a date and time in UTC, also for years no datetime holds."""
    try:
        return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):
        return "a time after the year 9999"
