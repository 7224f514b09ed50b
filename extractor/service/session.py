"""Login once, reuse the session everywhere, re-login once (for all workers) when it expires."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

from extractor import soap
from extractor.clock import SYSTEM, Clock
from extractor.config import LOGIN_RETRY, Credentials, RetryPolicy, ServiceConfig
from extractor.errors import (
    AuthenticationFailed,
    MalformedResponse,
    NotAService,
    ServerError,
    ServiceUnreachable,
    SessionExpired,
    TransportError,
)
from extractor.parser import RecordStream, Sink
from extractor.service.limiter import Gate
from extractor.service.retry import persistently
from extractor.service.servicetime import ServiceTime
from extractor.service.transport import Transport, Wire

S = TypeVar("S", bound=Sink)
_LOGIN_RESULT = "{http://24sevenOffice.com/webservices}LoginResult"
#: Answers to Login that say there is no such service at the URL (rather than an outage).
_NOT_A_SERVICE = frozenset({400, 401, 403, 404, 405, 406, 410, 415, 501})


class Session:
    """Holds the ``ASP.NET_SessionId`` of a run; every call goes through :meth:`call`."""

    def __init__(
        self,
        transport: Transport,
        credentials: Credentials,
    ) -> None:
        self._transport = transport
        self._credentials = credentials
        self._sleep = transport.clock.sleep
        self._session_id: str | None = None
        self._lock = asyncio.Lock()
        self.logins = 0
        self.requests = 0  # calls sent through :meth:`call`, re-tries after a re-login included

    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def logged_in(self) -> bool:
        return self._session_id is not None

    @property
    def service_time(self) -> ServiceTime:
        """The service's clock, as its replies so far told it."""
        return self._transport.service_time

    async def login(self, policy: RetryPolicy = LOGIN_RETRY) -> None:
        """Log in; AuthenticationFailed when the service refuses the credentials."""

        url = self._transport.base_url
        try:
            self._session_id = await persistently(self._login_once, policy, self._sleep)
        except TransportError as exc:
            raise ServiceUnreachable(f"cannot reach {url}: {exc}") from None
        except MalformedResponse as exc:
            raise NotAService(
                f"{url} is not a 24SevenOffice SOAP endpoint (Login: {exc}); check {{base_url}}"
            ) from None
        except ServerError as exc:
            if exc.status not in _NOT_A_SERVICE:
                raise ServiceUnreachable(f"{url} is not answering Login: {exc}") from None
            raise NotAService(
                f"{url} is not a 24SevenOffice SOAP endpoint (Login: {exc}); check {{base_url}}"
            ) from None
        self.logins += 1

    async def _login_once(self) -> str:
        creds = self._credentials
        credential: dict[str, Any] = {
            "ApplicationId": creds.application_id,
            "Password": creds.password,
            "Username": creds.username,
        }
        if creds.identity_id:
            credential["IdentityId"] = creds.identity_id
        stream = RecordStream(_LOGIN_RESULT, lambda elem: elem.text or "")
        await self._transport.call(soap.LOGIN, {"credential": credential}, stream)
        session_id = stream.records[0] if stream.records else ""
        if not session_id:
            raise AuthenticationFailed(
                "login refused: check TFSO_USERNAME, TFSO_PASSWORD and TFSO_APPLICATION_ID"
            )
        return str(session_id)

    async def call(
        self, operation: soap.Operation, params: Mapping[str, Any], sink: Callable[[], S]
    ) -> S:
        """One attempt of ``operation``; after an expired session, one shared re-login and again."""
        used = self._session_id
        try:
            return await self._send(operation, params, sink, used)
        except SessionExpired:
            await self._relogin(used)
            return await self._send(operation, params, sink, self._session_id)

    async def _send(
        self,
        operation: soap.Operation,
        params: Mapping[str, Any],
        sink: Callable[[], S],
        session_id: str | None,
    ) -> S:
        self.requests += 1
        target = sink()
        await self._transport.call(operation, params, target, session_id)
        return target

    async def _relogin(self, expired: str | None) -> None:
        async with self._lock:
            if self._session_id == expired:  # the first worker to notice logs in for all
                await self.login()


@contextlib.asynccontextmanager
async def connected(
    service: ServiceConfig,
    credentials: Credentials,
    *,
    clock: Clock = SYSTEM,
    wire: Wire | None = None,
    gate: Gate | None = None,
    login: bool = True,
) -> AsyncIterator[Session]:
    """The one connection setup of every command: a transport to ``service`` (its rate
    limiter on ``clock``, over ``wire`` or HTTP, drawing on a fleet's ``gate``) and a session
    on it, logged in unless ``login`` is False (the check logs in as a step of its own); the
    transport is closed on the way out, however the block ends."""
    transport = Transport.for_run(service, clock, wire, gate)
    try:
        session = Session(transport, credentials)
        if login:
            await session.login()
        yield session
    finally:
        await transport.close()
