"""The only module that talks to aiohttp: POST an envelope, stream the body into a parser.

aiohttp's exceptions are translated here into the :mod:`extractor.errors` tree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Protocol

import aiohttp

from extractor.config import DEFAULT_TIMEOUTS, Timeouts
from extractor.errors import (
    MalformedResponse,
    RequestTimeout,
    TransportError,
    UsageError,
)
from extractor.soap import Operation, SoapVersion, fault_error

READ_CHUNK: Final = 256 * 1024
MAX_FAULT_BODY: Final = 1024 * 1024


class Sink(Protocol):
    """Where a response body goes while it arrives (a :class:`~extractor.parser.RecordStream`)."""

    bytes_fed: int

    def feed(self, chunk: bytes) -> None: ...

    async def finish(self) -> None:
        """The body is complete: raise if it was not a whole document, or was a fault."""

    def abort(self) -> None:
        """The attempt failed; forget what was fed."""


class Transport:
    """One shared aiohttp session for every request of a run."""

    def __init__(
        self,
        base_url: str,
        version: SoapVersion,
        *,
        concurrency: int = 8,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise UsageError(f"--base-url {base_url!r} must start with http:// or https://")
        self.base_url = base_url.rstrip("/")
        self.version = version
        self._timeout = aiohttp.ClientTimeout(total=timeouts.attempt, connect=timeouts.connect)
        self._connector = aiohttp.TCPConnector(limit=concurrency + 2)
        self._http = aiohttp.ClientSession(
            connector=self._connector,
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),  # the session cookie is sent explicitly
            auto_decompress=True,
        )

    async def close(self) -> None:
        await self._http.close()

    async def call(
        self,
        operation: Operation,
        params: Mapping[str, Any],
        sink: Sink,
        session_id: str | None = None,
    ) -> None:
        """POST ``operation`` and feed its body to ``sink`` as it arrives."""
        body = self.version.envelope(operation.body(params))
        headers = self.version.headers(operation.action)
        if session_id:
            headers["Cookie"] = f"ASP.NET_SessionId={session_id}"
        url = self.base_url + operation.path
        try:
            await self._post(url, body, headers, sink, operation.name)
        except BaseException:
            sink.abort()  # whatever went wrong, this attempt's data is void
            raise

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str], sink: Sink, name: str
    ) -> None:
        try:
            async with self._http.post(url, data=body, headers=headers) as response:
                await _receive(response, sink)
        except TimeoutError:  # asyncio.TimeoutError is TimeoutError since 3.11
            raise RequestTimeout(f"{name}: no complete response in time") from None
        except aiohttp.InvalidURL:
            raise UsageError(f"--base-url {self.base_url!r} is not a valid URL") from None
        except aiohttp.ClientPayloadError as exc:
            raise MalformedResponse(f"{name}: response body cut off ({exc})") from None
        except aiohttp.ClientError as exc:
            raise TransportError(f"{name}: {_describe(exc)}") from None


async def _receive(response: aiohttp.ClientResponse, sink: Sink) -> None:
    if response.status != 200:
        body = await response.content.read(MAX_FAULT_BODY)
        raise fault_error(body, response.status)
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        sink.feed(chunk)
    await sink.finish()


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})"
    return str(exc) or type(exc).__name__
