"""One writer for an s3:// target wherever its work dir is (issue 24, item 5): its lock object,
held under a lease that its holder renews and a crashed holder's successor takes over. Time
is a manual clock: no test waits for a lease to end."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from extractor.cli.status import describe_output, render
from extractor.clock import ManualClock
from extractor.errors import LeaseLost, OutputLocked
from extractor.jobs.sync import SyncJob, run_sync
from extractor.output.lease import DEFAULT_LEASE, ObjectLock, held_lease
from extractor.output.lock import holder_of_this_process
from extractor.output.lockobject import read_lock
from extractor.output.store import StoreConfig
from extractor.output.targets import Target
from tests.conftest import CREDS, CliResult, job_of
from tests.helpers import SYNC_SINCE, credentials_env
from tests.hostile import HostileServer, held, once
from tests.s3 import Fault, FaultyS3, moto_with_env

BUCKET = "leased"
#: When the first holder took its lock; its lease runs 60 s, and 10 s of grace after.
T = 1_900_000_000.0
PID = rf"\(pid {os.getpid()} on "


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_with_env(BUCKET) as endpoint:
        yield endpoint


def at(seconds: float) -> ManualClock:
    return ManualClock(start=T + seconds)


def test_a_live_lease_is_refused_and_one_that_ended_is_taken_over(moto: str) -> None:
    target = Target.parse(f"s3://{BUCKET}/takeover", moto)
    first = ObjectLock.take(target, "sync", clock=at(0), renew=False)
    live = rf"in use by 'extractor sync' {PID}.*its lease is live until 2030-03-17 17:47:40\+00:00"
    with pytest.raises(OutputLocked, match=live):
        ObjectLock.take(target, "invoices", clock=at(30), renew=False)
    with pytest.raises(OutputLocked, match="its lease ended at"):  # within the grace
        ObjectLock.take(target, "invoices", clock=at(70), renew=False)
    second = ObjectLock.take(target, "invoices", clock=at(71), renew=False)
    assert second.expires == T + 71 + 60
    first.renew()  # its holder finds out at its next renewal
    with pytest.raises(LeaseLost, match=r"taken over by 'extractor invoices'.*stopped writing"):
        first.check()
    first.release()  # never removes what is no longer its own
    found = read_lock(target)
    assert found is not None and found.holder["token"] == second.holder["token"]
    second.release()
    assert read_lock(target) is None


def test_of_two_successors_only_one_takes_over(moto: str) -> None:
    target = Target.parse(f"s3://{BUCKET}/race", moto)
    ObjectLock.take(target, "sync", clock=at(0), renew=False)  # then killed: never released
    stale = read_lock(target)
    assert stale is not None
    winner = ObjectLock.take(target, "sync", clock=at(100), renew=False)
    late = ObjectLock(
        target, holder_of_this_process("invoices") | {"token": "late"}, "", at(100), DEFAULT_LEASE
    )
    with pytest.raises(OutputLocked, match=rf"in use by 'extractor sync' {PID}.*lease is live"):
        late.take_over(stale)  # read the same stale lock: its conditional replace fails
    found = read_lock(target)
    assert found is not None and found.holder["token"] == winner.holder["token"]
    winner.release()


def test_a_renewed_lease_holds_and_one_not_renewed_in_time_is_lost(moto: str) -> None:
    target = Target.parse(f"s3://{BUCKET}/renewed", moto)
    clock = at(0)
    lock = ObjectLock.take(target, "sync", clock=clock, renew=False)
    clock.advance(50)
    lock.renew()
    with pytest.raises(OutputLocked):  # past its first lease, and the grace: renewed
        ObjectLock.take(target, "sync", clock=at(75), renew=False)
    lock.check()
    clock.advance(51)  # 9 s before the renewed lease ends: less than the margin left
    with pytest.raises(LeaseLost, match="ran out before it could be renewed"):
        lock.check()
    lock.release()


def test_a_lock_write_retried_after_it_landed_is_still_ours(moto: str) -> None:
    """S3 answers a put late; the client gives up and sends it again, which the condition
    then refuses (it is our own write): the lock is still ours, not another run's."""
    # the first try of each put: held back
    stalled = Fault(every=2, stall=1.0, methods=("PUT",), paths=r"_extractor\.lock$")
    with FaultyS3(moto, stalled) as proxy:
        quick = StoreConfig(read_timeout=0.3, first_backoff=0.01)
        target = Target(f"s3://{BUCKET}/retried", bucket=BUCKET, prefix="retried",
                        endpoint_url=proxy.url, store=quick)  # fmt: skip
        clock = at(0)
        lock = ObjectLock.take(target, "sync", clock=clock, renew=False)  # created, then 412
        clock.advance(20)
        lock.renew()  # renewed, then 412
        served = proxy.served()
    assert served["stall"] == 2 and served["requests"] >= 5, served
    found = read_lock(Target.parse(f"s3://{BUCKET}/retried", moto))
    assert lock.lost is None and found is not None and found.etag == lock.etag
    assert found.holder["expires"] == T + 20 + 60
    lock.release()


