"""Ctrl-C and SIGTERM stop a run cleanly (issue 10, item 14), through the real CLI: one line,
exit 130 or 143, parser processes gone, nothing leaked, and the same command resumes."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from extractor.simulator.server import Simulator
from tests.helpers import extractor, start_extractor, unstamped
from tests.hostile import HostileServer, held
from tests.truth import assert_matches_truth


@pytest.fixture
async def simulator(start_simulator: Any) -> Simulator:
    sim: Simulator = await start_simulator(orders=300)
    return sim


def run_args(url: str, out: Path) -> list[str]:
    return [
        "invoices", "--out", str(out), "--base-url", url, "--batch-size", "100",
        "--parse-workers", "2", "--max-requests-per-hour", "0",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("signum", "to_group", "status"),
    [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)],
    ids=["ctrl-c to the terminal's process group", "sigterm to the run"],
)
async def test_a_signal_stops_the_run_cleanly_and_it_resumes(
    simulator: Simulator, tmp_path: Path, signum: int, to_group: bool, status: int
) -> None:
    release, arrived = asyncio.Event(), asyncio.Event()
    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", held(release, arrived))
        process = await start_extractor(*run_args(server.url, tmp_path), session=True)
        await asyncio.wait_for(arrived.wait(), 60)  # mid-run: parser processes are up
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 2
        if to_group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        _, err = await asyncio.wait_for(process.communicate(), 60)
        release.set()
    assert process.returncode == status
    name = signal.Signals(signum).name
    said = err.decode()
    assert unstamped(said)[-1] == (
        f"extractor: interrupted ({name}); run the same command to resume"
    )
    assert "Traceback" not in said and "leaked" not in said and "Fatal" not in said
    _, alive = await asyncio.to_thread(psutil.wait_procs, children, 10)
    assert not alive, "parser processes outlived the run"
    code, _, err_text = await extractor(*run_args(simulator.url, tmp_path))
    assert code == 0, err_text
    assert_matches_truth(simulator, tmp_path)
