"""What several test modules need: the real CLI in a subprocess, with credentials."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

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