async def test_a_second_run_is_refused_and_a_run_that_lost_its_lease_stops(
    start_simulator: Any,
    moto: str,
    tmp_path: Path,
    cli_beside: Callable[..., Awaitable[CliResult]],
) -> None:
    simulator = await start_simulator(orders=300)
    uri = f"s3://{BUCKET}/lost"
    target = Target.parse(uri, moto)
    release, arrived = asyncio.Event(), asyncio.Event()
    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", once(held(release, arrived)))  # the first run waits there
        first = asyncio.create_task(cli_beside(
            "sync", "--out", uri, "--endpoint-url", moto, "--work-dir", str(tmp_path / "a"),
            "--tables", "invoices", "--parse-workers", "0", "--concurrency", "1",
            "--base-url", server.url, "--max-requests-per-hour", "0", env=credentials_env(),
        ))  # fmt: skip
        await asyncio.wait_for(arrived.wait(), 60)
        job = job_of(SyncJob, target, work_dir=tmp_path / "b", base_url=server.url,
                     since=SYNC_SINCE, max_requests_per_hour=0)  # fmt: skip
        with pytest.raises(OutputLocked, match=rf"{uri} is in use by 'extractor sync' {PID}"):
            await run_sync(job, CREDS, log=io.StringIO(), clock=ManualClock())
        assert server.seen["Login"] == 1  # the first run's: the second sent nothing
        take_over(target)  # another machine's run, once the first run's lease had lapsed
        lease = held_lease(target)
        assert lease is not None
        await asyncio.to_thread(lease.renew)  # what its renewal thread does every 15 s
        code, _, err = await asyncio.wait_for(first, 60)
        release.set()
    assert code == 1 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert f"lost the lock of {uri}: it was taken over by 'extractor sync' (pid 4242 on " in line
    assert "this run stopped writing" in line
    stored = boto3.client("s3", endpoint_url=moto).list_objects_v2(Bucket=BUCKET, Prefix="lost/")
    assert [item["Key"] for item in stored["Contents"]] == ["lost/_extractor.lock"]
    found = read_lock(target)
    assert found is not None and found.holder["pid"] == 4242  # the loser left it alone


def take_over(target: Target) -> None:
    """Write the lock object as a run on another machine would once it took it over."""
    holder = {"host": "elsewhere", "pid": 4242, "started": "2030-01-01 00:00:00 UTC",
              "command": "sync", "token": "theirs", "expires": time.time() + 60}  # fmt: skip
    boto3.client("s3", endpoint_url=target.endpoint_url).put_object(
        Bucket=target.bucket, Key=f"{target.prefix}/_extractor.lock", Body=orjson.dumps(holder)
    )


def test_status_shows_the_lock_object_and_its_lease_and_reset_still_works(
    moto: str, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    uri = f"s3://{BUCKET}/status"
    target = Target.parse(uri, moto)
    lock = ObjectLock.take(target, "sync", renew=False)
    report = describe_output(target, tmp_path)
    assert report["target_lock"]["holder"].startswith(f"'extractor sync' (pid {os.getpid()} ")
    assert report["target_lock"]["lease"].startswith("its lease is live until ")
    lock.release()
    assert describe_output(target, tmp_path)["target_lock"] is None
    crashed = ObjectLock.take(target, "sync", clock=ManualClock(time.time() - 3600), renew=False)
    code, out, _ = cli("status", uri, "--endpoint-url", moto, "--work-dir", str(tmp_path))
    assert code == 0 and f"{uri} locked by 'extractor sync' (pid {os.getpid()} on " in out
    assert "; its lease ended at " in out
    assert render(describe_output(target, tmp_path)) in out
    code, out, _ = cli(
        "reset", uri, "--unfinished", "--yes", "--endpoint-url", moto, "--work-dir", str(tmp_path)
    )
    assert code == 0 and "nothing to reset" in out
    crashed.release()
