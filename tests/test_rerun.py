"""Failed and missing ids are not forgotten (issue 10, item 3): a rerun of a finished partial
run fetches exactly what it could not fetch, and adds it once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from lxml import etree

from extractor import soap
from extractor.clock import ManualClock
from extractor.engine import runner
from extractor.jobs.ledger import TransactionJob
from extractor.jobs.sync import SyncJob, run_sync
from extractor.output.targets import Target
from extractor.simulator.ledger import search
from extractor.simulator.server import Simulator
from tests.conftest import CREDS, job_of, read_table
from tests.helpers import backfill_at as backfill
from tests.hostile import PLAIN_XHTML, HostileServer, Request, answer, once, transformed
from tests.truth import assert_matches_truth


@pytest.fixture
async def simulator(start_simulator: Any) -> Simulator:
    sim: Simulator = await start_simulator(orders=300)
    return sim


def ids_in(body: bytes) -> list[int]:
    return [int(i) for i in re.findall(rb"<int>(\d+)</int>", body)]


def failing_for(order_id: int) -> Any:
    """Every GetInvoices that holds ``order_id`` fails (as a poison id makes it)."""
    fault = answer(500, soap.fault_body(soap.SOAP11, "Object reference not set to an instance"))

    async def rule(request: Request) -> web.StreamResponse | None:
        return await fault(request) if order_id in ids_in(request.body) else None

    return rule


def without(order_id: int) -> Any:
    """GetInvoices answers without ``order_id``, as if the service did not have it."""

    def drop(body: bytes) -> bytes:
        root = etree.fromstring(body)
        for order in root.iterfind(".//{*}InvoiceOrder"):
            if order.findtext("{*}OrderId") == str(order_id):
                order.getparent().remove(order)
        return etree.tostring(root, xml_declaration=True, encoding="utf-8")

    return transformed(drop)


async def test_failed_and_missing_ids_are_fetched_again_and_added_once(
    simulator: Simulator, tmp_path: Path
) -> None:
    failing, missing = simulator.tenant.ids[17], simulator.tenant.ids[200]
    fail, drop = failing_for(failing), without(missing)

    async def broken(request: Request) -> web.StreamResponse | None:
        return await fail(request) or await drop(request)

    requested: list[int] = []

    async def record(request: Request) -> None:
        requested.extend(ids_in(request.body))

    # one clock for the three runs, as the wall clock is: the first one's back-off moves it on
    # (on a clock of its own, it finished "after" the second one one time in four)
    clock = ManualClock()
    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", broken)
        first = await backfill(server.url, tmp_path, clock)
        assert first["status"] == "partial"
        assert first["failed_ids"] == 1 and first["missing_ids"] == 1
        server.on("GetInvoices", record)  # the service is well again
        second = await backfill(server.url, tmp_path, clock)  # the same command
    assert sorted(requested) == sorted([failing, missing])  # exactly those, once each
    assert second["status"] == "complete" and second["retry_of"] == first["run_id"]
    assert second["ids_total"] == 2 and second["invoices"] == 2
    assert_matches_truth(simulator, tmp_path)  # every order exactly once
    third = await backfill(simulator.url, tmp_path, clock)
    assert third["run_id"] == second["run_id"]  # nothing to do


async def test_the_first_run_missed_an_id_the_rerun_gets_it(
    simulator: Simulator, tmp_path: Path
) -> None:
    missing, clock = simulator.tenant.ids[5], ManualClock()
    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", without(missing))
        first = await backfill(server.url, tmp_path, clock)
    assert first["status"] == "partial" and first["missing_ids"] == 1
    second = await backfill(simulator.url, tmp_path, clock)
    assert second["status"] == "complete" and second["ids_total"] == 1
    assert_matches_truth(simulator, tmp_path)


async def test_a_proxy_page_in_an_http_200_is_retried_not_zero_orders(
    simulator: Simulator, tmp_path: Path
) -> None:
    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", once(answer(200, PLAIN_XHTML)))
        summary = await backfill(server.url, tmp_path)
    assert summary["status"] == "complete" and summary["retries"] >= 1
    assert_matches_truth(simulator, tmp_path)


def dates_in(body: bytes) -> list[str]:
    """DateStart and DateEnd of a GetTransactions request, as YYYY-MM-DD."""
    return [
        match.decode()
        for tag in (b"DateStart", b"DateEnd")
        for match in re.findall(rb"<%s>(\d{4}-\d\d-\d\d)" % tag, body)
    ]


def failing_on(day: dt.date) -> Any:
    """Every GetTransactions whose window holds ``day`` fails."""
    broken = answer(500, b"Internal Server Error", content_type="text/plain")

    async def rule(request: Request) -> web.StreamResponse | None:
        start, end = (
            dt.date.fromisoformat(
                re.search(rb"<%s>(\d{4}-\d\d-\d\d)" % tag, request.body)[1].decode()
            )
            for tag in (b"DateStart", b"DateEnd")
        )
        return await broken(request) if start <= day <= end else None

    return rule


async def test_failed_days_of_the_ledger_are_fetched_again(
    start_simulator: Any, tmp_path: Path
) -> None:
    simulator = await start_simulator(orders=300)
    day = dt.date(2016, 3, 15)
    job = job_of(TransactionJob, 
        out=tmp_path, date_from=dt.date(2016, 1, 1), date_to=dt.date(2016, 6, 30),
        max_requests_per_hour=0,
    )  # fmt: skip
    async with HostileServer(simulator.url) as server:
        server.on("GetTransactions", failing_on(day))
        service = dataclasses.replace(job.service, base_url=server.url)
        job = dataclasses.replace(job, service=service)
        first = (await runner.run(job, CREDS, log=io.StringIO(), clock=ManualClock())).as_json()
        assert first["status"] == "partial" and first["failed_days"] == 1
        del server.rules["GetTransactions"]
        requested: list[list[str]] = []

        async def record(request: Request) -> None:
            requested.append(dates_in(request.body))

        server.on("GetTransactions", record)
        second = (await runner.run(job, CREDS, log=io.StringIO(), clock=ManualClock())).as_json()
    assert requested == [[day.isoformat(), day.isoformat()]]  # that day only
    assert second["status"] == "complete" and second["retry_of"] == first["run_id"]
    assert second["days_total"] == 1
    params = {"DateStart": "2016-01-01T00:00:00", "DateEnd": "2016-06-30T23:59:59"}
    expected = sorted(line.wire["Id"] for line in search(simulator.ledger, params))
    assert sorted(row["Id"] for row in read_table(tmp_path, "transactions")) == expected


async def test_a_partial_sync_fetches_its_failed_ids_in_the_next_sync(
    simulator: Simulator, tmp_path: Path
) -> None:
    from tests.truth import assert_lake_equals_truth

    target = Target.parse(str(tmp_path))
    failing = simulator.tenant.ids[42]
    requested: list[int] = []

    async def record(request: Request) -> None:
        requested.extend(ids_in(request.body))

    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", failing_for(failing))
        first = await sync(server.url, target)
        assert first["status"] == "partial" and first["invoices"]["failed_ids"] == 1
        server.on("GetInvoices", record)
        second = await sync(server.url, target)
    assert failing in requested
    assert second["status"] == "complete"
    assert_lake_equals_truth(simulator, target, marked=set(), ledger=False)


async def sync(url: str, target: Target) -> dict[str, Any]:
    job = job_of(
        SyncJob, target, base_url=url, max_requests_per_hour=0, ledger=False, batch_size=100
    )
    return (await run_sync(job, CREDS, log=io.StringIO(), clock=ManualClock())).as_json()
