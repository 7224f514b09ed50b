"""The simulator misbehaves as asked; the client's pieces that deal with it, on their own."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from extractor import soap
from extractor.clock import ManualClock
from extractor.config import RetryPolicy
from extractor.engine.state import replay
from extractor.errors import (
    MalformedResponse,
    Quarantined,
    RequestFault,
    ResponseTooLarge,
    ServerError,
    ServerFault,
    StillQuarantined,
    TransportError,
)
from extractor.jobs.listing import OrderRun
from extractor.records.orders import OrderSink, Selection
from extractor.service.limiter import Limits, RateLimiter, Told
from extractor.service.retry import patiently, retrying
from extractor.service.session import Session
from extractor.service.transport import Transport
from extractor.simulator.faults import KINDS, FaultConfig
from extractor.simulator.server import Simulator, SimulatorConfig
from tests.conftest import CREDS


async def get_invoices(simulator: Simulator, ids: list[int]) -> tuple[int, dict[str, str], bytes]:
    """One raw GetInvoices exchange after a Login: status, headers, body."""
    version = soap.SOAP11
    login = soap.LOGIN.body(
        {
            "credential": {
                "ApplicationId": simulator.config.application_id,
                "Username": simulator.config.username,
                "Password": simulator.config.password,
            }
        }
    )
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            simulator.url + soap.AUTH_PATH,
            data=version.envelope(login),
            headers=version.headers(soap.LOGIN.action),
        )
        cookie = response.cookies["ASP.NET_SessionId"].value
        headers = version.headers(soap.GET_INVOICES.action) | {
            "Cookie": f"ASP.NET_SessionId={cookie}"
        }
        body = version.envelope(soap.GET_INVOICES.body(Selection().params(ids)))
        async with http.post(simulator.url + soap.INVOICE_PATH, data=body, headers=headers) as r:
            return r.status, dict(r.headers), await r.read()


@pytest.mark.parametrize(
    ("kind", "status", "error"),
    [
        ("http500", 500, ServerError),
        ("truncate", 200, MalformedResponse),
        ("timeout-fault", 500, ServerFault),
        ("throttle", 429, ServerError),
    ],
)
async def test_each_fault_kind_fails_as_the_client_classifies_it(
    start_simulator: Any, kind: str, status: int, error: type[Exception]
) -> None:
    simulator = await start_simulator(orders=50, faults=FaultConfig(rate=1.0, kinds=(kind,)))
    ids = simulator.tenant.ids[:20]
    got_status, headers, _ = await get_invoices(simulator, ids)
    assert got_status == status
    if kind == "throttle":
        assert headers["Retry-After"] == "1"
    with pytest.raises(error):
        await fetch_once(simulator, ids)
    assert simulator.stats[f"fault:{kind}"] == 2


async def fetch_once(simulator: Simulator, ids: list[int]) -> OrderSink:
    """One GetInvoices attempt through the client's own session and transport."""
    transport = Transport(simulator.url, soap.SOAP11)
    try:
        session = Session(transport, CREDS)
        await session.login()
        opener = lambda: OrderSink(Selection(), ids)  # noqa: E731
        return await session.call(soap.GET_INVOICES, Selection().params(ids), opener)
    finally:
        await transport.close()


async def test_a_reset_connection_is_a_transport_error(start_simulator: Any) -> None:
    simulator = await start_simulator(orders=200, faults=FaultConfig(rate=1.0, kinds=("reset",)))
    with pytest.raises(aiohttp.ClientPayloadError):
        await get_invoices(simulator, simulator.tenant.ids)
    with pytest.raises((TransportError, MalformedResponse)):
        await fetch_once(simulator, simulator.tenant.ids)


async def test_poison_ids_fail_every_request_that_holds_them(start_simulator: Any) -> None:
    simulator = await start_simulator(orders=100)
    poison = simulator.tenant.ids[5]
    faults = FaultConfig(poison_ids=frozenset({poison}))
    simulator = await start_simulator(orders=100, faults=faults)
    for _ in range(3):
        status, _, body = await get_invoices(simulator, simulator.tenant.ids[:10])
        assert status == 500 and b"Object reference not set" in body
    status, _, _ = await get_invoices(simulator, simulator.tenant.ids[10:20])
    assert status == 200
    assert isinstance(soap.fault_error(body, 500), RequestFault)


