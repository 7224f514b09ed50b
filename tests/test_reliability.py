"""Never lose, never duplicate: chaos, quarantine, budgets, hostile XML, full disks, kills
(a poison id's bisection is in test_engine)."""

from __future__ import annotations

import errno
import io
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from extractor.clock import ManualClock
from extractor.config import Timeouts
from extractor.engine import runner
from extractor.engine.journal import JOURNAL_DIR
from extractor.errors import HostileXml, OutputError
from extractor.jobs.invoices import InvoiceJob
from extractor.output.staging import TableWriter
from extractor.simulator.faults import FaultConfig
from extractor.simulator.server import Simulator
from tests.conftest import CREDS, MEMORY_URL, InMemory, job_of
from tests.helpers import credentials_env, killed_at
from tests.truth import assert_matches_truth

ROOT = Path(__file__).resolve().parent.parent


async def backfill(simulator: Simulator, out: Path, **options: Any) -> dict[str, Any]:
    job = job_of(
        InvoiceJob,
        out=out,
        base_url=simulator.url,
        **{"max_requests_per_hour": 0, "parse_workers": 0, **options},
    )
    return (await runner.run(job, CREDS, log=io.StringIO(), clock=ManualClock())).as_json()


def no_leftovers(out: Path) -> None:
    """Nothing half-done is left: no staging, no journal, no temporary file."""
    assert not (out / "_staging").exists() and not (out / JOURNAL_DIR).exists()
    assert not [path for path in out.rglob("*") if path.name.endswith(".tmp")]


async def test_chaos_run_equals_the_fault_free_truth(start_simulator: Any, tmp_path: Path) -> None:
    # a slow answer outlasts the attempt's timeout; an ordinary one of 100 orders, on a loaded
    # machine, does not (1 s did: ten timeouts in a row stopped the run as a dead service)
    faults = FaultConfig(rate=0.1, seed=11, slow_seconds=10.0)
    simulator = await start_simulator(orders=1000, faults=faults, session_ttl_calls=7)
    summary = await backfill(  # 50 batches, as many requests for faults to fall on as 5000/100
        simulator, tmp_path, batch_size=20, concurrency=8, timeouts=Timeouts(attempt=4.0)
    )
    injected = sum(simulator.stats[f"fault:{kind}"] for kind in faults.kinds)
    assert injected >= 5 and simulator.stats["expired"] >= 5  # it was chaos
    # a batch whose last attempt faulted gives up (split) instead of retrying
    assert summary["status"] == "complete"
    assert summary["retries"] + summary["give_ups"] >= injected
    assert summary["relogins"] >= 5
    assert_matches_truth(simulator, tmp_path)  # every order once, every field equal
    no_leftovers(tmp_path)


