"""A run's record in ``_runs/`` (issue 27): a failed run writes one too, with its error, never
taken as finished; ``--json`` prints it as the last line; the final ``interrupted`` event
carries the run's id; and old records and journals are pruned, never what a rerun reads."""

from __future__ import annotations

import asyncio
import io
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

from extractor.clock import ManualClock
from extractor.engine.history import finished_job, finished_runs, partial_run, prune, records
from extractor.engine.journal import JOURNAL_DIR, RUNS_DIR
from extractor.engine.summary import attached
from extractor.errors import HostileXml
from extractor.jobs.invoices import InvoiceJob
from extractor.jobs.sync import SyncJob, run_sync
from extractor.output.targets import Target
from extractor.simulator.config import SimulatorConfig
from extractor.simulator.faults import FaultConfig
from extractor.simulator.memory import MemoryWire
from extractor.simulator.server import Simulator
from extractor.simulator.service import SimulatedService
from tests.conftest import CREDS, MEMORY_URL, job_of
from tests.helpers import credentials_env, ended, events, start_extractor
from tests.hostile import HostileServer, answer, held
from tests.truth import assert_matches_truth

SECRET = "hunter2-not-in-any-record"


def _args(url: str, out: Path, *extra: str) -> list[str]:
    return [
        "invoices", "--out", str(out), "--base-url", url, "--batch-size", "20",
        "--max-requests-per-hour", "0", "--parse-workers", "0", *extra,
    ]  # fmt: skip


