"""Telling a failing service from a failing batch, so a dead service costs a few requests,
not hours of the hourly budget.

Every data request's attempt reports its outcome here. The service is judged to be failing,
and the run stops (:class:`~extractor.errors.ServiceFailing`, resumable), when

- attempts keep failing across different batches with no success in between (``trip_after``
  in a row, from at least two batches): one bad batch fails alone, a dead service fails all;
- or a batch's halves both fail the same way, split after split (:data:`SAME_FAILURE_LEVELS`
  deep): a poison id fails one half at each level; two poison ids in one batch fail both
  halves once, never again below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from extractor.errors import ServiceFailing

#: Splits in a row whose two halves both fail the same way: random faults do that rarely
#: (a rate r of mixed kinds: far below r**6), a dead service at every split.
SAME_FAILURE_LEVELS: Final = 3
#: Failed attempts in a row, across batches, that stop a run: past what one wave of the
#: workers meets in a network blip (concurrency), retried once more.
EXTRA_AFTER_A_WAVE: Final = 2


@dataclass
class Health:
    """Shared by every worker of a run."""

    trip_after: int
    streak: int = 0
    streak_batches: set[str] = field(default_factory=set)
    last_error: str = ""

    @classmethod
    def for_workers(cls, concurrency: int) -> Health:
        return cls(trip_after=max(6, concurrency + EXTRA_AFTER_A_WAVE))

    def succeeded(self) -> None:
        self.streak, self.streak_batches = 0, set()

    def failed(self, batch: str, error: BaseException) -> None:
        """One failed attempt of ``batch``; ServiceFailing once the service looks dead."""
        self.streak += 1
        self.streak_batches.add(batch)
        self.last_error = f"{type(error).__name__}: {error}"
        if self.streak >= self.trip_after and len(self.streak_batches) >= 2:
            raise ServiceFailing(
                f"the service failed {self.streak} requests in a row across "
                f"{len(self.streak_batches)} batches (last: {self.last_error}); stopped to "
                "spare the hourly budget: run the same command later to resume"
            )

    def halves_failed(self, levels: int, what: str) -> None:
        """A split's two halves failed the same way, ``levels`` splits deep in a row;
        ServiceFailing once that is :data:`SAME_FAILURE_LEVELS`."""
        if levels >= SAME_FAILURE_LEVELS:
            raise ServiceFailing(
                f"every part of {what} fails the same way, split after split (last: "
                f"{self.last_error}); the service is failing, not one record: stopped to "
                "spare the hourly budget: run the same command later to resume"
            )


def same_failure(first: BaseException | None, second: BaseException | None) -> bool:
    """Both failed, with the same error (a dead service's errors do not differ)."""
    if first is None or second is None:
        return False
    return (type(first), str(first)) == (type(second), str(second))
