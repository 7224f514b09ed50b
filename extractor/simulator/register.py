"""Master records that change one by one (customers, products): a :class:`Register`.

A register keeps, per id, only when the record was registered and last changed, its version
and whether it is active; the record itself is made from ``(seed, id, version)`` when it is
asked for (and kept until it changes), like the tenant's orders. Churn changes, deletes, adds
and deactivates records as a company does between two syncs; a record something else names
(an order its customer, a row its product) is never deleted: the service refuses that, so a
company with invoices is deactivated instead, where the register can deactivate.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from extractor.simulator.tenant import Churn, ChurnReport

Wire = dict[str, Any]


@dataclass
class Entry:
    """What a register keeps of one record."""

    registered: dt.datetime
    changed: dt.datetime
    version: int = 0
    active: bool = True


@dataclass(frozen=True)
class MasterChurn(Churn):
    """How many records a round of churn changes, deletes, adds and deactivates."""

    deactivated: int = 0


@dataclass(frozen=True)
class MasterReport(ChurnReport):
    """The ids a round of churn changed, deleted, added and deactivated."""

    deactivated: list[int]


#: No change at all.
UNCHANGED: Final = MasterChurn()
Make = Callable[[int, Entry], Wire]


class Register:
    """Records by id (see the module); ``referenced`` are those something else names."""

    def __init__(
        self,
        entries: dict[int, Entry],
        referenced: frozenset[int],
        make: Make,
        *,
        deactivates: bool,
    ) -> None:
        self.entries = entries
        self.referenced = referenced
        self.deactivates = deactivates
        self.issued = max(entries, default=0)  # an id is never given again
        self._make = make
        self._made: dict[int, Wire] = {}

    @property
    def ids(self) -> list[int]:
        """Every id the register holds, in order."""
        return sorted(self.entries)

    def wire(self, record_id: int) -> Wire:
        """The record as the service sends it."""
        made = self._made.get(record_id)
        if made is None:
            made = self._made[record_id] = self._make(record_id, self.entries[record_id])
        return made

    def churn(self, rng: random.Random, changes: MasterChurn, when: dt.datetime) -> MasterReport:
        """Change, delete, add and deactivate records at ``when`` (see the module): a record is
        picked once at most; a deletion the register refuses is a deactivation instead, or
        (where the register cannot deactivate) not made. What changed gets DateChanged
        ``when``; deleted records vanish."""
        if changes.deactivated and not self.deactivates:
            raise ValueError("these records cannot be deactivated")
        alive = self.ids
        changed = rng.sample(alive, min(changes.changed, len(alive)))
        taken = set(changed)
        free = [i for i in alive if i not in taken and i not in self.referenced]
        deleted = rng.sample(free, min(changes.deleted, len(free)))
        taken.update(deleted)
        refused = changes.deleted - len(deleted) if self.deactivates else 0
        active = [i for i in alive if i not in taken and self.entries[i].active]
        deactivated = rng.sample(active, min(changes.deactivated + refused, len(active)))
        for record_id in changed:
            self.entries[record_id].version += 1
        for record_id in deactivated:
            self.entries[record_id].active = False
        self._touch([*changed, *deactivated], when)
        for record_id in deleted:
            del self.entries[record_id]
            self._made.pop(record_id, None)
        added = list(range(self.issued + 1, self.issued + 1 + changes.added))
        self.issued += changes.added
        self.entries.update((record_id, Entry(when, when)) for record_id in added)
        return MasterReport(sorted(changed), sorted(deleted), added, sorted(deactivated))

    def _touch(self, record_ids: Iterable[int], when: dt.datetime) -> None:
        for record_id in record_ids:
            self.entries[record_id].changed = when
            self._made.pop(record_id, None)


def history(
    rng: random.Random, ids: Iterable[int], first: dt.datetime, last: dt.datetime
) -> dict[int, Entry]:
    """Entries for ``ids``: registered between ``first`` and ``last``, last changed some time
    after (never after ``last``), now and then to the microsecond."""
    span = int((last - first).total_seconds())
    entries = {}
    for record_id in ids:
        registered = first + dt.timedelta(seconds=rng.randrange(span))
        later = dt.timedelta(seconds=rng.randrange(3 * 365 * 86400))
        if rng.random() < 0.3:
            later += dt.timedelta(microseconds=rng.randrange(1_000_000))
        entries[record_id] = Entry(registered, min(registered + later, last))
    return entries


def with_unnamed(rng: random.Random, named: frozenset[int]) -> list[int]:
    """``named`` and about a tenth as many ids more that nothing names (from the same range of
    ids, 1 to 99,999), in order."""
    others: set[int] = set()
    while len(others) < len(named) // 10:
        candidate = rng.randint(1, 99_999)
        if candidate not in named:
            others.add(candidate)
    return sorted(named | others)
