"""The manual clock the fast tests share with the simulator: time moves only when all wait."""

from __future__ import annotations

import asyncio

from extractor.clock import ManualClock


async def test_sleepers_wake_in_order_and_together_when_due_together() -> None:
    clock = ManualClock(1000.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.time()))

    await asyncio.gather(sleeper("c", 30), sleeper("a", 10), sleeper("b", 10), sleeper("d", 0))
    assert woke == [("d", 1000.0), ("a", 1010.0), ("b", 1010.0), ("c", 1030.0)]
    assert clock.slept == 30  # not 50: the two 10 s sleeps overlapped


async def test_time_waits_for_work_that_is_not_sleeping() -> None:
    clock = ManualClock(0.0)
    steps: list[float] = []

    async def busy() -> None:
        for _ in range(5000):  # ready work: time must not jump while it runs
            steps.append(clock.time())
            await asyncio.sleep(0)

    await asyncio.gather(clock.sleep(3600), busy())
    assert set(steps) == {0.0} and clock.time() == 3600


async def test_a_cancelled_sleeper_does_not_hold_time_back() -> None:
    clock = ManualClock(0.0)
    sleeping = asyncio.create_task(clock.sleep(100))
    await asyncio.sleep(0)
    sleeping.cancel()
    await clock.sleep(5)
    assert clock.time() == 5
