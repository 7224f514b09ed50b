"""UpdateInvoices: refusals before any request, outcomes per order, a round trip, dry run."""

from __future__ import annotations

import csv
import io
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extractor.clock import ManualClock
from extractor.engine import runner
from extractor.errors import CorruptJournal, UsageError
from extractor.jobs.invoices import InvoiceJob
from extractor.jobs.update_journal import UpdateJournal
from extractor.jobs.updates import UpdateJob, apply_updates
from extractor.records.update_files import read_updates
from extractor.simulator.faults import FaultConfig
from extractor.simulator.server import Simulator
from tests.conftest import CREDS, MEMORY_URL, InMemory, job_of, read_table
from tests.helpers import killed_at

ROOT = Path(__file__).resolve().parent.parent


def invoiced(simulator: Simulator, count: int) -> list[int]:
    tenant = simulator.tenant
    return [i for i in tenant.ids if tenant.wire(i).get("OrderStatus") == "Invoiced"][:count]


def not_invoiced(simulator: Simulator, count: int) -> list[int]:
    tenant = simulator.tenant
    return [i for i in tenant.ids if tenant.wire(i).get("OrderStatus") != "Invoiced"][:count]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "u.csv",
            "OrderId,InvoiceTitle,CustomerName\n1,a,b\n",
            "column 'CustomerName' cannot be updated",
        ),
        ("u.csv", "OrderId,InvoiceTitle\nseven,a\n", "row 1: OrderId 'seven' is not an integer"),
        ("u.csv", "OrderId,InvoiceTitle\n1,a\n2,b\n1,c\n", "row 3: OrderId 1 appears twice"),
        ("u.csv", "OrderId,InvoiceTitle\n", "no updates in it"),
        ("u.csv", "OrderId\n1\n", "needs OrderId and InvoiceTitle and/or ReferenceNumber"),
        ("u.jsonl", '{"OrderId": 1, "InvoiceTitle": 5}\n', "row 1: InvoiceTitle must be text"),
        ("u.jsonl", '{"OrderId": 1.5, "InvoiceTitle": "x"}\n', "OrderId 1.5 is not an integer"),
        (
            "u.jsonl",
            '{"OrderId": 1}\n{"OrderId": 2, "InvoiceTitle": "x"}\n',
            "row 1: nothing to update",
        ),
        ("u.txt", "OrderId,InvoiceTitle\n1,a\n", "use a .csv, .jsonl or .parquet file"),
        ("u.jsonl", "{not json\n", "cannot read it"),
    ],
)
def test_bad_input_is_refused_with_its_row(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_updates(path)


def test_the_three_formats_read_alike(tmp_path: Path) -> None:
    expected = [
        {"OrderId": 7, "InvoiceTitle": "Ærlig & Sønn", "ReferenceNumber": "R-1"},
        {"OrderId": 9, "InvoiceTitle": "  mellomrom  "},
    ]
    (tmp_path / "u.csv").write_text(
        "OrderId,InvoiceTitle,ReferenceNumber\n7,Ærlig & Sønn,R-1\n9,  mellomrom  ,\n"
    )
    (tmp_path / "u.jsonl").write_bytes(b"\n".join(orjson.dumps(row) for row in expected))
    pq.write_table(
        pa.Table.from_pylist(
            expected,
            pa.schema(
                [
                    ("OrderId", pa.int64()),
                    ("InvoiceTitle", pa.string()),
                    ("ReferenceNumber", pa.string()),
                ]
            ),
        ),
        tmp_path / "u.parquet",
    )
    for name in ("u.csv", "u.jsonl", "u.parquet"):
        assert read_updates(tmp_path / name) == expected, name


async def test_round_trip_update_then_extract(start_simulator: Any, tmp_path: Path) -> None:
    simulator = await start_simulator(orders=600)
    good, bad = invoiced(simulator, 30), not_invoiced(simulator, 5)
    updates = [{"OrderId": i, "InvoiceTitle": f"Ny tittel {i} «ø»"} for i in good]
    updates += [{"OrderId": i, "ReferenceNumber": "REF"} for i in bad]
    job = job_of(
        UpdateJob,
        input=tmp_path / "x.csv",
        base_url=simulator.url,
        batch_size=7,
        max_requests_per_hour=0,
    )
    outcomes = await apply_updates(job, updates, CREDS, clock=ManualClock())
    assert [o["OrderId"] for o in outcomes] == [u["OrderId"] for u in updates]
    status = {o["OrderId"]: o["status"] for o in outcomes}
    assert all(status[i] == "updated" for i in good)
    assert all(status[i] == "refused" for i in bad)
    refused = next(o for o in outcomes if o["status"] == "refused")
    assert "ValidationException" in refused["error"] and "not invoiced" in refused["error"]
    assert len(good) >= 10 and simulator.stats["UpdateInvoices"] == -(-len(updates) // 7)
    # the changed orders show up in an incremental run, with their new titles
    changed_after = min(simulator.tenant.changed[i] for i in good) - __import__(
        "datetime"
    ).timedelta(seconds=1)
    job = job_of(
        InvoiceJob, out=tmp_path / "out", base_url=simulator.url, changed_after=changed_after,
        invoice_properties=("InvoiceTitle",), max_requests_per_hour=0,
    )  # fmt: skip
    summary = (await runner.run(job, CREDS, log=io.StringIO(), clock=ManualClock())).as_json()
    titles = {
        row["OrderId"]: row["InvoiceTitle"] for row in read_table(tmp_path / "out", "invoices")
    }
    assert summary["status"] == "complete"
    assert all(titles[i] == f"Ny tittel {i} «ø»" for i in good)


async def cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    import asyncio

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "extractor", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=os.environ | env, cwd=ROOT,
    )  # fmt: skip
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_cli_reports_each_order_and_dry_run_sends_nothing(
    start_simulator: Any, tmp_path: Path
) -> None:
    simulator = await start_simulator(orders=300)
    good, bad = invoiced(simulator, 3), not_invoiced(simulator, 1)
    source = tmp_path / "updates.jsonl"
    rows = [{"OrderId": i, "ReferenceNumber": f"R{i}"} for i in [*good, *bad]]
    source.write_bytes(b"\n".join(orjson.dumps(row) for row in rows))
    env = {
        "TFSO_APPLICATION_ID": simulator.config.application_id,
        "TFSO_USERNAME": simulator.config.username,
        "TFSO_PASSWORD": simulator.config.password,
    }
    base = ("--input", str(source), "--base-url", simulator.url, "--max-requests-per-hour", "0")
    code, out, err = await cli("update-invoices", *base, "--dry-run", env=env)
    assert code == 0 and "4 orders in 1 UpdateInvoices requests; nothing sent" in out
    assert f"OrderId {good[0]}: ReferenceNumber='R{good[0]}'" in out
    assert simulator.stats["requests"] == 0
    report = tmp_path / "report.parquet"
    code, out, err = await cli("update-invoices", *base, "--report", str(report), env=env)
    assert code == 3 and "3 applied, 1 refused" in out and "some updates were not applied" in err
    outcomes = pq.read_table(report).to_pylist()
    assert [(o["OrderId"], o["status"]) for o in outcomes] == [
        *((i, "updated") for i in good),
        (bad[0], "refused"),
    ]
    bad_file = tmp_path / "bad.csv"
    bad_file.write_text("OrderId,Paid\n1,2020-01-01\n")
    before = simulator.stats["requests"]
    code, _, err = await cli(
        "update-invoices", "--input", str(bad_file), "--base-url", simulator.url, env=env
    )
    assert (
        code == 2
        and "column 'Paid' cannot be updated" in err
        and len(err.strip().splitlines()) == 1
    )
    assert simulator.stats["requests"] == before


def count_applied(monkeypatch: pytest.MonkeyPatch, tenant: Any) -> Counter[int]:
    """Each order's updates the simulator applied (each moved its DateChanged once)."""
    applied: Counter[int] = Counter()
    original = tenant.update

    def update(order_id: int, values: dict[str, Any], when: Any) -> str | None:
        refused = original(order_id, values, when)
        if refused is None:
            applied[order_id] += 1
        return refused

    monkeypatch.setattr(tenant, "update", update)
    return applied


async def test_a_killed_update_run_resumes_and_applies_each_update_once(
    start_simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator = await start_simulator(orders=1500)
    good, bad = invoiced(simulator, 40), not_invoiced(simulator, 4)
    rows = [{"OrderId": i, "InvoiceTitle": f"Tittel {i}"} for i in good]
    rows += [{"OrderId": i, "ReferenceNumber": "REF"} for i in bad]
    source, report = tmp_path / "fixes.jsonl", tmp_path / "fixes.report.csv"
    source.write_bytes(b"\n".join(orjson.dumps(row) for row in rows))
    applied = count_applied(monkeypatch, simulator.tenant)
    args = (
        "update-invoices", "--input", str(source), "--report", str(report), "--base-url",
        simulator.url, "--max-requests-per-hour", "0", "--batch-size", "10", "--concurrency", "1",
    )  # fmt: skip
    # batches 1 and 2 answered and journaled; batch 3 applied, its answer not journaled
    assert await killed_at("updates:sent@3", *args) == -signal.SIGKILL
    journal = tmp_path / "fixes.report.csv.journal.jsonl"
    recorded = journal.read_bytes()
    assert sum(applied.values()) == 30 and not report.exists()
    assert await killed_at(None, *args) == 3  # four refused
    assert applied == Counter(dict.fromkeys(good, 1)), "every update applied exactly once"
    assert simulator.stats["invoices_updated"] == len(good)
    # five batches, each sent once; batch 3 read back (and batch 4 too when the second
    # worker had journaled it before the kill, waiting for the one request in flight)
    assert simulator.stats["UpdateInvoices"] == 5 and simulator.stats["GetInvoices"] in (1, 2)
    assert journal.read_bytes().startswith(recorded), "the killed run's record is kept"
    with report.open(newline="") as lines:
        written = [(int(r["OrderId"]), r["status"]) for r in csv.DictReader(lines)]
    assert written == [(i, "updated") for i in good] + [(i, "refused") for i in bad]
    assert all(simulator.tenant.wire(i)["InvoiceTitle"] == f"Tittel {i}" for i in good)
    before = simulator.stats["requests"]
    assert await killed_at(None, *args) == 3  # the same command again: nothing is sent
    assert simulator.stats["requests"] - before == 1 and sum(applied.values()) == len(good)


async def test_an_update_whose_answer_broke_is_read_back_not_applied_twice(
    in_memory: Callable[..., InMemory], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = FaultConfig(rate=0.5, kinds=("truncate", "reset"), seed=3)
    memory = in_memory(orders=600, faults=faults)
    tenant = memory.service.tenant
    good = [i for i in tenant.ids if tenant.wire(i).get("OrderStatus") == "Invoiced"][:60]
    applied = count_applied(monkeypatch, tenant)
    job = job_of(
        UpdateJob, input=tmp_path / "x.csv", base_url=MEMORY_URL, batch_size=4,
        max_requests_per_hour=0,
    )  # fmt: skip
    updates = [{"OrderId": i, "InvoiceTitle": f"Ny {i}"} for i in good]
    outcomes = await apply_updates(job, updates, CREDS, clock=memory.clock, wire=memory.wire)
    stats = memory.service.stats
    assert stats["fault:truncate"] + stats["fault:reset"] >= 4  # answers broken once applied
    assert [o["status"] for o in outcomes] == ["updated"] * len(good) == ["updated"] * 20
    assert applied == Counter(dict.fromkeys(good, 1)), "a retry sends only what is not applied"
    assert stats["UpdateInvoices"] == 5 and stats["GetInvoices"] >= 4  # read back, not resent


def answer(order_id: int, title: str, status: str) -> dict[str, Any]:
    return {"OrderId": order_id, "InvoiceTitle": title, "status": status}


def test_the_update_journal_settles_by_order_and_values(tmp_path: Path) -> None:
    report = tmp_path / "r.csv"
    legacy = {"OrderId": 4, "InvoiceTitle": "d", "ReferenceNumber": None, "status": "refused"}
    lines = [
        legacy,  # a line of an earlier version's <report>.partial.jsonl: an answer
        {"event": "sending", "updates": [{"OrderId": 1, "InvoiceTitle": "a"}]},
        {"event": "sending", "updates": [{"OrderId": 2, "InvoiceTitle": "b"}]},
        {"event": "answered", "outcomes": [answer(1, "a", "updated")]},
        {"event": "answered", "outcomes": [answer(3, "c", "failed")]},
    ]
    torn = b'{"event":"sending","updates":[{"OrderId":5,'
    report.with_name("r.csv.partial.jsonl").write_bytes(
        b"".join(orjson.dumps(line) + b"\n" for line in lines) + torn
    )
    journal = UpdateJournal(report)
    titles = {1: "a", 2: "b", 3: "c", 5: "e", 4: "d", 6: "f"}
    wanted = [{"OrderId": order_id, "InvoiceTitle": title} for order_id, title in titles.items()]
    resume = journal.resume(wanted)
    assert sorted(resume.settled) == [1, 4]  # answered: never sent again
    assert [u["OrderId"] for u in resume.unsure] == [2, 3]  # maybe applied: read back first
    assert [u["OrderId"] for u in resume.to_send] == [5, 6]
    changed = journal.resume([{"OrderId": 1, "InvoiceTitle": "other"}])
    assert changed.to_send == [{"OrderId": 1, "InvoiceTitle": "other"}]  # new values: sent
    journal.answered([answer(5, "e", "updated")])
    journal.close()
    assert journal.path == tmp_path / "r.csv.journal.jsonl"
    assert journal.path.read_bytes().count(b"\n") == len(lines) + 1, "the torn line is dropped"
    journal.path.write_bytes(journal.path.read_bytes() + b"not json\n")
    with pytest.raises(CorruptJournal, match=r"r.csv.journal.jsonl, line 7, is damaged"):
        UpdateJournal(report)
