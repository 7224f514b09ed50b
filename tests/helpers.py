"""What several test modules need: the real CLI in a subprocess, with credentials; a
backfill and a sync through the library."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import os
import re
import shutil
import signal
import socket
import sys
import sysconfig
from pathlib import Path
from typing import Any, Final

import orjson
import psutil

from extractor.checkpoints import KILL_AT
from extractor.clock import Clock, ManualClock
from extractor.engine import runner
from extractor.jobs.invoices import InvoiceJob
from extractor.jobs.sync import SyncJob, run_sync
from extractor.output.targets import Target
from extractor.simulator.server import DEMO_APPLICATION_ID, DEMO_PASSWORD, DEMO_USERNAME, Simulator
from tests.conftest import CREDS, job_of

ROOT = Path(__file__).resolve().parent.parent
#: Where a first sync's ledger begins in the tests.
SYNC_SINCE = dt.date(2015, 1, 1)


def credentials_env(password: str = DEMO_PASSWORD) -> dict[str, str]:
    return {
        "TFSO_APPLICATION_ID": DEMO_APPLICATION_ID,
        "TFSO_USERNAME": DEMO_USERNAME,
        "TFSO_PASSWORD": password,
    }


#: The simulator's demo credentials as the CLI reads them.
DEMO_ENV: Final = credentials_env()


def events(err: str) -> list[dict[str, Any]]:
    """Every stderr line as JSON: each must parse and carry the fields every event has."""
    parsed = [orjson.loads(line) for line in err.splitlines()]
    for event in parsed:
        assert {"time", "level", "event", "run_id", "message"} <= event.keys(), event
        assert event["level"] in {"debug", "info", "warning", "error"}
        assert event["run_id"], event
    return parsed


def asked_ids(envelope: bytes) -> list[int]:
    """The OrderIds a GetInvoices envelope asks for, in order (none for other operations)."""
    return [int(i) for i in re.findall(rb"<int>(\d+)</int>", envelope)]


def c_compiler() -> str | None:
    """The C compiler the package's build would use, if there is one."""
    command = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(command) or shutil.which("cc") or shutil.which("gcc")


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: Seconds a real CLI run may take in a test (a few, unloaded) before it counts as hung.
DEADLINE: Final = 120.0
#: Seconds the processes of a hung run get to write their stacks before they are killed.
_DUMPING: Final = 10.0


async def start_extractor(
    *args: str, env: dict[str, str] | None = None, session: bool = False
) -> asyncio.subprocess.Process:
    """``python -m extractor ARGS`` with the demo credentials (or ``env``), output piped;
    ``session``: in a process group of its own, as a terminal's foreground job is. Every
    Python process of the run writes its threads' stacks on a fatal signal (:func:`ended`)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "extractor", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=os.environ | (env if env is not None else credentials_env())
        | {"PYTHONFAULTHANDLER": "1"},
        cwd=ROOT, start_new_session=session,
    )  # fmt: skip


async def ended(
    process: asyncio.subprocess.Process, deadline: float = DEADLINE
) -> tuple[int, bytes, bytes]:
    """The exit status, stdout and stderr of a run started in a session of its own. One
    still running after ``deadline`` seconds fails the test at once: every process of its
    session (parser processes, Dask workers) first writes its threads' stacks to stderr
    (SIGABRT, which faulthandler reports), then all are killed, and the failure shows them."""
    out, err = bytearray(), bytearray()

    async def drain(stream: asyncio.StreamReader | None, into: bytearray) -> None:
        while stream is not None and (chunk := await stream.read(1 << 16)):
            into.extend(chunk)

    reading = asyncio.gather(drain(process.stdout, out), drain(process.stderr, err))
    try:
        code = await asyncio.wait_for(process.wait(), deadline)
    except TimeoutError:
        await _stacks_then_killed(process, reading)
        raise AssertionError(
            f"the run did not end within {deadline:.0f} s; what it wrote, the stacks of its "
            f"processes last:\n{err.decode(errors='replace')[-30_000:]}"
        ) from None
    await reading
    return code, bytes(out), bytes(err)


async def _stacks_then_killed(
    process: asyncio.subprocess.Process, reading: asyncio.Future[Any]
) -> None:
    """Every process of ``process``'s session writes its stacks and ends (SIGABRT), or is
    killed; what they wrote is read meanwhile."""
    for signum in (signal.SIGABRT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reading), _DUMPING)
            break
    reading.cancel()
    await process.wait()


async def killed_at(point: str | None, *args: str, env: dict[str, str] | None = None) -> int:
    """The real CLI, made to SIGKILL itself at the checkpoint ``point``
    (:mod:`extractor.checkpoints`), or run to its end when None; its exit status, once every
    process it started (parser processes) is gone too."""
    kill = {KILL_AT: point} if point else {}
    process = await start_extractor(*args, env=(env or credentials_env()) | kill, session=True)
    code, _, _ = await ended(process)
    await _session_ended(process.pid)
    return code


async def _session_ended(session: int) -> None:
    """Wait until no process of the session is left (parser processes notice their parent
    died and end on their own)."""
    for _ in range(600):
        alive = []
        for found in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(found.pid) == session and found.status() != psutil.STATUS_ZOMBIE:
                    alive.append(found)
        if not alive:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"processes of session {session} are still running: {alive}")


async def extractor(
    *args: str, env: dict[str, str] | None = None, deadline: float = DEADLINE
) -> tuple[int, str, str]:
    """Run the real CLI to its end (failing the test with its processes' stacks when it
    has not ended after ``deadline`` seconds): exit status, stdout, stderr."""
    process = await start_extractor(*args, env=env, session=True)
    code, out, err = await ended(process, deadline)
    return code, out.decode(), err.decode()


#: The UTC timestamp that starts a log line off a terminal (:mod:`extractor.log`).
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


def unstamped(err: str) -> list[str]:
    """stderr's lines without their timestamps."""
    return [STAMP.sub("", line) for line in err.strip().splitlines()]


def one_line(err: str) -> str:
    """The single line a user error prints: no traceback, nothing else."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


async def backfill_at(
    url: str, out: Path, clock: Clock | None = None, **options: Any
) -> dict[str, Any]:
    """A backfill into ``out`` on a manual clock of its own, or on ``clock``: a manual clock
    that runs one after another into the same output share (as on the wall clock, a later
    run then finishes later, however long an earlier one's back-off made its clock run
    ahead), or the real one (a run that must read the service's Date on the real clock)."""
    job = job_of(
        InvoiceJob,
        out=out,
        base_url=url,
        **{"max_requests_per_hour": 0, "parse_workers": 0, "batch_size": 100, **options},
    )
    return (await runner.run(job, CREDS, log=io.StringIO(), clock=clock or ManualClock())).as_json()


async def sync(simulator: Simulator, target: Target, **options: Any) -> dict[str, Any]:
    job = job_of(
        SyncJob,
        target,
        base_url=simulator.url,
        since=SYNC_SINCE,
        max_requests_per_hour=0,
        **options,
    )
    return (await run_sync(job, CREDS, log=io.StringIO(), clock=ManualClock())).as_json()
