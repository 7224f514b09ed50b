"""The service's budget, as its answers tell it: what is left, and when a request may go.

Every answer carries ``APILimitRemaining`` (what its window still takes, the answered request
counted) and ``APILimitReset`` (when that window ends, on the service's clock). They are
authoritative for the requests not yet in flight, whatever kind of window the service keeps
(one starting at the first request after the last ended, clock hours, back-to-back windows, a
sliding window):

- The newest count (the latest reset, and of those the smallest count: the latest arrival)
  holds every request answered before it; a request without an answer yet may not be in it.
  So a request goes only while that count is more than the requests in flight (and those
  lost on the way, which the service may have counted). At none left, every request waits
  for the reset. An answer from a window that has ended says nothing of the current one.
- A reset is placed on our clock by the service's own when the answers' ``Date`` shows its
  clock apart from ours (each ``Date``, whole seconds stamped between our sending and the
  answer, bounds how far; a service behind us by minutes is then no reason to run into its
  window), and one given in whole seconds is taken as the end of its second.
- After a reset nothing is known of the new window until an answer from it: requests then go
  as our own sends leave the last window's span, never more than a window's budget in any
  span of a window's length (by our own record). So a reset is followed at the rate, not by a
  burst that overruns a window that slides or began with our last requests.

The budget and the window's length are learned from the answers: the largest count plus the
request it came with, and the longest time from a request's sending to its window's end.
"""

from __future__ import annotations

import collections
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple

from extractor.service.servicetime import http_date

#: Seconds added to a window's end while its length is unknown: the service's clock is not ours.
MARGIN: Final = 1.0
#: Of a window's length, the margin after its end (a 10 s window loses 0.02 s, not 1 s of
#: every 10); only for windows that end (a sliding window's reset creeps on: our record guards
#: it). The answers' ``Date`` places the reset already; this is for services that send none.
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

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Told | None:
        """An answer's budget headers and ``Date``; None unless both budget headers are
        there and readable."""
        remaining = headers.get("APILimitRemaining", "").strip()
        text = headers.get("APILimitReset", "")
        reset = _iso(text)
        if not remaining.isdigit() or reset is None:
            return None
        return cls(int(remaining), reset, _resolution(text), http_date(headers.get("Date", "")))


class Hold(NamedTuple):
    """Until when a request waits: ``until`` plus ``slack`` (what the service wrote, and how
    much later it may mean); ``spent``: the window's count is spent (else our record holds)."""

    until: float
    slack: float = 0.0
    spent: bool = False


