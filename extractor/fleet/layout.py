"""Where a fleet keeps each identity's run, and which outputs can take a fleet.

A fleet's work root (``OUT`` for local Parquet, else the work directory of the target) holds
``_identities/<guid>/`` for each identity: its journal, staging, ``_runs/`` and
``_failures/``, exactly what a run of one identity keeps in its own ``OUT``; and
``_runs/fleet-<run_id>.json``, the fleet's summary. The tables are shared: every Parquet
partition goes under ``<table>/identity_id=<guid>/``.

A dataset of one identity (today's layout) and a fleet's are not mixed in one output: their
partitions do not line up, and readers would count one identity twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from extractor.engine.history import finished_runs
from extractor.engine.journal import unfinished
from extractor.errors import UsageError

IDENTITIES_DIR: Final = "_identities"
FLEET_PREFIX: Final = "fleet-"


def member_dir(work: Path, identity: str) -> Path:
    """Where one identity's run keeps its journal, staging and summaries."""
    return work / IDENTITIES_DIR / identity


def holds_fleet(work: Path) -> bool:
    return (work / IDENTITIES_DIR).is_dir()


#: Where a sync of one identity keeps its runs, under the work root.
SYNC_PARTS: Final = ("sync-invoices", "sync-transactions", "sync-lists")


def check_fleet_into(work: Path, out: str) -> None:
    """Refuse a fleet into an output that holds one identity's dataset (a sync's Delta
    tables are also checked as they are opened)."""
    alone = [work, *(work / part for part in SYNC_PARTS)]
    if any(unfinished(folder) is not None for folder in alone) or any(
        not str(summary.get("run_id", "")).startswith(FLEET_PREFIX)
        for folder in alone
        for summary in finished_runs(folder)
    ):
        raise UsageError(
            f"{{out}} {out} holds the dataset of one identity (no identity_id= partitions); "
            "a fleet writes its own layout: choose a new directory"
        )


def check_alone_into(work: Path, out: str) -> None:
    """Refuse a run of one identity, in today's layout, into a fleet's output."""
    if holds_fleet(work):
        raise UsageError(
            f"{{out}} {out} holds a fleet's dataset (identity_id= partitions): give "
            "--identity all, or the identities' guids, to bring it up to date"
        )
