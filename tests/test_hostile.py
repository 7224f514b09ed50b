"""What a server nobody here wrote may do, and what the extractor must do about it (issue 10).

Each test puts :class:`tests.hostile.HostileServer` between the client and a simulator and
asserts the dataset against the ground truth, or the exact error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import html
import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pyarrow as pa
import pytest
from aiohttp import web

from extractor import soap
from extractor.clock import SYSTEM, ManualClock
from extractor.config import Credentials, Timeouts
from extractor.engine import runner
from extractor.engine.journal import JOURNAL_DIR
from extractor.errors import PauseTooLong, Redirected, ServiceFailing
from extractor.jobs.invoices import InvoiceJob
from extractor.jobs.ledger import TransactionJob
from extractor.simulator.server import Simulator
from tests.conftest import CREDS, job_of
from tests.helpers import backfill_at as backfill
from tests.hostile import (
    SOAP_OPEN,
    HostileServer,
    Request,
    answer,
    endless,
    gzip_bomb,
    once,
    streamed,
    with_headers,
)
from tests.truth import assert_matches_truth


@pytest.fixture
async def simulator(start_simulator: Any) -> Simulator:
    """A small tenant, two batches of 100: these tests are about what the server does, not
    about volume."""
    sim: Simulator = await start_simulator(orders=150)
    return sim


@pytest.mark.parametrize(
    ("status", "operation"),
    [(301, "Login"), (303, "Login"), (307, "Login"), (308, "GetInvoices"), (302, "GetInvoices")],
)
async def test_a_redirect_is_never_followed(
    simulator: Simulator, tmp_path: Path, status: int, operation: str
) -> None:
    async with HostileServer(simulator.url) as elsewhere, HostileServer(simulator.url) as server:
        location = {"Location": elsewhere.url + soap.AUTH_PATH}
        server.on(operation, answer(status, headers=location))
        host = elsewhere.url.removeprefix("http://")
        with pytest.raises(Redirected, match=f"HTTP {status}, redirecting to {host}"):
            await backfill(server.url, tmp_path)
        assert sum(elsewhere.seen.values()) == 0  # nothing, the password least of all, went there


def _fault(message: str) -> bytes:
    return soap.fault_body(soap.SOAP11, message)


FAR_PAUSES = {
    "Retry-After in seconds": (
        answer(503, b"busy", {"Retry-After": "315360000"}, "text/plain"),
        r"pause until 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC "
        r"\(HTTP 503 with Retry-After 315,360,000 s\)",
    ),
    "Retry-After in year 9999": (
        answer(429, b"slow down", {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}, "text/plain"),
        "pause until 9999-12-31 23:59:59 UTC",
    ),
    "budget reset in 2100": (
        with_headers({"APILimitRemaining": "0", "APILimitReset": "2100-01-01T00:00:00"}),
        r"pause until 2100-01-01 00:00:00 UTC \(service budget: 0 requests left\)",
    ),
    "quarantine until 2100": (
        answer(
            500,
            _fault(
                "Limit exceeded by 3. Request is blocked. Quarantine ends at 2100-01-01 00:00:00"
            ),
        ),
        r"pause until 2100-01-01 00:00:00 UTC \(quarantined by the service\)",
    ),
    "quarantine until the end of 9999": (
        answer(500, _fault("Limit exceeded. Quarantine ends at 9999-12-31T23:59:59")),
        "pause until 9999-12-31 23:59:59 UTC",
    ),
}


@pytest.mark.parametrize("case", sorted(FAR_PAUSES))
async def test_a_pause_beyond_max_pause_stops_the_run_resumably(
    simulator: Simulator, tmp_path: Path, case: str
) -> None:
    rule, said = FAR_PAUSES[case]
    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", rule)
        with pytest.raises(PauseTooLong, match=said):
            # one batch at a time: a spent budget stops the run before its next request (with
            # every batch already in flight, no request would need the budget). On the real
            # clock, which the proxy stamps its Date with: on a manual one, which stands still
            # while the real one moves on, the service looked a second or two ahead on a loaded
            # machine and the pause was placed that much earlier (2099-12-31 23:59:59). The
            # run waits for nothing: the pause is refused before any
            await backfill(server.url, tmp_path, clock=SYSTEM, concurrency=1)
        assert (tmp_path / JOURNAL_DIR).is_dir()  # resumable
        del server.rules["GetInvoices"]  # the service came back
        summary = await backfill(server.url, tmp_path)
    assert summary["status"] == "complete"
    assert_matches_truth(simulator, tmp_path)


async def test_a_pause_within_max_pause_is_waited_out(simulator: Simulator, tmp_path: Path) -> None:
    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", once(answer(503, b"busy", {"Retry-After": "0.2"}, "text/plain")))
        summary = await backfill(server.url, tmp_path, timeouts=Timeouts(max_pause=5))
    assert summary["status"] == "complete"
    assert_matches_truth(simulator, tmp_path)


async def test_an_echoed_password_is_masked_in_every_sink_and_parsers_never_see_it(
    start_simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f'pw-{uuid.uuid4().hex}&<"'
    simulator = await start_simulator(orders=300, password=secret)
    creds = Credentials(CREDS.application_id, CREDS.username, secret)
    monkeypatch.setenv("TFSO_PASSWORD", secret)
    monkeypatch.setenv("TFSO_USERNAME", CREDS.username)
    poison = simulator.tenant.ids[17]
    release, arrived = asyncio.Event(), asyncio.Event()
    echo = answer(500, _fault(f"Object reference not set: Login('{CREDS.username}', '{secret}')"))

    async def rule(request: Request) -> web.StreamResponse | None:
        arrived.set()
        await release.wait()
        return await echo(request) if f">{poison}<".encode() in request.body else None

    # an earlier test in this process may have started multiprocessing's resource tracker
    # while its TFSO_* variables were set: only what this run starts is looked at
    earlier = {child.pid for child in psutil.Process().children()}
    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", rule)
        job = job_of(InvoiceJob, out=tmp_path, base_url=server.url, parse_workers=2, batch_size=100)
        run = asyncio.create_task(runner.run(job, creds, log=io.StringIO(), clock=ManualClock()))
        try:
            await asyncio.wait_for(arrived.wait(), 60)
            # two parser processes, and multiprocessing's resource tracker
            started = [c for c in psutil.Process().children() if c.pid not in earlier]
            environments = [child.environ() for child in started]
        finally:
            release.set()
            summary = (await run).as_json()
    assert len(environments) >= 2
    for environment in environments:
        assert not [name for name in environment if name.startswith("TFSO_")]
    assert summary["status"] == "partial" and summary["failed_ids"] == 1
    report = Path(summary["failures_report"]).read_text()
    assert "Object reference not set: Login(" in report and "***" in report
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(written) > 5
    for path in written:
        data = path.read_bytes()
        for spelling in (secret, orjson.dumps(secret)[1:-1].decode(), html.escape(secret)):
            assert spelling.encode() not in data, path
    assert secret not in orjson.dumps(summary).decode()


def hold_after(requests: int, release: asyncio.Event, arrived: asyncio.Event) -> Any:
    """The first ``requests`` pass; the next waits for ``release`` (``arrived`` says so)."""
    seen = 0

    async def rule(request: Request) -> None:
        nonlocal seen
        seen += 1
        if seen > requests:
            arrived.set()
            await release.wait()

    return rule


def keep_one_record(path: Path) -> None:
    """Rewrite a staged file with the same schema and its first record only (read into
    memory first: a memory-mapped read of a file being truncated is a SIGBUS)."""
    with pa.OSFile(str(path), "rb") as source:
        table = pa.ipc.open_file(source).read_all()
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table.slice(0, 1))


async def _staged_files(out: Path) -> list[Path]:
    """The staged batches on disk, once there is one (found flaky in CI: looked at once, right
    after the third request arrived, none was there yet on a loaded machine). Polled: the
    file system has no event to wait on."""
    while not (staged := sorted((out / "_staging").rglob("*.arrow"))):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return staged


@pytest.mark.parametrize("damage", ["deleted", "short"])
async def test_staged_files_lost_mid_run_are_fetched_again_never_published_short(
    simulator: Simulator, tmp_path: Path, damage: str
) -> None:
    release, arrived = asyncio.Event(), asyncio.Event()
    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", hold_after(2, release, arrived))
        batches = {"batch_size": 50, "concurrency": 1}  # three: the third is held
        run = asyncio.create_task(backfill(server.url, tmp_path, **batches))
        try:
            await asyncio.wait_for(arrived.wait(), 60)
            # the third request is held; the first batches may still be on their way to disk
            # (the stager is a thread): wait for one to be there, however loaded the machine
            staged = await asyncio.wait_for(_staged_files(tmp_path), 60)
            damaged = {path.stem for path in staged}
            for path in staged:
                if damage == "deleted":
                    path.unlink()
                else:
                    keep_one_record(path)
        finally:
            release.set()
            summary = await run
    assert summary["status"] == "complete"
    assert summary["invoices"] == len(simulator.tenant.ids)
    assert_matches_truth(simulator, tmp_path)  # every order once
    assert server.seen["GetInvoices"] == 3 + len(damaged)  # each damaged batch once more


DEAD_SERVICE = {
    "HTTP 500": answer(500, b"Internal Server Error", content_type="text/plain"),
    "invalid UTF-8": answer(200, SOAP_OPEN + b"<InvoiceOrder><OrderId>\xff\xfe</OrderId>"),
    "not XML": answer(200, b"{'this': 'is not xml'}"),
}


@pytest.mark.parametrize(
    ("failure", "concurrency"),
    [("HTTP 500", 1), ("HTTP 500", 8), ("invalid UTF-8", 8), ("not XML", 1)],
)
async def test_a_dead_service_costs_at_most_three_requests_per_batch(
    start_simulator: Any, tmp_path: Path, failure: str, concurrency: int
) -> None:
    simulator = await start_simulator(orders=1000)
    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", DEAD_SERVICE[failure])
        with pytest.raises(ServiceFailing, match="stopped to spare the hourly budget"):
            await backfill(server.url, tmp_path, concurrency=concurrency)
    batches = 10
    assert server.seen["GetInvoices"] <= 3 * batches
    assert (tmp_path / JOURNAL_DIR).is_dir()  # resumable


async def test_a_dead_ledger_costs_at_most_three_requests_per_window(
    simulator: Simulator, tmp_path: Path
) -> None:
    job = job_of(TransactionJob, 
        out=tmp_path, date_from=dt.date(2016, 1, 1), date_to=dt.date(2017, 12, 31),
        max_requests_per_hour=0, concurrency=1,
    )  # fmt: skip
    async with HostileServer(simulator.url) as server:
        server.on("GetTransactions", DEAD_SERVICE["HTTP 500"])
        job = dataclasses.replace(
            job, service=dataclasses.replace(job.service, base_url=server.url)
        )
        with pytest.raises(ServiceFailing):
            await runner.run(job, CREDS, log=io.StringIO(), clock=ManualClock())
    assert server.seen["GetTransactions"] <= 3 * 24


async def test_a_body_the_parser_refuses_is_abandoned_at_once_not_read_to_its_end(
    simulator: Simulator, tmp_path: Path
) -> None:
    sent = [0]

    async def garbage_forever() -> AsyncIterator[bytes]:
        yield SOAP_OPEN + b"<InvoiceOrder><OrderId>1</OrderId><</InvoiceOrder>"
        block = b"x" * (256 * 1024)
        while True:
            sent[0] += len(block)
            yield block

    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", once(streamed(garbage_forever, {})))
        summary = await backfill(server.url, tmp_path, parse_workers=2)
    assert summary["status"] == "complete" and summary["retries"] >= 1
    assert sent[0] < 64 * 1024 * 1024  # not read to the 256 MiB limit
    assert_matches_truth(simulator, tmp_path)


async def test_an_endless_body_of_one_order_repeated_is_refused_by_a_parser_process(
    simulator: Simulator, tmp_path: Path
) -> None:
    """A parser process holds a body's parts until it ends, so it counts the orders as they
    arrive: past twice the ids asked for (+1000) the body is refused, and the batch split."""
    sent = [0]
    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", once(endless(sent)))
        summary = await backfill(server.url, tmp_path, parse_workers=2)
    assert summary["status"] == "complete" and summary["splits"] >= 1
    # 100 ids asked for: refused past 1,200 orders held (+ up to 1,000 not yet collected),
    # about 110 kB of this body; the allowance is for what is in the pipes when it stops
    assert sent[0] < 16 * 1024 * 1024  # not read to the 256 MiB limit
    assert_matches_truth(simulator, tmp_path)


async def test_a_gzip_bomb_is_cut_off_by_its_decoded_size(
    simulator: Simulator, tmp_path: Path
) -> None:
    from extractor.errors import ResponseTooLarge
    from extractor.records.orders import OrderSink, Selection
    from extractor.service.session import Session
    from extractor.service.transport import Transport

    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", gzip_bomb(64 * 1024 * 1024))  # about 64 KiB on the wire
        transport = Transport(server.url, soap.SOAP11, max_response_bytes=4 * 1024 * 1024)
        ids = simulator.tenant.ids[:10]
        try:
            session = Session(transport, CREDS)
            await session.login()
            with pytest.raises(ResponseTooLarge, match="passed 4,194,304 bytes; aborted"):
                await session.call(
                    soap.GET_INVOICES, Selection().params(ids), lambda: OrderSink(Selection(), ids)
                )
        finally:
            await transport.close()


async def test_a_parser_killed_mid_run_is_replaced_and_the_run_completes_unsplit(
    simulator: Simulator, tmp_path: Path
) -> None:
    """A parser process killed while the run goes on (out of memory, an operator): its
    bodies are fetched again on the parser started in its place, the data equal to the
    truth, no batch split and nothing counted against the service (before, the run stopped
    at the first death)."""
    killed: list[int] = []
    requests = [0]

    async def kill_one(request: Any) -> None:
        requests[0] += 1
        if requests[0] in (2, 4):  # the pool starts before the first request is sent
            parser = next(p for p in _parsers() if p.pid not in killed)
            parser.kill()
            killed.append(parser.pid)
        return None  # the simulator answers

    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", kill_one)
        summary = await backfill(server.url, tmp_path, parse_workers=2, batch_size=25)
    assert summary["status"] == "complete" and summary["splits"] == 0, summary
    assert len(killed) == 2 and not any(psutil.pid_exists(pid) for pid in killed)
    assert_matches_truth(simulator, tmp_path)


def _parsers() -> list[psutil.Process]:
    """This process's living parser processes."""
    found = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if "parse_worker" in " ".join(child.cmdline()):
                found.append(child)
    return found
