"""GetOrderSyncList: the OrderIds a run plans, and what becomes of the ids a partial run left.

An id the service listed but did not return (deleted between the listing and its
GetInvoices, or one it lists and never returns) is not carried from run to run forever. The
next run lists again what the partial run covered (its ``since``, the ChangedAfter of a
listing that holds all of its ids):

- an id no longer listed is **gone**: settled, counted in the summary, not a failure;
- an id still listed is asked for again; one not returned that second time either is
  **missing twice**: reported once, then settled (not asked for again until the service
  lists it anew: a sync lists it again when its DateChanged moves).

With ``--reconcile``, the full listing a run makes before publishing settles its missing
and failed ids that the service no longer lists at once (:func:`gone_from`).
"""

from __future__ import annotations

import datetime as dt
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from extractor.engine.state import RunState
from extractor.engine.workers import Run
from extractor.ids import Ids, among, ids_of, unique, without
from extractor.operations import INVOICES
from extractor.records import orders


@dataclass(frozen=True)
class OrderRun:
    """An invoices run's journal as the invoices job reads it: its plan of OrderIds, what
    the service did not return, and what became of those ids.

    The plan event holds ``ids`` (the plan), ``since`` (the ChangedAfter of a listing that
    holds every planned id; None: the full listing), and for a run that fetches again what a
    partial one could not: ``gone`` (its ids no longer listed) and ``again`` (the ids asked
    for a second time; or ``first``, the others, when fewer). A staged event holds its
    ``ids`` and the ``missing`` ones; a failed event the ``ids`` that failed alone; a
    ``gone`` note, ids the full listing made to reconcile no longer holds."""

    state: RunState

    @property
    def planned(self) -> Ids:
        return _ids((self.state.plan or {}).get("ids"))

    @property
    def since(self) -> str | None:
        return (self.state.plan or {}).get("since")

    @property
    def again(self) -> Ids:
        """Planned ids asked for a second time (see :attr:`missing`)."""
        plan = self.state.plan or {}
        if "first" in plan:
            return without(self.planned, ids_of(plan["first"]))
        return ids_of(plan.get("again", ()))

    @property
    def gone(self) -> Ids:
        """Settled: the service no longer lists them."""
        gone = ids_of((self.state.plan or {}).get("gone", ()))
        for note in self.state.notes_of("gone"):
            gone.extend(note["ids"])
        return unique(gone)

    @property
    def missing(self) -> Ids:
        """Ids a staged batch asked for and the service did not return (gone ones too)."""
        missing = ids_of(())
        for event in self.state.staged.values():
            missing.extend(event.get("missing", ()))
        return missing

    @property
    def not_returned(self) -> Ids:
        """Missing for the first time, and still listed as far as the run knows: the next
        run lists them again and asks for those still listed once more."""
        return without(without(self.missing, self.again), self.gone)

    @property
    def missing_twice(self) -> Ids:
        """Listed, and still listed, but not returned by this run either: settled, reported
        once, not asked for again until the service lists them anew."""
        return without(among(self.missing, self.again), self.gone)

    @property
    def failures(self) -> list[Mapping[str, Any]]:
        """The failed events of ids (each with its error)."""
        return [event for event in self.state.failed.values() if "ids" in event]

    @property
    def failed_ids(self) -> set[int]:
        return {order_id for failure in self.failures for order_id in failure["ids"]}

    @property
    def still_failed(self) -> set[int]:
        """Ids that failed alone and that the service still lists, as far as the run knows."""
        failed, gone = self.failed_ids, self.gone
        return set(without(ids_of(failed), gone)) if failed and gone else failed

    def remaining(self) -> Ids:
        """Planned ids neither staged nor failed, in plan order."""
        done = ids_of(self.failed_ids)
        for event in self.state.staged.values():
            done.extend(event.get("ids", ()))
        return without(self.planned, done)

    def carried(self) -> Carried:
        """What this finished partial run leaves for the next to fetch again."""
        missing = self.not_returned
        ids = unique(ids_of(sorted(self.still_failed)) + missing)
        settled = len(self.missing_twice) + len(self.gone)
        state = self.state
        return Carried(state.run_id, ids, state.as_of, missing, self.since, settled)


@dataclass(frozen=True)
class Carried:
    """What a finished partial run could not fetch, for the next run to fetch again.

    Its ids are listed again first: those the service no longer lists are settled (gone),
    and those it did not return (``missing``) are asked for a second time, after which they
    are settled too. A partial run that left nothing to fetch again (everything it missed
    is settled) is carried with no ids: the next run finishes the job."""

    run_id: str
    ids: Ids  # failed alone, or not returned by the service
    as_of: str | None  # when that run began listing (a retry covers no later changes)
    missing: Ids = field(default_factory=lambda: ids_of(()))  # of ``ids``, those not returned
    since: str | None = None  # the ChangedAfter of a listing that holds every one of ``ids``
    settled: int = 0  # ids that run settled: no longer listed, or not returned twice


async def list_ids(
    run: Run, changed_after: dt.datetime | None, registered_after: dt.datetime | None
) -> Ids:
    """GetOrderSyncList: the ids changed after ``changed_after`` (None: every id), within
    RegisteredAfter; each once (the service may repeat one)."""
    params = orders.sync_params(changed_after, registered_after)
    assert INVOICES.listing is not None
    stream = await run.call(INVOICES.listing, params, orders.id_stream)
    return unique(stream.ids)


@dataclass(frozen=True)
class Relisted:
    """The ids a partial run left, listed again."""

    kept: Ids  # still listed: fetched again
    again: Ids  # of ``kept``, those not returned before: asked for the second time
    gone: Ids  # no longer listed: settled

    def journaled(self, ids: Ids) -> dict[str, Ids]:
        """The plan event's ``ids`` (the run's plan, ``kept`` among them), ``gone``, and
        ``again``, or the planned ids not asked for again when they are fewer (a rerun of
        a backfill asks again for nearly all it plans)."""
        others = without(ids, self.again)
        again = {"again": self.again} if len(self.again) <= len(others) else {"first": others}
        return {"ids": ids, "gone": self.gone} | again


async def relist(
    run: Run, carried: Carried, listed: Ids, registered_after: dt.datetime | None
) -> Relisted:
    """``carried``'s ids that the service still lists. ``listed``: what this run listed
    anyway (a sync's changes); the ids not in it are looked for in a listing of what the
    partial run covered."""
    unchecked = without(carried.ids, listed)
    gone = ids_of(())
    if unchecked:
        covering = await list_ids(run, when(carried.since), registered_after)
        gone = without(unchecked, covering)
    kept = without(carried.ids, gone)
    return Relisted(kept, among(carried.missing, kept), gone)


def gone_from(state: OrderRun, present: Ids) -> Ids:
    """The run's missing and failed ids that ``present`` (the full listing) does not hold."""
    unfetched = unique(ids_of(sorted(state.still_failed)) + without(state.missing, state.gone))
    return without(unfetched, present)


def _ids(value: Ids | list[int] | None) -> Ids:
    """A journaled list of ids as an array (replayed ones are arrays already: not copied)."""
    return value if isinstance(value, array) else ids_of(value or ())


def oldest(*since: str | None) -> str | None:
    """The earliest of ChangedAfter values (None, the full listing, is the earliest)."""
    if any(value is None for value in since):
        return None
    return min(since, key=lambda value: when(value) or dt.datetime.min)


def when(since: str | None) -> dt.datetime | None:
    return None if since is None else dt.datetime.fromisoformat(since)
