"""The service's rate budget as the simulator keeps it: requests per window, then a quarantine.

Every request counts as it arrives (Login and listings too), also one that is refused. How a
window runs is :data:`WindowKind`:

- ``"restart"``: a window starts with the first request after the last one ended (the default);
- ``"clock"``: windows on the clock, back to back from the epoch (a 3600 s window: clock hours);
- ``"fixed"``: windows back to back from the first request;
- ``"sliding"``: the last ``window`` seconds, whenever a request arrives.

Each answer says what the window still takes after it (``APILimitRemaining``) and when it
resets (``APILimitReset``: the window's end; a sliding window's, when its oldest request leaves
it), to the microsecond or, as some services write it, in whole seconds (cut, not rounded).
Past the budget the service quarantines the client: everything is refused until it ends.

:func:`use` measures how much of the allowed rate a run's requests used.
"""

from __future__ import annotations

import collections
import datetime as dt
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, Literal, get_args

if TYPE_CHECKING:
    from extractor.simulator.faults import FaultConfig

WindowKind = Literal["restart", "clock", "fixed", "sliding"]
WINDOW_KINDS: Final[tuple[WindowKind, ...]] = get_args(WindowKind)
_EXACT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
_WHOLE: Final = "%Y-%m-%dT%H:%M:%S"


class Budget:
    """``limit`` requests per ``window`` seconds of ``kind``; past it, ``quarantine`` seconds
    of refusals. A limit of 0 is no limit (and no headers)."""

    def __init__(
        self,
        limit: int,
        window: float,
        quarantine: float,
        kind: WindowKind = "restart",
        whole_seconds: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limit, self.window, self.length, self.kind = limit, window, quarantine, kind
        self._format = _WHOLE if whole_seconds else _EXACT
        self._clock = clock
        self._start: float | None = None  # the current window's start (not for "sliding")
        self._used = 0
        self._recent: collections.deque[float] = collections.deque()  # "sliding": arrivals
        self.windows: list[int] = []  # requests admitted in each window that ended
        self.starts: list[float] = []  # when each window began (not for "sliding")
        self.arrivals: list[float] = []  # when each admitted request arrived
        self.quarantined_until = 0.0
        self.arrived_in_quarantine = 0  # requests that came while a quarantine was on

    @classmethod
    def of(cls, config: FaultConfig, clock: Callable[[], float] = time.time) -> Budget:
        """The budget ``config`` asks for."""
        return cls(
            config.budget, config.window, config.quarantine, config.window_kind,
            config.whole_second_reset, clock,
        )  # fmt: skip

    def start_quarantine(self, seconds: float) -> None:
        """As if another client of the same account had just exceeded the limit."""
        self.quarantined_until = self._clock() + seconds

    def admit(self) -> tuple[str | None, dict[str, str]]:
        """Count one request: the quarantine fault text (None when admitted), and the headers."""
        now = self._clock()
        if self.limit:
            self._count(now)
        if now < self.quarantined_until:
            self.arrived_in_quarantine += 1
            return self._blocked(), self.headers()
        if self.limit and self._used > self.limit:
            self.quarantined_until = now + self.length
            return self._blocked(), self.headers()
        if self.limit:
            self.arrivals.append(now)
        return None, self.headers()

    def _count(self, now: float) -> None:
        if self.kind == "sliding":
            while self._recent and self._recent[0] <= now - self.window:
                self._recent.popleft()
            self._recent.append(now)
            self._used = len(self._recent)
            return
        start = self._window_at(now)
        if start != self._start:
            if self._start is not None:
                self.windows.append(min(self._used, self.limit))
            self._start, self._used = start, 0
            self.starts.append(start)
        self._used += 1

    def _window_at(self, now: float) -> float:
        """The start of the window a request arriving ``now`` counts in."""
        if self.kind == "clock":
            return math.floor(now / self.window) * self.window
        if self._start is None or (self.kind == "restart" and now >= self._start + self.window):
            return now
        if self.kind == "fixed":
            return self._start + math.floor((now - self._start) / self.window) * self.window
        return self._start

    def headers(self) -> dict[str, str]:
        if not self.limit:
            return {}
        reset = dt.datetime.fromtimestamp(self.resets_at(), dt.UTC)
        return {
            "APILimitRemaining": str(max(self.limit - self._used, 0)),
            "APILimitReset": reset.strftime(self._format),
        }

    def resets_at(self) -> float:
        """When the current window ends (a sliding one: when its oldest request leaves)."""
        if self.kind == "sliding":
            return (self._recent[0] if self._recent else self._clock()) + self.window
        start = self._start if self._start is not None else self._clock()
        return start + self.window

    def use(self) -> float | None:
        """The share of the allowed rate the admitted requests used (:func:`use`)."""
        if not self.limit:
            return None
        return use(self.arrivals, self.limit, self.window, self.starts)

    def _blocked(self) -> str:
        ends = dt.datetime.fromtimestamp(self.quarantined_until, dt.UTC)
        return (
            f"Limit exceeded by {max(self._used - self.limit, 1)}. Request is blocked. "
            f"Quarantine ends at {ends.strftime(_EXACT)}"
        )

    @property
    def in_quarantine(self) -> bool:
        return self._clock() < self.quarantined_until


def use(
    arrivals: Sequence[float], limit: int, window: float, starts: Sequence[float] = ()
) -> float | None:
    """The requests that arrived from the second window's start to the last one's, against
    what the allowed rate takes in that time: the share of it a run used, leaving out the
    first window (a burst any client may send) and the last (the run ends in it). A gap
    between windows (one that starts only at a request) counts as time not used. A sliding
    window has no starts: whole windows from one after the first request are taken. None for
    a run shorter than three windows."""
    if len(starts) >= 3:
        begin, end = starts[1], starts[-1]
    elif not starts and arrivals:
        begin = arrivals[0] + window
        end = begin + window * math.floor((arrivals[-1] - begin) / window)
    else:
        return None
    if end <= begin:
        return None
    used = sum(1 for at in arrivals if begin <= at < end)
    return used / (limit * (end - begin) / window)
