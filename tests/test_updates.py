"""UpdateInvoices: refusals before any request, outcomes per order, a round trip, dry run."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extractor.clock import ManualClock
from extractor.errors import UsageError
from extractor.jobs import runner
from extractor.jobs.invoices import InvoiceJob
from extractor.jobs.update_files import read_updates
from extractor.jobs.updates import UpdateJob, apply_updates
from extractor.simulator.server import Simulator
from tests.conftest import CREDS, job_of, read_table

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
    summary = await runner.run(job, CREDS, log=io.StringIO(), clock=ManualClock())
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
