"""Telling a failing service from a failing batch, so a dead service costs a few requests,
not hours of the hourly budget.

Every data request's attempt reports its outcome here. The service is judged to be failing,
and the run stops (:class:`~extractor.errors.ServiceFailing`, resumable), when

- attempts keep failing across different batches with no success in between (``trip_after``
  in a row, each batch counting at most :data:`PER_BATCH` of them): one bad batch fails
  alone, however often it is retried and split, a dead service fails all;
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
#: Failed attempts of one batch (its halves included) that count towards the streak: a batch
#: holding a poison id fails at every retry and split, and with a few random faults of other
#: batches at the end of a run that alone would look like a dead service.
PER_BATCH: Final = 2


@dataclass
class Health:
    """Shared by every worker of a run."""

    trip_after: int
    streak: int = 0
    streak_batches: dict[str, int] = field(default_factory=dict)
    last_error: str = ""

    @classmethod
    def for_workers(cls, concurrency: int) -> Health:
        return cls(trip_after=max(6, concurrency + EXTRA_AFTER_A_WAVE))

    def succeeded(self) -> None:
        self.streak, self.streak_batches = 0, {}

    def failed(self, batch: str, error: BaseException) -> None:
        """One failed attempt of ``batch``; ServiceFailing once the service looks dead."""
        self.last_error = f"{type(error).__name__}: {error}"
        counted = self.streak_batches.get(batch, 0)
        if counted >= PER_BATCH:
            return
        self.streak_batches[batch] = counted + 1
        self.streak += 1
        if self.streak >= self.trip_after:
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