async def test_a_failed_run_writes_its_record_and_the_next_run_resumes_it(
    start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    simulator: Simulator = await start_simulator(orders=40, password=SECRET)
    env = credentials_env(SECRET)
    async with HostileServer(simulator.url) as server:  # listed, then a pause of ten years
        server.on("GetInvoices", answer(503, b"busy", {"Retry-After": "315360000"}, "text/plain"))
        code, stdout, err = await cli_beside(*_args(server.url, tmp_path, "--json"), env=env)
    assert code == 1, err
    record = orjson.loads(stdout.splitlines()[-1])  # the last line: what Airflow pushes
    assert (record["outcome"], record["status"], record["error"]["type"]) == (
        "failed", "failed", "PauseTooLong",
    )  # fmt: skip
    assert record["error"]["message"] in err and "--max-pause" in record["error"]["message"]
    assert record["resumable"] is True
    assert record["job"]["command"] == "invoices" and record["output"] == str(tmp_path)
    path = tmp_path / RUNS_DIR / f"{record['run_id']}.json"
    written = orjson.loads(path.read_bytes())
    assert written == {k: v for k, v in record.items() if k != "summary_file"}
    assert record["summary_file"] == str(path)
    assert SECRET.encode() not in path.read_bytes() and SECRET not in stdout + err
    # never a finished run: no "nothing to do", no run to follow; the journal resumes it
    assert list(finished_runs(tmp_path)) == [] and len(records(tmp_path)) == 1
    assert list((tmp_path / JOURNAL_DIR).glob("*.jsonl"))

    code, stdout, err = await cli_beside(*_args(simulator.url, tmp_path, "--json"), env=env)
    assert code == 0, err
    summary = orjson.loads(stdout.splitlines()[-1])
    assert (summary["run_id"], summary["outcome"], summary["status"]) == (
        record["run_id"], "finished", "complete",
    )  # fmt: skip
    assert summary["resumed"]["starts"] == 2
    assert orjson.loads(path.read_bytes())["outcome"] == "finished"  # replaced the record
    assert_matches_truth(simulator, tmp_path)


async def test_a_refused_login_leaves_a_record_that_nothing_resumes(
    start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    simulator: Simulator = await start_simulator(orders=10, password=SECRET)
    wrong = "wrong-password-123"
    code, stdout, err = await cli_beside(
        *_args(simulator.url, tmp_path, "--json"), env=credentials_env(wrong)
    )
    assert code == 4, err  # permanent: not worth a scheduler's retry
    record = orjson.loads(stdout.splitlines()[-1])
    assert record["error"]["type"] == "AuthenticationFailed" and record["resumable"] is False
    assert wrong not in stdout + err
    for path in (tmp_path / RUNS_DIR).iterdir():
        assert wrong.encode() not in path.read_bytes()
    assert not list((tmp_path / JOURNAL_DIR).glob("*.jsonl")), "stopped before its plan"
    # as text, stdout stays empty: the error is the one line on stderr
    code, stdout, err = await cli_beside(
        *_args(simulator.url, tmp_path), env=credentials_env(wrong)
    )
    assert (code, stdout) == (4, "") and len(err.strip().splitlines()) == 1


async def test_the_interrupted_event_carries_the_run_id(
    start_simulator: Any, tmp_path: Path
) -> None:
    simulator: Simulator = await start_simulator(orders=40)
    release, arrived = asyncio.Event(), asyncio.Event()
    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", held(release, arrived))
        process = await start_extractor(
            *_args(server.url, tmp_path, "--json", "--log-format", "json"), session=True
        )
        await asyncio.wait_for(arrived.wait(), 60)
        process.send_signal(signal.SIGTERM)
        code, stdout, err = await ended(process)
        release.set()
    assert code == 143, err
    said = events(err.decode())
    plan = next(event for event in said if event["event"] == "plan")
    assert said[-1]["event"] == "interrupted" and said[-1]["run_id"] == plan["run_id"]
    assert {event["run_id"] for event in said} == {plan["run_id"]}
    record = orjson.loads(stdout.decode().splitlines()[-1])
    assert (record["run_id"], record["outcome"]) == (plan["run_id"], "interrupted")
    written = orjson.loads((tmp_path / RUNS_DIR / f"{plan['run_id']}.json").read_bytes())
    assert written["outcome"] == "interrupted" and written["resumable"] is True


def _summary(run_id: str, at: str, job: dict[str, Any], status: str = "complete") -> bytes:
    return orjson.dumps(
        {"run_id": run_id, "status": status, "finished_at": at, "job": job,
         "outcome": "finished"}
    )  # fmt: skip


def test_pruning_keeps_what_a_rerun_and_a_resume_read(tmp_path: Path) -> None:
    runs, journal = tmp_path / RUNS_DIR, tmp_path / JOURNAL_DIR
    runs.mkdir()
    journal.mkdir()
    old_job, sync_job = {"command": "invoices", "since": 1}, {"command": "invoices", "since": 2}
    # the only run of an old job, partial: its summary and journal say what a retry fetches
    (runs / "r000.json").write_bytes(_summary("r000", "2026-01-01T00:00:00", old_job, "partial"))
    (runs / "r000.journal.jsonl").write_bytes(
        b'{"event":"start","run_id":"r000","job":{"command":"invoices","since":1}}\n'
    )
    for number in range(1, 61):  # sixty syncs, each with its journal; two failed
        name = f"r{number:03d}"
        if number in (30, 59):
            record = {
                "run_id": name,
                "outcome": "failed",
                "failed_at": f"2026-02-01T00:{number:02d}:00",
            }
            (runs / f"{name}.json").write_bytes(orjson.dumps(record))
            continue
        at = f"2026-02-01T00:{number:02d}:00"
        (runs / f"{name}.json").write_bytes(_summary(name, at, sync_job))
        (runs / f"{name}.journal.jsonl").write_bytes(b"{}\n")
    (journal / "r061.jsonl").write_bytes(b"{}\n")  # an unfinished run: never touched
    removed = prune(tmp_path, keep=5)
    left = sorted(path.name for path in runs.iterdir())
    assert left == [
        "r000.journal.jsonl", "r000.json",  # the latest of its job, partial: both kept
        "r056.json", "r057.json", "r058.json", "r059.json", "r060.journal.jsonl", "r060.json",
    ]  # fmt: skip
    assert len(removed) == (61 - 6) + (59 - 2)  # records, then finished journals
    assert (journal / "r061.jsonl").exists()
    (journal / "r061.jsonl").unlink()
    assert finished_job(tmp_path, old_job, [])["run_id"] == "r000"  # "already finished"
    assert finished_job(tmp_path, sync_job, [])["run_id"] == "r060"
    assert partial_run(tmp_path, finished_job(tmp_path, old_job, [])) is not None


async def test_a_finished_run_prunes_its_folder(in_memory: Any, tmp_path: Path) -> None:
    memory = in_memory(orders=20)
    runs = tmp_path / RUNS_DIR
    runs.mkdir()
    for number in range(60):  # failed records of long ago, left by an older version
        record = {"run_id": f"old{number}", "outcome": "failed", "failed_at": "2020-01-01"}
        (runs / f"old{number}.json").write_bytes(orjson.dumps(record))
    job = job_of(InvoiceJob, out=tmp_path, base_url=MEMORY_URL, max_requests_per_hour=0)
    summary = await memory.run(job)
    left = sorted(path.name for path in runs.iterdir())
    assert len(left) == 50 + 1 and f"{summary['run_id']}.json" in left
    assert f"{summary['run_id']}.journal.jsonl" in left


async def test_a_failed_sync_hands_its_own_record_with_the_failed_part(tmp_path: Path) -> None:
    clock = ManualClock()
    service = SimulatedService(
        SimulatorConfig(orders=10, faults=FaultConfig(hostile=True)), clock=clock
    )
    job = job_of(
        SyncJob, Target.parse(str(tmp_path)), base_url=MEMORY_URL, max_requests_per_hour=0,
        tables=("invoices",), ledger=False,
    )  # fmt: skip
    with pytest.raises(HostileXml) as raised:
        await run_sync(job, CREDS, log=io.StringIO(), clock=clock, wire=MemoryWire(service))
    record = attached(raised.value)
    assert record is not None and record["run_id"].startswith("sync-")
    assert (record["outcome"], record["error"]["type"]) == ("failed", "HostileXml")
    part = record["failed_part"]
    assert part["job"]["command"] == "invoices" and part["resumable"] is False
    folder = tmp_path / "_work" / "sync-invoices"
    assert orjson.loads(Path(part["summary_file"]).read_bytes())["outcome"] == "failed"
    assert Path(part["summary_file"]).parent == folder / RUNS_DIR
    assert list(finished_runs(folder)) == []


def test_verify_json_prints_its_failure_as_one_line(cli: Any, tmp_path: Path) -> None:
    """A nightly ``verify --json >> verify.jsonl`` gets a line for a night that failed too."""
    code, out, err = cli("verify", str(tmp_path), "--json")  # no TFSO_* variables
    assert code == 2 and "missing credentials" in err
    (line,) = out.splitlines()
    record = orjson.loads(line)
    assert (record["command"], record["outcome"], record["output"]) == (
        "verify", "failed", str(tmp_path),
    )  # fmt: skip
    assert record["error"]["type"] == "CredentialsMissing"
    assert record["error"]["message"].startswith("missing credentials")