async def test_quarantine_pauses_every_worker_until_it_ends(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    service = in_memory(orders=300, faults=FaultConfig(budget=10_000))
    service.service.budget.start_quarantine(120.0)  # another client of the account overdid it
    job = job_of(
        InvoiceJob, out=tmp_path, base_url=MEMORY_URL, batch_size=20, concurrency=8,
        parse_workers=0,
    )  # fmt: skip
    summary = await service.run(job)
    assert service.service.stats["during_quarantine"] <= 3
    assert summary["status"] == "complete" and summary["quarantines"] >= 1
    shown = service.stream.getvalue()
    assert "paused until" in shown and "quarantined by the service" in shown
    assert 120 <= service.clock.slept < 130  # sat out once, together: not once per worker
    assert_matches_truth(service.service, tmp_path)


@pytest.mark.parametrize(
    ("orders", "batch", "budget", "window", "requests", "waited"),
    [
        # 25 requests per 10-minute window, 32 needed: one wait for the reset
        (60, 2, 25, 600.0, 32, (600, 610)),
        # 30 per 10 s, 82 needed (Login, the listing, 80 batches): two resets are the fewest
        # it can wait for, each window used to its last request
        (400, 5, 30, 10.0, 82, (20, 20.5)),
    ],
)
async def test_the_service_budget_is_spent_to_the_last_request_and_no_further(
    in_memory: Callable[..., InMemory],
    tmp_path: Path,
    orders: int,
    batch: int,
    budget: int,
    window: float,
    requests: int,
    waited: tuple[float, float],
) -> None:
    faults = FaultConfig(budget=budget, window=window, quarantine=window * 6)
    service = in_memory(orders=orders, faults=faults)
    job = job_of(
        InvoiceJob, out=tmp_path, base_url=MEMORY_URL, batch_size=batch, concurrency=8,
        parse_workers=0, max_requests_per_hour=0,
    )  # fmt: skip
    summary = await service.run(job)
    stats = service.service.stats
    assert stats["faults"] == 0 and stats["during_quarantine"] == 0
    assert summary["status"] == "complete" and stats["requests"] == requests
    assert waited[0] <= service.clock.slept <= waited[1]
    assert_matches_truth(service.service, tmp_path)


async def test_hostile_xml_stops_the_run_unexpanded(start_simulator: Any, tmp_path: Path) -> None:
    simulator = await start_simulator(orders=100, faults=FaultConfig(hostile=True))
    with pytest.raises(HostileXml, match="refused without expanding it"):
        await backfill(simulator, tmp_path)
    assert not (tmp_path / "invoices").exists()


async def test_a_full_disk_stops_the_run_and_the_rerun_resumes(
    start_simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator = await start_simulator(orders=600)  # 15 batches of 40
    stage = TableWriter.stage
    staged: list[str] = []

    def fill_up(self: TableWriter, name: str, *args: Any) -> None:
        if len(staged) >= 6:
            raise OutputError(f"cannot write {self.staging}: {os.strerror(errno.ENOSPC)}")
        staged.append(name)
        stage(self, name, *args)

    monkeypatch.setattr(TableWriter, "stage", fill_up)
    with pytest.raises(OutputError, match="No space left on device"):
        await backfill(simulator, tmp_path, batch_size=40, concurrency=2)
    assert (tmp_path / JOURNAL_DIR).is_dir() and not (tmp_path / "invoices").exists()
    monkeypatch.setattr(TableWriter, "stage", stage)
    before = simulator.stats["GetInvoices"]
    summary = await backfill(simulator, tmp_path, batch_size=40, concurrency=2)
    assert summary["status"] == "complete" and summary["invoices"] == simulator.config.orders
    assert simulator.stats["GetInvoices"] - before < 15  # what was journaled is not fetched again
    assert_matches_truth(simulator, tmp_path)
    no_leftovers(tmp_path)


def cli_args(simulator: Simulator, out: Path) -> list[str]:
    return [
        "invoices", "--out", str(out), "--base-url", simulator.url, "--batch-size", "25",
        "--concurrency", "4", "--max-requests-per-hour", "0", "--parse-workers", "1",
    ]  # fmt: skip


#: Where the runs are killed, in turn: as the plan is journaled, after the 5th and the 20th
#: staged batch of a run, and between writing the partitions and revealing them.
KILLS = ("journal:plan", "journal:staged@5", "journal:staged@20", "publish:written")


async def test_kill_and_resume_gives_the_truth_exactly(
    start_simulator: Any, tmp_path: Path
) -> None:
    simulator = await start_simulator(orders=1000)  # 40 batches: staged@5 and @20 mid-run
    args = cli_args(simulator, tmp_path)
    env = credentials_env(simulator.config.password)
    codes = [await killed_at(point, *args, env=env) for point in (*KILLS, None)]
    assert codes == [-signal.SIGKILL] * len(KILLS) + [0]
    assert_matches_truth(simulator, tmp_path)
    no_leftovers(tmp_path)
    summaries = list((tmp_path / "_runs").glob("*.json"))
    assert len(summaries) == 1
    summary = orjson.loads(summaries[0].read_bytes())
    assert summary["invoices"] == 1000 and summary["status"] == "complete"
    # the last invocation only published what the one before had fetched: its counts say so,
    # and its rate is of what it fetched itself
    resumed = summary["resumed"]
    assert resumed["starts"] >= 3 and resumed["invoices_this_invocation"] == 0
    assert summary["invoices_per_second"] == 0 and "requests" in resumed["this_invocation"]
