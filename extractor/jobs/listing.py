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
from dataclasses import dataclass

from extractor import soap
from extractor.engine.history import Carried
from extractor.engine.state import RunState
from extractor.engine.workers import Run
from extractor.ids import Ids, among, ids_of, unique, without
from extractor.records import orders


async def list_ids(
    run: Run, changed_after: dt.datetime | None, registered_after: dt.datetime | None
) -> Ids:
    """GetOrderSyncList: the ids changed after ``changed_after`` (None: every id), within
    RegisteredAfter; each once (the service may repeat one)."""
    params = orders.sync_params(changed_after, registered_after)
    stream = await run.call(soap.GET_ORDER_SYNC_LIST, params, orders.id_stream)
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


def gone_from(state: RunState, present: Ids) -> Ids:
    """The run's missing and failed ids that ``present`` (the full listing) does not hold."""
    unfetched = unique(ids_of(sorted(state.still_failed)) + without(state.missing, state.gone))
    return without(unfetched, present)


def oldest(*since: str | None) -> str | None:
    """The earliest of ChangedAfter values (None, the full listing, is the earliest)."""
    if any(value is None for value in since):
        return None
    return min(since, key=lambda value: when(value) or dt.datetime.min)


def when(since: str | None) -> dt.datetime | None:
    return None if since is None else dt.datetime.fromisoformat(since)
