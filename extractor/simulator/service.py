"""The simulated 24SevenOffice service: requests in, answers out, with no network.

:class:`SimulatedService` answers a :class:`Request` (a path, headers, a body, cookies) with a
:class:`Reply` (a status, headers, the body in parts, and how to break it) as the live service
would, faults and limits included. ``server.py`` puts it behind a real aiohttp server;
``memory.py`` hands it to the extractor's transport without a socket. Its clock is injected
(:mod:`extractor.clock`): a manual clock shared with the client makes quarantines and budget
windows pass in milliseconds. The service's own time may run ahead of it or behind
(``clock_offset``): what it stamps and the ``Date`` header of every reply, as IIS sends one,
are in that time. Identity 1's GetInvoices may be answered by a lagging replica
(``stale_replica``, :mod:`~extractor.simulator.replica`).

Beside the orders and the ledger each company keeps the rest of its books: the whole lists
(:mod:`~extractor.simulator.lists`) and the operations that answer from their parameters
(:mod:`~extractor.simulator.queries`: dimension values, aggregated balances, customers,
products), each served by one generic handler; customers and products churn too
(:meth:`SimulatedService.churn_master`), and :meth:`SimulatedService.table_truth` says what a
correct extractor writes for each table (:mod:`~extractor.simulator.tables`).

Over 300 lines as one class on purpose: every operation shares its sessions, counters, fault
plan and budget; the wire formats live in ``messages.py``, rendering in ``render.py``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import functools
import hashlib
import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from lxml import etree

from extractor import schema, soap
from extractor.clock import SYSTEM, Clock
from extractor.simulator import ledger, params, tables
from extractor.simulator.config import DEFAULT_SIMULATOR, SimulatorConfig
from extractor.simulator.faults import (
    HOSTILE_BODY,
    POISON_FAULT,
    TIMEOUT_FAULT,
    FaultPlan,
    Load,
)
from extractor.simulator.identities import BLOCKED, Books, Company, companies, identity_type
from extractor.simulator.ledger import Ledger
from extractor.simulator.lists import LISTS, Records
from extractor.simulator.messages import (
    SERVICES,
    Fault,
    Reply,
    Request,
    fault_reply,
    sent_action,
    text_reply,
)
from extractor.simulator.queries import QUERIES, Asked
from extractor.simulator.register import UNCHANGED, MasterChurn, MasterReport
from extractor.simulator.replica import Replica
from extractor.simulator.tenant import Churn, ChurnReport, ChurnShape, Tenant

SESSION_COOKIE: Final = "ASP.NET_SessionId"
NOT_AUTHENTICATED: Final = "Session is not authenticated"
#: What UpdateInvoices may change, as the live service says.
UPDATABLE: Final = ("InvoiceTitle", "ReferenceNumber")
#: The operations faults are injected into (never Login).
#: Faults that break an answer halfway: only an answer the operation gives can be broken.
CUTS: Final = frozenset({"reset", "truncate"})
DATA_OPERATIONS: Final = frozenset(
    {"GetOrderSyncList", "GetInvoices", "GetTransactions", "UpdateInvoices", *LISTS, *QUERIES}
)
NO_IDENTITY: Final = "00000000-0000-0000-0000-000000000000"
_IDENTITY_ID: Final = re.compile(rb"IdentityId>\s*([0-9a-fA-F-]{36})\s*<")
_PARSER: Final = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


@dataclass
class _Call:
    version: soap.SoapVersion
    operation: str
    params: etree._Element
    request: Request
    company: Company  # the identity the session works on (identity 1 before a login)
    headers: dict[str, str] = field(default_factory=dict)  # on every response
    cut: str | None = None


Handler = Callable[[_Call], Awaitable[Reply]]


class SimulatedService:
    """The tenants' books behind the live service's operations: one tenant per
    identity the user reaches (:mod:`~extractor.simulator.identities`), identity 1 the
    default; ``tenant``, ``budget`` and ``ledger`` are identity 1's."""

    def __init__(
        self,
        config: SimulatorConfig = DEFAULT_SIMULATOR,
        tenant: Tenant | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self.config = config
        self.clock = clock
        books = Books(
            config.orders, config.seed, config.ids, config.xml, config.faults,
            config.identities, config.blocked_identities, config.disabled_identities,
        )  # fmt: skip
        self.companies = companies(books, self._time, tenant)  # its budget in its own time
        self.tenant = self.companies[0].tenant
        self.budget = self.companies[0].budget
        self.stats: Counter[str] = Counter()
        self.replica = Replica(config.stale_replica, config.seed)
        self._plan = FaultPlan(config.faults)
        self.load = Load(config.faults)
        self._sessions: dict[str, int] = {}  # calls made in each session
        self._working_on: dict[str, Company] = {}  # each session's identity
        self._logins = 0
        self._vanishing: dict[str, set[int]] = {}  # by identity: deleted after a listing
        self._lists: dict[tuple[str, int], Records] = {}  # whole lists changed since
        self._handlers: dict[str, dict[str, Handler]] = {
            soap.AUTH_PATH: {
                "Login": self._login,
                "HasSession": self._has_session,
                "GetIdentities": self._authenticated(self._get_identities),
                "SetIdentityById": self._authenticated(self._set_identity),
            },
            soap.INVOICE_PATH: {
                "GetOrderSyncList": self._authenticated(self._sync_list),
                "GetInvoices": self._authenticated(self._get_invoices),
                "UpdateInvoices": self._authenticated(self._update_invoices),
            },
            soap.TRANSACTION_PATH: {
                "GetTransactions": self._authenticated(self._get_transactions),
            },
        }
        served = [(name, whole.path, self._whole_list) for name, whole in LISTS.items()]
        served += [(name, query.path, self._query) for name, query in QUERIES.items()]
        for name, path, handler in served:
            serve = self._authenticated(functools.partial(handler, name))
            self._handlers.setdefault(path, {})[name] = serve

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(self._handlers)

    def render_order(
        self,
        order_id: int,
        props: tuple[str, ...] = (),
        row_props: tuple[str, ...] = (),
        identity: int = 1,
    ) -> str:
        """One ``InvoiceOrder`` element exactly as GetInvoices sends it (for ``identity``)."""
        return self.company(identity).renderer.order(order_id, props, row_props)

    def company(self, identity: int | str) -> Company:
        """An identity's company, by number (1-based) or by Id."""
        for company in self.companies:
            if identity in (company.number, company.identity_id):
                return company
        raise KeyError(f"no identity {identity!r}")

    @property
    def ledger(self) -> Ledger:
        """Identity 1's general ledger, built on first use."""
        return self.companies[0].ledger

    def churn(
        self,
        changes: Churn,
        seed: int = 0,
        shape: ChurnShape | None = None,
        identity: int | str = 1,
    ) -> ChurnReport:
        """Change, delete and add orders of ``identity`` now (:meth:`Tenant.churn`), and
        settle the open invoices of the changed orders in its ledger; what changed, also in
        ``stats``. ``shape`` is the configured churn's unless given."""
        company = self.company(identity)
        ledger_ = company.ledger  # built from the tenant as it was, before it changes
        when = self._now().replace(microsecond=0)
        salt = "" if company.number == 1 else f":{company.number}"
        rng = random.Random(f"churn:{self.config.seed}:{seed}{salt}")
        versions = self.replica.snapshot(company.tenant) if company.number == 1 else None
        report = company.tenant.churn(rng, changes, when, shape or self.config.churn)
        self.replica.remember(versions, report.changed, report.deleted)
        self.stats["ledger_lines_posted"] += ledger_.settle(report.changed, when)
        for name in ("changed", "deleted", "added"):
            self.stats[f"orders_{name}"] += len(getattr(report, name))
        return report

    def churn_master(
        self,
        customers: MasterChurn = UNCHANGED,
        products: MasterChurn = UNCHANGED,
        seed: int = 0,
        identity: int | str = 1,
    ) -> dict[str, MasterReport]:
        """Change, delete, add and deactivate customers and products of ``identity`` now
        (:meth:`~extractor.simulator.register.Register.churn`): by name ("customers",
        "products"), the ids of each; also in ``stats``. Products cannot be deactivated."""
        company = self.company(identity)
        churns = {
            "customers": (company.customers, customers),
            "products": (company.products, products),
        }
        for name, (register, changes) in churns.items():
            if changes.deactivated and not register.deactivates:
                raise ValueError(f"{name} cannot be deactivated")
        when = self._now().replace(microsecond=0)
        salt = "" if company.number == 1 else f":{company.number}"
        reports = {}
        for name, (register, changes) in churns.items():
            rng = random.Random(f"churn-{name}:{self.config.seed}:{seed}{salt}")
            reports[name] = report = register.churn(rng, changes, when)
            for kind, ids in dataclasses.asdict(report).items():
                self.stats[f"{name}_{kind}"] += len(ids)
        return reports

    def vanish_after_listing(self, order_ids: Iterable[int], identity: int | str = 1) -> None:
        """Delete these orders of ``identity`` as soon as the next GetOrderSyncList has
        listed them: deleted between a listing and its GetInvoices."""
        company = self.company(identity)
        self._vanishing.setdefault(company.identity_id, set()).update(order_ids)

    def churn_json(self, body: Any) -> tuple[int, dict[str, Any]]:
        """``/_churn`` (the body is described in :mod:`~extractor.simulator.server`): the
        orders' ids changed, deleted and added, and the customers' and products' reports
        for those asked about."""
        try:
            changes = Churn(*(int(body.get(name, 0)) for name in ("changed", "deleted", "added")))
            identity, seed = int(body.get("identity", 1)), int(body.get("seed", 0))
            masters = {
                name: MasterChurn(**{kind: int(n) for kind, n in body[name].items()})
                for name in ("customers", "products")
                if name in body
            }
            reports = self.churn_master(**masters, seed=seed, identity=identity) if masters else {}
            report = (
                self.churn(changes, seed, body.get("shape"), identity)
                if changes != Churn()
                else ChurnReport([], [], [])
            )
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            return 400, {"error": f"bad churn request: {exc}"}
        asked = {name: dataclasses.asdict(reports[name]) for name in masters}
        return 200, dataclasses.asdict(report) | asked

    def expire_sessions(self) -> None:
        """Forget every session, as the live service does after a while."""
        self._sessions.clear()
        self._working_on.clear()

    async def answer(self, request: Request) -> Reply:
        """The reply to one request, as the live service gives it."""
        version = (
            soap.SOAP12 if "soap+xml" in request.headers.get("content-type", "") else soap.SOAP11
        )
        # each identity has its budget: a request counts on its session's, a login on the
        # identity it asks for
        company = self._working_on.get(request.cookies.get(SESSION_COOKIE, "")) or self._asked(
            request
        )
        blocked, budget = company.budget.admit()
        headers = {"Date": email.utils.formatdate(self._time(), usegmt=True)} | budget
        self.stats["requests"] += 1
        company.stats["requests"] += 1
        slower = self.load.enter()
        if slower is None:  # a fragile service past what it can hold
            self.stats["fault:overloaded"] += 1
            return text_reply(503, "Service Unavailable", headers)
        try:
            return await self._answer(request, version, company, blocked, headers, slower)
        finally:
            self.load.leave()

    async def _answer(
        self,
        request: Request,
        version: soap.SoapVersion,
        company: Company,
        blocked: str | None,
        headers: dict[str, str],
        slower: float,
    ) -> Reply:
        try:
            call = self._parse(request, version, company)
            call.headers = headers
            handler = self._handlers.get(request.path, {}).get(call.operation)
            if handler is None:
                raise Fault(f"Unable to handle request. Unknown operation {call.operation!r}.")
            self.stats[call.operation] += 1
            company.stats[call.operation] += 1
            if blocked is not None:
                self.stats["during_quarantine"] = self.budget.arrived_in_quarantine
                raise Fault(blocked)
            if self.config.latency:
                await self.clock.sleep(self.config.latency * slower)
            if call.operation in DATA_OPERATIONS:
                misbehaved = await self._misbehave(call)
                if misbehaved is not None:
                    return misbehaved
            reply = await handler(call)
            if reply.cut is not None:
                self.stats[f"fault:{reply.cut}"] += 1
            return reply
        except Fault as fault:
            self.stats["faults"] += 1
            return fault_reply(version, str(fault), headers)

    async def _misbehave(self, call: _Call) -> Reply | None:
        """The injected fault's reply, or None to answer (``call.cut`` may break it)."""
        if self.config.faults.hostile:
            self.stats["fault:hostile"] += 1
            return Reply(200, {"Content-Type": "text/xml"} | call.headers, [HOSTILE_BODY])
        kind = self._plan.draw()
        if kind is None:
            return None
        if kind in CUTS:  # counted once the answer is broken (a fault answer is not)
            call.cut = kind
            return None
        self.stats[f"fault:{kind}"] += 1
        if kind == "http500":
            return text_reply(500, "Internal Server Error", call.headers)
        if kind == "throttle":
            retry = {"Retry-After": str(self.config.faults.retry_after)}
            return text_reply(429, "Too Many Requests", call.headers | retry)
        if kind == "timeout-fault":
            raise Fault(TIMEOUT_FAULT)
        if kind == "slow":
            await self.clock.sleep(self.config.faults.slow_seconds)
        return None

    def _parse(self, request: Request, version: soap.SoapVersion, company: Company) -> _Call:
        try:
            root = etree.fromstring(request.body, _PARSER)
        except etree.XMLSyntaxError as exc:
            raise Fault(f"Server was unable to read request. ---> {exc}") from None
        body = root.find(f"{{{version.namespace}}}Body")
        if body is None or len(body) == 0:
            raise Fault("Server was unable to read request. ---> no SOAP Body")
        element = body[0]
        operation = etree.QName(element).localname
        service = schema.service(SERVICES.get(request.path, "invoiceService"))
        action = service.actions.get(operation, "")
        sent = sent_action(request, version)
        if sent is not None and sent != action:
            raise Fault(f"Server did not recognize the value of HTTP Header SOAPAction: {sent}.")
        return _Call(version, operation, element, request, company)

    def _authenticated(self, handler: Handler) -> Handler:
        async def checked(call: _Call) -> Reply:
            token = call.request.cookies.get(SESSION_COOKIE, "")
            if token not in self._sessions:
                self.stats["unauthenticated"] += 1
                raise Fault(NOT_AUTHENTICATED)
            self._sessions[token] += 1
            ttl = self.config.session_ttl_calls
            if ttl and self._sessions[token] > ttl:
                del self._sessions[token]
                self.stats["expired"] += 1
                raise Fault(NOT_AUTHENTICATED)
            return await handler(call)

        return checked

    async def _login(self, call: _Call) -> Reply:
        given = {etree.QName(e).localname: (e.text or "") for e in call.params.iter()}
        expected = (self.config.application_id, self.config.username, self.config.password)
        token = ""
        if (given.get("ApplicationId"), given.get("Username"), given.get("Password")) == expected:
            company = self._identity(given.get("IdentityId", "").strip() or NO_IDENTITY)
            self._logins += 1
            token = hashlib.sha1(f"{self.config.seed}:{self._logins}".encode()).hexdigest()[:24]
            self._sessions[token] = 0
            self._working_on[token] = company
        reply = self._reply(call, "Login", [token.encode()], leaf=True)
        if token:
            reply.cookies[SESSION_COOKIE] = token
        return reply

    def _asked(self, request: Request) -> Company:
        """The company a request without a session names (a Login's IdentityId), else 1."""
        found = _IDENTITY_ID.search(request.body) if request.path == soap.AUTH_PATH else None
        wanted = found.group(1).decode().lower() if found else ""
        return next((c for c in self.companies if c.identity_id == wanted), self.companies[0])

    def _identity(self, identity_id: str) -> Company:
        """The company a login or a switch asks for (the all-zero guid: the default)."""
        if identity_id == NO_IDENTITY:
            return self.companies[0]
        for company in self.companies:
            if company.identity_id == identity_id.lower():
                if company.blocked:
                    raise Fault(f"Server was unable to process request. ---> {BLOCKED}")
                return company
        raise Fault(f"Server was unable to process request. ---> Identity {identity_id} not found")

    async def _get_identities(self, call: _Call) -> Reply:
        kind = identity_type()
        items = (
            call.company.renderer.item(
                "Identity", kind, company.as_identity(company is call.company)
            )
            for company in self.companies
        )
        return self._reply(call, "GetIdentities", items)

    async def _set_identity(self, call: _Call) -> Reply:
        """Switch the session (everyone using it) to another identity."""
        found = call.params.find("{*}identityId")
        company = self._identity((found.text or "").strip() if found is not None else "")
        self._working_on[call.request.cookies[SESSION_COOKIE]] = company
        return self._reply(call, "SetIdentityById", [b"true"], leaf=True)

    async def _has_session(self, call: _Call) -> Reply:
        valid = call.request.cookies.get(SESSION_COOKIE, "") in self._sessions
        return self._reply(call, "HasSession", [str(valid).lower().encode()], leaf=True)

    async def _sync_list(self, call: _Call) -> Reply:
        changed = params.when(call.params, "syncParams/ChangedAfter")
        registered = params.when(call.params, "syncParams/RegisteredAfter")
        ids = call.company.tenant.sync_list(changed, registered)
        doomed = self._vanishing.pop(call.company.identity_id, ())
        self.stats["orders_vanished"] += len(call.company.tenant.delete(doomed))
        int_type = schema.Scalar("int")
        items = (call.company.renderer.item("int", int_type, order_id) for order_id in ids)
        return self._reply(call, "GetOrderSyncList", items)

    async def _get_invoices(self, call: _Call) -> Reply:
        ids = params.ints(call.params, "searchParams/OrderIds")
        ids = params.at_most(ids, self.config.max_ids, "OrderIds")
        props = params.strings(call.params, "invoiceReturnProperties")
        row_props = params.strings(call.params, "rowReturnProperties")
        company = call.company
        company.renderer.check(props, row_props, Fault)
        if self._plan.poisoned(ids):
            self.stats["poisoned"] += 1
            raise Fault(POISON_FAULT)
        known = [order_id for order_id in ids if order_id in company.tenant.registered]
        known.sort(key=lambda order_id: hashlib.md5(str(order_id).encode()).digest())  # any order
        if self.config.latency_per_1000:
            await self.clock.sleep(self.config.latency_per_1000 * len(known) / 1000)
        render = functools.partial(company.renderer.order, props=props, row_props=row_props)
        past = self.replica.answers(company.tenant, known, render) if company.number == 1 else {}
        parts = (past.get(order_id) or render(order_id).encode() for order_id in known)
        self.stats["invoices_served"] += len(known)
        self.stats["stale_answers"] += len(past)
        return self._reply(call, "GetInvoices", parts)

    async def _update_invoices(self, call: _Call) -> Reply:
        """Set InvoiceTitle / ReferenceNumber of invoiced orders; an APIException for others."""
        now = self._now()
        answers = []
        for order in call.params.iterfind("{*}invoices/{*}InvoiceOrder"):
            fields = {etree.QName(e).localname: e for e in order}
            id_text = fields["OrderId"].text if "OrderId" in fields else None
            order_id = int(id_text) if id_text and id_text.strip().lstrip("-").isdigit() else 0
            values: dict[str, Any] = {
                name: fields[name].text or "" for name in UPDATABLE if name in fields
            }
            refused = call.company.tenant.update(order_id, values, now)
            answer: dict[str, object] = {"OrderId": order_id}
            if refused is not None:
                answer["APIException"] = {"Type": "ValidationException", "Message": refused}
            else:
                self.stats["invoices_updated"] += 1
            item = call.company.renderer.item("InvoiceOrder", schema.invoice_order(), answer)
            answers.append(item)
        return self._reply(call, "UpdateInvoices", answers)

    async def _get_transactions(self, call: _Call) -> Reply:
        search = call.params.find("{*}searchParams")
        wanted = {
            etree.QName(e).localname: e.text or "" for e in (search if search is not None else ())
        }
        lines = ledger.search(call.company.ledger, wanted)
        kind = ledger.transaction_type()
        parts = (call.company.renderer.item("Transaction", kind, line.wire) for line in lines)
        self.stats["transactions_served"] += len(lines)
        if not lines:
            self.stats["GetTransactions_empty"] += 1
        return self._reply(call, "GetTransactions", parts)

    def whole_list(self, operation: str, company: int = 1) -> Records:
        """What ``operation`` (a whole list: :data:`~extractor.simulator.lists.LISTS`)
        answers for the company ``company`` (1: the default identity's) now."""
        changed = self._lists.get((operation, company))
        if changed is not None:
            return changed
        return LISTS[operation].records(self.companies[company - 1])

    def table_truth(self, table: str, identity: int | str = 1) -> tables.Truth:
        """What a correct extractor writes to ``table`` (a whole list's, or one of
        :data:`~extractor.simulator.tables.TABLES`) for ``identity`` now: its rows by key."""
        company = self.company(identity)
        return tables.truth(
            table, company, functools.partial(self.whole_list, company=company.number)
        )

    def change_list(self, operation: str, records: Records, company: int = 1) -> None:
        """From now on ``operation`` answers ``records`` for ``company`` (a type added,
        renamed or dropped in the books)."""
        self._lists[(operation, company)] = list(records)

    async def _whole_list(self, operation: str, call: _Call) -> Reply:
        records = self.whole_list(operation, call.company.number)
        return self._records(call, operation, LISTS[operation].record, records)

    async def _query(self, operation: str, call: _Call) -> Reply:
        query, company = QUERIES[operation], call.company
        listed = functools.partial(self.whole_list, company=company.number)
        answer = query.answer(Asked(company, call.params, self.config, listed))
        if not query.single:
            return self._records(call, operation, query.record, answer)
        return self._reply(call, operation, [company.renderer.content(query.struct, answer)])

    def _records(self, call: _Call, operation: str, record: str, records: Records) -> Reply:
        """An answer that lists ``records``, each a ``record`` of the WSDL."""
        kind = schema.service(SERVICES[call.request.path]).type(record)
        parts = (call.company.renderer.item(record, kind, wire) for wire in records)
        self.stats[f"{operation}_records"] += len(records)
        return self._reply(call, operation, parts)

    def _reply(
        self, call: _Call, operation: str, parts: Iterable[bytes], *, leaf: bool = False
    ) -> Reply:
        wsdl = SERVICES[call.request.path]
        body = call.company.renderer.reply(call.version, operation, wsdl, parts, leaf=leaf)
        headers = {"Content-Type": call.version.content_type, **call.headers}
        return Reply(200, headers, body, call.cut)

    def _time(self) -> float:
        """The service's own time: its clock's, offset by ``clock_offset``."""
        return self.clock.time() + self.config.clock_offset

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._time(), dt.UTC).replace(tzinfo=None)
