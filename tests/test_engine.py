"""The engine itself (:mod:`extractor.engine`): bisection, resume, refetch of lost staging, the
output's lock and the request budget, driven through the invoices job on the in-memory wire
and a manual clock. No socket, no real wait: every assertion is on counts, ids and the
simulator's ground truth."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest

from extractor.config import DEFAULT_RETRY
from extractor.engine import runner
from extractor.engine.journal import JOURNAL_DIR, unfinished
from extractor.engine.state import RunState, replay
from extractor.engine.summary import Resumed, RunSummary, Status
from extractor.engine.workers import observed
from extractor.errors import OutputLocked, ServerError, ServiceFailing, SessionExpired, UsageError
from extractor.jobs.invoices import InvoiceJob
from extractor.output.lock import LOCK_FILE
from extractor.service.health import Health
from extractor.service.limiter import DEFAULT_LIMITS
from extractor.simulator.faults import POISON_FAULT, FaultConfig
from extractor.simulator.memory import MemoryReply, MemoryWire
from tests.conftest import CREDS, MEMORY_URL, InMemory, job_of
from tests.helpers import asked_ids
from tests.truth import assert_matches_truth

#: Requests a unit gets for a fault that repeats (a poison id): the first and one retry.
FAULT_ATTEMPTS = DEFAULT_RETRY.fault_attempts


class Wire(MemoryWire):
    """The in-memory wire, keeping each request's operation, OrderIds and time; ``hook``
    runs before the request of the operation it names (to hold or to break it)."""

    def __init__(self, memory: InMemory) -> None:
        super().__init__(memory.service)
        self.clock = memory.clock
        self.sent: list[tuple[str, list[int], float]] = []
        self.hooks: dict[str, Callable[[int], Any]] = {}

    @asynccontextmanager
    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], name: str
    ) -> AsyncIterator[MemoryReply]:
        self.sent.append((name, asked_ids(body), self.clock.time()))
        hook = self.hooks.get(name)
        if hook is not None:
            await hook(self.count(name))
        async with super().post(url, body, headers, name) as reply:
            yield reply

    def count(self, name: str) -> int:
        return sum(1 for sent, *_ in self.sent if sent == name)

    def batches(self) -> list[list[int]]:
        """The OrderIds of each GetInvoices, in the order sent."""
        return [ids for name, ids, _ in self.sent if name == "GetInvoices"]


def job(out: Path, **options: Any) -> InvoiceJob:
    return job_of(
        InvoiceJob, out=out, base_url=MEMORY_URL,
        **{"max_requests_per_hour": 0, "parse_workers": 0, "concurrency": 1, **options},
    )  # fmt: skip


async def run(memory: InMemory, wire: Wire, out: Path, **options: Any) -> RunSummary:
    """An invoices run into ``out`` over ``wire``, on the service's clock."""
    clock = memory.clock
    return await runner.run(job(out, **options), CREDS, log=memory.stream, clock=clock, wire=wire)


class Halving(NamedTuple):
    requests: int  # GetInvoices sent for the batch
    path: str  # the failed unit's key suffix: ``a`` the first half, ``b`` the second, a level each
    give_ups: int  # tries that still failed after their retries


