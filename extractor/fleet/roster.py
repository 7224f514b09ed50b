"""The ``identities`` table of a fleet's output: each identity's company and its last run.

One row per identity and command (``invoices``, ``transactions``): ``identity_id``,
``client_id``, ``client_name``, ``command``, ``status`` (``complete``, ``partial``,
``failed``), ``last_run_id`` (the identity's run, under ``_identities/<guid>/_runs/``),
``last_run_at`` (UTC), ``records`` and ``error``. Each fleet run rewrites it whole (a few
rows an identity), keeping the rows of identities and commands it did not run. Beside
Parquet tables it is the file ``identities/identities.parquet``, replaced in one rename
(local) or one copy (S3), never seen half-written; beside Delta tables, the Delta table
``identities``, overwritten in one commit.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from extractor.errors import OutputError
from extractor.output.targets import Target

TABLE: Final = "identities"
FILE: Final = f"{TABLE}/{TABLE}.parquet"
_FIELDS: list[pa.Field[Any]] = [
    pa.field("identity_id", pa.string(), nullable=False),
    pa.field("client_id", pa.int64(), nullable=True),
    pa.field("client_name", pa.string(), nullable=True),
    pa.field("command", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("last_run_id", pa.string(), nullable=True),
    pa.field("last_run_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("records", pa.int64(), nullable=True),
    pa.field("error", pa.string(), nullable=True),
]
SCHEMA: Final = pa.schema(_FIELDS)


def rows_of(
    outcomes: Sequence[dict[str, Any]], command: str, at: dt.datetime
) -> list[dict[str, Any]]:
    """The table's rows for a fleet run's outcomes (:func:`~.members.outcome`)."""
    rows = []
    for outcome in outcomes:
        summary = outcome.get("summary") or {}
        rows.append(
            {
                "identity_id": outcome["identity_id"],
                "client_id": outcome["client_id"],
                "client_name": outcome["client_name"],
                "command": command,
                "status": outcome["status"],
                "last_run_id": run_id(summary),
                "last_run_at": dt.datetime.fromisoformat(summary["finished_at"])
                if summary.get("finished_at")
                else at,
                "records": records(summary, command),
                "error": outcome["error"] or None,
            }
        )
    return rows


def run_id(summary: dict[str, Any]) -> str | None:
    """The run's id; a sync's, its invoices run's (whose summary is on disk)."""
    part = summary.get("invoices")
    if isinstance(part, dict):
        return str(part["run_id"])
    return str(summary["run_id"]) if "run_id" in summary else None


def records(summary: dict[str, Any], command: str) -> int | None:
    """What the run fetched: its invoices, ledger lines or list items; a sync's, the sum
    over its parts (each part counts what it fetched)."""
    if command == "sync":
        parts = [summary.get(name) for name in ("invoices", "transactions", "lists")]
        counts = [part.get(part.get("records", ""), 0) for part in parts if isinstance(part, dict)]
        return sum(counts) if counts else None
    value = summary.get(summary["records"]) if "records" in summary else None
    return value if isinstance(value, int) else None


def record(
    target: Target, scratch: Path, rows: Sequence[dict[str, Any]], delta: bool = False
) -> None:
    """Merge ``rows`` into the target's ``identities`` table (``scratch``: a local folder
    for the new file of an object-store target; ``delta``: the table is a Delta table)."""
    new = {(row["identity_id"], row["command"]) for row in rows}
    kept = [row for row in read(target, delta) if (row["identity_id"], row["command"]) not in new]
    table = pa.Table.from_pylist(
        sorted([*kept, *rows], key=lambda row: (row["identity_id"], row["command"])),
        schema=SCHEMA,
    )
    if delta:
        _write_delta(target, table)
        return
    try:
        local = target.local / FILE if target.local is not None else scratch / FILE
        local.parent.mkdir(parents=True, exist_ok=True)
        temporary = local.with_name(f".{local.name}.tmp")
        pq.write_table(table, temporary, compression="zstd")
        with temporary.open("rb") as written:
            os.fsync(written.fileno())
        if target.local is not None:
            temporary.rename(local)
        else:
            target.upload(temporary, FILE)
            temporary.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write the identities table of {target.uri}: {exc}") from None


def read(target: Target, delta: bool = False) -> list[dict[str, Any]]:
    """The table's rows (none before a fleet's first run)."""
    if delta:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            found = DeltaTable(target.table_uri(TABLE), storage_options=target.storage_options())
        except TableNotFoundError:
            return []
        rows: list[dict[str, Any]] = found.to_pyarrow_table().to_pylist()
        return rows
    try:
        return _read(target.filesystem(), _path(target))
    except OSError as exc:
        raise OutputError(f"cannot read the identities table of {target.uri}: {exc}") from None


def _write_delta(target: Target, table: pa.Table) -> None:
    from deltalake import write_deltalake
    from deltalake.exceptions import DeltaError

    try:
        write_deltalake(
            target.table_uri(TABLE), table, mode="overwrite",
            storage_options=target.storage_options(),
        )  # fmt: skip
    except (DeltaError, OSError) as exc:
        raise OutputError(f"cannot write the Delta table {TABLE}: {exc}") from None


def _path(target: Target) -> str:
    return str(target.local / FILE) if target.local is not None else target.key(FILE)


def _read(filesystem: Any, path: str) -> list[dict[str, Any]]:
    import pyarrow.fs as pafs

    if filesystem.get_file_info(path).type != pafs.FileType.File:
        return []
    rows: list[dict[str, Any]] = pq.read_table(path, filesystem=filesystem).to_pylist()
    return rows
