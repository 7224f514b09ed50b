"""What several test modules need: the real CLI in a subprocess, with credentials."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

import psutil

from extractor.checkpoints import KILL_AT
from extractor.simulator.server import DEMO_APPLICATION_ID, DEMO_PASSWORD, DEMO_USERNAME

ROOT = Path(__file__).resolve().parent.parent


def credentials_env(password: str = DEMO_PASSWORD) -> dict[str, str]:
    return {
        "TFSO_APPLICATION_ID": DEMO_APPLICATION_ID,
        "TFSO_USERNAME": DEMO_USERNAME,
        "TFSO_PASSWORD": password,
    }


async def start_extractor(
    *args: str, env: dict[str, str] | None = None, session: bool = False
) -> asyncio.subprocess.Process:
    """``python -m extractor ARGS`` with the demo credentials (or ``env``), output piped;
    ``session``: in a process group of its own, as a terminal's foreground job is."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "extractor", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=os.environ | (env if env is not None else credentials_env()), cwd=ROOT,
        start_new_session=session,
    )  # fmt: skip


async def killed_at(point: str | None, *args: str, env: dict[str, str] | None = None) -> int:
    """The real CLI, made to SIGKILL itself at the checkpoint ``point``
    (:mod:`extractor.checkpoints`), or run to its end when None; its exit status, once every
    process it started (parser processes) is gone too."""
    kill = {KILL_AT: point} if point else {}
    process = await start_extractor(*args, env=(env or credentials_env()) | kill, session=True)
    await asyncio.wait_for(process.communicate(), 120)
    await _session_ended(process.pid)
    assert process.returncode is not None
    return process.returncode


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


async def extractor(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the real CLI to its end: exit status, stdout, stderr."""
    process = await start_extractor(*args, env=env)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def one_line(err: str) -> str:
    """The single line a user error prints: no traceback, nothing else."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]
