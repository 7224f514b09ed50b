"""The built-in 24SevenOffice simulator: a real aiohttp server at the live service paths."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import itertools
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from lxml import etree

from extractor import schema, soap
from extractor.simulator import ledger
from extractor.simulator.faults import (
    HOSTILE_BODY,
    NO_FAULTS,
    POISON_FAULT,
    TIMEOUT_FAULT,
    Budget,
    FaultConfig,
    FaultPlan,
)
from extractor.simulator.ledger import Ledger
from extractor.simulator.tenant import Churn, ChurnReport, Tenant, restrict

DEMO_APPLICATION_ID: Final = "6f1d7a3e-0c55-4d5b-9a54-7f0e2b1c9d01"
DEMO_USERNAME: Final = "demo@example.no"
DEMO_PASSWORD: Final = "simulator-demo"
SESSION_COOKIE: Final = "ASP.NET_SessionId"
NOT_AUTHENTICATED: Final = "Session is not authenticated"
CHUNK: Final = 64 * 1024
STATS_PATH: Final = "/_stats"
CHURN_PATH: Final = "/_churn"
#: What UpdateInvoices may change, as the live service says.
UPDATABLE: Final = ("InvoiceTitle", "ReferenceNumber")
#: The operations faults are injected into (never Login).
DATA_OPERATIONS: Final = frozenset(
    {"GetOrderSyncList", "GetInvoices", "GetTransactions", "UpdateInvoices"}
)
_SERVICES: Final = {
    soap.AUTH_PATH: "authService",
    soap.INVOICE_PATH: "invoiceService",
    soap.TRANSACTION_PATH: "transactionService",
}

_PARSER: Final = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


@dataclass(frozen=True)
class SimulatorConfig:
    """What the simulated service holds and how it behaves."""

    orders: int = 50_000
    seed: int = 7
    application_id: str = DEMO_APPLICATION_ID
    username: str = DEMO_USERNAME
    password: str = field(default=DEMO_PASSWORD, repr=False)
    latency: float = 0.0
    latency_per_1000: float = 0.0
    session_ttl_calls: int = 0
    max_ids: int = 1000
    host: str = "127.0.0.1"
    port: int = 0
    faults: FaultConfig = NO_FAULTS


DEFAULT_SIMULATOR: Final = SimulatorConfig()


class Fault(Exception):
    """Answer the request with a SOAP fault (HTTP 500)."""


@dataclass
class _Call:
    version: soap.SoapVersion
    operation: str
    params: etree._Element
    request: web.Request
    headers: dict[str, str] = field(default_factory=dict)  # on every response
    cut: str | None = None  # "reset" or "truncate": break the body halfway


Handler = Callable[[_Call], Awaitable[web.StreamResponse]]


class Simulator:
    """Started by :meth:`start` (``port`` 0 picks a free one), stopped by :meth:`stop`."""

    def __init__(self, config: SimulatorConfig = DEFAULT_SIMULATOR, tenant: Tenant | None = None):
        self.config = config
        self.tenant = tenant or Tenant(config.orders, config.seed)
        self.stats: Counter[str] = Counter()
        self.budget = Budget(config.faults)
        self._plan = FaultPlan(config.faults)
        self._sessions: dict[str, int] = {}
        self._logins = 0
        self._row_cache: dict[tuple[int, tuple[str, ...]], str] = {}
        self._templates: dict[int, dict[str, str]] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._order_type = schema.invoice_order()
        self._row_type = schema.invoice_row()
        self._handlers: dict[str, dict[str, Handler]] = {
            soap.AUTH_PATH: {"Login": self._login, "HasSession": self._has_session},
            soap.INVOICE_PATH: {
                "GetOrderSyncList": self._authenticated(self._sync_list),
                "GetInvoices": self._authenticated(self._get_invoices),
                "UpdateInvoices": self._authenticated(self._update_invoices),
            },
            soap.TRANSACTION_PATH: {
                "GetTransactions": self._authenticated(self._get_transactions),
            },
        }
        self._ledger: Ledger | None = None

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for path in self._handlers:
            app.router.add_post(path, self._dispatch)
        app.router.add_get(STATS_PATH, self._stats)
        app.router.add_post(CHURN_PATH, self._churn)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self.config.host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def churn(self, changes: Churn, seed: int = 0) -> ChurnReport:
        """Change, delete and add orders now (:meth:`Tenant.churn`), and settle the open
        invoices of the changed orders in the ledger; what changed, also in ``/_stats``."""
        ledger_ = self.ledger  # built from the tenant as it was, before it changes
        when = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        report = self.tenant.churn(random.Random(f"churn:{self.config.seed}:{seed}"), changes, when)
        self.stats["ledger_lines_posted"] += ledger_.settle(report.changed, when)
        for name in ("changed", "deleted", "added"):
            self.stats[f"orders_{name}"] += len(getattr(report, name))
        return report

    async def _churn(self, request: web.Request) -> web.Response:
        """``POST /_churn`` with ``{"changed": K, "deleted": D, "added": A, "seed": S}``."""
        try:
            body = await request.json()
            changes = Churn(*(int(body.get(name, 0)) for name in ("changed", "deleted", "added")))
            report = self.churn(changes, int(body.get("seed", 0)))
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": f"bad churn request: {exc}"}, status=400)
        return web.json_response(dataclasses.asdict(report))

    def expire_sessions(self) -> None:
        """Forget every session, as the live service does after a while."""
        self._sessions.clear()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        version = soap.SOAP12 if "soap+xml" in request.content_type else soap.SOAP11
        blocked, headers = self.budget.admit()
        self.stats["requests"] += 1
        try:
            call = await self._parse(request, version)
            call.headers = headers
            handler = self._handlers[request.path].get(call.operation)
            if handler is None:
                raise Fault(f"Unable to handle request. Unknown operation {call.operation!r}.")
            self.stats[call.operation] += 1
            if blocked is not None:
                self.stats["during_quarantine"] = self.budget.arrived_in_quarantine
                raise Fault(blocked)
            if self.config.latency:
                await asyncio.sleep(self.config.latency)
            if call.operation in DATA_OPERATIONS:
                misbehaved = await self._misbehave(call)
                if misbehaved is not None:
                    return misbehaved
            return await handler(call)
        except Fault as fault:
            self.stats["faults"] += 1
            response = _fault(version, str(fault))
            response.headers.update(headers)
            return response

    async def _misbehave(self, call: _Call) -> web.StreamResponse | None:
        """The injected fault's response, or None to answer (``call.cut`` may break it)."""
        if self.config.faults.hostile:
            self.stats["fault:hostile"] += 1
            return web.Response(body=HOSTILE_BODY, content_type="text/xml", headers=call.headers)
        kind = self._plan.draw()
        if kind is None:
            return None
        self.stats[f"fault:{kind}"] += 1
        if kind == "http500":
            return web.Response(status=500, text="Internal Server Error", headers=call.headers)
        if kind == "throttle":
            retry = {"Retry-After": str(self.config.faults.retry_after)}
            return web.Response(status=429, text="Too Many Requests", headers=call.headers | retry)
        if kind == "timeout-fault":
            raise Fault(TIMEOUT_FAULT)
        if kind == "slow":
            await asyncio.sleep(self.config.faults.slow_seconds)
        else:
            call.cut = kind
        return None

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.stats))

    async def _parse(self, request: web.Request, version: soap.SoapVersion) -> _Call:
        try:
            root = etree.fromstring(await request.read(), _PARSER)
        except etree.XMLSyntaxError as exc:
            raise Fault(f"Server was unable to read request. ---> {exc}") from None
        body = root.find(f"{{{version.namespace}}}Body")
        if body is None or len(body) == 0:
            raise Fault("Server was unable to read request. ---> no SOAP Body")
        element = body[0]
        operation = etree.QName(element).localname
        service = schema.service(_SERVICES[request.path])
        action = service.actions.get(operation, "")
        sent = _sent_action(request, version)
        if sent is not None and sent != action:
            raise Fault(f"Server did not recognize the value of HTTP Header SOAPAction: {sent}.")
        return _Call(version, operation, element, request)

    def _authenticated(self, handler: Handler) -> Handler:
        async def checked(call: _Call) -> web.StreamResponse:
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

    async def _login(self, call: _Call) -> web.StreamResponse:
        given = {etree.QName(e).localname: (e.text or "") for e in call.params.iter()}
        expected = (self.config.application_id, self.config.username, self.config.password)
        token = ""
        if (given.get("ApplicationId"), given.get("Username"), given.get("Password")) == expected:
            self._logins += 1
            token = hashlib.sha1(f"{self.config.seed}:{self._logins}".encode()).hexdigest()[:24]
            self._sessions[token] = 0
        response = _respond(call, "Login", f"<LoginResult>{token}</LoginResult>")
        if token:
            response.set_cookie(SESSION_COOKIE, token, httponly=True)
        return response

    async def _has_session(self, call: _Call) -> web.StreamResponse:
        valid = call.request.cookies.get(SESSION_COOKIE, "") in self._sessions
        return _respond(
            call, "HasSession", f"<HasSessionResult>{str(valid).lower()}</HasSessionResult>"
        )

    async def _sync_list(self, call: _Call) -> web.StreamResponse:
        changed = _when(call.params, "ChangedAfter")
        registered = _when(call.params, "RegisteredAfter")
        ids = self.tenant.sync_list(changed, registered)
        items = "".join(f"<int>{order_id}</int>" for order_id in ids)
        inner = f"<GetOrderSyncListResult>{items}</GetOrderSyncListResult>"
        return await _send(call, "GetOrderSyncList", [inner.encode()])

    async def _get_invoices(self, call: _Call) -> web.StreamResponse:
        ids = [
            int(e.text or "") for e in call.params.iterfind("{*}searchParams/{*}OrderIds/{*}int")
        ]
        if len(ids) > self.config.max_ids:
            raise Fault(
                "Server was unable to process request. ---> "
                f"Maximum {self.config.max_ids} OrderIds per request, got {len(ids)}."
            )
        props = _strings(call.params, "invoiceReturnProperties")
        row_props = _strings(call.params, "rowReturnProperties")
        _check_known(self._order_type, props)
        _check_known(self._row_type, row_props)
        if self._plan.poisoned(ids):
            self.stats["poisoned"] += 1
            raise Fault(POISON_FAULT)
        known = [order_id for order_id in ids if order_id in self.tenant.registered]
        known.sort(key=lambda order_id: hashlib.md5(str(order_id).encode()).digest())  # any order
        if self.config.latency_per_1000:
            await asyncio.sleep(self.config.latency_per_1000 * len(known) / 1000)
        return await self._stream_orders(call, known, props, row_props)

    async def _stream_orders(
        self, call: _Call, ids: list[int], props: tuple[str, ...], row_props: tuple[str, ...]
    ) -> web.StreamResponse:
        parts = (self.render_order(order_id, props, row_props).encode() for order_id in ids)
        response = await _send(
            call,
            "GetInvoices",
            itertools.chain([b"<GetInvoicesResult>"], parts, [b"</GetInvoicesResult>"]),
        )
        self.stats["invoices_served"] += len(ids)
        return response

    async def _update_invoices(self, call: _Call) -> web.StreamResponse:
        """Set InvoiceTitle / ReferenceNumber of invoiced orders; an APIException for others."""
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        answers = []
        for order in call.params.iterfind("{*}invoices/{*}InvoiceOrder"):
            fields = {etree.QName(e).localname: e for e in order}
            id_text = fields["OrderId"].text if "OrderId" in fields else None
            order_id = int(id_text) if id_text and id_text.strip().lstrip("-").isdigit() else 0
            values: dict[str, Any] = {
                name: fields[name].text or "" for name in UPDATABLE if name in fields
            }
            refused = self.tenant.update(order_id, values, now)
            answer: dict[str, object] = {"OrderId": order_id}
            if refused is not None:
                answer["APIException"] = {"Type": "ValidationException", "Message": refused}
            else:
                self.stats["invoices_updated"] += 1
            answers.append(soap.encode_value("InvoiceOrder", self._order_type, answer).encode())
        result = itertools.chain([b"<UpdateInvoicesResult>"], answers, [b"</UpdateInvoicesResult>"])
        return await _send(call, "UpdateInvoices", result)

    @property
    def ledger(self) -> Ledger:
        """The tenant's general ledger, built on first use."""
        if self._ledger is None:
            self._ledger = Ledger(self.tenant, self.config.seed)
        return self._ledger

    async def _get_transactions(self, call: _Call) -> web.StreamResponse:
        search = call.params.find("{*}searchParams")
        params = {
            etree.QName(e).localname: e.text or "" for e in (search if search is not None else ())
        }
        lines = ledger.search(self.ledger, params)
        kind = ledger.transaction_type()
        parts = (soap.encode_value("Transaction", kind, line.wire).encode() for line in lines)
        wrapped = itertools.chain(
            [b"<GetTransactionsResult>"], parts, [b"</GetTransactionsResult>"]
        )
        response = await _send(call, "GetTransactions", wrapped)
        self.stats["transactions_served"] += len(lines)
        return response

    def render_order(
        self, order_id: int, props: tuple[str, ...] = (), row_props: tuple[str, ...] = ()
    ) -> str:
        """One ``InvoiceOrder`` element exactly as GetInvoices sends it."""
        template, own = self.tenant.parts(order_id)
        cached = self._template_parts(template)
        wanted = set(props)
        out = []
        for f in self._order_type.fields:
            if wanted and f.name not in wanted:
                continue
            if f.name == "InvoiceRows" and "InvoiceRows" in own:
                rows = "".join(self._row(n, row_props) for n in own["InvoiceRows"])
                out.append(f"<InvoiceRows>{rows}</InvoiceRows>")
            elif f.name in own:
                out.append(soap.encode_value(f.name, f.type, own[f.name]))
            elif f.name in cached:
                out.append(cached[f.name])
        return f"<InvoiceOrder>{''.join(out)}</InvoiceOrder>"

    def _template_parts(self, template: int) -> dict[str, str]:
        parts = self._templates.get(template)
        if parts is None:
            pooled = self.tenant.order_pool[template]
            parts = self._templates[template] = {
                f.name: soap.encode_value(f.name, f.type, pooled[f.name])
                for f in self._order_type.fields
                if f.name in pooled and f.name != "InvoiceRows"
            }
        return parts

    def _row(self, number: int, row_props: tuple[str, ...]) -> str:
        key = (number, row_props)
        cached = self._row_cache.get(key)
        if cached is None:
            row = restrict(self.tenant.row_pool[number], row_props)
            cached = self._row_cache[key] = soap.encode_value("InvoiceRow", self._row_type, row)
        return cached


