"""The service's time, as its answers tell it: the ``Date`` header of every reply.

A sync's watermark is compared by the service with the ``DateChanged`` it stamped itself
(``ChangedAfter``), so it must be a time on the service's clock, not ours: with the service
30 minutes behind us, a watermark on our clock skips every change of those 30 minutes. Each
reply's ``Date`` (whole seconds, stamped before the reply left) less our time when its
headers arrived is at most how far the service's clock is ahead of ours; the smallest of
them is kept, so the service's time this gives is never later than its clock's (a watermark
too early fetches a little again; one too late loses changes).
"""

from __future__ import annotations

import datetime as dt
import email.utils
from dataclasses import dataclass

from extractor.clock import SYSTEM, Clock


@dataclass
class ServiceTime:
    """The service's clock against ``clock`` (ours), from the replies seen so far."""

    clock: Clock = SYSTEM
    #: Seconds the service's clock is ahead of ours (negative: behind); None before a reply
    #: with a ``Date`` header.
    offset: float | None = None

    def observe(self, date: str) -> None:
        """Take a reply's ``Date`` header (absent or unreadable: ignored)."""
        when = http_date(date)
        if when is None:
            return
        seen = when - self.clock.time()
        self.offset = seen if self.offset is None else min(self.offset, seen)

    def now(self) -> dt.datetime:
        """The service's time now, in UTC (ours when it never said)."""
        return dt.datetime.fromtimestamp(self.clock.time() + (self.offset or 0.0), dt.UTC)


def http_date(text: str) -> float | None:
    """An HTTP date (``Date``) as wall-clock seconds; None when absent or unreadable."""
    try:
        when = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, by RFC 5322
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()
