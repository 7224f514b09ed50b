"""What a run's commits to the Delta tables say of it: the watermark, and what to fetch again.

Each commit of a run carries, in its metadata, ``extractor.watermark`` (the run's as-of time:
the service's time when it began listing), ``extractor.run_id``, in a fleet's table
``extractor.identity``, and on the invoice tables ``extractor.refetch``: the OrderIds a
lagging replica answered with a record older than the one stored, which the next sync fetches
again whether the service lists them or not. A table group's state is that of the latest
commit of a run of its identity, so the watermark and the ids to fetch again move together,
with the data.

Resets (``extractor reset``) are commits too, with no data: a run id of their own
(``reset-...``), and either a watermark moved back (``extractor.watermark``; the ids to fetch
again are carried over), or ``extractor.full_refresh`` in its place: no watermark, so the next
sync fetches the table whole, and replaces the table (its identity's part) with what it
fetched, in one commit, instead of merging it. Until that commit the table stays as it was,
readable; a sync that stops before it leaves the mark, and the next one refreshes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Final

from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from extractor.errors import OutputError, first_line
from extractor.output.runinfo import RunInfo
from extractor.output.scope import WHOLE, Scope
from extractor.output.targets import Target

WATERMARK: Final = "extractor.watermark"
RUN_ID: Final = "extractor.run_id"
IDENTITY_KEY: Final = "extractor.identity"
REFETCH: Final = "extractor.refetch"
FULL_REFRESH: Final = "extractor.full_refresh"
#: The tables a sync keeps a watermark for (the others are fetched whole at every sync).
KEPT: Final = ("invoices", "invoice_rows", "transactions", "customers", "products")
#: Look this far back in a table's history for the last commit of a run, then everywhere.
RECENT_COMMITS: Final = 100


def open_table(target: Target, name: str) -> DeltaTable | None:
    """The Delta table ``name`` of ``target``, or None before its first commit."""
    try:
        return DeltaTable(target.table_uri(name), storage_options=target.storage_options())
    except TableNotFoundError:
        return None
    except (DeltaError, OSError) as exc:
        raise OutputError(f"cannot read the Delta table {name}: {first_line(exc)}") from None


def commit(run: RunInfo, scope: Scope = WHOLE, refetch: Sequence[int] = ()) -> CommitProperties:
    """The commit's metadata: the run, the watermark it advances to, whose it is, and the ids
    the next sync fetches again."""
    metadata = {WATERMARK: run.as_of.isoformat(), RUN_ID: run.run_id}
    if scope.identity:
        metadata[IDENTITY_KEY] = scope.identity
    if refetch:
        metadata[REFETCH] = ",".join(str(order_id) for order_id in refetch)
    return CommitProperties(custom_metadata=metadata)


def reset(
    run_id: str, to: dt.datetime | None, scope: Scope = WHOLE, refetch: str = ""
) -> CommitProperties:
    """A reset's commit: the watermark moved back ``to`` (the ids to fetch again, ``refetch``,
    kept), or with None a full refresh asked of the next sync."""
    metadata = {RUN_ID: run_id}
    if to is None:
        metadata[FULL_REFRESH] = "requested"
    else:
        metadata[WATERMARK] = to.isoformat()
        if refetch:
            metadata[REFETCH] = refetch
    if scope.identity:
        metadata[IDENTITY_KEY] = scope.identity
    return CommitProperties(custom_metadata=metadata)


def watermark(table: DeltaTable, scope: Scope = WHOLE) -> dt.datetime | None:
    """The watermark of the table's last run commit (of ``scope``), or None (also while a
    full refresh waits)."""
    found = last_run_commit(table, scope)
    if found is None or WATERMARK not in found:
        return None
    return dt.datetime.fromisoformat(str(found[WATERMARK]))


def full_refresh(table: DeltaTable, scope: Scope = WHOLE) -> bool:
    """Whether a full refresh of the table (``scope``'s part) waits for the next sync."""
    found = last_run_commit(table, scope)
    return found is not None and FULL_REFRESH in found


def refetch(table: DeltaTable, scope: Scope = WHOLE) -> tuple[int, ...]:
    """The ids the table's last run commit (of ``scope``) says to fetch again."""
    found = last_run_commit(table, scope) or {}
    listed = str(found.get(REFETCH, ""))
    return tuple(int(part) for part in listed.split(",") if part.strip().isdigit())


def last_run_commit(table: DeltaTable, scope: Scope = WHOLE) -> dict[str, Any] | None:
    """The latest commit of a run (of ``scope``'s identity, in a fleet's table)."""
    for limit in (RECENT_COMMITS, None):
        for found in table.history(limit):
            marked = WATERMARK in found or FULL_REFRESH in found
            if marked and RUN_ID in found and found.get(IDENTITY_KEY) == scope.identity:
                return found
    return None
