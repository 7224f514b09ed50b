"""A hostile server for the tests: it fronts a simulator and, per operation, does what the
simulator never does (redirects, proxy pages, DOCTYPEs after comments, UTF-16, absurd pauses,
gzip bombs, endless bodies, huge listings).

Every request goes to the simulator unless a rule is set for its operation; a rule is an
async function of the request that answers it, or returns None to let the simulator answer
(``upstream`` gives the simulator's own answer to transform). Binds 127.0.0.1, port 0.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

Rule = Callable[["Request"], Awaitable[web.StreamResponse | None]]


@dataclass
class Request:
    """One request as a rule sees it."""

    operation: str
    body: bytes
    raw: web.Request
    server: HostileServer

    async def upstream(self) -> tuple[int, dict[str, str], bytes]:
        """The simulator's answer to this very request: status, headers, body."""
        return await self.server.forward(self)


class HostileServer:
    """Started by :meth:`start`, stopped by :meth:`stop` (or ``async with``)."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url
        self.rules: dict[str, Rule] = {}
        self.seen: Counter[str] = Counter()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._client = aiohttp.ClientSession(auto_decompress=False)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:  # first the server: a held request still forwards
            await self._runner.cleanup()
            self._runner = None
        if self._client is not None:
            await self._client.close()

    async def __aenter__(self) -> HostileServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def on(self, operation: str, rule: Rule) -> None:
        self.rules[operation] = rule

    async def forward(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        assert self._client is not None
        headers = {
            name: value
            for name, value in request.raw.headers.items()
            if name.lower() in ("content-type", "soapaction", "cookie")
        }
        url = self.upstream_url + request.raw.path
        async with self._client.post(url, data=request.body, headers=headers) as response:
            kept = {
                name: value
                for name, value in response.headers.items()
                if name.lower() in ("content-type", "set-cookie")
                or name.lower().startswith("apilimit")
            }
            return response.status, kept, await response.read()

    async def _dispatch(self, raw: web.Request) -> web.StreamResponse:
        body = await raw.read()
        request = Request(operation_of(raw), body, raw, self)
        self.seen[request.operation] += 1
        rule = self.rules.get(request.operation)
        if rule is not None:
            answer = await rule(request)
            if answer is not None:
                return answer
        status, headers, content = await request.upstream()
        return web.Response(status=status, body=content, headers=headers)


def operation_of(request: web.Request) -> str:
    """The operation a SOAP request names (SOAPAction, or the 1.2 content type's action)."""
    action = request.headers.get("SOAPAction", "")
    if not action:
        _, _, action = request.headers.get("Content-Type", "").partition('action="')
    return action.strip('"').rstrip('"').rsplit("/", 1)[-1] or request.path


# ---- rules ------------------------------------------------------------------------------


def answer(
    status: int = 200,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    content_type: str = "text/xml; charset=utf-8",
) -> Rule:
    """Always the same answer."""

    async def rule(request: Request) -> web.StreamResponse:
        return web.Response(
            status=status, body=body, headers={"Content-Type": content_type, **(headers or {})}
        )

    return rule


def transformed(change: Callable[[bytes], bytes], content_type: str | None = None) -> Rule:
    """The simulator's answer, its body rewritten by ``change``."""

    async def rule(request: Request) -> web.StreamResponse:
        status, headers, body = await request.upstream()
        if content_type is not None:
            headers["Content-Type"] = content_type
        return web.Response(status=status, body=change(body), headers=headers)

    return rule


def with_headers(headers: dict[str, str]) -> Rule:
    """The simulator's answer with ``headers`` added."""

    async def rule(request: Request) -> web.StreamResponse:
        status, upstream_headers, body = await request.upstream()
        return web.Response(status=status, body=body, headers=upstream_headers | headers)

    return rule


def once(first: Rule) -> Rule:
    """``first`` for the first request of the operation, the simulator afterwards."""
    used = False

    async def rule(request: Request) -> web.StreamResponse | None:
        nonlocal used
        if used:
            return None
        used = True
        return await first(request)

    return rule


def held(until: asyncio.Event, arrived: asyncio.Event | None = None) -> Rule:
    """Every request waits until ``until`` is set, then the simulator answers it; ``arrived``
    is set when the first one comes in."""

    async def rule(request: Request) -> None:
        if arrived is not None:
            arrived.set()
        await until.wait()
        return None

    return rule


def streamed(chunks: Callable[[], AsyncIterator[bytes]], headers: dict[str, str]) -> Rule:
    """An HTTP 200 whose body is whatever ``chunks`` yields, for as long as it yields."""

    async def rule(request: Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/xml", **headers})
        try:
            await response.prepare(request.raw)
            async for chunk in chunks():
                await response.write(chunk)
            await response.write_eof()
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass  # the client hung up: what it should do
        return response

    return rule


def gzip_bomb(decoded_bytes: int) -> Rule:
    """A gzip-encoded body that decodes to ``decoded_bytes`` of whitespace inside a SOAP body."""

    async def chunks() -> AsyncIterator[bytes]:
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        yield packer.compress(SOAP_OPEN)
        block = b" " * (1024 * 1024)
        for _ in range(decoded_bytes // len(block)):
            if out := packer.compress(block):
                yield out
        yield packer.compress(SOAP_CLOSE) + packer.flush()

    return streamed(chunks, {"Content-Encoding": "gzip"})


def endless(sent: list[int] | None = None) -> Rule:
    """An HTTP 200 that never ends: the same order, over and over (``sent[0]`` counts the
    bytes written, if given)."""

    async def chunks() -> AsyncIterator[bytes]:
        yield SOAP_OPEN
        order = b"<InvoiceOrder><OrderId>1</OrderId></InvoiceOrder>" * 2000
        while True:
            if sent is not None:
                sent[0] += len(order)
            yield order

    return streamed(chunks, {})


SOAP_OPEN = (
    b'<?xml version="1.0" encoding="utf-8"?><soap:Envelope '
    b'xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
    b'<GetInvoicesResponse xmlns="http://24sevenOffice.com/webservices"><GetInvoicesResult>'
)
SOAP_CLOSE = b"</GetInvoicesResult></GetInvoicesResponse></soap:Body></soap:Envelope>"
PROXY_PAGE = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 '
    b'Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n'
    b'<html xmlns="http://www.w3.org/1999/xhtml"><head><title>Maintenance</title></head>'
    b"<body><h1>Down for maintenance</h1><p>Please come back later.</p></body></html>"
)
PLAIN_XHTML = (
    b'<?xml version="1.0" encoding="utf-8"?>\n'
    b'<html xmlns="http://www.w3.org/1999/xhtml"><head><title>Sign in</title></head>'
    b"<body><form>Sign in to continue</form></body></html>"
)
