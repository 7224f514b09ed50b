"""The user's own mistakes (issue 10, items 12-15), through the CLI: in this process, but for
the demo (its parser processes cannot start from the thread an async test runs it in)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from extractor.simulator.server import Simulator
from tests.conftest import CliResult
from tests.helpers import credentials_env, extractor, one_line
from tests.hostile import HostileServer, Request, answer


@pytest.fixture
async def simulator(start_simulator: Any) -> Simulator:
    sim: Simulator = await start_simulator(orders=300)
    return sim


def test_demo_refuses_a_directory_it_did_not_make(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    dataset = tmp_path / "invoices" / "order_month=2024-01" / "part-x.parquet"
    dataset.parent.mkdir(parents=True)
    dataset.write_bytes(b"data")
    (tmp_path / "notes.txt").write_text("ten years of notes")
    code, _, err = cli("demo", "--out", str(tmp_path), "--orders", "50")
    assert code == 2
    assert "is not empty and is not a demo's output" in one_line(err)
    assert (tmp_path / "notes.txt").read_text() == "ten years of notes"
    assert (
        tmp_path / "invoices" / "order_month=2024-01" / "part-x.parquet"
    ).read_bytes() == b"data"


async def test_demo_again_clears_only_what_a_demo_wrote(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    code, _, err = await extractor("demo", "--out", str(out), "--orders", "50")
    assert code == 0, err
    (out / "mine.txt").write_text("kept")
    code, second, err = await extractor("demo", "--out", str(out), "--orders", "60")
    assert code == 0, err
    assert (out / "mine.txt").read_text() == "kept"
    assert len(list((out / "_runs").glob("*[0-9a-f].json"))) == 1  # the new demo's only
    assert "invoices      60 " in second


def invoiced(simulator: Simulator, count: int) -> list[int]:
    tenant = simulator.tenant
    return [i for i in tenant.ids if tenant.wire(i).get("OrderStatus") == "Invoiced"][:count]


def updates_file(simulator: Simulator, folder: Path, count: int) -> Path:
    source = folder / "updates.jsonl"
    rows = [{"OrderId": i, "ReferenceNumber": f"R{i}"} for i in invoiced(simulator, count)]
    source.write_bytes(b"\n".join(orjson.dumps(row) for row in rows))
    return source


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ("report.xlsx", "use a .csv or .parquet file"),
        ("a-file.txt/report.csv", "a-file.txt is not a writable directory"),
        (".", "is a directory; give a file name"),
    ],
)
async def test_update_report_is_checked_before_any_request(
    cli_beside: Callable[..., Awaitable[CliResult]],
    simulator: Simulator,
    tmp_path: Path,
    dry_run: bool,
    report: str,
    expected: str,
) -> None:
    (tmp_path / "a-file.txt").write_text("x")
    source = updates_file(simulator, tmp_path, 3)
    code, _, err = await cli_beside(
        "update-invoices", "--input", str(source), "--base-url", simulator.url,
        "--report", str(tmp_path / report), *(["--dry-run"] if dry_run else []),
        env=credentials_env(),
    )  # fmt: skip
    assert code == 2
    assert expected in one_line(err)
    assert simulator.stats["requests"] == 0


async def test_update_outcomes_survive_a_run_that_stops_half_way(
    cli_beside: Callable[..., Awaitable[CliResult]], simulator: Simulator, tmp_path: Path
) -> None:
    source = updates_file(simulator, tmp_path, 9)
    assert len(invoiced(simulator, 9)) == 9
    seen = 0
    moved = answer(307, headers={"Location": "http://127.0.0.1:9/elsewhere"})

    async def stop_at_the_third(request: Request) -> web.StreamResponse | None:
        nonlocal seen
        seen += 1
        return await moved(request) if seen >= 3 else None

    report = tmp_path / "out" / "report.csv"
    async with HostileServer(simulator.url) as server:
        server.on("UpdateInvoices", stop_at_the_third)
        code, _, err = await cli_beside(
            "update-invoices", "--input", str(source), "--base-url", server.url,
            "--report", str(report), "--batch-size", "2", "--concurrency", "1",
            "--max-requests-per-hour", "0", env=credentials_env(),
        )  # fmt: skip
    assert code == 1
    journal = report.with_name("report.csv.journal.jsonl")
    assert f"the outcomes so far are in {journal}" in one_line(err)
    events = [orjson.loads(line) for line in journal.read_bytes().splitlines()]
    outcomes = [o for event in events if event["event"] == "answered" for o in event["outcomes"]]
    applied = invoiced(simulator, 4)  # two batches of two, before the third stopped it
    assert [(o["OrderId"], o["status"]) for o in outcomes] == [(i, "updated") for i in applied]
    assert all(simulator.tenant.wire(i)["ReferenceNumber"] == f"R{i}" for i in applied)


NOT_IMPLEMENTED = (
    b"<!DOCTYPE html><html><head><title>501 Not Implemented</title></head>"
    b"<body><h1>Not Implemented</h1><p>POST is not supported here</p></body></html>"
)
LOGIN_ANSWERS = {
    "an HTML page in an HTTP 200": (
        answer(200, b"<html><head><title>Welcome</title></head><body>Hi</body></html>",
               content_type="text/html"),
        "is not a 24SevenOffice SOAP endpoint (Login: ",
    ),
    "a 501 page": (
        answer(501, NOT_IMPLEMENTED, content_type="text/html"),
        "is not a 24SevenOffice SOAP endpoint (Login: HTTP 501: an HTML page "
        "('501 Not Implemented'))",
    ),
    "a 404": (
        answer(404, b"Not Found", content_type="text/plain"),
        "is not a 24SevenOffice SOAP endpoint (Login: HTTP 404: 'Not Found')",
    ),
    "an outage": (
        answer(503, b"Service Unavailable", content_type="text/plain"),
        "is not answering Login: HTTP 503: 'Service Unavailable'",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(LOGIN_ANSWERS))
async def test_what_login_met_is_said_in_words(
    cli_beside: Callable[..., Awaitable[CliResult]], simulator: Simulator, tmp_path: Path,
    case: str,
) -> None:  # fmt: skip
    rule, expected = LOGIN_ANSWERS[case]
    async with HostileServer(simulator.url) as server:
        server.on("Login", rule)
        code, _, err = await cli_beside(
            "invoices", "--out", str(tmp_path), "--base-url", server.url,
            "--max-requests-per-hour", "0", env=credentials_env(),
        )  # fmt: skip
    line = one_line(err)
    # a URL that is not the service is permanent (4: not worth a scheduler's retries); an
    # outage is not (1)
    assert code == (4 if "is not a 24SevenOffice SOAP endpoint" in expected else 1)
    assert f"extractor: error: {server.url} {expected}" in line
    assert "<" not in line  # no markup in an error line
    assert not (tmp_path / "_journal").exists()


async def test_simulate_on_a_busy_port_says_so_in_one_line(
    cli_beside: Callable[..., Awaitable[CliResult]], simulator: Simulator
) -> None:
    port = simulator.url.rsplit(":", 1)[1]
    code, _, err = await cli_beside("simulate", "--port", port, "--orders", "10")
    assert code == 2
    assert f"simulate: cannot listen on 127.0.0.1:{port} (" in one_line(err)
