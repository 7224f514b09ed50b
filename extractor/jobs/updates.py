"""UpdateInvoices in bulk: InvoiceTitle and ReferenceNumber of invoiced orders, from a file.

The input (CSV, JSON Lines or Parquet) is read and checked whole before any request: only
``OrderId`` and the two updatable properties, integer ids, no id twice, not empty. Updates go
out in batches of InvoiceOrders through the same session, limiter and retries as the
extracts (an update sets values, so sending it again is safe). Each order's outcome, with the
APIException the service returns inside an HTTP 200 answer, lands in a report.

A value that is absent or null leaves that property as it is; an empty string sets it empty.
In CSV, where a cell cannot be null, an empty cell leaves the property as it is.
"""

from __future__ import annotations

import asyncio
import csv
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from extractor import redact, schema, soap
from extractor.config import (
    DEFAULT_BASE_URL,
    DEFAULT_RETRY,
    DEFAULT_TIMEOUTS,
    Credentials,
    RetryPolicy,
    Timeouts,
)
from extractor.errors import OutputError, TransientError, UsageError
from extractor.jobs.batching import first_error
from extractor.parser import RecordStream, StructReader
from extractor.service.retry import Sleep, persistently
from extractor.service.session import Session
from extractor.service.transport import Transport

UPDATABLE: Final = ("InvoiceTitle", "ReferenceNumber")
COLUMNS: Final = ("OrderId", *UPDATABLE)
NAMESPACE: Final = schema.service("invoiceService").namespace
_INT32: Final = (-(2**31), 2**31 - 1)

Update = dict[str, Any]  # OrderId, and the properties to set


@dataclass(frozen=True)
class UpdateJob:
    """Everything ``extractor update-invoices`` was asked to do."""

    input: Path
    report: Path | None = None
    dry_run: bool = False
    batch_size: int = 100
    concurrency: int = 4
    base_url: str = DEFAULT_BASE_URL
    soap_version: str = "1.1"
    max_requests_per_hour: int = 7200
    retry: RetryPolicy = DEFAULT_RETRY
    timeouts: Timeouts = DEFAULT_TIMEOUTS
    insecure: bool = False

    @property
    def report_path(self) -> Path:
        return self.report or self.input.with_name(f"{self.input.stem}.report.csv")


def read_updates(path: Path) -> list[Update]:
    """The updates in ``path``, checked; UsageError naming the first problem and its row."""
    if not path.is_file():
        raise UsageError(f"--input {path}: no such file")
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
            raise UsageError(f"--input {path}: use a .csv, .jsonl or .parquet file")
    except (OSError, UnicodeDecodeError, pa.ArrowException, orjson.JSONDecodeError) as exc:
        raise UsageError(f"--input {path}: cannot read it ({exc})") from None
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
            raise UsageError(f"--input {path}: line {number} is not a JSON object")
        rows.append(row)
        columns.update(dict.fromkeys(row))
    return rows, list(columns)


