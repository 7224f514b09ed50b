"""The files of ``update-invoices``: the input, read and checked whole before any request,
and the report of every order's outcome (the journal of what was sent and answered is
:mod:`extractor.jobs.update_journal`).

The input (CSV, JSON Lines or Parquet) holds ``OrderId`` and the two updatable properties:
integer ids, no id twice, not empty. A value that is absent or null leaves that property as it
is; an empty string sets it empty. In CSV, where a cell cannot be null, an empty cell leaves
the property as it is.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from extractor.errors import InvalidOption, OutputError

UPDATABLE: Final = ("InvoiceTitle", "ReferenceNumber")
COLUMNS: Final = ("OrderId", *UPDATABLE)
_INT32: Final = (-(2**31), 2**31 - 1)

Update = dict[str, Any]  # OrderId, and the properties to set


def read_updates(path: Path) -> list[Update]:
    """The updates in ``path``, checked; InvalidOption naming the first problem and its row."""
    if not path.is_file():
        raise InvalidOption(f"{{input}} {path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            rows, columns = _csv(path)
        elif suffix in (".jsonl", ".ndjson"):
            rows, columns = _json_lines(path)
        elif suffix == ".parquet":
            table = pq.read_table(path)
            rows, columns = table.to_pylist(), table.column_names
        else:
            raise InvalidOption(f"{{input}} {path}: use a .csv, .jsonl or .parquet file")
    except (OSError, UnicodeDecodeError, pa.ArrowException, orjson.JSONDecodeError) as exc:
        raise InvalidOption(f"{{input}} {path}: cannot read it ({exc})") from None
    return _checked(path, rows, columns)


def _csv(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    with path.open(newline="", encoding="utf-8-sig") as source:
        reader = csv.DictReader(source)
        rows = [{k: (v if v != "" else None) for k, v in row.items()} for row in reader]
        return rows, list(reader.fieldnames or ())


def _json_lines(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    rows, columns = [], {}
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        row = orjson.loads(line)
        if not isinstance(row, dict):
            raise InvalidOption(f"{{input}} {path}: line {number} is not a JSON object")
        rows.append(row)
        columns.update(dict.fromkeys(row))
    return rows, list(columns)


def _checked(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> list[Update]:
    unknown = [name for name in columns if name not in COLUMNS]
    if unknown:
        raise InvalidOption(
            f"{{input}} {path}: column {unknown[0]!r} cannot be updated; "
            f"only OrderId, InvoiceTitle and ReferenceNumber"
        )
    if "OrderId" not in columns or not set(UPDATABLE) & set(columns):
        raise InvalidOption(
            f"{{input}} {path}: needs OrderId and InvoiceTitle and/or ReferenceNumber"
        )
    if not rows:
        raise InvalidOption(f"{{input}} {path}: no updates in it")
    updates, seen = [], set()
    for number, row in enumerate(rows, start=1):
        order_id = _order_id(row.get("OrderId"))
        if order_id is None:
            raise InvalidOption(
                f"{{input}} {path}: row {number}: OrderId {row.get('OrderId')!r} is not an integer"
            )
        if order_id in seen:
            raise InvalidOption(f"{{input}} {path}: row {number}: OrderId {order_id} appears twice")
        seen.add(order_id)
        update: Update = {"OrderId": order_id}
        for name in UPDATABLE:
            value = row.get(name)
            if value is not None:
                if not isinstance(value, str):
                    raise InvalidOption(f"{{input}} {path}: row {number}: {name} must be text")
                update[name] = value
        if len(update) == 1:
            raise InvalidOption(
                f"{{input}} {path}: row {number}: nothing to update for OrderId {order_id}"
            )
        updates.append(update)
    return updates


def _order_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        return None
    return number if _INT32[0] <= number <= _INT32[1] else None


def describe(updates: Sequence[Update], limit: int = 20) -> Iterator[str]:
    """What would be sent, one line per order (for ``--dry-run``)."""
    for update in updates[:limit]:
        values = ", ".join(f"{name}={update[name]!r}" for name in UPDATABLE if name in update)
        yield f"  OrderId {update['OrderId']}: {values}"
    if len(updates) > limit:
        yield f"  ... and {len(updates) - limit:,} more"


REPORT_FORMATS: Final = (".csv", ".parquet")


def check_report(path: Path) -> None:
    """Refuse a report that could not be written, before any request (in a dry run too)."""
    if path.is_dir():
        raise InvalidOption(f"{{report}} {path} is a directory; give a file name")
    if path.suffix.lower() not in REPORT_FORMATS:
        raise InvalidOption(f"{{report}} {path}: use a .csv or .parquet file")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
                raise InvalidOption(f"{{report}} {path}: {parent} is not a writable directory")
            return


def write_report(path: Path, outcomes: Sequence[Mapping[str, Any]]) -> None:
    """The outcomes as Parquet (``.parquet``) or CSV (``.csv``), written then renamed."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".parquet":
            schema_ = pa.schema(
                [pa.field("OrderId", pa.int32())]
                + [pa.field(name, pa.string()) for name in (*UPDATABLE, "status", "error")]
            )
            pq.write_table(pa.Table.from_pylist(list(outcomes), schema_), temporary)
        else:
            with temporary.open("w", newline="", encoding="utf-8") as sink:
                writer = csv.DictWriter(sink, [*COLUMNS, "status", "error"])
                writer.writeheader()
                writer.writerows(outcomes)
        temporary.rename(path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write the report {path}: {exc.strerror or exc}") from None


def summarize(
    outcomes: Sequence[Mapping[str, Any]], report: Path, stream: IO[str] | None = None
) -> bool:
    """Print the counts; whether every update was applied."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome["status"]] = counts.get(outcome["status"], 0) + 1
    (stream or sys.stdout).write(
        f"updates: {counts.get('updated', 0):,} applied, {counts.get('refused', 0):,} refused "
        f"by the service, {counts.get('failed', 0) + counts.get('not returned', 0):,} failed; "
        f"report {report}\n"
    )
    return counts.get("updated", 0) == len(outcomes)
