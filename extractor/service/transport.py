"""The only module that talks to aiohttp: POST an envelope, stream the body into a parser.

aiohttp's exceptions are translated here into the :mod:`extractor.errors` tree.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final, Protocol

import aiohttp

from extractor.config import DEFAULT_TIMEOUTS, ServiceConfig, Timeouts
from extractor.errors import (
    InvalidOption,
    MalformedResponse,
    Quarantined,
    Redirected,
    RequestTimeout,
    ResponseTooLarge,
    TransientError,
    TransportError,
)
from extractor.service.limiter import Limits, RateLimiter
from extractor.soap import SOAP_VERSIONS, Operation, SoapVersion, fault_error

READ_CHUNK: Final = 256 * 1024
MAX_FAULT_BODY: Final = 1024 * 1024
#: Decoded bytes of one body (aiohttp hands the sink decompressed chunks). A 1000-order
#: GetInvoices with every property is ~7 MB; 35 times that is not an answer (an endless
#: body, a gzip bomb): aborted, and the batch split.
MAX_RESPONSE_BYTES: Final = 256 * 1024 * 1024


class Sink(Protocol):
    """Where a response body goes while it arrives (a :class:`~extractor.parser.RecordStream`)."""

    bytes_fed: int

    def feed(self, chunk: bytes) -> None: ...

    async def room(self) -> None:
        """Wait until the sink can take more (backpressure); raise if it already failed."""

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
        limiter: RateLimiter | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        verify_tls: bool = True,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise InvalidOption(f"{{base_url}} {base_url!r} must start with http:// or https://")
        self.base_url = base_url.rstrip("/")
        self.version = version
        self.limiter = limiter or RateLimiter(Limits(per_hour=0))
        self._max_bytes = max_response_bytes
        self._timeout = aiohttp.ClientTimeout(total=timeouts.attempt, connect=timeouts.connect)
        # ssl=True verifies certificates against the system store; False only on --insecure
        self._connector = aiohttp.TCPConnector(limit=concurrency + 2, ssl=verify_tls)
        self._http = aiohttp.ClientSession(
            connector=self._connector,
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),  # the session cookie is sent explicitly
            auto_decompress=True,
        )

    @classmethod
    def for_run(cls, service: ServiceConfig) -> Transport:
        """A run's transport, with its rate limiter (pausing when fewer requests remain than
        can be in flight) and TLS verified unless ``insecure``. The limiter keeps real time
        even when tests inject a retry ``sleep``: a budget is a matter of the wall clock."""
        limits = Limits(
            per_hour=service.max_requests_per_hour,
            reserve=max(8, service.concurrency),
            max_pause=service.timeouts.max_pause,
        )
        return cls(
            service.base_url,
            SOAP_VERSIONS[service.soap_version],
            concurrency=service.concurrency,
            timeouts=service.timeouts,
            limiter=RateLimiter(limits),
            verify_tls=not service.insecure,
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
        await self.limiter.acquire()
        try:
            await self._post(url, body, headers, sink, operation.name)
        except BaseException:
            sink.abort()  # whatever went wrong, this attempt's data is void
            raise

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str], sink: Sink, name: str
    ) -> None:
        try:
            # never follow a redirect: it would carry the Login envelope (the password) elsewhere
            async with self._http.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                self._observe(response)
                await self._receive(response, sink, name)
        except TimeoutError:  # asyncio.TimeoutError is TimeoutError since 3.11
            raise RequestTimeout(f"{name}: no complete response in time") from None
        except aiohttp.InvalidURL:
            raise InvalidOption(f"{{base_url}} {self.base_url!r} is not a valid URL") from None
        except aiohttp.ClientPayloadError as exc:
            raise MalformedResponse(f"{name}: response body cut off ({exc})") from None
        except aiohttp.ClientError as exc:
            raise TransportError(f"{name}: {_describe(exc)}") from None

    async def _receive(self, response: aiohttp.ClientResponse, sink: Sink, name: str) -> None:
        if 300 <= response.status < 400:
            raise _redirected(response, name)
        if response.status != 200:
            body = await response.content.read(MAX_FAULT_BODY)
            raise self._pausing(fault_error(body, response.status), response)
        received = 0
        async for chunk in response.content.iter_chunked(READ_CHUNK):
            received += len(chunk)
            if received > self._max_bytes:
                raise ResponseTooLarge(
                    f"{name}: response passed {self._max_bytes:,} bytes; aborted"
                )
            sink.feed(chunk)
            await sink.room()
        await sink.finish()

    def _observe(self, response: aiohttp.ClientResponse) -> None:
        """Pace every worker by the service's own rate-limit headers."""
        remaining = response.headers.get("APILimitRemaining", "")
        reset = _when(response.headers.get("APILimitReset", ""))
        if remaining.strip().isdigit():
            self.limiter.observe(int(remaining), reset)

    def _pausing(self, error: BaseException, response: aiohttp.ClientResponse) -> BaseException:
        """Make every worker wait when the service says so (quarantine, Retry-After)."""
        if isinstance(error, Quarantined):
            self.limiter.quarantines += 1
            self.limiter.pause_until(error.until, "quarantined by the service")
        elif isinstance(error, TransientError):
            delay = _retry_after(response.headers.get("Retry-After", ""))
            if delay is not None:
                self.limiter.pause_until(
                    time.time() + delay,
                    f"HTTP {response.status} with Retry-After {delay:,.0f} s"
                    if delay >= 10
                    else f"HTTP {response.status} with Retry-After {delay:g} s",
                )
        return error


def _redirected(response: aiohttp.ClientResponse, name: str) -> Redirected:
    location = response.headers.get("Location", "")
    host = urllib.parse.urlsplit(location).netloc or response.url.host or "the same host"
    return Redirected(
        f"{name}: the service answered HTTP {response.status}, redirecting to {host}; "
        "requests never follow redirects (credentials go to {base_url} only): "
        "point {base_url} at the service itself"
    )


def _when(text: str) -> dt.datetime | None:
    """An ISO timestamp, UTC when it names no offset; None when absent or unreadable."""
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _retry_after(text: str) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    text = text.strip()
    if not text:
        return None
    if text.replace(".", "", 1).isdigit():
        return float(text)
    try:
        return max(email.utils.parsedate_to_datetime(text).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})"
    return str(exc) or type(exc).__name__
