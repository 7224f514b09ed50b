"""``extractor check``: the credentials and the service, tried before moving any data.

One line per step, each a single cheap call: Login, HasSession, GetIdentities, a short
GetOrderSyncList, GetInvoices of one order, GetTransactions of one day, then what the
service's budget headers said. The first step that fails is the last line (``FAIL``), and
the exit status is 4 when running again will not mend it (the login refused, a URL that is
not the service), else 1; all passed, 0.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from extractor import soap
from extractor.cli.common import EXIT_FATAL, EXIT_PERMANENT, service_options
from extractor.config import Credentials, ServiceConfig
from extractor.errors import ExtractorError, MalformedResponse, Permanent
from extractor.signals import run_until_signalled

if TYPE_CHECKING:  # each step imports what it calls: ``extractor --help`` loads none of it
    from extractor.service.session import Session

#: How far back the listing looks first for an order to read (then over all of them).
RECENT: Final = dt.timedelta(days=30)


@click.command("check")
@service_options(concurrency=1)
def check(service: ServiceConfig) -> None:
    """Try the TFSO_* credentials and the service with one cheap call of each kind, moving
    no data: one line per step, exit 0 when all pass, at the first that fails 4 when running
    again will not mend it (the login refused, not the service), else 1."""
    credentials = Credentials.from_env()
    click.echo(f"check of {service.base_url}")
    status = run_until_signalled(_check(service, credentials, click.echo))
    if status:
        sys.exit(status)


async def _check(
    service: ServiceConfig, credentials: Credentials, say: Callable[[str], None]
) -> int:
    """Every step in turn; the exit status: 0, or the first failure's (said as its ``FAIL``
    line)."""
    from extractor.service.session import connected

    async with connected(service, credentials, login=False) as session:
        return await _steps(session, credentials, say)


async def _steps(session: Session, credentials: Credentials, say: Callable[[str], None]) -> int:
    from extractor.service.limiter import format_when

    found: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
        ("Login", lambda: _login(session)),
        ("HasSession", lambda: _has_session(session)),
        ("GetIdentities", lambda: _identities(session, credentials)),
        ("GetOrderSyncList", lambda: _listing(session, found)),
        ("GetInvoices", lambda: _invoice(session, found)),
        ("GetTransactions", lambda: _ledger_day(session)),
    ]
    for name, step in steps:
        try:
            said = await step()
        except ExtractorError as exc:
            say(f"  FAIL  {name}: {exc.naming(_flag)}".replace("\n", " "))
            return EXIT_PERMANENT if isinstance(exc, Permanent) else EXIT_FATAL
        say(f"  ok    {name}: {said}")
    budget = session.transport.limiter.service_budget
    if budget is None:
        say("  ok    budget: the service sent no budget headers (APILimitRemaining)")
    else:
        left, reset = budget
        say(f"  ok    budget: {left:,} requests left until {format_when(reset)}")
    say(f"check passed: {session.requests + session.logins} calls")
    return 0


async def _login(session: Session) -> str:
    await session.login()
    return "a session"


async def _has_session(session: Session) -> str:
    from extractor.parser import RecordStream
    from extractor.service.identities import NAMESPACE

    stream = await session.call(
        soap.HAS_SESSION, {}, lambda: RecordStream(f"{{{NAMESPACE}}}HasSessionResult", _text)
    )
    answer = stream.records[0] if stream.records else ""
    if answer != "true":
        raise MalformedResponse(
            f"HasSession: the service says the new session is not one ({answer!r})"
        )
    return "true"


async def _identities(session: Session, credentials: Credentials) -> str:
    from extractor.service.identities import identities

    listed = await identities(session)
    disabled = sum(identity.disabled for identity in listed)
    current = next((i for i in listed if i.current), None)
    chosen = credentials.identity_id or (current.id if current else None)
    named = next((i.label for i in listed if i.id == chosen), chosen or "the default")
    return f"{len(listed)} identities ({disabled} disabled); working on {named}"


async def _listing(session: Session, found: dict[str, Any]) -> str:
    from extractor.records import orders

    since = (dt.datetime.now(dt.UTC) - RECENT).replace(tzinfo=None)
    for changed_after, what in ((since, f"changed in the last {RECENT.days} days"), (None, "")):
        params = orders.sync_params(changed_after, None)
        stream = await session.call(soap.GET_ORDER_SYNC_LIST, params, orders.id_stream)
        if stream.ids:
            found["order"] = stream.ids[0]
            return f"{len(stream.ids):,} orders {what}".rstrip()
    return "no orders at all"


async def _invoice(session: Session, found: dict[str, Any]) -> str:
    from extractor.records.orders import OrderSink, Selection

    if "order" not in found:
        return "skipped: no order to read"
    order_id = int(found["order"])
    selection = Selection()
    sink = await session.call(
        soap.GET_INVOICES, selection.params([order_id]), lambda: OrderSink(selection, [order_id])
    )
    invoices = sum(batch.orders.num_rows for batch in sink.batches)
    rows = sum(batch.rows.num_rows for batch in sink.batches)
    if invoices != 1:
        raise MalformedResponse(f"order {order_id} was listed, but GetInvoices returned {invoices}")
    return f"order {order_id}: 1 invoice, {rows} rows, every property typed"


async def _ledger_day(session: Session) -> str:
    from extractor.engine.destination import Destination
    from extractor.jobs.ledger import TransactionJob, Window
    from extractor.records.ledger import LedgerSink

    day = dt.date.today() - dt.timedelta(days=1)
    job = TransactionJob(Destination(Path()), date_from=day, date_to=day, date_field="changed")
    sink = await session.call(soap.GET_TRANSACTIONS, job.params(Window(day, day)), LedgerSink)
    lines = 0 if sink.table is None else sink.table.num_rows
    return f"{lines:,} ledger lines changed on {day.isoformat()}"


def _text(element: Any) -> str:
    return (element.text or "").strip()


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")
