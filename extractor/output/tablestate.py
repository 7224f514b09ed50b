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
    output's records per table (from its files' footers). Neither imports pyarrow's datasets
    nor, for a lake, pyarrow: ``status`` starts in a fifth of a second."""
    local = target.local
    names = _local_tables(local) if local is not None else _every_table()
    if local is not None and not any((local / name / "_delta_log").is_dir() for name in names):
        return _parquet_tables(local, names), {}
    from extractor.output.lakemarks import open_table  # delta-rs only where there are Delta tables

    tables: dict[str, Any] = {}
    marks: dict[str, Any] = {}
    for name in names:
        if local is not None and not (local / name / "_delta_log").is_dir():
            continue
        table = open_table(target, name)
        if table is not None:
            tables[name] = _table_state(name, table, identities, marks)
    return tables, marks


def _every_table() -> list[str]:
    from extractor.operations import TABLES

    return ["invoices", "invoice_rows", *(name for name in TABLES if name != "invoices")]


def _local_tables(local: Path) -> list[str]:
    """The tables of a local output: its folders not named for the extractor's own (``_``)
    or hidden (``.``), the invoices first."""
    try:
        found = sorted(p.name for p in local.iterdir() if p.is_dir() and p.name[0] not in "_.")
    except OSError:
        return []
    first = [name for name in ("invoices", "invoice_rows") if name in found]
    return first + [name for name in found if name not in first]


def _table_state(
    name: str, table: Any, identities: list[str], marks: dict[str, Any]
) -> dict[str, Any]:
    """What ``status`` says of one Delta table (its watermarks go into ``marks``)."""
    from extractor.output.lakemarks import FULL_REFRESH, KEPT, WATERMARK, last_run_commit
    from extractor.output.scope import IDENTITY, Scope

    counts = table.get_add_actions(flatten=True).column("num_records").to_pylist()
    state: dict[str, Any] = {"records": sum(count or 0 for count in counts)}
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
    """The records of each table of a Parquet output, from its files' footers (pyarrow's
    Parquet reader alone: its datasets cost 0.2 s more to import)."""
    present = {name: _visible(local / name) for name in names}
    present = {name: files for name, files in present.items() if files}
    if not present:
        return {}
    import pyarrow as pa  # only where there are tables
    import pyarrow.parquet as pq

    counts: dict[str, Any] = {}
    for name, files in present.items():
        try:
            counts[name] = {"records": sum(pq.read_metadata(f).num_rows for f in files)}
        except (OSError, pa.ArrowException) as exc:  # a file another tool left, damaged
            counts[name] = {"records": None, "error": str(exc).splitlines()[0]}
    return counts


def _visible(table: Path) -> list[Path]:
    """The table's Parquet files that dataset readers see (none under a name that starts
    with ``.`` or ``_``, as pyarrow's and Spark's readers skip them)."""
    return [
        path
        for path in sorted(table.rglob("*.parquet"))
        if not any(part.startswith((".", "_")) for part in path.relative_to(table).parts)
    ]
