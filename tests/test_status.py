"""``extractor status OUT`` (issue 14): a finished, a partial, an unfinished and a locked
output, as ``--json`` and as lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from extractor.jobs.invoices import InvoiceJob
from extractor.output.lock import OutputLock
from extractor.simulator.faults import FaultConfig
from tests.conftest import MEMORY_URL, job_of
from tests.helpers import killed_at
from tests.truth import assert_matches_truth


def _status(cli: Any, out: Path) -> dict[str, Any]:
    code, text, err = cli("status", str(out), "--json")
    assert (code, err) == (0, "")
    report: dict[str, Any] = orjson.loads(text)
    return report


def _job(out: Path) -> InvoiceJob:
    return job_of(InvoiceJob, out=out, base_url=MEMORY_URL, max_requests_per_hour=0)


async def test_a_finished_and_a_partial_output(in_memory: Any, cli: Any, tmp_path: Path) -> None:
    clean = in_memory(orders=300)
    done = await clean.run(_job(tmp_path / "done"))
    poison = clean.service.tenant.ids[7]  # the same tenant: the same seed and size
    partial_service = in_memory(orders=300, faults=FaultConfig(poison_ids=frozenset({poison})))
    partial = await partial_service.run(_job(tmp_path / "partial"))
    assert (done["status"], partial["status"]) == ("complete", "partial")

    (place,) = _status(cli, tmp_path / "done")["places"]
    (run,) = place["runs"]
    assert (run["run_id"], run["status"], run["invoices"], run["failed_ids"]) == (
        done["run_id"], "complete", 300, 0,
    )  # fmt: skip
    assert place["unfinished"] is None and place["lock"] is None
    (place,) = _status(cli, tmp_path / "partial")["places"]
    (run,) = place["runs"]
    assert (run["status"], run["invoices"], run["failed_ids"]) == ("partial", 299, 1)
    assert run["failures_report"] == partial["failures_report"]
    code, text, _ = cli("status", str(tmp_path / "partial"))
    assert code == 0 and f"{partial['run_id']}  partial  invoices 299, failed_ids 1" in text


async def test_an_unfinished_and_a_locked_output(
    start_simulator: Any, cli: Any, tmp_path: Path
) -> None:
    _, out, _ = await _killed(start_simulator, tmp_path, 1000, 100, "journal:staged@2")
    (place,) = _status(cli, out)["places"]
    unfinished = place["unfinished"]
    assert unfinished["command"] == "invoices" and unfinished["planned"] == 1000
    assert unfinished["staged_batches"] == 2 and unfinished["starts"] == 1
    assert place["runs"] == [] and place["lock"] is None
    with OutputLock.take(out, "invoices"):
        (place,) = _status(cli, out)["places"]
        assert place["lock"].startswith("'extractor invoices' (pid ")
        code, text, _ = cli("status", str(out))
        assert "locked by 'extractor invoices'" in text and "the same command resumes it" in text
    code, _, err = cli("status", str(tmp_path / "missing"))
    assert code == 2 and "is not a directory" in err


async def test_reset_discards_an_unfinished_run_and_the_next_starts_afresh(
    start_simulator: Any, cli: Any, tmp_path: Path
) -> None:
    # killed with the partitions written under temporary names, not yet renamed
    simulator, out, args = await _killed(start_simulator, tmp_path, 400, 100, "publish:written")
    leftovers = sorted(out.rglob(".part-*.parquet.tmp"))
    assert leftovers
    code, _, err = cli("reset", str(out), "--unfinished")  # not a terminal: it must be told
    assert code == 2 and "--yes" in err and all(path.exists() for path in leftovers)
    code, text, err = cli("reset", str(out), "--unfinished", "--yes")
    assert (code, err) == (0, ""), text
    assert str(leftovers[0]) in text and "the next run starts afresh" in text
    assert not any(out.rglob(".part-*")) and not any((out / "_staging").rglob("*.arrow"))
    assert _status(cli, out)["places"] == []  # no run left to show
    assert await killed_at(None, *args) == 0
    assert_matches_truth(simulator, out)  # every order once: nothing of the discarded run
    code, text, _ = cli("reset", str(out), "--unfinished", "--yes")
    assert code == 0 and "nothing to reset" in text


async def _killed(
    start_simulator: Any, tmp_path: Path, orders: int, batch: int, point: str
) -> tuple[Any, Path, tuple[str, ...]]:
    """An ``invoices`` run of ``orders`` in batches of ``batch`` into ``tmp_path/out``
    SIGKILLed at ``point``: the simulator, the output and the command's arguments (to run it
    again)."""
    simulator = await start_simulator(orders=orders)
    out = tmp_path / "out"
    args = (
        "invoices", "--base-url", simulator.url, "--out", str(out), "--batch-size", str(batch),
        "--max-requests-per-hour", "0", "--parse-workers", "0",
    )  # fmt: skip
    assert await killed_at(point, *args) == -9
    return simulator, out, args


def test_reset_is_refused_before_removing_anything_while_a_sync_runs(
    cli: Any, tmp_path: Path
) -> None:
    # found by attack: reset locked each run folder in turn, so it removed an unfinished sync
    # part's journal (a part not running right now) before the running part refused it
    out = tmp_path / "lake"
    journal = out / "_work" / "sync-lists" / "_journal" / "r-1.jsonl"
    journal.parent.mkdir(parents=True)
    journal.write_bytes(b'{"event":"start","run_id":"r-1","job":{"command":"lists"}}\n')
    with OutputLock.take(out, "sync"):  # a sync holds its work root's lock for every part
        code, _, err = cli("reset", str(out), "--unfinished", "--yes")
    assert code == 2 and "in use by 'extractor sync'" in err
    assert journal.exists()
    code, text, _ = cli("reset", str(out), "--unfinished", "--yes")  # no run going: done
    assert code == 0 and not journal.exists() and "reset 1 unfinished run;" in text
