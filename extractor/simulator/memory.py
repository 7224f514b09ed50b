"""The simulated service as a :class:`~extractor.service.transport.Wire`: no socket at all.

The extractor's transport posts to :class:`MemoryWire` exactly as it posts over HTTP; the
service's own replies come back in chunks, broken the way a dropped connection breaks them.
With a :class:`~extractor.clock.ManualClock` shared by both sides, a test of retries,
quarantines, budgets or splits runs in milliseconds through the same code as a real run.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from multidict import CIMultiDict

from extractor.errors import TransportError
from extractor.simulator.messages import Reply, Request
from extractor.simulator.service import SimulatedService

#: The bytes a reply is handed over in, as a socket would deliver them.
CHUNK = 64 * 1024


class MemoryReply:
    """A simulator :class:`Reply` as the transport reads one."""

    def __init__(self, reply: Reply, name: str) -> None:
        self.status = reply.status
        headers = CIMultiDict(reply.headers)
        for cookie, value in reply.cookies.items():
            headers.add("Set-Cookie", f"{cookie}={value}; HttpOnly; Path=/")
        self.headers: Mapping[str, str] = headers
        self._reply, self._name = reply, name

    async def chunks(self, size: int) -> AsyncIterator[bytes]:
        body = b"".join(self._reply.parts)
        if self._reply.cut is not None:
            body = body[: len(body) // 2]
        for start in range(0, len(body), min(size, CHUNK)):
            yield body[start : start + min(size, CHUNK)]
            await asyncio.sleep(0)  # other requests run meanwhile, as over a socket
        if self._reply.cut == "reset":
            raise TransportError(f"{self._name}: connection reset by the service")

    async def read(self, limit: int) -> bytes:
        return b"".join(self._reply.parts)[:limit]


class MemoryWire:
    """Posts go straight to ``service.answer``; the path of the URL picks the endpoint."""

    def __init__(self, service: SimulatedService) -> None:
        self.service = service

    @asynccontextmanager
    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], name: str
    ) -> AsyncIterator[MemoryReply]:
        path = urllib.parse.urlsplit(url).path
        reply = await self.service.answer(Request.of(path, headers, body))
        yield MemoryReply(reply, name)

    async def close(self) -> None:
        return None
