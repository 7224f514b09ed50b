"""UpdateInvoices in bulk: InvoiceTitle and ReferenceNumber of invoiced orders.

Updates (read and checked whole by :mod:`extractor.records.update_files`) go out in batches of
InvoiceOrders through the same session, limiter and retries as the extracts; a batch is never
halved. An applied update is never sent again: each request is journaled before it goes out
and its answer after (:mod:`extractor.jobs.update_journal`), and a request that may have been
applied without an answer recorded (a retry after a timeout or a broken answer, a run killed
while it was out) is checked first: its orders' current values are read back (GetInvoices),
and only the updates they do not hold yet are sent again. Each order's outcome, with the
APIException the service returns inside an HTTP 200 answer, lands in the report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from extractor import redact, schema, soap
from extractor.checkpoints import checkpoint
from extractor.clock import SYSTEM, Clock
from extractor.config import DEFAULT_UPDATE_SERVICE, Credentials, RetryPolicy, ServiceConfig
from extractor.engine.stats import RunStats
from extractor.engine.workers import Run, work_through
from extractor.jobs.update_journal import Outcome, Resume, UpdateJournal
from extractor.parser import RecordStream, StructReader
from extractor.records.orders import Selection
from extractor.records.update_files import UPDATABLE, Update
from extractor.service.health import Health
from extractor.service.retry import persistently
from extractor.service.session import connected
from extractor.service.transport import Wire

NAMESPACE: Final = schema.service("invoiceService").namespace


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


#: What a check reads back: the properties an update sets.
_CURRENT: Final = Selection(("OrderId", *UPDATABLE))


class CurrentStream(RecordStream):
    """A GetInvoices answer of the updatable properties: their values by OrderId."""

    def __init__(self) -> None:
        reader = StructReader(_CURRENT.response_struct, NAMESPACE)
        super().__init__(f"{{{NAMESPACE}}}InvoiceOrder", reader)

    def values(self) -> dict[int, dict[str, Any]]:
        names = _CURRENT.response_struct.names
        found = {}
        for record in self.records:
            fields = dict(zip(names, record, strict=True))
            order_id = fields.get("OrderId")
            if order_id is not None and order_id.strip().lstrip("-").isdigit():
                found[int(order_id)] = fields
        return found


def holds(current: Mapping[str, Any] | None, update: Update) -> bool:
    """Whether an order's current values are those the update sets (an empty value and an
    absent one read alike)."""
    if current is None:
        return False
    return all((current.get(name) or "") == update[name] for name in UPDATABLE if name in update)


async def apply_updates(
    job: UpdateJob,
    updates: Sequence[Update],
    credentials: Credentials,
    *,
    journal: UpdateJournal | None = None,
    clock: Clock = SYSTEM,
    wire: Wire | None = None,
) -> list[Outcome]:
    """Send every update ``journal`` does not record as answered (those it records as sent
    without an answer only once read back as not applied); each order's outcome, in input
    order (``updated``, ``refused``, ``failed``, ``not returned``), journaled batch by batch
    as they arrive. ``clock`` and ``wire`` as for :func:`~extractor.engine.runner.run`."""
    resume = journal.resume(updates) if journal is not None else Resume(to_send=list(updates))
    sender = _Sender(journal)
    async with connected(job.service, credentials, clock=clock, wire=wire) as session:
        health = Health.for_workers(job.service.first_in_flight)
        run = Run(job.service, session, RunStats("updates", clock=clock), clock, health)
        await work_through(run, sender, _batches(resume, job.batch_size))
    outcomes = resume.settled | sender.outcomes
    return [outcomes[update["OrderId"]] for update in updates]


def _batches(resume: Resume, size: int) -> list[UpdateBatch]:
    """The updates maybe sent already (read back first), then the others, by ``size``."""
    batches = []
    for sent, updates in ((True, resume.unsure), (False, resume.to_send)):
        batches += [
            UpdateBatch(f"{'s' if sent else ''}{at:08d}", updates[at : at + size], sent)
            for at in range(0, len(updates), size)
        ]
    return batches


@dataclass(frozen=True)
class UpdateBatch:
    """InvoiceOrders sent in one UpdateInvoices; never halved (an update is applied once, or
    reported as failed). ``sent``: a killed run may have sent it already."""

    key: str
    updates: Sequence[Update]
    sent: bool = False

    @property
    def size(self) -> int:
        return len(self.updates)

    def halves(self) -> None:
        return None


@dataclass
class _Sender:
    journal: UpdateJournal | None
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    what: str = "the updates"

    async def fetch(self, run: Run, unit: UpdateBatch, policy: RetryPolicy, root: str) -> None:
        """The batch, retried as ``policy`` says; before every attempt that may follow an
        applied one, the updates its orders already hold are taken out (and are ``updated``)."""
        pending, unsure = list(unit.updates), unit.sent

        async def attempt() -> dict[int, str | None]:
            nonlocal pending, unsure
            if unsure:
                pending = await self._unapplied(run, pending, policy)
            unsure = True  # an attempt that fails may still have been applied
            if not pending:
                return {}
            if self.journal is not None:
                self.journal.sending(pending)
            params = {"invoices": pending}
            answer = await run.call(soap.UPDATE_INVOICES, params, AnswerStream, policy.single())
            checkpoint("updates:sent")  # answered, the answer not yet journaled
            return answer.outcomes()

        answers = await persistently(attempt, policy, run.clock.sleep, _counted(run))
        self._add([_answered(update, answers) for update in pending])

    async def _unapplied(
        self, run: Run, updates: list[Update], policy: RetryPolicy
    ) -> list[Update]:
        """``updates`` whose orders do not hold their values yet; the others are applied."""
        params = _CURRENT.params([update["OrderId"] for update in updates])
        stream = await run.call(soap.GET_INVOICES, params, CurrentStream, policy.single())
        current = stream.values()
        applied = {u["OrderId"] for u in updates if holds(current.get(u["OrderId"]), u)}
        self._add([_outcome(u, "updated", None) for u in updates if u["OrderId"] in applied])
        return [update for update in updates if update["OrderId"] not in applied]

    def failed(self, run: Run, unit: UpdateBatch, error: BaseException) -> None:
        """After its retries: every order of the batch not found applied is unknown."""
        message = f"{type(error).__name__}: {error}"
        unknown = [update for update in unit.updates if update["OrderId"] not in self.outcomes]
        self._add([_outcome(update, "failed", message) for update in unknown])

    def _add(self, answered: list[Outcome]) -> None:
        if not answered:
            return
        if self.journal is not None:
            self.journal.answered(answered)
        self.outcomes.update((outcome["OrderId"], outcome) for outcome in answered)


def _counted(run: Run) -> Callable[[BaseException], None]:
    def count(error: BaseException) -> None:
        run.stats.retries += 1

    return count


def _answered(update: Update, answers: Mapping[int, str | None]) -> Outcome:
    order_id = update["OrderId"]
    if order_id not in answers:
        return _outcome(update, "not returned", "the service did not answer for this order")
    if answers[order_id] is not None:
        return _outcome(update, "refused", answers[order_id])
    return _outcome(update, "updated", None)


def _outcome(update: Update, status: str, error: str | None) -> Outcome:
    return {
        "OrderId": update["OrderId"],
        "InvoiceTitle": update.get("InvoiceTitle"),
        "ReferenceNumber": update.get("ReferenceNumber"),
        "status": status,
        "error": None if error is None else redact.mask(error),
    }
