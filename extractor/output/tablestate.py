"""What ``extractor status`` says of an output's tables: each Delta table's records (from
the Delta log's statistics: no data file is read), when a run last committed to it, whether a
full refresh waits for the next sync, and the watermarks; a Parquet output's records per
table (from its files' footers). Every time in UTC (:func:`~extractor.clock.utc_text`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from extractor.clock import utc_text
from extractor.output.targets import Target


def lake_state(target: Target, identities: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each Delta table's records (from the Delta log's statistics: no data file is read),
    when a run last committed to it, and whether a full refresh waits for the next sync; and
    the watermarks (a fleet's: each identity's, as ``table identity``). Or a Parquet
    output's records per table (from its files' footers)."""
    from extractor.operations import TABLES

    names = ["invoices", "invoice_rows", *(name for name in TABLES if name != "invoices")]
    local = target.local
    if local is not None and not any((local / name / "_delta_log").is_dir() for name in names):
        return _parquet_tables(local, names), {}
    from extractor.output.delta import Lake  # delta-rs only where there are Delta tables

    tables: dict[str, Any] = {}
    marks: dict[str, Any] = {}
    for name in names:
        if local is not None and not (local / name / "_delta_log").is_dir():
            continue
        table = Lake(target).table(name)
        if table is not None:
            tables[name] = _table_state(name, table, identities, marks)
    return tables, marks


def _table_state(
    name: str, table: Any, identities: list[str], marks: dict[str, Any]
) -> dict[str, Any]:
    """What ``status`` says of one Delta table (its watermarks go into ``marks``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from extractor.output.lakefiles import IDENTITY, Scope
    from extractor.output.lakemarks import FULL_REFRESH, KEPT, WATERMARK, last_run_commit

    actions = pa.table(table.get_add_actions(flatten=True))
    state: dict[str, Any] = {"records": int(pc.sum(actions.column("num_records")).as_py() or 0)}
    fleet = IDENTITY in table.metadata().partition_columns
    last = None
    for identity in identities if fleet else [None]:
        found = last_run_commit(table, Scope(identity))
        if found is None:
            continue
        if last is None or found.get("timestamp", 0) > last.get("timestamp", 0):
            last = found
        if name in KEPT:
            marks[f"{name} {identity}" if identity else name] = utc_text(found.get(WATERMARK))
        if found.get(FULL_REFRESH):
            state.setdefault("full_refresh_pending", []).append(identity or "all")
    when = last.get("timestamp") if last else None
    state["last_run"] = utc_text(dt.datetime.fromtimestamp(when / 1000, dt.UTC)) if when else None
    return state


def _parquet_tables(local: Path, names: list[str]) -> dict[str, Any]:
    """The records of each table of a Parquet output, from its files' footers."""
    present = [name for name in names if (local / name).is_dir()]
    if not present:
        return {}
    import pyarrow as pa  # only where there are tables
    import pyarrow.dataset as ds

    counts: dict[str, Any] = {}
    for name in present:
        try:
            dataset = ds.dataset(local / name, format="parquet", partitioning="hive")
            counts[name] = {"records": dataset.count_rows()}
        except (OSError, pa.ArrowException) as exc:  # a file another tool left, damaged
            counts[name] = {"records": None, "error": str(exc).splitlines()[0]}
    return counts
