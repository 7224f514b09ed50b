"""A run interrupted under the first release (0.1.0) resumes under this one: its journal and
staged files, kept as written then, are read as they are.

The fixtures were made by 0.1.0's own CLI against ``extractor simulate --orders 40 --seed 11
--poison-ids 100015``, killed at a checkpoint (``EXTRACTOR_KILL_AT``): an invoices run
(``--batch-size 10 --concurrency 1``, killed at ``journal:failed``: six batches staged, one
order failed, journaled without the key failures carry now) and a ledger run (``--from
2024-01-01 --to 2024-04-30``, killed at ``journal:staged@2``: two months staged, a third
staged but never journaled, its staged events with the ``ids``/``missing`` lists the ledger
no longer writes)."""

from __future__ import annotations

import datetime as dt
import io
import shutil
from pathlib import Path
from typing import Any

import orjson

from extractor.clock import ManualClock
from extractor.engine import runner
from extractor.jobs.invoices import InvoiceJob
from extractor.jobs.ledger import TransactionJob
from extractor.simulator.faults import FaultConfig
from extractor.simulator.ledger import search
from tests.conftest import CREDS, job_of, read_table
from tests.truth import assert_ledger_equals, assert_records_match

FIXTURES = Path(__file__).parent / "fixtures" / "journal-0.1.0"
POISON = 100015


def unpacked(name: str, tmp_path: Path) -> tuple[Path, str]:
    out = tmp_path / name
    shutil.copytree(FIXTURES / name, out)
    (journal,) = (out / "_journal").iterdir()
    return out, journal.stem


async def test_an_invoices_run_interrupted_under_0_1_0_resumes(
    start_simulator: Any, tmp_path: Path
) -> None:
    simulator = await start_simulator(
        orders=40, seed=11, faults=FaultConfig(poison_ids=frozenset({POISON}))
    )
    out, run_id = unpacked("invoices", tmp_path)
    job = job_of(
        InvoiceJob, out=out, base_url=simulator.url, batch_size=10, max_requests_per_hour=0,
        parse_workers=0,
    )  # fmt: skip
    summary = (await runner.run(job, CREDS, log=io.StringIO(), clock=ManualClock())).as_json()
    # the same run, finished: the six staged batches were not fetched again, the order that
    # failed stays failed (a journal's failures are not retried within the run)
    assert summary["run_id"] == run_id and summary["status"] == "partial"
    assert summary["invoices"] == 39 and summary["failed_ids"] == 1
    assert simulator.stats["GetOrderSyncList"] == simulator.stats["GetInvoices"] == 0
    # a second run fetches that order alone again (the service still fails it)
    retry = (await runner.run(job, CREDS, log=io.StringIO(), clock=ManualClock())).as_json()
    assert retry["retry_of"] == run_id and retry["failed_ids"] == 1
    assert simulator.stats["GetInvoices"] == simulator.stats["poisoned"] > 0  # that order only
    orders, rows = read_table(out, "invoices"), read_table(out, "invoice_rows")
    simulator.tenant.delete([POISON])  # the truth without the order that failed
    assert_records_match(simulator.tenant, orders, rows)
    (failures,) = (out / "_failures").glob(f"{run_id}*")
    assert str(POISON) in failures.read_text()


async def test_a_ledger_run_interrupted_under_0_1_0_resumes(
    start_simulator: Any, tmp_path: Path
) -> None:
    simulator = await start_simulator(orders=40, seed=11)
    out, run_id = unpacked("transactions", tmp_path)
    job = job_of(
        TransactionJob, out=out, base_url=simulator.url, max_requests_per_hour=0,
        date_from=dt.date(2024, 1, 1), date_to=dt.date(2024, 4, 30),
    )  # fmt: skip
    summary = (await runner.run(job, CREDS, log=io.StringIO(), clock=ManualClock())).as_json()
    assert summary["run_id"] == run_id and summary["status"] == "complete"
    assert simulator.stats["GetTransactions"] == 2  # March and April; January, February staged
    window = {"DateStart": "2024-01-01T00:00:00", "DateEnd": "2024-04-30T23:59:59"}
    assert_ledger_equals(simulator, out, window)
    assert len(search(simulator.ledger, window)) == 8  # January's 6 and February's 2
    run = orjson.loads((out / "_runs" / f"{run_id}.json").read_bytes())
    assert run["transactions"] == 8