def json_lines(path: Path) -> list[dict[str, Any]]:
    """A JSON Lines file (a journal, a failures report), an object a line."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def halving(size: int, at: int) -> Halving:
    """What bisection predicts for a batch of ``size`` ids holding one poison id at index
    ``at``. The batch gets its full retries; each half is tried once, except one id, which
    gets its full retries; a second half is tried only when the first failed, else it is
    split at once (it must hold the failure)."""
    requests, path, give_ups = FAULT_ATTEMPTS, "", 1
    while size > 1:
        half = (size + 1) // 2
        if at < half:  # the first half fails; the second is tried and passes
            requests += (FAULT_ATTEMPTS if half == 1 else 1) + 1
            path, size, give_ups = path + "a", half, give_ups + 1
        else:  # the first passes; the second is split at once, or retried alone
            alone = size - half == 1
            requests += 1 + (FAULT_ATTEMPTS if alone else 0)
            path, size, at, give_ups = path + "b", size - half, at - half, give_ups + alone
    return Halving(requests, path, give_ups)


def test_the_halving_model() -> None:
    # one id: its retries only; two ids, the poison first: the pair, the id with its
    # retries, the other id once
    assert halving(1, 0) == (FAULT_ATTEMPTS, "", 1)
    assert halving(2, 0) == (2 * FAULT_ATTEMPTS + 1, "a", 2)
    assert halving(2, 1) == (2 * FAULT_ATTEMPTS + 1, "b", 2)
    # the last id of 1000: every first half passes, nine levels down (500, 250, 125, 62,
    # 31, 15, 7, 3, 1), and the last id alone gets its retries
    assert halving(1000, 999) == (FAULT_ATTEMPTS + 9 + FAULT_ATTEMPTS, "b" * 9, 2)


@pytest.mark.parametrize(
    ("size", "poisoned"),
    [
        # 4 batches of 25 (halves of 13/12, 7/6, 4/3, 2/1): a poison id in two of them
        (25, (7, 63)),
        # one batch of 128, seven levels down
        (128, (100,)),
    ],
)
async def test_a_poison_id_is_halved_down_to_and_every_other_id_staged(
    in_memory: Callable[..., InMemory], tmp_path: Path, size: int, poisoned: tuple[int, ...]
) -> None:
    orders = 4 * size if len(poisoned) > 1 else size
    listed = in_memory(orders=orders).service.tenant.sync_list(None, None)  # the plan's order
    poison = {listed[at] for at in poisoned}
    memory = in_memory(orders=orders, faults=FaultConfig(poison_ids=frozenset(poison)))
    wire = Wire(memory)
    summary = await run(memory, wire, tmp_path, batch_size=size)

    # each poison id in a batch of its own: (batch, what halving it predicts, the id)
    halved = [(at // size, halving(size, at % size), listed[at]) for at in poisoned]
    clean = orders // size - len(halved)  # one GetInvoices each
    assert wire.count("GetInvoices") == clean + sum(h.requests for _, h, _ in halved)
    assert summary.splits == sum(len(h.path) for _, h, _ in halved)
    assert summary.give_ups == sum(h.give_ups for _, h, _ in halved)
    journal = replay(tmp_path / "_runs" / f"{summary.run_id}.journal.jsonl")
    prefix = next(iter(journal.staged)).split("-")[0]
    failed = {key: list(event["ids"]) for key, event in journal.failed.items()}
    assert failed == {f"{prefix}-{batch:08d}{h.path}": [order_id] for batch, h, order_id in halved}
    staged = sorted(i for event in journal.staged.values() for i in event["ids"])
    assert staged == sorted(set(listed) - poison), "every other id staged, once"
    assert summary.status is Status.PARTIAL and summary.counts["failed_ids"] == len(poison)
    report = json_lines(Path(summary.reports["failures_report"] or ""))
    assert {failure["OrderId"] for failure in report} == poison
    assert all(POISON_FAULT.split("---> ")[1] in failure["error"] for failure in report)
    assert_matches_truth(memory.service, tmp_path, leaving_out=poison)


class PowerCut(Exception):
    """The run stops at once, a request on its way (as at a kill, without the process)."""


def cut_at(request: int) -> Callable[[int], Any]:
    """A hook that stops the run at its ``request``-th call of the operation."""

    async def hook(number: int) -> None:
        if number == request:
            raise PowerCut(f"cut at request {number}")

    return hook


async def interrupted(memory: InMemory, out: Path, at: int) -> RunState:
    """A run of 200 orders in batches of 20 stopped at its ``at``-th GetInvoices: its
    journal, replayed. The stager holds one batch at most (the concurrency), so the batches
    before the last two answered are on disk and journaled when the cut comes."""
    wire = Wire(memory)
    wire.hooks["GetInvoices"] = cut_at(at)
    with pytest.raises(PowerCut):
        await run(memory, wire, out, batch_size=20)
    path = unfinished(out)
    assert path is not None, "the unfinished run's journal is left to resume"
    state = replay(path)
    assert state.plan is not None and 1 <= len(state.staged) < at
    return state


def staged_ids(state: RunState) -> set[int]:
    return {order_id for event in state.staged.values() for order_id in event["ids"]}


async def test_an_interrupted_run_resumes_fetching_only_what_is_not_journaled(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    memory = in_memory(orders=200)
    before = await interrupted(memory, tmp_path, at=5)
    planned = list(before.plan["ids"]) if before.plan else []
    rest = [order_id for order_id in planned if order_id not in staged_ids(before)]
    wire = Wire(memory)
    summary = await run(memory, wire, tmp_path, batch_size=20)

    assert wire.count("Login") == 1 and wire.count("GetOrderSyncList") == 0  # the plan is kept
    assert [i for ids in wire.batches() for i in ids] == rest, "the rest, each id once, in order"
    assert wire.count("GetInvoices") == -(-len(rest) // 20)
    assert summary.run_id == before.run_id and summary.complete and summary.fetched == 200
    assert summary.resumed == Resumed(starts=2, fetched_now=len(rest))
    said = memory.stream.getvalue()
    assert f"resuming run {before.run_id}: {len(before.staged)} batches on disk" in said
    assert_matches_truth(memory.service, tmp_path)
    assert not (tmp_path / JOURNAL_DIR).exists() and not (tmp_path / "_staging").exists()


async def test_a_staged_file_lost_before_publishing_is_fetched_again(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    memory = in_memory(orders=200)
    before = await interrupted(memory, tmp_path, at=5)
    lost = sorted(before.staged)[0]
    (tmp_path / "_staging" / before.run_id / "invoices" / f"{lost}.arrow").unlink()
    planned = list(before.plan["ids"]) if before.plan else []
    kept = staged_ids(before) - set(before.staged[lost]["ids"])
    wire = Wire(memory)
    summary = await run(memory, wire, tmp_path, batch_size=20)

    events = json_lines(tmp_path / "_runs" / f"{before.run_id}.journal.jsonl")
    assert [event["keys"] for event in events if event["event"] == "lost"] == [[lost]]
    asked = [i for ids in wire.batches() for i in ids]
    assert sorted(asked) == sorted(i for i in planned if i not in kept), "the lost batch again"
    assert "1 staged batches were missing or short on disk" in memory.stream.getvalue()
    assert summary.complete and summary.fetched == 200
    assert_matches_truth(memory.service, tmp_path)  # nothing short, nothing twice


async def test_a_second_run_into_a_held_output_is_refused_before_any_request(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    memory = in_memory(orders=100)
    release, arrived = asyncio.Event(), asyncio.Event()

    async def hold(number: int) -> None:  # the first run waits at its first GetInvoices
        arrived.set()
        await release.wait()

    first = Wire(memory)
    first.hooks["GetInvoices"] = hold
    running = asyncio.create_task(run(memory, first, tmp_path, batch_size=50))
    await asyncio.wait_for(arrived.wait(), 60)
    second = Wire(memory)
    with pytest.raises(OutputLocked) as refused:
        await run(memory, second, tmp_path, batch_size=50)
    release.set()
    summary = await asyncio.wait_for(running, 60)

    assert isinstance(refused.value, UsageError)  # exit status 2
    assert f"{tmp_path} is in use by 'extractor invoices' (pid {os.getpid()} on " in str(
        refused.value
    )
    assert second.sent == [], "refused before any request"
    assert summary.complete and (tmp_path / LOCK_FILE).read_bytes() == b""
    assert_matches_truth(memory.service, tmp_path)


async def test_the_hourly_request_budget_paces_the_run_on_its_clock(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    # one request a minute after the burst: Login, the listing and 30 GetInvoices of 2
    per_hour, burst = 60, DEFAULT_LIMITS.burst
    memory = in_memory(orders=60)
    wire = Wire(memory)
    summary = await run(memory, wire, tmp_path, batch_size=2, max_requests_per_hour=per_hour)

    assert [name for name, *_ in wire.sent[:2]] == ["Login", "GetOrderSyncList"]
    assert summary.complete and len(wire.sent) == 32
    assert summary.requests == 31  # the summary counts the calls after Login
    start = wire.sent[0][2]
    waited = [round(at - start, 6) for *_, at in wire.sent]
    # the burst at once, then each request as the bucket refills: 12 minutes for 32
    assert waited == [max(0, n + 1 - burst) * 3600 / per_hour for n in range(32)]
    assert_matches_truth(memory.service, tmp_path)


async def test_an_expired_session_is_not_the_service_failing() -> None:
    # expiries are answered by a new login; counted as failures, a session that expires often
    # (every few calls) stopped a healthy run as ServiceFailing after a dozen in a row
    health = Health.for_workers(4)

    async def expired() -> None:
        raise SessionExpired("the session expired")

    for number in range(50):
        with pytest.raises(SessionExpired):
            await observed(health, f"01-{number:08d}", expired())

    async def failing() -> None:
        raise ServerError(500, "Internal Server Error")

    with pytest.raises(ServiceFailing):  # the service's own failures still count
        for number in range(50):
            with contextlib.suppress(ServerError):
                await observed(health, f"02-{number:08d}", failing())
