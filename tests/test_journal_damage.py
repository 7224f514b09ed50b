"""The journal survives its own damage (issue 10, item 11), through the CLI (in this process:
nothing here is about a process, and each test runs it twice)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from extractor.engine.journal import JOURNAL_DIR
from extractor.simulator.server import Simulator
from tests.conftest import CliResult
from tests.helpers import credentials_env, one_line
from tests.hostile import HostileServer, Request, answer
from tests.truth import assert_matches_truth


@pytest.fixture
async def simulator(start_simulator: Any) -> Simulator:
    sim: Simulator = await start_simulator(orders=200)  # four batches of 50
    return sim


def stop_after(requests: int) -> Any:
    """Answer the first ``requests`` GetInvoices, then ask for a pause of ten years."""
    seen = 0
    far = answer(503, b"busy", {"Retry-After": "315360000"}, "text/plain")

    async def rule(request: Request) -> web.StreamResponse | None:
        nonlocal seen
        seen += 1
        return None if seen <= requests else await far(request)

    return rule


Cli = Callable[..., Awaitable[CliResult]]


async def stopped_half_way(cli: Cli, simulator: Simulator, out: Path) -> Path:
    """A run stopped after two of four batches; its journal."""
    async with HostileServer(simulator.url) as server:
        server.on("GetInvoices", stop_after(2))
        code, _, err = await run(cli, server.url, out)
    assert code == 1 and "longer than --max-pause" in err
    (journal,) = (out / JOURNAL_DIR).glob("*.jsonl")
    return journal


async def run(cli: Cli, url: str, out: Path) -> CliResult:
    return await cli(
        "invoices", "--out", str(out), "--base-url", url, "--batch-size", "50",
        "--concurrency", "1", "--parse-workers", "0", "--max-requests-per-hour", "0",
        env=credentials_env(),
    )  # fmt: skip


def lines_of(journal: Path) -> list[bytes]:
    return journal.read_bytes().splitlines(keepends=True)


async def test_a_torn_last_line_is_cut_and_the_run_resumes(
    cli_beside: Cli, simulator: Simulator, tmp_path: Path
) -> None:
    journal = await stopped_half_way(cli_beside, simulator, tmp_path)
    with journal.open("ab") as torn:
        torn.write(b'{"event":"staged","key":"01-0000')  # the kill came mid-write
    code, _, err = await run(cli_beside, simulator.url, tmp_path)
    assert code == 0, err
    (finished,) = (tmp_path / "_runs").glob("*.journal.jsonl")
    events = [orjson.loads(line) for line in lines_of(finished)]  # every line whole
    assert [e["event"] for e in events].count("start") == 2
    assert_matches_truth(simulator, tmp_path)


async def test_a_garbage_line_is_refused_naming_file_and_line(
    cli_beside: Cli, simulator: Simulator, tmp_path: Path
) -> None:
    journal = await stopped_half_way(cli_beside, simulator, tmp_path)
    lines = lines_of(journal)
    journal.write_bytes(b"".join([*lines[:2], b"\x00\x00garbage\n", *lines[2:]]))
    before = journal.read_bytes()
    code, _, err = await run(cli_beside, simulator.url, tmp_path)
    assert code == 2
    assert f"{journal}, line 3, is damaged (not a JSON event)" in one_line(err)
    assert journal.read_bytes() == before  # nothing changed


async def test_a_line_of_the_wrong_shape_is_refused(
    cli_beside: Cli, simulator: Simulator, tmp_path: Path
) -> None:
    journal = await stopped_half_way(cli_beside, simulator, tmp_path)
    lines = lines_of(journal)
    staged = next(n for n, line in enumerate(lines) if b'"staged"' in line)
    event = orjson.loads(lines[staged])
    del event["counts"]
    lines[staged] = orjson.dumps(event) + b"\n"
    journal.write_bytes(b"".join(lines))
    code, _, err = await run(cli_beside, simulator.url, tmp_path)
    assert code == 2
    line = one_line(err)
    assert f"line {staged + 1}, is damaged (its 'counts' is missing or of the wrong type)" in line


async def test_a_duplicated_line_changes_nothing(
    cli_beside: Cli, simulator: Simulator, tmp_path: Path
) -> None:
    journal = await stopped_half_way(cli_beside, simulator, tmp_path)
    lines = lines_of(journal)
    journal.write_bytes(b"".join(line for line in lines for _ in range(2)))  # every line twice
    code, _, err = await run(cli_beside, simulator.url, tmp_path)
    assert code == 0, err
    (summary,) = (tmp_path / "_runs").glob("*[0-9a-f].json")
    counts = orjson.loads(summary.read_bytes())
    assert counts["invoices"] == 200 and counts["ids_total"] == 200
    assert_matches_truth(simulator, tmp_path)