def _sent_action(request: web.Request, version: soap.SoapVersion) -> str | None:
    if version is soap.SOAP11:
        return request.headers.get("SOAPAction", "").strip('"')
    for part in request.headers.get("Content-Type", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == "action":
            return value.strip('"')
    return None


def _wrapper(
    version: soap.SoapVersion, operation: str, wsdl: str = "invoiceService"
) -> tuple[bytes, bytes]:
    ns = schema.service(wsdl).namespace
    marker = b"\x00"
    body = (
        f'<{operation}Response xmlns="{ns}">'.encode() + marker + f"</{operation}Response>".encode()
    )
    head, tail = version.envelope(body).split(marker)
    return head, tail


def _respond(call: _Call, operation: str, inner: str) -> web.Response:
    head, tail = _wrapper(call.version, operation)
    return web.Response(
        body=head + inner.encode() + tail,
        content_type=call.version.content_type.split(";")[0],
        charset="utf-8",
        headers=call.headers,
    )


async def _send(call: _Call, operation: str, parts: Iterable[bytes]) -> web.StreamResponse:
    """Stream the operation's response, ``CHUNK`` bytes at a time, broken if ``call.cut`` says."""
    head, tail = _wrapper(call.version, operation, _SERVICES[call.request.path])
    pieces = itertools.chain([head], parts, [tail])
    response = web.StreamResponse(
        headers={"Content-Type": call.version.content_type, **call.headers}
    )
    if call.cut is not None:
        return await _send_broken(call, response, b"".join(pieces))
    await response.prepare(call.request)
    pending, size = [], 0
    for piece in pieces:
        pending.append(piece)
        size += len(piece)
        if size >= CHUNK:
            await response.write(b"".join(pending))
            pending, size = [], 0
    await response.write(b"".join(pending))
    await response.write_eof()
    return response


async def _send_broken(
    call: _Call, response: web.StreamResponse, body: bytes
) -> web.StreamResponse:
    """Half the body: then the connection drops ("reset"), or the message ends ("truncate")."""
    half = body[: len(body) // 2]
    if call.cut == "truncate":
        return web.Response(body=half, headers=response.headers)
    await response.prepare(call.request)
    await response.write(half)
    transport = call.request.transport
    if transport is not None:
        transport.abort()  # no terminating chunk: the client sees the body stop
    return response


def _fault(version: soap.SoapVersion, message: str) -> web.Response:
    return web.Response(
        status=500,
        body=soap.fault_body(version, message),
        content_type=version.content_type.split(";")[0],
        charset="utf-8",
    )


def _strings(params: etree._Element, name: str) -> tuple[str, ...]:
    return tuple(e.text or "" for e in params.iterfind(f"{{*}}{name}/{{*}}string"))


def _check_known(struct: schema.Struct, names: tuple[str, ...]) -> None:
    unknown = sorted(set(names) - set(struct.names))
    if unknown:
        raise Fault(
            f"Server was unable to process request. ---> Invalid property name: {unknown[0]}"
        )


def _when(params: etree._Element, name: str) -> dt.datetime | None:
    found = params.find(f"{{*}}syncParams/{{*}}{name}")
    if found is None or not found.text or found.text.startswith("0001-01-01"):
        return None
    try:
        return dt.datetime.fromisoformat(found.text.strip().removesuffix("Z"))
    except ValueError:
        raise Fault(
            f"Server was unable to read request. ---> invalid dateTime {found.text!r}"
        ) from None
