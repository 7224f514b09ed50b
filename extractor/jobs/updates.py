"""UpdateInvoices in bulk: InvoiceTitle and ReferenceNumber of invoiced orders.

Updates (read and checked whole by :mod:`extractor.jobs.update_files`) go out in batches of
InvoiceOrders through the same session, limiter and retries as the extracts (an update sets
values, so sending it again is safe; a batch is never halved). Each order's outcome, with the
APIException the service returns inside an HTTP 200 answer, lands in the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from extractor import redact, schema, soap
from extractor.clock import SYSTEM, Clock
from extractor.config import Credentials, RetryPolicy, ServiceConfig
from extractor.jobs.update_files import OutcomeLog, Update
from extractor.jobs.workers import Run, work_through
from extractor.parser import RecordStream, StructReader
from extractor.runs.stats import RunStats
from extractor.service.health import Health
from extractor.service.session import Session
from extractor.service.transport import Transport, Wire

NAMESPACE: Final = schema.service("invoiceService").namespace

#: Updates are small requests that the service applies one order at a time: fewer at once.
DEFAULT_UPDATE_SERVICE: Final = ServiceConfig(concurrency=4)


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
        health = Health.for_workers(job.service.first_in_flight)
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