async def test_budget_headers_then_quarantine_until_the_named_time(start_simulator: Any) -> None:
    simulator = await start_simulator(
        orders=20, faults=FaultConfig(budget=3, window=60, quarantine=30)
    )
    ids = simulator.tenant.ids[:2]
    _, headers, _ = await get_invoices(simulator, ids)  # Login is request 1, this is 2
    assert headers["APILimitRemaining"] == "1"
    reset = dt.datetime.fromisoformat(headers["APILimitReset"].replace("Z", "+00:00"))
    assert 50 < (reset - dt.datetime.now(dt.UTC)).total_seconds() <= 60
    status, _, body = await get_invoices(simulator, ids)  # requests 3 (Login) and 4
    assert status == 500 and b"Limit exceeded by 1. Request is blocked." in body
    error = soap.fault_error(body, 500)
    assert isinstance(error, Quarantined)
    assert 25 < error.until - dt.datetime.now(dt.UTC).timestamp() <= 30
    assert simulator.stats["during_quarantine"] == 0  # the request that started it
    async with aiohttp.ClientSession() as http:
        stats = await (await http.get(simulator.url + "/_stats")).json()
    assert stats["requests"] == 4 and stats["faults"] == 1


async def test_hostile_mode_answers_with_entities(start_simulator: Any) -> None:
    simulator = await start_simulator(orders=10, faults=FaultConfig(hostile=True))
    status, _, body = await get_invoices(simulator, simulator.tenant.ids)
    assert status == 200 and b"<!ENTITY lol3" in body and b'SYSTEM "file:///etc/passwd"' in body


def test_fault_config_refuses_unknown_kinds_and_rates() -> None:
    with pytest.raises(ValueError, match="unknown fault kind 'fire'"):
        FaultConfig(kinds=("fire",))
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        FaultConfig(rate=1.5)
    assert set(FaultConfig().kinds) == set(KINDS)


async def test_limiter_spaces_requests_after_the_burst() -> None:
    clock = ManualClock(1_000_000.0)
    limiter = RateLimiter(Limits(per_hour=3600, burst=2), clock)
    for _ in range(5):
        await limiter.acquire()
    assert clock.time() - 1_000_000.0 == pytest.approx(3.0)  # 2 at once, then 1 a second


async def test_limiter_spends_the_service_budget_to_the_last_request() -> None:
    clock = ManualClock(1_000_000.0)
    limiter = RateLimiter(Limits(per_hour=0), clock)
    first = await limiter.acquire()
    await limiter.acquire()  # two in flight
    limiter.observe(Told(4, clock.time() + 30), first)  # 4 left, the second one will take one
    limiter.release(first)
    for _ in range(3):
        await limiter.acquire()  # the other three: no pause
    assert clock.slept == 0
    await asyncio.gather(limiter.acquire(), limiter.acquire())  # none left: both wait
    # the reset, plus a margin of 0.2 % of the window (at least the 30 s seen of it)
    assert clock.slept == pytest.approx(30.06)
    assert "0 requests left" in limiter.pause_reason


async def test_a_service_clock_behind_ours_holds_its_count_past_our_reset() -> None:
    clock = ManualClock(1_000_000.0)
    limiter = RateLimiter(Limits(per_hour=0), clock)
    ticket = await limiter.acquire()
    limiter.observe(Told(1, clock.time() - 0.2), ticket)  # "resets" 0.2 s ago
    limiter.release(ticket)
    await limiter.acquire()  # the one left
    await limiter.acquire()  # none: wait, rather than trust our clock that it has reset
    assert clock.slept >= 1.0


async def test_a_request_fault_is_retried_once_a_transient_one_fully() -> None:
    calls: list[type[Exception]] = []

    async def attempt(error: type[Exception]) -> None:
        async for round_ in retrying(
            RetryPolicy(attempts=5, fault_attempts=2), ManualClock().sleep
        ):
            with round_:
                calls.append(error)
                raise error("boom")

    for error in (RequestFault, ServerFault):
        with pytest.raises(error):
            await attempt(error)
    assert calls.count(RequestFault) == 2 and calls.count(ServerFault) == 5


async def test_quarantines_are_waited_out_then_given_up() -> None:
    tries = 0

    async def quarantined() -> str:
        nonlocal tries
        tries += 1
        if tries < 3:
            raise Quarantined("Limit exceeded", until=0.0)
        return "done"

    assert await patiently(quarantined) == "done" and tries == 3

    async def forever() -> None:
        raise Quarantined("Limit exceeded", until=0.0)

    with pytest.raises(StillQuarantined, match="run the same command later to resume"):
        await patiently(forever)


