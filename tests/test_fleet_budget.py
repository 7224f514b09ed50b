"""The fleet's shared budget (issue 13): one token bucket the runs lease from, and pauses that
hold every run; on a manual clock, in one process (the scheduler's Variable and Lock only
carry its state between leases)."""

from __future__ import annotations

import asyncio

import pytest

from extractor.clock import ManualClock
from extractor.fleet.budget import BURST, FleetGate, SharedBudget
from extractor.service.limiter import MARGIN, Limits, RateLimiter


def test_the_bucket_lends_its_burst_then_its_rate() -> None:
    clock = ManualClock(start=1_000_000.0)
    budget = SharedBudget(3600, clock.time)  # one a second
    assert sum(budget.lease(2).granted for _ in range(BURST // 2)) == BURST
    refused = budget.lease(2)
    assert refused.granted == 0 and refused.wait == pytest.approx(1.0)
    clock.advance(2.5)
    assert budget.lease(5).granted == 2  # two whole tokens came back
    assert budget.granted == BURST + 2


def test_a_pause_holds_every_lease_until_it_ends_and_survives_the_round_trip() -> None:
    clock = ManualClock(start=1_000_000.0)
    budget = SharedBudget(7200, clock.time)
    budget.pause(clock.time() + 60, "quarantined by the service")
    restored = SharedBudget.restore(budget.state(), clock.time)  # as a Variable keeps it
    held = restored.lease(2)
    assert (held.granted, held.reason) == (0, "quarantined by the service")
    assert held.wait == pytest.approx(60) and held.paused_until == clock.time() + 60
    clock.advance(60)
    assert restored.lease(2).granted == 2
    assert restored.pauses == 1


def _limiters(clock: ManualClock, budget: SharedBudget, runs: int) -> list[RateLimiter]:
    def gate() -> FleetGate:
        return FleetGate(budget.lease, budget.pause, clock)

    return [RateLimiter(Limits(per_hour=0), clock, gate()) for _ in range(runs)]


async def test_runs_sharing_a_budget_send_no_more_than_it_together() -> None:
    clock = ManualClock(start=1_000_000.0)
    budget = SharedBudget(3600, clock.time)
    limiters = _limiters(clock, budget, 3)
    started = clock.time()

    async def send(limiter: RateLimiter, count: int) -> None:
        for _ in range(count):
            limiter.release(await limiter.acquire())

    await asyncio.gather(*(send(limiter, 40) for limiter in limiters))
    elapsed = clock.time() - started
    # 120 requests at one a second after a burst of 20: about 100 s, however they interleave
    assert budget.granted >= 120
    assert elapsed == pytest.approx(120 - BURST, abs=3)
    assert sum(limiter.sent for limiter in limiters) == 120


async def test_a_pause_one_run_meets_holds_the_others() -> None:
    clock = ManualClock(start=1_000_000.0)
    budget = SharedBudget(360_000, clock.time)
    first, second = _limiters(clock, budget, 2)
    first.release(await first.acquire())
    first.pause_until(clock.time() + 30, "quarantined by the service")  # what the service said
    assert isinstance(first.gate, FleetGate)
    await first.gate.settled()  # the pause reached the budget (on a thread)
    paused_at = clock.time()
    second.release(await second.acquire())
    assert clock.time() >= paused_at + 30 + MARGIN
    assert budget.pauses == 1


def test_the_fleet_line_counts_identities_records_and_requests() -> None:
    from extractor.fleet.run import fleet_line

    ended = [{"status": "complete"}, {"status": "failed"}, {"status": "partial"}]
    board = {
        "a": {"records": 3000, "requests": 5, "what": "invoices", "paused_until": None},
        "b": {"records": 1000, "requests": 5, "what": "invoices", "paused_until": 1e12},
    }
    line = fleet_line(5, ended, board, seconds=10.0)
    assert line == (
        "identities 2/5 done, 2 running, 1 failed  4,000 invoices (400/s)  "
        "3,600 requests/h  1 paused"
    )
