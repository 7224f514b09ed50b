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

import csv
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from extractor import redact, schema, soap
from extractor.clock import SYSTEM, Clock
from extractor.config import Credentials, RetryPolicy, ServiceConfig
from extractor.errors import InvalidOption, OutputError
from extractor.jobs.workers import Run, work_through
from extractor.parser import RecordStream, StructReader
from extractor.runs.stats import RunStats
from extractor.service.health import Health
from extractor.service.session import Session
from extractor.service.transport import Transport, Wire

UPDATABLE: Final = ("InvoiceTitle", "ReferenceNumber")
COLUMNS: Final = ("OrderId", *UPDATABLE)
NAMESPACE: Final = schema.service("invoiceService").namespace
_INT32: Final = (-(2**31), 2**31 - 1)

#: Updates are small requests that the service applies one order at a time: fewer at once.
DEFAULT_UPDATE_SERVICE: Final = ServiceConfig(concurrency=4)

Update = dict[str, Any]  # OrderId, and the properties to set


@dataclass(frozen=True)
class UpdateJob:
    """Everything ``extractor update-invoices`` was asked to do."""

    input: Path
    report: Path | None = None
    dry_run: bool = False
    batch_size: int = 100
    service: ServiceConfig = DEFAULT_UPDATE_SERVICE

    @property
    def report_path(self) -> Path:
        return self.report or self.input.with_name(f"{self.input.stem}.report.csv")


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
    log: OutcomeLog | None = None,
    clock: Clock = SYSTEM,
    wire: Wire | None = None,
) -> list[dict[str, Any]]:
    """Send every update; each order's outcome (``updated``, ``refused``, ``failed``), also
    appended to ``log`` batch by batch as they arrive (``clock`` and ``wire`` as for
    :func:`~extractor.jobs.runner.run`)."""
    transport = Transport.for_run(job.service, clock, wire)
    sender = _Sender(log)
    try:
        session = Session(transport, credentials)
        await session.login()
        health = Health.for_workers(job.service.concurrency)
        run = Run(job.service, session, RunStats("updates", clock=clock), clock, health)
        batches = (
            UpdateBatch(f"{at:08d}", updates[at : at + job.batch_size])
            for at in range(0, len(updates), job.batch_size)
        )
        await work_through(run, sender, batches)
    finally:
        await transport.close()
    order = {update["OrderId"]: at for at, update in enumerate(updates)}
    return sorted(sender.outcomes, key=lambda outcome: order[outcome["OrderId"]])


@dataclass(frozen=True)
class UpdateBatch:
    """InvoiceOrders sent in one UpdateInvoices; never halved (an update is sent once, or
    reported as failed)."""

    key: str
    updates: Sequence[Update]

    @property
    def size(self) -> int:
        return len(self.updates)

    def halves(self) -> None:
        return None


@dataclass
class _Sender:
    log: OutcomeLog | None
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    what: str = "the updates"

    async def fetch(self, run: Run, unit: UpdateBatch, policy: RetryPolicy, root: str) -> None:
        params = {"invoices": list(unit.updates)}
        answers = (await run.call(soap.UPDATE_INVOICES, params, AnswerStream, policy)).outcomes()
        self._add([_answered(update, answers) for update in unit.updates])

    def failed(self, run: Run, unit: UpdateBatch, error: BaseException) -> None:
        """After its retries: every order of the batch is unknown."""
        message = f"{type(error).__name__}: {error}"
        self._add([_outcome(update, "failed", message) for update in unit.updates])

    def _add(self, answered: list[dict[str, Any]]) -> None:
        if self.log is not None:
            self.log.append(answered)
        self.outcomes.extend(answered)


def _answered(update: Update, answers: Mapping[int, str | None]) -> dict[str, Any]:
    order_id = update["OrderId"]
    if order_id not in answers:
        return _outcome(update, "not returned", "the service did not answer for this order")
    if answers[order_id] is not None:
        return _outcome(update, "refused", answers[order_id])
    return _outcome(update, "updated", None)


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
        raise InvalidOption(f"{{report}} {path} is a directory; give a file name")
    if path.suffix.lower() not in REPORT_FORMATS:
        raise InvalidOption(f"{{report}} {path}: use a .csv or .parquet file")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
                raise InvalidOption(f"{{report}} {path}: {parent} is not a writable directory")
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
