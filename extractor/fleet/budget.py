"""The fleet's budget (``--fleet-requests-per-hour``): one token bucket every identity's run
draws from, wherever its worker is, and pauses that hold all of them.

:class:`SharedBudget` is the bucket; its state lives on the Dask scheduler, in a
``Variable`` changed under a ``Lock`` (:mod:`.coordinator`), so there is one whatever the
number of workers, and it outlives any of them. A run does not ask it for every request: its
:class:`FleetGate` leases a few requests at a time (:data:`LEASE`), so the scheduler sees
about one lease a second per identity at the service's pace, not one a request. A lease not
spent when a run ends is lost to the fleet: the budget errs on the side of sending fewer
requests, never more.

When the service pauses one identity (its budget headers say none is left, a quarantine, a
Retry-After), the gate pauses the fleet: a fleet budget exists because the limit may count
per application or per address rather than per identity, and then what one identity met,
every identity meets. Other runs learn of it at their next lease, so each sends at most its
lease's worth into the pause.

The clock is a function (wall-clock seconds), injected, so tests do not wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from extractor.clock import Clock
from extractor.service.limiter import MARGIN

#: Requests a run leases from the fleet's budget at a time.
LEASE: Final = 2
#: The bucket's burst: requests the fleet may send at once after a quiet spell.
BURST: Final = 20


@dataclass(frozen=True)
class Lease:
    """A budget's answer: ``granted`` requests; or none, and how long to wait."""

    granted: int
    wait: float = 0.0
    paused_until: float = 0.0  # the fleet's pause (wall-clock seconds), 0 when none
    reason: str = ""


class SharedBudget:
    """``per_hour`` requests an hour for the whole fleet, ``burst`` at most at once."""

    def __init__(self, per_hour: int, time: Callable[[], float], burst: int = BURST) -> None:
        if per_hour < 1:
            raise ValueError("a shared budget needs at least one request an hour")
        self.per_hour, self.burst, self._time = per_hour, burst, time
        self._tokens = float(min(burst, per_hour))
        self._filled_at = time()
        self._paused_until = 0.0
        self._reason = ""
        self.granted = 0  # requests leased so far
        self.pauses = 0  # pauses asked for by a member

    def state(self) -> dict[str, Any]:
        """The bucket as plain values, to keep between leases (on the scheduler)."""
        return {
            "per_hour": self.per_hour, "burst": self.burst, "tokens": self._tokens,
            "filled_at": self._filled_at, "paused_until": self._paused_until,
            "reason": self._reason, "granted": self.granted, "pauses": self.pauses,
        }  # fmt: skip

    @classmethod
    def restore(cls, state: dict[str, Any], time: Callable[[], float]) -> SharedBudget:
        budget = cls(int(state["per_hour"]), time, int(state["burst"]))
        budget._tokens, budget._filled_at = float(state["tokens"]), float(state["filled_at"])
        budget._paused_until, budget._reason = float(state["paused_until"]), state["reason"]
        budget.granted, budget.pauses = int(state["granted"]), int(state["pauses"])
        return budget

    def lease(self, want: int) -> Lease:
        """Up to ``want`` requests now, or the seconds until one is free."""
        now = self._time()
        if self._paused_until > now:
            wait = self._paused_until - now
            return Lease(0, wait, self._paused_until, self._reason)
        rate = self.per_hour / 3600
        self._tokens = min(float(self.burst), self._tokens + (now - self._filled_at) * rate)
        self._filled_at = now
        granted = min(want, int(self._tokens))
        if granted < 1:
            return Lease(0, (1 - self._tokens) / rate)
        self._tokens -= granted
        self.granted += granted
        return Lease(granted)

    def pause(self, until: float, reason: str) -> None:
        """Hold every member until ``until`` (wall-clock seconds)."""
        if until > self._paused_until:
            self._paused_until, self._reason = until, reason
            self.pauses += 1


class FleetGate:
    """A run's door to the fleet's budget: :meth:`take` before each request (the run's
    :class:`~extractor.service.limiter.RateLimiter` calls it after its own limits)."""

    def __init__(
        self,
        lease: Callable[[int], Lease],
        pause: Callable[[float, str], None],
        clock: Clock,
        want: int = LEASE,
    ) -> None:
        """``lease`` and ``pause`` reach the budget; they block (calls to the scheduler),
        so they are called on a thread, never on the event loop."""
        self._lease, self._pause, self.clock, self.want = lease, pause, clock, want
        self._tokens = 0
        self._lock = asyncio.Lock()
        self._pausing: set[asyncio.Future[None]] = set()
        self.paused_until = 0.0  # the fleet's pause, as the last lease said
        self.reason = ""

    async def take(self) -> None:
        """Wait until the fleet's budget lets one request go."""
        async with self._lock:
            while self._tokens < 1:
                lease = await asyncio.to_thread(self._lease, self.want)
                self.paused_until, self.reason = lease.paused_until, lease.reason
                if lease.granted:
                    self._tokens = lease.granted
                    break
                await self.clock.sleep(lease.wait + (MARGIN if lease.paused_until else 0.0))
            self._tokens -= 1

    def pause(self, until: float, reason: str) -> None:
        """The service asked this run to pause: the fleet pauses too (the leased requests
        left are given up: they would run into it)."""
        self._tokens = 0
        sent = asyncio.get_running_loop().run_in_executor(None, self._pause, until, reason)
        self._pausing.add(sent)
        sent.add_done_callback(self._pausing.discard)

    async def settled(self) -> None:
        """Every pause this run asked for has reached the budget."""
        await asyncio.gather(*self._pausing, return_exceptions=True)
