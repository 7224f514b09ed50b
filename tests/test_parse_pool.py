"""The parser processes' pool ends whatever its parsers did: one that died fails the body it
was given, and leaves nothing holding the run's process at its exit (a script calling the
API hung there, on a queue's feeder thread blocked on the dead parser's pipe)."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

_SCENARIO = """
import asyncio, sys
from pathlib import Path
from extractor.errors import FatalError
from extractor.records.orders import Selection
from extractor.records.parse_pool import ParsePool
from extractor.records.parsing import InvoiceTables

async def main():
    selection = Selection()
    pool = ParsePool(1, selection, InvoiceTables(Path(sys.argv[1]), selection, "run-1"), backlog=4)
    async with pool:
        (parser,) = pool._parsers
        parser.process.kill()
        await asyncio.to_thread(parser.process.wait)
        sink = pool.open([1, 2, 3], "00000000")
        for _ in range(64):  # far more than a pipe holds
            sink.feed(b"x" * 65536)
        try:
            await asyncio.wait_for(sink.finish(), 60)
        except FatalError as exc:
            print(exc)

asyncio.run(main())
print("left the pool")
"""


def test_a_parser_that_died_fails_its_body_and_the_process_still_exits(tmp_path: Path) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _SCENARIO, str(tmp_path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired as hung:  # the child is killed by run() on the timeout
        raise AssertionError(f"the process did not exit: {hung.stdout!r}") from None
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "a parser process died (exit code -9)", "left the pool",
    ], done.stderr  # fmt: skip


async def test_a_parser_that_cannot_start_fails_in_one_line_and_stops_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from extractor.errors import FatalError
    from extractor.records import parse_pool
    from extractor.records.orders import Selection
    from extractor.records.parsing import InvoiceTables

    started: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen

    def second_fails(*args: Any, **options: Any) -> subprocess.Popen[bytes]:
        if len(started) == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        started.append(popen(*args, **options))
        return started[-1]

    monkeypatch.setattr(parse_pool.subprocess, "Popen", second_fails)
    selection = Selection()
    tables = InvoiceTables(tmp_path, selection, "run-1")
    with pytest.raises(FatalError) as failed:
        async with parse_pool.ParsePool(3, selection, tables, backlog=4):
            raise AssertionError("the pool started")
    assert str(failed.value) == (
        "cannot start a parser process (Too many open files); "
        "run with --parse-workers 0 to parse in the run's process"
    )
    (first,) = started
    assert first.returncode == 0  # stopped in order, not killed, not left behind