def _checked(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> list[Update]:
    unknown = [name for name in columns if name not in COLUMNS]
    if unknown:
        raise UsageError(
            f"--input {path}: column {unknown[0]!r} cannot be updated; "
            f"only OrderId, InvoiceTitle and ReferenceNumber"
        )
    if "OrderId" not in columns or not set(UPDATABLE) & set(columns):
        raise UsageError(f"--input {path}: needs OrderId and InvoiceTitle and/or ReferenceNumber")
    if not rows:
        raise UsageError(f"--input {path}: no updates in it")
    updates, seen = [], set()
    for number, row in enumerate(rows, start=1):
        order_id = _order_id(row.get("OrderId"))
        if order_id is None:
            raise UsageError(
                f"--input {path}: row {number}: OrderId {row.get('OrderId')!r} is not an integer"
            )
        if order_id in seen:
            raise UsageError(f"--input {path}: row {number}: OrderId {order_id} appears twice")
        seen.add(order_id)
        update: Update = {"OrderId": order_id}
        for name in UPDATABLE:
            value = row.get(name)
            if value is not None:
                if not isinstance(value, str):
                    raise UsageError(f"--input {path}: row {number}: {name} must be text")
                update[name] = value
        if len(update) == 1:
            raise UsageError(
                f"--input {path}: row {number}: nothing to update for OrderId {order_id}"
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


_ANSWER: Final = schema.Struct(
    "InvoiceOrder",
    tuple(f for f in schema.invoice_order().fields if f.name in ("OrderId", "APIException")),
)


class AnswerStream(RecordStream):
    """An UpdateInvoices answer: (OrderId, APIException message or None) per order."""

    def __init__(self) -> None:
        super().__init__(f"{{{NAMESPACE}}}InvoiceOrder", StructReader(_ANSWER, NAMESPACE))

    def outcomes(self) -> dict[int, str | None]:
        found: dict[int, str | None] = {}
        for order_id, exception in self.records:
            if order_id is not None and order_id.strip().lstrip("-").isdigit():
                found[int(order_id)] = _message(exception) if exception is not None else None
        return found


def _message(exception: Sequence[Any]) -> str:
    kind, message = exception[0], exception[1]
    return f"{kind or 'APIException'}: {message or ''}".strip()


async def apply_updates(
    job: UpdateJob,
    updates: Sequence[Update],
    credentials: Credentials,
    *,
    sleep: Sleep = asyncio.sleep,
    log: OutcomeLog | None = None,
) -> list[dict[str, Any]]:
    """Send every update; each order's outcome (``updated``, ``refused``, ``failed``), also
    appended to ``log`` batch by batch as they arrive."""
    transport = Transport.for_run(
        job.base_url, job.soap_version, concurrency=job.concurrency, timeouts=job.timeouts,
        max_requests_per_hour=job.max_requests_per_hour, insecure=job.insecure,
    )  # fmt: skip
    outcomes: list[dict[str, Any]] = []
    try:
        session = Session(transport, credentials, sleep)
        await session.login()
        batches = iter(
            [updates[at : at + job.batch_size] for at in range(0, len(updates), job.batch_size)]
        )

        async def worker() -> None:
            for batch in batches:
                answered = await _send(job, session, batch, sleep)
                if log is not None:
                    log.append(answered)
                outcomes.extend(answered)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(job.concurrency):
                    group.create_task(worker())
        except BaseExceptionGroup as errors:
            raise first_error(errors) from None
    finally:
        await transport.close()
    order = {update["OrderId"]: at for at, update in enumerate(updates)}
    return sorted(outcomes, key=lambda outcome: order[outcome["OrderId"]])


async def _send(
    job: UpdateJob, session: Session, batch: Sequence[Update], sleep: Sleep
) -> list[dict[str, Any]]:
    params = {"invoices": list(batch)}

    async def attempt() -> AnswerStream:
        return await session.call(soap.UPDATE_INVOICES, params, AnswerStream)

    try:
        answers = (await persistently(attempt, job.retry, sleep)).outcomes()
    except TransientError as exc:  # after its retries: every order of the batch is unknown
        return [_outcome(update, "failed", f"{type(exc).__name__}: {exc}") for update in batch]
    return [
        _outcome(update, "not returned", "the service did not answer for this order")
        if update["OrderId"] not in answers
        else _outcome(update, "refused", answers[update["OrderId"]])
        if answers[update["OrderId"]] is not None
        else _outcome(update, "updated", None)
        for update in batch
    ]


def _outcome(update: Update, status: str, error: str | None) -> dict[str, Any]:
    return {
        "OrderId": update["OrderId"],
        "InvoiceTitle": update.get("InvoiceTitle"),
        "ReferenceNumber": update.get("ReferenceNumber"),
        "status": status,
        "error": None if error is None else redact.mask(error),
    }


REPORT_FORMATS: Final = (".csv", ".parquet")


def check_report(path: Path) -> None:
    """Refuse a report that could not be written, before any request (in a dry run too)."""
    if path.is_dir():
        raise UsageError(f"--report {path} is a directory; give a file name")
    if path.suffix.lower() not in REPORT_FORMATS:
        raise UsageError(f"--report {path}: use a .csv or .parquet file")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
                raise UsageError(f"--report {path}: {parent} is not a writable directory")
            return


class OutcomeLog:
    """Each batch's outcomes as they arrive, fsynced as JSON lines beside the report
    (``<report>.partial.jsonl``), so that a crash keeps the record of what was changed."""

    def __init__(self, report: Path) -> None:
        self.path = report.with_name(f"{report.name}.partial.jsonl")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("wb")
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def append(self, outcomes: Sequence[Mapping[str, Any]]) -> None:
        try:
            self._file.write(b"".join(orjson.dumps(outcome) + b"\n" for outcome in outcomes))
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def close(self, done: bool) -> None:
        """Closed; removed once the report holds every outcome (``done``)."""
        self._file.close()
        if done:
            self.path.unlink(missing_ok=True)


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
    outcomes: Sequence[Mapping[str, Any]], report: Path, stream: IO[str] = sys.stdout
) -> bool:
    """Print the counts; whether every update was applied."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome["status"]] = counts.get(outcome["status"], 0) + 1
    stream.write(
        f"updates: {counts.get('updated', 0):,} applied, {counts.get('refused', 0):,} refused "
        f"by the service, {counts.get('failed', 0) + counts.get('not returned', 0):,} failed; "
        f"report {report}\n"
    )
    return counts.get("updated", 0) == len(outcomes)
