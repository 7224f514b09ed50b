"""The service's budget, never quarantined and always used (issue 24, item 7): whatever kind
of window the service keeps, on the in-memory wire and a manual clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from extractor.clock import ManualClock
from extractor.jobs.invoices import InvoiceJob
from extractor.service.limiter import Limits, RateLimiter, Told
from extractor.simulator.budget import WINDOW_KINDS, Budget, WindowKind, use
from extractor.simulator.faults import FaultConfig
from tests.conftest import MEMORY_URL, InMemory, job_of

#: 10 requests per 2 s window; 16 workers could send them all at once after a reset.
BUDGET = {"budget": 10, "window": 2.0, "quarantine": 60.0}


async def backfill(memory: InMemory, out: Path, concurrency: int | str = 16) -> dict[str, object]:
    """600 orders in 60 GetInvoices of 10 (and Login, the listing), a quarter of a second each."""
    job = job_of(
        InvoiceJob, out=out, base_url=MEMORY_URL, batch_size=10, concurrency=concurrency,
        parse_workers=0, max_requests_per_hour=0, invoice_properties=("InvoiceTitle",),
    )  # fmt: skip
    return await memory.run(job)


@pytest.mark.parametrize("kind", WINDOW_KINDS)
async def test_no_quarantine_and_the_whole_rate_whatever_the_window(
    in_memory: Callable[..., InMemory], tmp_path: Path, kind: WindowKind
) -> None:
    memory = in_memory(orders=600, latency=0.25, faults=FaultConfig(**BUDGET, window_kind=kind))
    summary = await backfill(memory, tmp_path)
    budget = memory.service.budget
    assert summary["status"] == "complete" and summary["quarantines"] == 0
    assert memory.service.stats["faults"] == 0 and len(budget.arrivals) == 62
    assert (budget.use() or 0.0) >= 0.98  # of the allowed 5 requests a second


async def test_a_reset_in_whole_seconds_is_waited_out_to_its_second(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    # the service writes 12:00:09 for a window that ends at 12:00:09.6
    faults = FaultConfig(**BUDGET, whole_second_reset=True)
    memory = in_memory(orders=600, latency=0.25, faults=faults)
    summary = await backfill(memory, tmp_path, concurrency=4)
    assert summary["quarantines"] == 0 and memory.service.stats["faults"] == 0
    # up to a second more for each 2 s window here: W / (W + 1) at worst (live, of an hour)
    assert (memory.service.budget.use() or 0.0) >= 0.6


@pytest.mark.parametrize("offset", [-1800.0, 0.0, 1800.0])
async def test_a_service_whose_clock_is_apart_from_ours_quarantines_nothing(
    in_memory: Callable[..., InMemory], tmp_path: Path, offset: float
) -> None:
    # the budget's resets, the quarantine's end and the Date header all in the service's time
    memory = in_memory(orders=600, latency=0.25, faults=FaultConfig(**BUDGET), clock_offset=offset)
    summary = await backfill(memory, tmp_path, concurrency=4)
    assert summary["status"] == "complete" and summary["quarantines"] == 0
    assert memory.service.stats["faults"] == 0 and len(memory.service.budget.arrivals) == 62
    # a skewed reset is placed by the Date header, whole seconds: up to 1 s late a 2 s window
    assert (memory.service.budget.use() or 0.0) >= (0.98 if offset == 0 else 0.6)
    # its lower bound: Date is whole seconds, stamped as the request arrives (0.25 s before)
    assert offset - 1.5 <= summary["clock_skew_seconds"] <= offset


@pytest.mark.parametrize(
    ("behind", "latest"),
    [
        # the service's clock 30 minutes behind ours: its reset looks long past; one Date,
        # cut to its second, places it up to a second late
        (1800.0, 11.0),
        (0.0, 10.1),  # the same clock: a Date cut to its second must not delay the reset
    ],
)
async def test_a_service_clock_apart_from_ours_is_read_from_its_date(
    behind: float, latest: float
) -> None:
    clock = ManualClock(1_800_000_000.7)
    limiter = RateLimiter(Limits(per_hour=0), clock)
    ticket = await limiter.acquire()
    reset, date = clock.time() - behind + 10, float(int(clock.time() - behind))
    limiter.observe(Told(2, reset, 1e-6, date), ticket)
    limiter.release(ticket)
    for _ in range(2):
        limiter.release(await limiter.acquire())  # the two left
    assert clock.slept == 0
    limiter.release(await limiter.acquire())  # none: wait for the window's end on our clock
    assert 10.0 <= clock.slept <= latest


def test_the_budget_headers_as_told() -> None:
    reset, date = "2026-01-01T10:00:05", "Thu, 01 Jan 2026 10:00:01 GMT"
    told = Told.of({"APILimitRemaining": "3", "APILimitReset": reset, "Date": date})
    assert told == Told(3, 1_767_261_605.0, 1.0, 1_767_261_601.0)  # whole seconds: cut
    exact = Told.of({"APILimitRemaining": "3", "APILimitReset": "2026-01-01T10:00:05.25Z"})
    assert exact is not None and exact.resolution == 0.01 and exact.date is None
    assert Told.of({"APILimitRemaining": "some", "APILimitReset": reset}) is None
    assert Told.of({"APILimitRemaining": "3"}) is None


async def test_paced_requests_never_spin_below_the_clocks_resolution() -> None:
    # at 1.8e9 s a float tells 0.24 us apart: 3 requests a second once left 7.9e-8 s to wait,
    # which the manual clock could not advance by, and the run hung
    clock = ManualClock(1_796_619_673.0039032)
    limiter = RateLimiter(Limits(per_hour=10_800, burst=20), clock)
    started = time.monotonic()

    async def sixty() -> None:
        for _ in range(60):
            limiter.release(await limiter.acquire())

    await asyncio.wait_for(sixty(), 5)
    assert clock.slept == pytest.approx(40 / 3, abs=0.01) and time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("kind", "arrivals", "admitted"),
    [
        # 3 a window of 10 s: from the first request after the last window ended ...
        ("restart", [0.5, 0.5, 0.5, 15, 16, 17, 20.5], [True] * 6 + [False]),
        # ... back to back from the first request ...
        ("fixed", [0.5, 0.5, 0.5, 15, 16, 17, 20.5], [True] * 7),
        # ... on the clock ...
        ("clock", [9, 9, 9, 10, 10, 10, 19.9], [True] * 6 + [False]),
        # ... or the last 10 s, a refused request counted too
        ("sliding", [0, 1, 2, 10, 10.5, 12.5], [True] * 4 + [False, True]),
    ],
)
def test_the_simulated_windows(
    kind: WindowKind, arrivals: list[float], admitted: list[bool]
) -> None:
    now = [1_000_000.0]
    budget = Budget(3, 10.0, 0.0, kind, clock=lambda: now[0])
    told = []
    for at in arrivals:
        now[0] = 1_000_000.0 + at
        told.append(budget.admit()[0] is None)
    assert told == admitted


def test_use_is_the_rate_against_the_allowed_one() -> None:
    evenly = [i / 3 for i in range(300)]  # 3 a second, for 100 s
    assert use(evenly, 30, 10.0) == pytest.approx(1.0)
    assert use(evenly[::2], 30, 10.0) == pytest.approx(0.5)
    bursts = [10.0 * w for w in range(10) for _ in range(30)]  # a window's budget at its start
    assert use(bursts, 30, 10.0) == pytest.approx(1.0)
    # windows that start only at a request, half a second after the last one ended
    starts = [10.5 * w for w in range(4)]
    assert use([at for at in starts for _ in range(30)], 30, 10.0, starts) == pytest.approx(20 / 21)
    assert use([0.0, 1.0], 30, 10.0) is None  # shorter than a window


def test_a_date_in_minus_zero_is_utc_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # RFC 5322's "-0000" parses to a naive datetime: as local time it was an hour off in Oslo
    monkeypatch.setenv("TZ", "Europe/Oslo")
    time.tzset()
    try:
        headers = {"APILimitRemaining": "3", "APILimitReset": "2026-01-01T10:00:05"}
        told = Told.of(headers | {"Date": "Thu, 01 Jan 2026 10:00:01 -0000"})
        assert told is not None and told.date == 1_767_261_601.0
    finally:
        monkeypatch.undo()
        time.tzset()
