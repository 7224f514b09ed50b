"""Concurrency that adapts to the service (issue 24, item 8): the limit's decisions as values
on a manual clock, then whole runs on the in-memory wire against a slow service and a fragile
one, and the flag."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from extractor.clock import ManualClock
from extractor.errors import ServerError
from extractor.jobs.invoices import InvoiceJob
from extractor.service.concurrency import DEFAULT_ADAPTIVE, Slots, decide, queued
from extractor.simulator.faults import FaultConfig
from tests.conftest import MEMORY_URL, InMemory, job_of
from tests.helpers import one_line


@pytest.mark.parametrize(
    ("limit", "waiting", "saturated", "decision"),
    [
        (8, 0.0, True, "grow"),  # every slot busy on the wire, nothing waits in the service
        (8, 0.0, False, "hold"),  # the budget holds requests back: more slots would not help
        (12, 3.0, True, "hold"),  # some wait in the service, not too many
        (12, 6.0, True, "back off"),  # answers slow down: requests pile up in the service
        (40, 8.0, True, "hold"),  # at 40, 8 waiting is a fifth, within what noise does
    ],
)
def test_a_rounds_decision(limit: int, waiting: float, saturated: bool, decision: str) -> None:
    assert decide(limit, waiting, saturated, DEFAULT_ADAPTIVE) == decision


def test_the_requests_waiting_in_the_service_by_littles_law() -> None:
    assert queued(12, latency=2.0, unloaded=1.0) == 6.0  # twice as slow: half of them wait
    assert queued(8, latency=1.0, unloaded=1.0) == 0.0


async def _requests(
    slots: Slots,
    clock: ManualClock,
    count: int,
    latency: Callable[[int], float],
    failure: Callable[[int], BaseException | None] = lambda in_service: None,
) -> None:
    """``count`` requests through ``slots``, each answered after ``latency(in service)``."""
    inside = 0

    async def one() -> None:
        nonlocal inside
        async with slots.request() as flight:
            flight.went()
            inside += 1
            try:
                await clock.sleep(latency(inside))
                flight.answered("GetInvoices", failure(inside))
            finally:
                inside -= 1

    await asyncio.gather(*(one() for _ in range(count)))


async def test_it_grows_in_slow_start_while_answers_keep_their_pace() -> None:
    clock = ManualClock()
    slots = Slots(None, clock=clock)
    # rounds of 8, 12, 18 answers with more waiting, then one of 27 with none waiting
    await _requests(slots, clock, 8 + 12 + 18 + 27, lambda inside: 4.0)
    assert slots.decisions == {"grow": 3, "hold": 1} and slots.limit == 27 and slots.slow_start


async def test_it_backs_off_as_answers_slow_and_settles_below_the_failures() -> None:
    clock = ManualClock()
    slots = Slots(None, clock=clock)
    # a service with 6 workers: past 6 requests in it, each answer takes longer in proportion
    await _requests(slots, clock, 200, lambda inside: max(1.0, inside / 6))
    assert slots.decisions["back off"] >= 1 and not slots.slow_start
    assert 8 <= slots.limit <= 11  # a few waiting in the service, never 13 in it


async def test_a_5xx_backs_off_once_a_round_and_a_429_not_at_all() -> None:
    clock = ManualClock()
    slots = Slots(None, clock=clock)
    unavailable = ServerError(503, "Service Unavailable")
    await _requests(slots, clock, 8, lambda inside: 1.0, lambda inside: unavailable)
    assert slots.limit == 6 and slots.decisions["back off"] == 1  # 8 failures of one round
    throttled = ServerError(429, "Too Many Requests")
    await _requests(slots, clock, 6, lambda inside: 1.0, lambda inside: throttled)
    assert slots.limit == 6 and slots.decisions["back off"] == 1


async def test_it_holds_while_the_budget_holds_requests_back() -> None:
    clock = ManualClock()
    slots = Slots(None, clock=clock)
    budget = asyncio.Semaphore(4)  # the rate limits let 4 go at a time

    async def one() -> None:
        async with slots.request() as flight, budget:
            flight.went()
            await clock.sleep(1.0)
            flight.answered("GetInvoices")

    await asyncio.gather(*(one() for _ in range(40)))
    assert slots.limit == 8 and slots.decisions["grow"] == 0 and slots.decisions["hold"] >= 4


async def test_a_fixed_number_never_moves() -> None:
    clock = ManualClock()
    slots = Slots(3, clock=clock)
    await _requests(slots, clock, 30, lambda inside: 4.0)
    assert slots.limit == 3 and not slots.decisions


async def backfill(memory: InMemory, out: Path, **options: Any) -> dict[str, Any]:
    job = job_of(
        InvoiceJob, out=out, base_url=MEMORY_URL, batch_size=10, parse_workers=0,
        max_requests_per_hour=0, invoice_properties=("InvoiceTitle",), **options,
    )  # fmt: skip
    return await memory.run(job)


async def test_at_4_s_an_answer_the_budget_is_used(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    # 3 requests a second allowed (60 per 20 s window): 12 in flight are needed, not 8
    faults = FaultConfig(budget=60, window=20.0, quarantine=600.0)
    memory = in_memory(orders=1500, latency=4.0, faults=faults)
    summary = await backfill(memory, tmp_path)  # the default: --concurrency auto
    assert summary["status"] == "complete" and summary["quarantines"] == 0
    assert memory.service.stats["faults"] == 0
    assert (memory.service.budget.use() or 0.0) >= 0.95


async def test_a_fragile_service_is_used_to_what_it_holds_with_few_503s(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    # past 6 requests in it the service slows down (6 answers a second at most), past 12 it
    # answers 503: any fixed concurrency of 6..12 fetches at 6 a second, 13 or more fails
    faults = FaultConfig(slow_past=6, fail_past=12)
    memory = in_memory(orders=1500, latency=1.0, faults=faults)
    summary = await backfill(memory, tmp_path)
    stats = memory.service.stats
    assert summary["status"] == "complete"
    assert stats["fault:overloaded"] <= 0.02 * stats["requests"]
    best = 2 + 150 / 6  # Login and the listing alone, then 150 batches at 6 a second
    assert memory.clock.slept <= best / 0.9


@pytest.mark.parametrize("value", ["0", "abc", "65"])
def test_a_bad_concurrency_is_one_line(cli: Callable[..., Any], tmp_path: Path, value: str) -> None:
    code, out, err = cli(
        "invoices", "--out", str(tmp_path / "o"), "--concurrency", value,
        env={"TFSO_APPLICATION_ID": "6f1d7a3e-0c55-4d5b-9a54-7f0e2b1c9d01",
             "TFSO_USERNAME": "a@example.no", "TFSO_PASSWORD": "secret-word"},
    )  # fmt: skip
    line = one_line(err)
    assert code == 2 and out == "" and "--concurrency" in line and "auto" in line
    assert "secret-word" not in err and not (tmp_path / "o").exists()
