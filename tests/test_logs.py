"""Logs a machine can read (issue 14): ``--log-format json``, ``-q``/``-v``, timestamps, and a
live line that says when the client paces itself and when it publishes."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import orjson

from extractor.clock import ManualClock
from extractor.engine.progress import Progress
from extractor.engine.stats import RunStats
from extractor.log import Log
from extractor.service.limiter import Limits, RateLimiter
from extractor.simulator.faults import FaultConfig
from extractor.simulator.server import Simulator
from tests.helpers import DEMO_ENV, STAMP, events


async def test_json_log_lines_parse_and_carry_the_run_id(
    start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    simulator: Simulator = await start_simulator(orders=400)
    out = tmp_path / "out"
    args = ["--base-url", simulator.url, "--max-requests-per-hour", "0", "--parse-workers", "0"]
    code, stdout, err = await cli_beside(
        "invoices", "--out", str(out), *args, "--batch-size", "100", "--log-format", "json",
        env=DEMO_ENV,
    )  # fmt: skip
    assert code == 0, err
    said = events(err)
    summary = orjson.loads((out / "_runs" / f"{said[-1]['run_id']}.json").read_bytes())
    assert {event["run_id"] for event in said} == {summary["run_id"]}
    # a progress event comes every 10 s of real time: on a loaded machine there may be one
    told = [event for event in said if event["event"] != "progress"]
    assert [event["event"] for event in told] == ["plan", "publishing", "finished"]
    plan, publishing, done = told
    assert (plan["total"], plan["to_fetch"], plan["units"]) == (400, 400, "ids")
    assert publishing["batches"] == 4
    assert {k: done[k] for k in ("status", "invoices", "rows", "requests", "api_exceptions")} == {
        k: summary[k] for k in ("status", "invoices", "rows", "requests", "api_exceptions")
    }
    assert done["invoices"] == len(simulator.tenant.ids)
    assert "invoices      400" in stdout  # the summary stays on stdout, for people

    # the same command again: its one event names the run that did it
    code, _, err = await cli_beside(
        "invoices", "--out", str(out), *args, "--batch-size", "100", "--log-format=json",
        env=DEMO_ENV,
    )  # fmt: skip
    assert code == 0, err
    (again,) = events(err)
    assert again["event"] == "already_finished" and again["run_id"] == summary["run_id"]


async def test_a_json_sync_and_its_errors_are_json_too(
    start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    simulator: Simulator = await start_simulator(orders=120)
    common = [
        "--base-url", simulator.url, "--max-requests-per-hour", "0", "--log-format", "json",
        "--parse-workers", "0",
    ]  # fmt: skip
    code, _, err = await cli_beside(
        "sync", "--out", str(tmp_path / "lake"), "--since", "2024-06-01", *common, env=DEMO_ENV
    )
    assert code == 0, err
    said = events(err)
    sync_id = said[0]["run_id"]
    assert sync_id.startswith("sync-") and said[-1] == {**said[-1], "event": "finished"}
    assert said[-1]["run_id"] == sync_id and said[-1]["status"] == "complete"
    parts = [event for event in said if event["event"] == "finished"][:-1]
    assert [event["command"] for event in parts] == ["invoices", "transactions", "lists"]
    assert all(event["run_id"] != sync_id for event in parts)
    # a usage error and a refusal: one JSON line each, with the invocation's id
    for bad in (["--concurrency", "0"], ["--since", "June"]):
        code, _, err = await cli_beside(
            "sync", "--out", str(tmp_path / "lake"), *common, *bad, env=DEMO_ENV
        )
        assert code == 2
        (line,) = events(err)
        assert line["level"] == "error" and (
            "--concurrency" in line["message"] or "June" in line["message"]
        )


async def test_text_lines_off_a_terminal_are_timestamped_and_quiet_keeps_warnings(
    start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    simulator: Simulator = await start_simulator(orders=150)
    args = ["--base-url", simulator.url, "--max-requests-per-hour", "0", "--parse-workers", "0"]
    code, _, err = await cli_beside("invoices", "--out", str(tmp_path / "a"), *args, env=DEMO_ENV)
    assert code == 0, err
    lines = err.splitlines()
    assert all(STAMP.match(line) for line in lines), err
    lines = [line for line in lines if " progress: " not in line]  # one each 10 s, if slow
    assert len(lines) == 3, err
    assert "orders planned" in lines[0] and "publishing" in lines[1] and "complete" in lines[2]
    code, stdout, err = await cli_beside(
        "invoices", "--out", str(tmp_path / "b"), *args, "-q", env=DEMO_ENV
    )
    assert (code, err) == (0, "") and "invoices      150" in stdout
    # quiet still says what went wrong
    code, _, err = await cli_beside(
        "invoices", "--out", str(tmp_path / "c"), *args, "-q", "--concurrency", "99",
        env=DEMO_ENV,
    )  # fmt: skip
    assert code == 2 and STAMP.match(err) and "--concurrency" in err


async def test_verbose_says_each_retry(
    start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    simulator: Simulator = await start_simulator(
        orders=150, faults=FaultConfig(rate=0.3, kinds=("http500",), seed=3)
    )
    code, _, err = await cli_beside(
        "invoices", "--out", str(tmp_path / "v"), "--base-url", simulator.url,
        "--max-requests-per-hour", "0", "--parse-workers", "0", "--batch-size", "50",
        "-v", "--log-format", "json", env=DEMO_ENV,
    )  # fmt: skip
    assert code == 0, err
    said = events(err)
    retries = [event for event in said if event["event"] == "retry"]
    done = said[-1]
    assert done["event"] == "finished" and done["retries"] == len(retries) > 0
    assert all(event["level"] == "debug" and event["operation"] for event in retries)
    # each fault the simulator injected (the listing's first answer and one batch's) is
    # retried, and each retry is said with its cause
    assert len(retries) == simulator.stats["fault:http500"] == 2
    assert {event["operation"] for event in retries} == {"GetOrderSyncList", "GetInvoices"}
    assert all("retrying after HTTP 500" in event["message"] for event in retries)


async def test_the_live_line_says_when_the_hourly_limit_paces_the_run() -> None:
    clock = ManualClock(start=1_000_000.0)
    limiter = RateLimiter(Limits(per_hour=3600, burst=2), clock=clock)
    stats = RunStats("r", clock=clock)
    stats.total = 1000
    progress = Progress(stats, Log(io.StringIO()), limiter=limiter)
    for _ in range(2):  # the burst: nothing paced yet
        limiter.release(await limiter.acquire())
    stats.done = 20  # 10 ids a request
    assert "paced" not in progress.line()[0]
    limiter.release(await limiter.acquire())  # waited a second for a token
    stats.done = 30
    text, counts = progress.line()
    # 970 ids left at 10 a request: 97 requests at one a second, whatever the rate so far
    assert "paced to 3,600 req/h" in text and text.endswith("ETA 97s"), text
    assert counts["paced_per_hour"] == 3600 and counts["phase"] == "fetching"
    # resumed with 500 ids done before: the pace is this invocation's 30 ids in 3 requests
    stats.done_before, stats.done = 500, 530
    assert progress.line()[0].endswith("ETA 47s")
    await clock.sleep(60)  # a minute without a request waiting: no longer paced
    assert "paced" not in progress.line()[0]


def test_the_live_line_says_when_the_run_publishes() -> None:
    clock = ManualClock(start=1_000_000.0)
    stats = RunStats("r", clock=clock)
    stream = io.StringIO()
    progress = Progress(stats, Log(stream, "json"))
    stats.fetched = 1234
    progress.publishing(7)
    (said,) = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert said["event"] == "publishing" and said["batches"] == 7
    text, counts = progress.line()
    assert text == "publishing 7 staged batches (0 s)" and counts["phase"] == "publishing"


def test_secrets_never_reach_the_log() -> None:
    from extractor import redact

    redact.register("hunter2-secret")
    stream = io.StringIO()
    Log(stream, "json", context={"run_id": "r"}).error("error", "login hunter2-secret refused")
    Log(stream).warning("w", "hunter2-secret")
    assert "hunter2-secret" not in stream.getvalue() and stream.getvalue().count("***") == 2


def test_a_reader_that_went_away_silences_the_log_not_the_run() -> None:
    class Gone(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            Gone.writes += 1
            raise BrokenPipeError(32, "Broken pipe")

    log = Log(Gone(), "json", context={"run_id": "r"})
    log.info("plan", "one")
    log.warning("paused", "two")  # not tried again
    log.status("three", done=1)
    assert Gone.writes == 1


def test_a_defect_in_json_is_one_event_with_its_traceback(
    cli: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    from extractor.cli import status

    def broken(root: Path) -> list[Path]:
        raise RuntimeError("a defect")

    monkeypatch.setattr(status, "run_folders", broken)
    code, out, err = cli("status", str(tmp_path), "--log-format", "json")
    (said,) = events(err)
    assert code == 1 and out == ""
    assert said["event"] == "internal_error" and "RuntimeError: a defect" in said["message"]
    assert "in broken" in said["traceback"]


def test_in_json_library_warnings_and_log_records_are_events_too(
    capsys: Any, monkeypatch: Any
) -> None:
    import logging
    import warnings

    from extractor import log

    monkeypatch.setattr(logging, "lastResort", logging.lastResort)
    library = logging.getLogger("some.library")
    for logger in (logging.getLogger(), library):
        monkeypatch.setattr(logger, "handlers", list(logger.handlers))
    monkeypatch.setattr(library, "propagate", False)
    library.addHandler(logging.StreamHandler(sys.stderr))  # its own, as Dask's are
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        log.configure("json", 0, run_id="r1")
        log.capture_others()
        logging.getLogger("some.library").warning("worker %s lost", "w1")
        logging.getLogger("some.library").info("below the threshold")
        warnings.warn("an old API", DeprecationWarning, stacklevel=1)
        log.configure()  # back to text: a later record is not this log's
        logging.getLogger("some.library").warning("after")
    said = events(capsys.readouterr().err)
    assert [(e["event"], e["level"]) for e in said] == [
        ("library_log", "warning"), ("python_warning", "warning"),
    ]  # fmt: skip
    assert said[0]["message"] == "worker w1 lost" and said[0]["logger"] == "some.library"
    assert said[1]["category"] == "DeprecationWarning" and "an old API" in said[1]["message"]
