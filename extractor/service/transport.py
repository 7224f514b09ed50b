"""POST an envelope, stream the body into a parser: the extractor's one way to the service.

:class:`Transport` builds the request, waits for the rate limiter, reads the service's budget
headers and pauses, refuses redirects and oversized bodies, and feeds the body to a
:class:`Sink` as it arrives. What carries the bytes is a :class:`Wire`, a one-method seam:
:class:`~extractor.service.http.HttpWire` over the network, or the simulator itself in memory
(:mod:`extractor.simulator.memory`), so that retry, quarantine, budget and split tests run
without a socket.
"""

from __future__ import annotations

import email.utils
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, Protocol

from extractor.clock import SYSTEM, Clock
from extractor.config import ServiceConfig, check_base_url
from extractor.errors import (
    Quarantined,
    Redirected,
    ResponseTooLarge,
    TransientError,
)
from extractor.parser import Sink
from extractor.service.concurrency import UNBOUNDED, Slots
from extractor.service.http import HttpWire
from extractor.service.limiter import Gate, Limits, RateLimiter, Told
from extractor.service.servicetime import ServiceTime
from extractor.soap import SOAP_VERSIONS, Operation, SoapVersion, fault_error

READ_CHUNK: Final = 256 * 1024
MAX_FAULT_BODY: Final = 1024 * 1024
#: Decoded bytes of one body (the wire hands the sink decompressed chunks). A 1000-order
#: GetInvoices with every property is ~7 MB; 35 times that is not an answer (an endless
#: body, a gzip bomb): aborted, and the batch split.
MAX_RESPONSE_BYTES: Final = 256 * 1024 * 1024
#: How long a quarantine lasts when the fault does not say when it ends.
UNNAMED_QUARANTINE: Final = 60.0


class Reply(Protocol):
    """One answer: its status, its headers (looked up by name in any case), its body."""

    status: int
    headers: Mapping[str, str]

    def chunks(self, size: int) -> AsyncIterator[bytes]:
        """The body, decoded, as it arrives."""
        ...

    async def read(self, limit: int) -> bytes:
        """At most ``limit`` bytes of the body."""
        ...


class Wire(Protocol):
    """What carries a request to the service and its reply back."""

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str], name: str
    ) -> AbstractAsyncContextManager[Reply]:
        """POST ``body``; the reply, open while the context lasts. Failures to reach the
        service are raised as :class:`~extractor.errors.TransportError` (``name``: the
        operation, for messages)."""
        ...

    async def close(self) -> None: ...


