"""The service's budget, as its answers tell it: what is left, and when a request may go.

Every answer carries ``APILimitRemaining`` (what its window still takes, the answered request
counted) and ``APILimitReset`` (when that window ends, on the service's clock). They are
authoritative for the requests not yet in flight, whatever kind of window the service keeps
(one starting at the first request after the last ended, clock hours, back-to-back windows, a
sliding window):

- The newest answer's count, less every request sent after the answered one and every earlier
  one still in flight (it may have overtaken them), is what the service still takes; each
  request sent takes one. At none, every request waits for the reset. An answer from a
  window that has ended says nothing of the current one.
- A reset is placed on our clock by the service's own when answers carry a ``Date`` (the
  service behind us by minutes is then no reason to run into its window), and one given in
  whole seconds is taken as the end of its second.
- After a reset nothing is known of the new window until an answer from it: requests then go
  as our own sends leave the last window's span, never more than a window's budget in any
  span of a window's length (by our own record). So a reset is followed at the rate, not by a
  burst that overruns a window that slides or began with our last requests.

The budget and the window's length are learned from the answers: the largest count plus the
request it came with, and the longest time from a request's sending to its window's end.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Final

#: Seconds added to a window's end while its length is unknown: the service's clock is not ours.
MARGIN: Final = 1.0
#: Of a window's length, the margin after its end (a 10 s window loses 0.1 s, not 1 s of every
#: 10); only for windows that end (a sliding window's reset creeps on: our record guards it).
WINDOW_MARGIN: Final = 0.002
#: Waits shorter than this are none: a clock near the epoch's now cannot tell them apart.
TICK: Final = 1e-6
#: Sends kept while no answer has told the window's length (a service with no budget headers
#: never does): the first ones count once it is told.
UNTOLD_KEPT: Final = 4096


@dataclass(frozen=True)
class Told:
    """The budget headers of one answer, and when it was stamped by the service, if it said."""

    remaining: int
    reset: float  # wall-clock seconds, on the service's clock
    resolution: float = 0.0  # how much later the reset may be than written (1.0: whole seconds)
    date: float | None = None  # the answer's ``Date`` (whole seconds, the service's clock)


class ServiceBudget:
    """What the service still takes, for one run's requests (see the module's docstring)."""

    def __init__(self) -> None:
        self.limit = 0  # requests a window holds, as far as the answers showed
        self.window = 0.0  # a window's length, as far as the answers showed
        self._left: int | None = None  # requests the current window still takes; None: unknown
        self._ends = 0.0  # when it ends, on our clock
        self._seen = 0  # the ticket whose answer the count comes from
        self._jumped = True  # the last reset moved by a window (False: it creeps: sliding)
        self._lead: float | None = None  # how far the service's clock is ahead, at least
        self._sent: collections.deque[float] = collections.deque()  # our sends, last window
        self._going = 0  # requests let through that have not gone yet (a fleet's gate)

    @property
    def known(self) -> tuple[int, float] | None:
        """Requests left and when the window ends (on our clock); None while unknown."""
        return None if self._left is None else (self._left, self._ends)

    def place(self, when: float) -> float:
        """A time on the service's clock, on ours (later rather than earlier)."""
        return when - self._lead if self._lead is not None else when

    def until(self, now: float) -> tuple[float, bool]:
        """When the next request may go (``now`` or earlier: at once), and whether that is the
        window's end (its count is spent) rather than our own record of the window."""
        if self._left is not None and now >= self._ends - TICK:
            self._left = None  # a new window: what it holds is known from its first answer
        if self._left is not None and self._left <= 0:
            return self._ends + self._margin(), True
        return self._paced(now), False

    def take(self) -> None:
        """One request is let through (it goes once :meth:`went` says so)."""
        if self._left is not None:
            self._left -= 1
        self._going += 1

    def went(self, now: float) -> None:
        """A request let through went ``now``."""
        self._going -= 1
        self._sent.append(now)
        if not self.window and len(self._sent) > UNTOLD_KEPT:
            self._sent.popleft()

    def observe(self, told: Told, ticket: int, sent_at: float, unseen: int, now: float) -> None:
        """The answer to the request of ``ticket``, sent at ``sent_at``; ``unseen``: requests
        its count cannot hold (sent after it, or before it and still in flight)."""
        if told.date is not None:
            lead = told.date - now  # the Date was stamped before now: a lower bound
            self._lead = lead if self._lead is None else max(self._lead, lead)
        self.limit = max(self.limit, told.remaining + 1)
        ends = self.place(told.reset) + told.resolution
        if ends <= sent_at:  # ended before the request went: the service's clock is behind
            ends = now + MARGIN  # by more than we know; hold its count for a moment
        elif ends <= now:
            return  # an answer from a window that has ended
        else:
            self.window = max(self.window, ends - sent_at)
        left = told.remaining - unseen
        if self._left is None or ticket > self._seen:  # the newest answer knows best
            if ends != self._ends:
                self._jumped = abs(ends - self._ends) >= self.window / 2
            self._left, self._ends = left, ends
            self._seen = max(self._seen, ticket)
        else:
            self._left = min(self._left, left)  # an older one, overtaken: count it too

    def _margin(self) -> float:
        if not self._jumped:
            return 0.0
        return min(MARGIN, WINDOW_MARGIN * self.window) if self.window else MARGIN

    def _paced(self, now: float) -> float:
        """When fewer than a window's budget of our sends are left in a window's span."""
        if not self.window:
            return 0.0
        while self._sent and self._sent[0] <= now - self.window + TICK:
            self._sent.popleft()
        over = len(self._sent) + self._going - self.limit
        if over < 0:
            return 0.0
        # those let through and not gone yet leave the span a window after they go, at least
        return self._sent[over] + self.window if over < len(self._sent) else now + self.window
