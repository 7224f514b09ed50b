"""What time it is, how to wait, and the names of runs that derive from it.

Every part of a run that tells time or waits (the retry back-off, the rate limiter, the journal's
timestamps, the progress line, run statistics, the simulator and its budget) asks a
:class:`Clock`, handed down from :func:`extractor.engine.runner.run`. The system clock is the
default; :class:`ManualClock` lets tests of pauses, quarantines and budgets run in milliseconds
with the same code paths.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import secrets
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # imported where it waits: ``extractor --help`` loads no asyncio (40 ms)
    import asyncio


class Clock:
    """The system's clock: wall-clock seconds, a monotonic clock, and sleep."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (budgets, quarantine ends, HTTP dates)."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds for durations; never goes back."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        import asyncio

        await asyncio.sleep(seconds)

    def now(self) -> dt.datetime:
        """The current time, in UTC."""
        return dt.datetime.fromtimestamp(self.time(), dt.UTC)


SYSTEM: Final = Clock()

#: Turns of the event loop a manual clock gives the ready tasks before it moves time on, and
#: the real pause after them for threads and sockets (staging, parser processes) to answer.
_IDLE_TURNS: Final = 20
_REAL_PAUSE: Final = 0.001


class ManualClock(Clock):
    """Time that passes only when everyone waits for it.

    A sleeper is woken in order of its wake-up time once no task is ready to run (and threads
    have had a millisecond); time then jumps to that wake-up. A test's 2-second quarantine is
    over in a few loop turns, and two workers that sleep 1 s each at once wake together at +1 s,
    as they would on the wall clock. Share one with the simulator to keep both in step.
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start  # near real time: HTTP dates work
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._advancing: asyncio.Task[None] | None = None
        self.slept = 0.0  # how far time moved

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds`` (sleepers due by then wake at their next turn)."""
        self._now += seconds
        self.slept += seconds

    async def sleep(self, seconds: float) -> None:
        import asyncio

        if seconds <= 0:
            await asyncio.sleep(0)
            return
        woken = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), woken))
        if self._advancing is None or self._advancing.done():
            self._advancing = asyncio.create_task(self._advance())
        await woken

    async def _advance(self) -> None:
        while self._sleepers:
            await _idle()
            when, _, woken = heapq.heappop(self._sleepers)
            if woken.done():  # its sleeper was cancelled
                continue
            if when > self._now:
                self.advance(when - self._now)
            woken.set_result(None)


async def _idle() -> None:
    """Return once no task is ready to run: a few turns of the loop, then a real pause for
    threads and sockets, again while other tasks are ready (asyncio's ready queue is looked at
    where the loop has one, else the turns and the pause are all there is)."""
    import asyncio

    for _ in range(_IDLE_TURNS):
        await asyncio.sleep(0)
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    await asyncio.sleep(_REAL_PAUSE)
    while ready:  # noqa: ASYNC110 (polling the loop itself: nothing could set an event)
        await asyncio.sleep(_REAL_PAUSE)


def new_run_id(clock: Clock = SYSTEM) -> str:
    """A run's id: when it began, and a few random hex digits (two runs in one second)."""
    return clock.now().strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def utc_text(value: str | dt.datetime | None) -> str | None:
    """A time as people are shown it: in UTC, to the second, with its offset
    (``2026-12-07 17:01:29+00:00``); a naive one is taken as UTC, text that is no time is
    shown as it is."""
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return value or None
    elif value is None:
        return None
    else:
        when = value
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).isoformat(sep=" ", timespec="seconds")
