"""One writer per output (issue 10, item 1): a second run is refused before any request."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from extractor.cli.status import describe_output
from extractor.clock import ManualClock
from extractor.engine import runner
from extractor.errors import OutputLocked
from extractor.jobs.ledger import TransactionJob
from extractor.jobs.sync import SyncJob, run_sync
from extractor.output.lock import LOCK_FILE, OutputLock
from extractor.output.targets import Target
from extractor.simulator.server import DEMO_APPLICATION_ID, DEMO_PASSWORD, DEMO_USERNAME, Simulator
from tests.conftest import CREDS, CliResult, job_of
from tests.helpers import backfill_at as backfill
from tests.helpers import credentials_env, one_line
from tests.hostile import HostileServer, held, once
from tests.truth import assert_lake_equals_truth, assert_matches_truth

ROOT = Path(__file__).resolve().parent.parent
SINCE = dt.date(2020, 1, 1)


async def test_a_held_output_is_refused_before_any_request(
    simulator: Simulator, tmp_path: Path
) -> None:
    with OutputLock.take(tmp_path, "invoices"):
        with pytest.raises(
            OutputLocked, match=rf"in use by 'extractor invoices' \(pid {os.getpid()} "
        ):
            await backfill(simulator.url, tmp_path)
        job = job_of(
            TransactionJob, tmp_path, date_from=SINCE, date_to=SINCE, base_url=simulator.url
        )
        with pytest.raises(OutputLocked):
            await runner.run(job, CREDS, log=io.StringIO(), clock=ManualClock())
        sync = job_of(SyncJob, Target.parse(str(tmp_path)), base_url=simulator.url)
        with pytest.raises(OutputLocked):
            await run_sync(sync, CREDS, log=io.StringIO(), clock=ManualClock())
    assert simulator.stats["requests"] == 0
    summary = await backfill(simulator.url, tmp_path)  # released: the run goes ahead
    assert summary["status"] == "complete"
    assert (tmp_path / LOCK_FILE).read_bytes() == b""  # released, and says so


async def start_cli(url: str, out: Path) -> asyncio.subprocess.Process:
    env = os.environ | {
        "TFSO_APPLICATION_ID": DEMO_APPLICATION_ID,
        "TFSO_USERNAME": DEMO_USERNAME,
        "TFSO_PASSWORD": DEMO_PASSWORD,
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "extractor", "invoices", "--out", str(out),
        "--base-url", url, "--batch-size", "50", "--concurrency", "2",
        "--max-requests-per-hour", "0", "--parse-workers", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip


async def test_two_real_runs_into_one_out_the_second_is_refused(
    start_simulator: Callable[..., Awaitable[Simulator]], tmp_path: Path
) -> None:
    simulator = await start_simulator(orders=150)  # three batches of 50
    release, arrived = asyncio.Event(), asyncio.Event()
    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", held(release, arrived))  # the first run waits, holding the lock
        first = await start_cli(server.url, tmp_path)
        await asyncio.wait_for(arrived.wait(), 60)
        holder = orjson.loads((tmp_path / LOCK_FILE).read_bytes())
        assert holder["pid"] == first.pid and holder["command"] == "invoices"
        second = await start_cli(server.url, tmp_path)
        _, err = await asyncio.wait_for(second.communicate(), 60)
        logins = server.seen["Login"]
        release.set()
        await asyncio.wait_for(first.communicate(), 120)
    assert second.returncode == 2, err
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err.decode()
    assert f"in use by 'extractor invoices' (pid {first.pid} on " in lines[0]
    assert logins == 1  # the first run's: the second was refused before any request
    assert first.returncode == 0
    assert_matches_truth(simulator, tmp_path)  # exactly once: nothing doubled


async def test_two_syncs_with_their_own_work_dirs_into_one_out(
    simulator: Simulator, tmp_path: Path, cli_beside: Callable[..., Awaitable[CliResult]]
) -> None:
    """The target itself is locked, not only the work directory: a second run with a work
    directory of its own is refused naming the first, before any GetInvoices."""
    out = tmp_path / "out"
    release, arrived = asyncio.Event(), asyncio.Event()
    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", once(held(release, arrived)))  # the first run waits there
        job = job_of(
            SyncJob, Target.parse(str(out)), work_dir=tmp_path / "work-a", base_url=server.url,
            since=SINCE, max_requests_per_hour=0, ledger=False, concurrency=1,
        )  # fmt: skip
        first = asyncio.create_task(run_sync(job, CREDS, log=io.StringIO(), clock=ManualClock()))
        await asyncio.wait_for(arrived.wait(), 60)
        code, _, err = await cli_beside(
            "sync", "--out", str(out), "--work-dir", str(tmp_path / "work-b"), "--no-ledger",
            "--parse-workers", "0",
            "--base-url", server.url, "--max-requests-per-hour", "0", env=credentials_env(),
        )  # fmt: skip
        seen = dict(server.seen)
        shown = describe_output(Target.parse(str(out)), tmp_path / "work-b")["target_lock"]
        release.set()
        summary = (await asyncio.wait_for(first, 120)).as_json()
    assert shown["holder"].startswith(f"'extractor sync' (pid {os.getpid()} on ")
    assert code == 2
    assert f"{out} is in use by 'extractor sync' (pid {os.getpid()} on " in one_line(err)
    assert seen["GetInvoices"] == 1 and seen["Login"] == 1  # the first run's only
    assert summary["status"] == "complete"
    assert_lake_equals_truth(simulator, Target.parse(str(out)), marked=set(), ledger=False)
    assert not (tmp_path / "work-b" / "_work").exists()  # the refused run left nothing
