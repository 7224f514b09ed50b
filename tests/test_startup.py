"""Start-up (issue 28): what the quick commands import, asserted as modules, not seconds
(the machines are shared; ``make bench`` times them). pandas is none of them: pyarrow
imports it whenever a Python value (``pa.scalar``, ``pa.array`` of a list, ``pa.table`` of
a deltalake table) meets it, 0.1-0.6 s, and nothing here uses it. ``--help`` loads no
pyarrow, aiohttp, deltalake nor asyncio; ``status`` no asyncio, and of a lake no pyarrow."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from extractor.clock import ManualClock
from extractor.jobs.sync import SyncJob, run_sync
from extractor.output.targets import Target
from extractor.simulator.config import SimulatorConfig
from extractor.simulator.memory import MemoryWire
from extractor.simulator.service import SimulatedService
from tests.conftest import CREDS, MEMORY_URL, job_of
from tests.helpers import DEMO_ENV, SYNC_SINCE

#: The modules watched, and the command run as ``extractor ARGS`` in a fresh interpreter.
_WATCHED = ("pandas", "pyarrow", "pyarrow.dataset", "aiohttp", "deltalake", "asyncio")
_PROBE = f"""
import sys
from extractor.cli.main import entry
code = entry(sys.argv[1:])
print()
print(" ".join(m for m in {_WATCHED!r} if m in sys.modules))
sys.exit(code)
"""


def imported(*args: str, env: dict[str, str] | None = None) -> set[str]:
    """The watched modules that ``extractor ARGS`` imported (it must succeed)."""
    return run(*args, env=env)[0]


def run(*args: str, env: dict[str, str] | None = None) -> tuple[set[str], str]:
    """``extractor ARGS`` in a fresh interpreter (it must succeed): the watched modules it
    imported, and what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True, text=True, timeout=120, env=os.environ | (env or {}),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    *printed, _, modules = done.stdout.splitlines()
    return set(modules.split()), "\n".join(printed)


def test_help_imports_none_of_the_heavy_libraries() -> None:
    assert imported("--help") == set()


def test_status_of_a_lake_reads_it_with_deltalake_alone(tmp_path: Path) -> None:
    clock = ManualClock(dt.datetime(2026, 11, 10, 12, tzinfo=dt.UTC).timestamp())
    service = SimulatedService(SimulatorConfig(orders=20), clock=clock)
    job = job_of(
        SyncJob, Target.parse(str(tmp_path)), base_url=MEMORY_URL, since=SYNC_SINCE,
        max_requests_per_hour=0, tables=("invoices",), ledger=False,
    )  # fmt: skip
    run = run_sync(job, CREDS, log=io.StringIO(), clock=clock, wire=MemoryWire(service))
    asyncio.run(run)
    assert imported("status", str(tmp_path)) == {"deltalake"}


def test_status_of_parquet_reads_footers_without_datasets(tmp_path: Path) -> None:
    table = pa.table({"OrderId": pa.array([1, 2, 3], pa.int64())})
    for month, hidden in (("2024-01", ""), ("2024-02", ""), ("2024-03", "_old/")):
        folder = tmp_path / "invoices" / f"{hidden}order_month={month}"
        folder.mkdir(parents=True)
        pq.write_table(table, folder / "part-a.parquet")
    modules, printed = run("status", str(tmp_path), "--json")
    assert modules == {"pyarrow"}
    # what dataset readers see: not under a name that starts with _ or .
    assert orjson.loads(printed)["tables"] == {"invoices": {"records": 6}}


async def test_check_types_an_invoice_without_pandas(start_simulator: Any) -> None:
    simulator = await start_simulator(orders=20)
    args = ("check", "--base-url", simulator.url, "--max-requests-per-hour", "0")
    found = await asyncio.to_thread(imported, *args, env=DEMO_ENV)
    assert found == {"pyarrow", "aiohttp", "asyncio"}


async def test_a_backfill_and_a_ledger_run_import_no_pandas(
    start_simulator: Any, tmp_path: Path
) -> None:
    """Not a start-up only: pandas is 33 MB of the run's process (and of the tree's peak)."""
    simulator = await start_simulator(orders=60)
    common = ("--base-url", simulator.url, "--max-requests-per-hour", "0")
    invoices = ("invoices", "--out", str(tmp_path / "i"), "--batch-size", "20", *common)
    ledger = ("transactions", "--out", str(tmp_path / "t"), "--from", "2024-01-01", "--to",
              "2024-03-31", *common)  # fmt: skip
    for args in (invoices, ledger):
        found = await asyncio.to_thread(imported, *args, env=DEMO_ENV)
        assert "pandas" not in found and "pyarrow" in found, args