class Transport:
    """Every request of a run goes through one transport, its limiter and its wire."""

    def __init__(
        self,
        base_url: str,
        version: SoapVersion,
        *,
        wire: Wire | None = None,
        limiter: RateLimiter | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        requests: int | None = None,
        slots: Slots | None = None,
    ) -> None:
        """``requests``: at most this many in flight (None: as many as are called), unless
        ``slots`` (an adaptive number) says."""
        check_base_url(base_url)
        self.base_url = base_url.rstrip("/")
        self.version = version
        self.limiter = limiter or RateLimiter(Limits(per_hour=0))
        self.service_time = ServiceTime(self.limiter.clock)  # from every reply's Date
        self.wire: Wire = wire or HttpWire()
        self._max_bytes = max_response_bytes
        self.slots = slots or Slots(requests or UNBOUNDED, clock=self.limiter.clock)

    @classmethod
    def for_run(
        cls,
        service: ServiceConfig,
        clock: Clock = SYSTEM,
        wire: Wire | None = None,
        gate: Gate | None = None,
    ) -> Transport:
        """A run's transport, with its rate limiter (pausing when fewer requests remain than
        can be in flight, and drawing on a fleet's ``gate``) on ``clock``, over ``wire`` or
        else HTTP with TLS verified unless ``insecure``."""
        limits = Limits(
            per_hour=service.max_requests_per_hour,
            max_pause=service.timeouts.max_pause,
        )
        return cls(
            service.base_url,
            SOAP_VERSIONS[service.soap_version],
            wire=wire
            or HttpWire(
                concurrency=service.most_in_flight,
                timeouts=service.timeouts,
                verify_tls=not service.insecure,
            ),
            limiter=RateLimiter(limits, clock, gate),
            slots=Slots.for_service(service, clock),
        )

    @property
    def clock(self) -> Clock:
        """The run's clock, which its limiter keeps."""
        return self.limiter.clock

    async def close(self) -> None:
        await self.wire.close()

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
            async with self.slots.call():
                await self._send(operation.name, url, body, headers, sink)
                # the body is in: the slot serves the next request while this one's parse ends
                await sink.finish()
        except BaseException:
            sink.abort()  # whatever went wrong, this attempt's data is void
            raise

    async def _send(
        self, name: str, url: str, body: bytes, headers: dict[str, str], sink: Sink
    ) -> None:
        """POST in a slot, once the rate limits let it go; the slots learn how it went."""
        async with self.slots.request() as flight:
            ticket = await self.limiter.acquire()
            flight.went()
            try:
                async with self.wire.post(url, body, headers, name) as reply:
                    self._observe(reply, ticket)
                    await self._receive(reply, sink, name)
            except Exception as exc:
                flight.answered(name, exc)
                raise
            finally:
                self.limiter.release(ticket)
            flight.answered(name)

    async def _receive(self, reply: Reply, sink: Sink, name: str) -> None:
        if 300 <= reply.status < 400:
            raise _redirected(reply, name, self.base_url)
        if reply.status != 200:
            body = await reply.read(MAX_FAULT_BODY)
            raise self._pausing(fault_error(body, reply.status), reply)
        received = 0
        async for chunk in reply.chunks(READ_CHUNK):
            received += len(chunk)
            if received > self._max_bytes:
                raise ResponseTooLarge(
                    f"{name}: response passed {self._max_bytes:,} bytes; aborted"
                )
            sink.feed(chunk)
            await sink.room()

    def _observe(self, reply: Reply, ticket: int) -> None:
        """Pace every worker by the service's own rate-limit headers; learn its clock."""
        self.service_time.observe(reply.headers.get("Date", ""))
        told = Told.of(reply.headers)
        if told is not None:
            self.limiter.observe(told, ticket)

    def _pausing(self, error: BaseException, reply: Reply) -> BaseException:
        """Make every worker wait when the service says so (quarantine, Retry-After)."""
        now = self.limiter.clock.time()
        if isinstance(error, Quarantined):
            self.limiter.quarantines += 1
            named = error.until
            until = (
                self.limiter.budget.place(named) if named is not None else now + UNNAMED_QUARANTINE
            )
            self.limiter.pause_until(until, "quarantined by the service")
        elif isinstance(error, TransientError):
            delay = _retry_after(reply.headers.get("Retry-After", ""), now)
            if delay is not None:
                self.limiter.pause_until(
                    now + delay,
                    f"HTTP {reply.status} with Retry-After {delay:,.0f} s"
                    if delay >= 10
                    else f"HTTP {reply.status} with Retry-After {delay:g} s",
                )
        return error


def _redirected(reply: Reply, name: str, base_url: str) -> Redirected:
    location = reply.headers.get("Location", "")
    host = urllib.parse.urlsplit(location).netloc or urllib.parse.urlsplit(base_url).hostname
    host = host or "the same host"
    return Redirected(
        f"{name}: the service answered HTTP {reply.status}, redirecting to {host}; "
        "requests never follow redirects (credentials go to {base_url} only): "
        "point {base_url} at the service itself"
    )


def _retry_after(text: str, now: float) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date (``now``: wall-clock)."""
    text = text.strip()
    if not text:
        return None
    if text.replace(".", "", 1).isdigit():
        return float(text)
    try:
        return max(email.utils.parsedate_to_datetime(text).timestamp() - now, 0.0)
    except (TypeError, ValueError):
        return None
