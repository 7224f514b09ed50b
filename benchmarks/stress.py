"""Servers that misbehave at scale, for ``make bench``: a listing of millions of ids, a gzip
bomb, an endless body. Each runs in a thread of its own (its own event loop), in front of a
small simulator, while the extractor runs as the real CLI in another process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

from aiohttp import web

from extractor.simulator.server import Simulator, SimulatorConfig
from tests.hostile import (
    SOAP_CLOSE,
    SOAP_OPEN,
    HostileServer,
    Request,
    Rule,
    answer,
    endless,
    gzip_bomb,
    streamed,
)

LIST_OPEN = (
    b'<?xml version="1.0" encoding="utf-8"?><soap:Envelope '
    b'xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
    b'<GetOrderSyncListResponse xmlns="http://24sevenOffice.com/webservices">'
    b"<GetOrderSyncListResult>"
)
LIST_CLOSE = b"</GetOrderSyncListResult></GetOrderSyncListResponse></soap:Body></soap:Envelope>"


def listing(count: int) -> Rule:
    """GetOrderSyncList answers ``count`` ids (1 .. count)."""

    async def chunks() -> AsyncIterator[bytes]:
        yield LIST_OPEN
        step = 50_000
        for start in range(1, count + 1, step):
            ids = range(start, min(start + step, count + 1))
            yield b"".join(b"<int>%d</int>" % i for i in ids)
        yield LIST_CLOSE

    return streamed(chunks, {})


async def nothing_found(request: Request) -> web.StreamResponse:
    """GetInvoices holds none of the ids asked for."""
    return web.Response(body=SOAP_OPEN + SOAP_CLOSE, content_type="text/xml")


@contextmanager
def hostile_in_thread(
    rules: Callable[[], dict[str, Rule]], orders: int = 100
) -> Iterator[HostileServer]:
    """A HostileServer (with ``rules()``) in front of a simulator of ``orders``, started."""
    started = threading.Event()
    url: list[HostileServer] = []
    stop: list[asyncio.Event] = []

    async def serve() -> None:
        async with (
            Simulator(SimulatorConfig(orders=orders)) as simulator,
            HostileServer(simulator.url) as server,
        ):
            for operation, rule in rules().items():
                server.on(operation, rule)
            stop.append(asyncio.Event())
            url.append(server)
            started.set()
            await stop[0].wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    started.wait(60)
    try:
        yield url[0]
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(30)


def dead_service() -> dict[str, Rule]:
    """Every GetInvoices fails the same way."""
    return {"GetInvoices": answer(500, b"Internal Server Error", content_type="text/plain")}


def gzip_bombs() -> dict[str, Rule]:
    return {"GetInvoices": gzip_bomb(4 * 1024**3)}


def endless_bodies() -> dict[str, Rule]:
    return {"GetInvoices": endless()}


def huge_listing(count: int) -> Callable[[], dict[str, Rule]]:
    return lambda: {"GetOrderSyncList": listing(count), "GetInvoices": nothing_found}
