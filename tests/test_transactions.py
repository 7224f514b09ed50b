"""The general ledger end to end: windows, borders, splitting, resume; equal to the truth."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import signal
from pathlib import Path
from typing import Any

import pytest

from extractor.clock import ManualClock
from extractor.config import RetryPolicy
from extractor.engine import runner
from extractor.errors import UsageError
from extractor.jobs.ledger import TransactionJob, Window, cut
from extractor.simulator.faults import FaultConfig
from extractor.simulator.ledger import Line, search
from extractor.simulator.server import Simulator
from tests.conftest import CREDS, job_of, read_table
from tests.helpers import credentials_env, killed_at
from tests.truth import assert_ledger_equals


async def extract(simulator: Simulator, out: Path, **options: Any) -> dict[str, Any]:
    job = job_of(TransactionJob, 
        out=out, base_url=simulator.url,
        **{"date_from": dt.date(2015, 1, 1), "date_to": dt.date(2026, 12, 31),
           "max_requests_per_hour": 0, **options},
    )  # fmt: skip
    return (await runner.run(job, CREDS, log=io.StringIO(), clock=ManualClock())).as_json()


def test_windows_meet_without_gaps_or_overlaps() -> None:
    for size in ("month", "week", "day"):
        windows = cut(dt.date(2023, 12, 20), dt.date(2024, 3, 10), size)
        assert windows[0].start == dt.date(2023, 12, 20) and windows[-1].end == dt.date(2024, 3, 10)
        for before, after in itertools.pairwise(windows):
            assert after.start == before.end + dt.timedelta(days=1)
    months = cut(dt.date(2024, 1, 15), dt.date(2024, 3, 10), "month")
    assert [(w.start.day, w.end.day) for w in months] == [(15, 31), (1, 29), (1, 10)]
    first, second = Window(dt.date(2024, 1, 1), dt.date(2024, 1, 31)).halves()
    assert first.end == dt.date(2024, 1, 16) and second.start == dt.date(2024, 1, 17)


def test_each_window_ends_at_the_last_second_of_its_last_day() -> None:
    job = job_of(
        TransactionJob, out=Path("x"), date_from=dt.date(2024, 1, 1), date_to=dt.date(2024, 1, 31)
    )
    params = job.params(Window(dt.date(2024, 1, 1), dt.date(2024, 1, 31)))["searchParams"]
    assert params["DateStart"] == dt.datetime(2024, 1, 1, 0, 0, 0)
    assert params["DateEnd"] == dt.datetime(2024, 1, 31, 23, 59, 59)


async def test_ledger_equals_ground_truth(start_simulator: Any, tmp_path: Path) -> None:
    simulator = await start_simulator(orders=600)
    summary = await extract(simulator, tmp_path, window="month", concurrency=8)
    assert summary["status"] == "complete"
    assert summary["transactions"] == len(simulator.ledger.lines)
    assert_ledger_equals(simulator, tmp_path, {})
    kinds = {row["SystemType"] for row in read_table(tmp_path, "transactions")}
    assert "InvoiceLoss" in kinds  # not in the WSDL, kept


async def test_filters_and_changed_date_windows(start_simulator: Any, tmp_path: Path) -> None:
    simulator = await start_simulator(orders=400)
    # four years of months, a window per system type: 96 windows (week windows are cut by
    # the same code: test_windows_meet_without_gaps_or_overlaps)
    await extract(
        simulator, tmp_path, date_field="changed", window="month",
        date_from=dt.date(2022, 1, 1), date_to=dt.date(2025, 12, 31),
        account_from=1500, account_to=1920, system_types=("Payment", "InvoiceLoss"),
    )  # fmt: skip
    rows = read_table(tmp_path, "transactions")
    assert rows and all(1500 <= row["AccountNo"] <= 1920 for row in rows)
    changed = search(
        simulator.ledger,
        {"DateSearchParameters": "DateChangedUTC", "DateStart": "2022-01-01T00:00:00",
         "DateEnd": "2025-12-31T23:59:59"},
    )  # fmt: skip

    def chosen(lines: list[Line]) -> set[int]:
        return {
            line.wire["Id"]
            for line in lines
            if 1500 <= line.account <= 1920 and line.system_type in ("Payment", "InvoiceLoss")
        }

    expected = chosen(changed)
    assert expected < chosen(simulator.ledger.lines)  # the dates leave some out
    assert sorted(row["Id"] for row in rows) == sorted(expected)


async def test_failing_windows_are_split_down_to_a_day(
    start_simulator: Any, tmp_path: Path
) -> None:
    faults = FaultConfig(rate=0.35, kinds=("http500", "timeout-fault"), seed=3)
    simulator = await start_simulator(orders=300, faults=faults)
    summary = await extract(
        simulator, tmp_path, date_from=dt.date(2016, 1, 1), date_to=dt.date(2017, 12, 31),
        retry=RetryPolicy(attempts=2),
    )  # fmt: skip
    assert summary["splits"] >= 1
    days = {dt.date.fromisoformat(f["window"][0]) for f in summary["failures"]}
    assert summary["failed_days"] == len(days) and "invoices" not in summary
    params = {"DateStart": "2016-01-01T00:00:00", "DateEnd": "2017-12-31T23:59:59"}
    lines = [line for line in search(simulator.ledger, params) if line.date.date() not in days]
    rows = read_table(tmp_path, "transactions")
    assert sorted(row["Id"] for row in rows) == sorted(line.wire["Id"] for line in lines)


async def test_bad_input_is_refused_before_any_request(
    simulator: Simulator, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="date_to 2024-01-01 is before date_from 2024-02-01"):
        await extract(
            simulator, tmp_path, date_from=dt.date(2024, 2, 1), date_to=dt.date(2024, 1, 1)
        )
    with pytest.raises(UsageError, match="'Pay ment' is not a SystemType name"):
        await extract(simulator, tmp_path, system_types=("Pay ment",))
    assert simulator.stats["requests"] == 0


async def test_a_stopped_run_resumes_to_the_exact_ledger(
    start_simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from extractor.errors import OutputError
    from extractor.output.staging import TableWriter

    simulator = await start_simulator(orders=500)
    stage, staged = TableWriter.stage, []

    def crash_after_ten(self: TableWriter, name: str, *args: Any) -> None:
        if len(staged) >= 10:
            raise OutputError("cannot write: No space left on device")
        staged.append(name)
        stage(self, name, *args)

    monkeypatch.setattr(TableWriter, "stage", crash_after_ten)
    with pytest.raises(OutputError):
        await extract(simulator, tmp_path, concurrency=2)
    monkeypatch.setattr(TableWriter, "stage", stage)
    before = simulator.stats["GetTransactions"]
    summary = await extract(simulator, tmp_path, concurrency=2)
    windows = len(cut(dt.date(2015, 1, 1), dt.date(2026, 12, 31), "month"))
    # ten windows were staged; up to one per worker may have been cancelled before its
    # journal line, and is fetched again (its staged files are pruned)
    assert simulator.stats["GetTransactions"] - before <= windows - 10 + 2
    assert summary["status"] == "complete" and summary["transactions"] == len(
        simulator.ledger.lines
    )
    assert_ledger_equals(simulator, tmp_path, {})
    assert not (tmp_path / "_staging").exists() and not (tmp_path / "_journal").exists()
    again = await extract(simulator, tmp_path, concurrency=2)
    assert again["run_id"] == summary["run_id"]  # finished: not redone


async def test_sigkilled_cli_resumes_to_the_exact_ledger(
    start_simulator: Any, tmp_path: Path
) -> None:
    simulator = await start_simulator(orders=300)
    args = [
        "transactions", "--out", str(tmp_path), "--base-url", simulator.url,
        "--from", "2015-01-01", "--to", "2026-12-31", "--window", "month",
        "--concurrency", "4", "--max-requests-per-hour", "0",
    ]  # fmt: skip
    env = credentials_env(simulator.config.password)
    # of 144 monthly windows: early, past the middle, and between writing and revealing
    kills = ("journal:staged@10", "journal:staged@80", "publish:written")
    codes = [await killed_at(point, *args, env=env) for point in (*kills, None)]
    assert codes == [-signal.SIGKILL] * len(kills) + [0]
    assert_ledger_equals(simulator, tmp_path, {})


async def test_a_backfill_from_2000_finds_where_the_ledger_starts(
    start_simulator: Any, tmp_path: Path
) -> None:
    """Issue 14: a first sync asks from 2000; walking every empty month to where the ledger
    starts cost it 154 of 160 seconds. Now a probe of two years at a time finds it, and
    only the months from its first one are asked."""
    simulator = await start_simulator(orders=300)
    summary = await extract(simulator, tmp_path / "all", date_from=dt.date(2000, 1, 1))
    assert summary["status"] == "complete"
    assert_ledger_equals(simulator, tmp_path / "all", {})
    asked, empty = simulator.stats["GetTransactions"], simulator.stats["GetTransactions_empty"]
    dates = [line.wire["Date"] for line in simulator.ledger.lines]
    first = min(dates).date().replace(day=1)
    windows = cut(first, dt.date(2026, 12, 31), "month")
    with_lines = len({d.strftime("%Y-%m") for d in dates})
    probes = (first.year - 2000) // 2 + 1  # two years at a time, the last one finding lines
    assert summary["days_total"] == (dt.date(2026, 12, 31) - first).days + 1
    assert asked == probes + len(windows)
    assert empty == probes - 1 + len(windows) - with_lines  # no month before the ledger
    # a range the ledger does not reach: its probes, and no window at all
    before = dict(simulator.stats)
    nothing = await extract(
        simulator, tmp_path / "none", date_from=dt.date(2000, 1, 1), date_to=dt.date(2005, 12, 31)
    )
    assert (nothing["status"], nothing["transactions"], nothing["days_total"]) == ("complete", 0, 0)
    assert simulator.stats["GetTransactions"] - before["GetTransactions"] == 3  # 2000-05 by 2 years