class ServiceBudget:
    """What the service still takes, for one run's requests (see the module's docstring)."""

    def __init__(self) -> None:
        self.limit = 0  # requests a window holds, as far as the answers showed
        self.window = 0.0  # a window's length, as far as the answers showed
        self._count: int | None = None  # the newest count of the current window; None: unknown
        self._reset = 0.0  # its reset as the service wrote it (which window it is)
        self._ends = 0.0  # its end, on our clock
        self._slack = 0.0  # how much later than written it may end (its resolution)
        self._jumped = True  # the last reset moved by a window (False: it creeps: sliding)
        self._lead = (-float("inf"), float("inf"))  # how far the service's clock is ahead
        self._flying: dict[int, float] = {}  # requests without an answer yet: when they went
        self._lost = 0  # requests that failed without an answer in the current window
        self._going = 0  # requests let through that have not gone yet (a fleet's gate)
        self._sent: collections.deque[float] = collections.deque()  # our sends, last window

    @property
    def known(self) -> tuple[int, float] | None:
        """Requests left and when the window ends (on our clock); None while unknown."""
        left = self._left()
        return None if left is None else (left, self._ends)

    def place(self, when: float) -> float:
        """A time on the service's clock, on ours (later rather than earlier)."""
        return when - self.lead

    @property
    def lead(self) -> float:
        """How far the service's clock is ahead of ours (at least): 0 while the answers'
        ``Date`` agrees with our clock to within its second."""
        least, most = self._lead
        return 0.0 if least <= 0 <= most else least

    def until(self, now: float) -> Hold:
        """When the next request may go (``now`` or earlier: at once)."""
        if self._count is not None and now >= self._ends - TICK:
            self._count, self._lost = None, 0  # a new window: its first answer says what it holds
        left = self._left()
        if left is None:
            return Hold(self._paced(now))
        if left <= 0:
            return Hold(self._ends - self._slack, self._slack + self._margin(), spent=True)
        return Hold(now)

    def take(self) -> None:
        """One request is let through (it goes once :meth:`went` says so)."""
        self._going += 1

    def went(self, ticket: int, now: float) -> None:
        """The request of ``ticket``, let through, went ``now``."""
        self._going -= 1
        self._flying[ticket] = now
        self._sent.append(now)
        if not self.window and len(self._sent) > UNTOLD_KEPT:
            self._sent.popleft()
        self._forget(now)

    def ended(self, ticket: int) -> None:
        """The request of ``ticket`` is over; without an answer, the service may have counted
        it all the same: it stays taken from the window's count."""
        if self._flying.pop(ticket, None) is not None and self._count is not None:
            self._lost += 1

    def observe(self, told: Told, ticket: int, now: float) -> None:
        """The answer to the request of ``ticket``."""
        sent_at = self._flying.pop(ticket, now)
        if told.date is not None:  # stamped after we sent, before now, and cut to the second
            least, most = self._lead
            self._lead = max(least, told.date - now), min(most, told.date + 1 - sent_at)
        self.limit = max(self.limit, told.remaining + 1)
        ends = self.place(told.reset) + told.resolution
        if ends <= sent_at:  # ended before the request went: the service's clock is behind
            ends = now + MARGIN  # by more than we know; hold its count for a moment
        else:
            self.window = max(self.window, ends - sent_at)
            if ends <= now:
                return  # an answer from a window that has ended (longer than it)
        self._count_in(told, ends)

    def _count_in(self, told: Told, ends: float) -> None:
        """Keep the newest count: the latest reset, and of those the smallest count."""
        if self._count is not None and told.reset < self._reset:
            return  # older news
        if self._count is None or told.reset > self._reset:
            step = told.reset - self._reset
            self._jumped = self._count is None or step >= self.window / 2
            self._count, self._reset, self._lost = told.remaining, told.reset, 0
        else:
            self._count = min(self._count, told.remaining)
        if ends >= self._ends:
            self._ends, self._slack = ends, told.resolution

    def _left(self) -> int | None:
        if self._count is None:
            return None
        return self._count - len(self._flying) - self._lost - self._going

    def _forget(self, now: float) -> None:
        """Drop our sends that left a window's span."""
        while self.window and self._sent and self._sent[0] <= now - self.window + TICK:
            self._sent.popleft()

    def _margin(self) -> float:
        if not self._jumped:
            return 0.0
        return min(MARGIN, WINDOW_MARGIN * self.window) if self.window else MARGIN

    def _paced(self, now: float) -> float:
        """When fewer than a window's budget of our sends are left in a window's span."""
        if not self.window:
            return 0.0
        self._forget(now)
        over = len(self._sent) + self._going - self.limit
        if over < 0:
            return 0.0
        # those let through and not gone yet leave the span a window after they go, at least
        return self._sent[over] + self.window if over < len(self._sent) else now + self.window


def _iso(text: str) -> float | None:
    """An ISO time as wall-clock seconds, UTC when it names no offset; None if unreadable."""
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def _resolution(text: str) -> float:
    """How much later than written an ISO time may be: one unit of its last digit (a time in
    whole seconds may have been cut, by up to a second)."""
    fraction = re.match(r"\.(\d*)", text.strip().partition("T")[2][8:])
    return 10.0 ** -len(fraction[1]) if fraction else 1.0
