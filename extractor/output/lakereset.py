"""Resets of a sync's Delta tables: a watermark moved back, or a full refresh asked of the
next sync (``extractor reset OUT --watermark TABLE --to T``, ``--full TABLE``).

Both are commits of no data to the table (:func:`~extractor.output.lakemarks.reset`), so
they are what the next sync reads as the table's last run commit: with the watermark moved
back to ``T``, it lists the changes since ``T`` (less ``--overlap``) again and merges them;
with a full refresh asked, it has no watermark, fetches the table whole, and replaces the
table's records with what it fetched in one commit. Until then the table stays as it was.

A table group moves together (``invoices`` and ``invoice_rows``); a fleet's table, each
identity's part that a run has committed to. A watermark only moves back: to a time in the
future, or after the table's watermark, it is refused, and so is a table without one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Final

from deltalake import DeltaTable

from extractor.clock import utc_text
from extractor.errors import UsageError
from extractor.operations import LISTS, TABLES
from extractor.output.delta import Lake
from extractor.output.lakefiles import IDENTITY, Scope
from extractor.output.lakemarks import (
    IDENTITY_KEY,
    KEPT,
    REFETCH,
    RUN_ID,
    full_refresh,
    last_run_commit,
    reset,
    watermark,
)
from extractor.output.targets import Target

#: The tables that move together, by any of their names: the rows' commit comes first.
GROUPS: Final = {
    "invoices": ("invoice_rows", "invoices"),
    "invoice_rows": ("invoice_rows", "invoices"),
}
#: What a sync fetches whole every time (a full refresh of it would change nothing).
WHOLE_EVERY_SYNC: Final = frozenset(
    spec.table
    for spec in LISTS
    if spec.table not in KEPT and (spec.per is None or spec.per.held_by is None)
)
#: The run id of a reset's commits starts with it.
RESET_PREFIX: Final = "reset-"


@dataclass(frozen=True)
class Reset:
    """What a reset of ``asked`` commits: to each of ``tables``, for each of ``scopes``,
    the watermark moved back ``to`` (None: a full refresh); ``now``, each part's watermark
    as it is, to say what changes."""

    asked: str
    tables: tuple[str, ...]
    scopes: tuple[Scope, ...]
    to: dt.datetime | None
    now: dict[str, dt.datetime | None] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """What the reset changes, a line a table and identity, for people."""
        what = (
            "full refresh at the next sync"
            if self.to is None
            else f"watermark to {_shown(self.to)}"
        )
        return [f"{name}: {_shown(mark)} -> {what}" for name, mark in self.now.items()]

    def commit(self, target: Target, run_id: str) -> None:
        """Commit the reset to every table and part it names (each table's commit carries
        the ids its last run said to fetch again)."""
        for scope in self.scopes:
            lake = Lake(target, scope)
            for name in self.tables:
                table = lake.table(name)
                if table is None:
                    continue
                found = last_run_commit(table, scope) or {}
                refetch = str(found.get(REFETCH, "")) if self.to is not None else ""
                lake.mark(name, reset(run_id, self.to, scope, refetch))


def watermark_reset(target: Target, asked: str, to: dt.datetime, now: dt.datetime) -> Reset:
    """The reset moving ``asked``'s watermark back to ``to`` (``now``: our time, in UTC);
    UsageError, one line, when it cannot be done."""
    _known(asked)
    if asked not in KEPT:
        raise UsageError(
            f"{asked} keeps no watermark: a sync fetches it whole every time; nothing to reset"
        )
    to = to if to.tzinfo is not None else to.replace(tzinfo=dt.UTC)
    if to > now:
        raise UsageError(
            f"--to {_shown(to)} is in the future (now {_shown(now)}): give the time from which "
            f"the next sync is to read the changes to {asked} again"
        )
    found = _found(target, asked, to)
    for name, mark in found.now.items():
        if mark is None:
            raise UsageError(
                f"{name} has no watermark (never synced, or a full refresh waits): the next "
                "sync fetches it whole; nothing to move back"
            )
        if to >= mark:
            raise UsageError(
                f"--to {_shown(to)} is not before the watermark of {name}, {_shown(mark)}: "
                "a watermark is only moved back (forward, changes would be skipped)"
            )
    return found


def full_reset(target: Target, asked: str) -> Reset:
    """The reset asking the next sync to fetch ``asked`` whole and replace it."""
    _known(asked)
    if asked in WHOLE_EVERY_SYNC:
        raise UsageError(
            f"{asked} is fetched whole and replaced at every sync: a full refresh changes nothing"
        )
    return _found(target, asked, None)


def _known(asked: str) -> None:
    if asked not in (*TABLES, "invoice_rows"):
        raise UsageError(f"{asked!r} is not a table; choose from {', '.join(TABLES)}")


def _found(target: Target, asked: str, to: dt.datetime | None) -> Reset:
    """The tables of ``asked``'s group under ``target``, and the parts a run committed to."""
    tables = GROUPS.get(asked, (asked,))
    opened = {name: Lake(target).table(name) for name in tables}
    missing = [name for name, table in opened.items() if table is None]
    if missing:
        raise UsageError(
            f"{target.uri} holds no Delta table {missing[0]}: only a sync's tables have a "
            "watermark (run `extractor sync` into it first)"
        )
    scopes = _scopes(next(table for table in opened.values() if table is not None))
    now = {}
    for name, table in opened.items():
        assert table is not None
        for scope in scopes:
            mark = watermark(table, scope)
            pending = full_refresh(table, scope)
            key = f"{name} {scope.identity}" if scope.identity else name
            now[key] = None if pending else mark
    return Reset(asked, tables, scopes, to, now)


def _scopes(table: DeltaTable) -> tuple[Scope, ...]:
    """The whole table, or in a fleet's table each identity a run committed to."""
    if IDENTITY not in table.metadata().partition_columns:
        return (Scope(None),)
    identities = {
        str(commit[IDENTITY_KEY]) for commit in table.history()
        if IDENTITY_KEY in commit and RUN_ID in commit
    }  # fmt: skip
    return tuple(Scope(identity) for identity in sorted(identities))


def _shown(value: dt.datetime | None) -> str:
    return utc_text(value) or "none"
