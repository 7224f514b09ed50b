"""What the runs of a fleet share, kept on the Dask scheduler: the shared budget and the board.

The scheduler's own primitives hold it, not an actor: an actor lives on a worker, and a
worker that dies (the case a fleet must survive) would take the budget with it and fail
every task that holds its handle. Here a worker's death loses nothing but its run, which the
scheduler starts again and which resumes from its journal.

- The budget (``--fleet-requests-per-hour``): a :class:`~.budget.SharedBudget`'s state in
  the ``Variable`` ``extractor-<run>-budget``, read and written under the ``Lock`` of the
  same name: a lease is four small messages to the scheduler. A lock held by a worker that
  died is freed when its lease times out (Dask's ``locks.lease-timeout``, 30 s by default).
- The board: each run puts its counters on the ``Queue`` ``extractor-<run>-board`` every
  second; the command that started the fleet drains it for its progress line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final, cast

from extractor.fleet.budget import Lease, SharedBudget

#: Seconds a member waits for the scheduler to answer about the budget.
SCHEDULER_TIMEOUT: Final = 60.0


@dataclass(frozen=True)
class FleetLink:
    """How a run reaches its fleet's shared state (pickled into each task)."""

    run_id: str
    per_hour: int = 0  # the fleet's shared budget; 0: none

    def name(self, part: str) -> str:
        return f"extractor-{self.run_id}-{part}"


class Channel:
    """A run's side of the link, opened in its task's thread (where Dask finds its worker);
    its calls block, so a run makes them on a thread of its own, never on its event loop."""

    def __init__(self, link: FleetLink) -> None:
        from distributed import Lock, Queue, Variable

        self.link = link
        self._lock = cast(Any, Lock(link.name("budget")))  # type: ignore[no-untyped-call]
        self._budget = cast(Any, Variable(link.name("budget")))  # type: ignore[no-untyped-call]
        self._board = cast(Any, Queue(link.name("board")))  # type: ignore[no-untyped-call]

    def lease(self, want: int) -> Lease:
        with self._lock:
            budget = SharedBudget.restore(self._budget.get(SCHEDULER_TIMEOUT), time.time)
            lease = budget.lease(want)
            self._budget.set(budget.state())
        return lease

    def pause(self, until: float, reason: str) -> None:
        with self._lock:
            budget = SharedBudget.restore(self._budget.get(SCHEDULER_TIMEOUT), time.time)
            budget.pause(until, reason)
            self._budget.set(budget.state())

    def report(self, identity: str, counters: dict[str, Any]) -> None:
        self._board.put({"identity": identity, **counters})


class Board:
    """The starting command's side: sets the budget up, reads the board, tidies up."""

    def __init__(self, link: FleetLink, client: Any) -> None:
        from distributed import Queue, Variable

        self.link = link
        budget, board = link.name("budget"), link.name("board")
        self._budget = cast(Any, Variable(budget, client=client))  # type: ignore[no-untyped-call]
        self._board = cast(Any, Queue(board, client=client))  # type: ignore[no-untyped-call]
        self.latest: dict[str, dict[str, Any]] = {}
        if link.per_hour:
            self._budget.set(SharedBudget(link.per_hour, time.time).state())

    def read(self) -> dict[str, dict[str, Any]]:
        """Each run's latest counters."""
        if self._board.qsize():
            for counters in self._board.get(batch=True):
                self.latest[counters["identity"]] = counters
        return self.latest

    def granted(self) -> int | None:
        """Requests the shared budget leased (None: no shared budget)."""
        if not self.link.per_hour:
            return None
        return int(self._budget.get(SCHEDULER_TIMEOUT)["granted"])

    def close(self) -> None:
        self._budget.delete()
        self._board.close()
