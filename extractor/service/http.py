"""The only module that talks to aiohttp: a :class:`~extractor.service.transport.Wire` over HTTP.

aiohttp's exceptions are translated here into the :mod:`extractor.errors` tree; redirects are
never followed (they would carry the Login envelope, the password, elsewhere).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp

from extractor.config import DEFAULT_TIMEOUTS, Timeouts
from extractor.errors import InvalidOption, MalformedResponse, RequestTimeout, TransportError


class HttpReply:
    """An aiohttp response as a :class:`~extractor.service.transport.Reply`."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def chunks(self, size: int) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_chunked(size):
            yield chunk

    async def read(self, limit: int) -> bytes:
        return await self._response.content.read(limit)


class HttpWire:
    """One aiohttp session, shared by every request of a run."""

    def __init__(
        self,
        *,
        concurrency: int = 8,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        verify_tls: bool = True,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeouts.attempt, connect=timeouts.connect)
        # ssl=True verifies certificates against the system store; False only on --insecure
        self._connector = aiohttp.TCPConnector(limit=concurrency + 2, ssl=verify_tls)
        self._http = aiohttp.ClientSession(
            connector=self._connector,
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),  # the session cookie is sent explicitly
            auto_decompress=True,
        )

    @asynccontextmanager
    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], name: str
    ) -> AsyncIterator[HttpReply]:
        try:
            async with self._http.post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as response:
                yield HttpReply(response)
        except TimeoutError:  # asyncio.TimeoutError is TimeoutError since 3.11
            raise RequestTimeout(f"{name}: no complete response in time") from None
        except aiohttp.InvalidURL:
            raise InvalidOption(f"{{base_url}} {url!r} is not a valid URL") from None
        except aiohttp.ClientPayloadError as exc:
            raise MalformedResponse(f"{name}: response body cut off ({exc})") from None
        except aiohttp.ClientError as exc:
            raise TransportError(f"{name}: {_describe(exc)}") from None

    async def close(self) -> None:
        await self._http.close()


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})"
    return str(exc) or type(exc).__name__
