"""The built-in 24SevenOffice simulator: a real aiohttp server at the live service paths.

Everything the service does is :class:`~extractor.simulator.service.SimulatedService`; this
module only carries its requests and replies over HTTP, breaking a reply the way a dropped
connection does when the fault plan says so. ``GET /_stats`` and ``POST /_churn`` are for
tests and benchmarks in other processes.

``POST /_churn`` takes a JSON object, every key optional::

    {"changed": 10, "deleted": 2, "added": 5,   # orders (invoices of those changed are paid)
     "shape": "accounting",                       # or "uniform"; absent: the configured one
     "customers": {"changed": 3, "deleted": 1, "added": 2, "deactivated": 1},
     "products": {"changed": 3, "deleted": 1, "added": 2},  # never deactivated
     "seed": 0, "identity": 1}

and answers the ids: ``{"changed": [...], "deleted": [...], "added": [...]}`` for the orders,
and for ``customers`` / ``products``, when asked, ``{"changed", "deleted", "added",
"deactivated"}`` each. A customer or product that orders or rows name is never deleted: a
customer is deactivated instead, a product kept. Anything else is a 400 with ``{"error"}``.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from extractor.clock import SYSTEM, Clock
from extractor.simulator.config import (
    DEFAULT_SIMULATOR,
    DEMO_APPLICATION_ID,
    DEMO_PASSWORD,
    DEMO_USERNAME,
    SimulatorConfig,
)
from extractor.simulator.messages import Reply, Request
from extractor.simulator.service import SimulatedService
from extractor.simulator.tenant import Tenant

__all__ = [
    "DEMO_APPLICATION_ID",
    "DEMO_PASSWORD",
    "DEMO_USERNAME",
    "Simulator",
    "SimulatorConfig",
]

CHUNK: Final = 64 * 1024
STATS_PATH: Final = "/_stats"
CHURN_PATH: Final = "/_churn"


class Simulator(SimulatedService):
    """Started by :meth:`start` (``port`` 0 picks a free one), stopped by :meth:`stop`."""

    def __init__(
        self,
        config: SimulatorConfig = DEFAULT_SIMULATOR,
        tenant: Tenant | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        super().__init__(config, tenant, clock)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for path in self.paths:
            app.router.add_post(path, self._http)
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

    async def _http(self, request: web.Request) -> web.StreamResponse:
        headers = {name.lower(): value for name, value in request.headers.items()}
        asked = Request(request.path, headers, await request.read(), dict(request.cookies))
        return await _send(request, await self.answer(asked))

    async def _stats(self, request: web.Request) -> web.Response:
        identities = {c.identity_id: dict(c.stats) for c in self.companies}
        budget = {"budget_windows": self.budget.windows, "budget_use": self.budget.use()}
        load = {"most_in_service": self.load.most}
        return web.json_response(dict(self.stats) | budget | load | {"identities": identities})

    async def _churn(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError as exc:
            return web.json_response({"error": f"bad churn request: {exc}"}, status=400)
        status, answer = self.churn_json(body)
        return web.json_response(answer, status=status)


async def _send(request: web.Request, reply: Reply) -> web.StreamResponse:
    """Stream the reply ``CHUNK`` bytes at a time, broken halfway when ``reply.cut`` says."""
    response = web.StreamResponse(status=reply.status, headers=reply.headers)
    for name, value in reply.cookies.items():
        response.set_cookie(name, value, httponly=True)
    if reply.cut is not None:
        return await _send_broken(request, response, b"".join(reply.parts), reply.cut)
    await response.prepare(request)
    pending, size = [], 0
    for piece in reply.parts:
        pending.append(piece)
        size += len(piece)
        if size >= CHUNK:
            await response.write(b"".join(pending))
            pending, size = [], 0
    await response.write(b"".join(pending))
    await response.write_eof()
    return response


async def _send_broken(
    request: web.Request, response: web.StreamResponse, body: bytes, cut: str
) -> web.StreamResponse:
    """Half the body: then the connection drops ("reset"), or the message ends ("truncate")."""
    half = body[: len(body) // 2]
    if cut == "truncate":
        return web.Response(status=response.status, body=half, headers=response.headers)
    await response.prepare(request)
    await response.write(half)
    if request.transport is not None:
        request.transport.abort()  # no terminating chunk: the client sees the body stop
    return response