def test_a_journal_line_cut_by_a_kill_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(
        b'{"event":"start","run_id":"r","job":{"command":"invoices"}}\n'
        b'{"event":"plan","ids":[1,2,3,4]}\n'
        b'{"event":"staged","key":"01-00000000","ids":[1,2],"counts":{"invoices":2},"missing":[]}\n'
        b'{"event":"failed","ids":[3],"error":"RequestFault: x"}\n'
        b'{"event":"staged","key":"01-000'
    )
    state = replay(path)
    orders = OrderRun(state)
    assert list(orders.remaining()) == [4] and state.counts == {"invoices": 2}
    assert orders.failed_ids == {3} and state.published is None


async def test_a_response_above_the_size_limit_is_aborted(simulator: Simulator) -> None:
    transport = Transport(simulator.url, soap.SOAP11, max_response_bytes=100_000)
    ids = simulator.tenant.ids[:200]
    try:
        session = Session(transport, CREDS)
        await session.login()
        opener = lambda: OrderSink(Selection(), ids)  # noqa: E731
        with pytest.raises(ResponseTooLarge, match="passed 100,000 bytes; aborted"):
            await session.call(soap.GET_INVOICES, Selection().params(ids), opener)
    finally:
        await transport.close()


async def test_a_cut_counts_only_when_an_answer_is_broken() -> None:
    # a cut drawn for a request the service refuses anyway (an expired session) breaks
    # nothing: counting it would claim a fault the client never saw
    from extractor.simulator.messages import Request
    from extractor.simulator.service import SimulatedService

    service = SimulatedService(
        SimulatorConfig(orders=20, faults=FaultConfig(rate=1.0, kinds=("truncate",)))
    )
    version = soap.SOAP11
    ids = service.tenant.ids[:5]
    body = version.envelope(soap.GET_INVOICES.body(Selection().params(ids)))
    path, action = soap.INVOICE_PATH, soap.GET_INVOICES.action
    refused = await service.answer(Request.of(path, version.headers(action), body))
    assert refused.status == 500 and refused.cut is None
    assert service.stats["fault:truncate"] == 0
    credential = {
        "ApplicationId": service.config.application_id,
        "Username": service.config.username,
        "Password": service.config.password,
    }
    login = version.envelope(soap.LOGIN.body({"credential": credential}))
    logged_in = await service.answer(
        Request.of(soap.AUTH_PATH, version.headers(soap.LOGIN.action), login)
    )
    cookie = f"ASP.NET_SessionId={logged_in.cookies['ASP.NET_SessionId']}"
    headers = version.headers(action) | {"Cookie": cookie}
    broken = await service.answer(Request.of(path, headers, body))
    assert broken.status == 200 and broken.cut == "truncate"
    assert service.stats["fault:truncate"] == 1


class GatedWire:
    """A wire that holds every request until ``gate`` opens, counting how many it holds."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = self.in_flight = self.most = 0

    @contextlib.asynccontextmanager
    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], name: str
    ) -> AsyncIterator[Any]:
        self.entered += 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await self.gate.wait()
            yield _Answer()
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        pass


class _Answer:
    status = 200
    headers: Mapping[str, str] = {}

    async def chunks(self, size: int) -> AsyncIterator[bytes]:
        yield b"<body/>"

    async def read(self, limit: int) -> bytes:
        return b"<body/>"


class SlowSink:
    """A body whose parse ends only when ``parsed`` is set."""

    def __init__(self, parsed: asyncio.Event) -> None:
        self.parsed, self.bytes_fed = parsed, 0

    def feed(self, chunk: bytes) -> None:
        self.bytes_fed += len(chunk)

    async def room(self) -> None:
        pass

    async def finish(self) -> None:
        await self.parsed.wait()

    def abort(self) -> None:
        pass


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (no clock: a bounded number of turns)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_requests_in_flight_never_pass_the_concurrency_while_parses_finish() -> None:
    wire, parsed = GatedWire(), asyncio.Event()
    transport = Transport("http://127.0.0.1:9", soap.SOAP11, wire=wire, requests=3)
    calls = [
        asyncio.create_task(transport.call(soap.GET_INVOICES, {"ids": []}, SlowSink(parsed)))
        for _ in range(8)
    ]
    await until(lambda: wire.in_flight == 3)
    for _ in range(100):  # the other five wait for a slot, however long the loop runs
        await asyncio.sleep(0)
    assert (wire.entered, wire.most) == (3, 3)
    wire.gate.set()
    # bodies in, parses not ended: their slots already serve the next requests
    await until(lambda: wire.entered == 8 and wire.in_flight == 0)
    assert wire.most == 3 and not any(call.done() for call in calls)
    parsed.set()
    await asyncio.gather(*calls)
