"""The parser processes' pool ends whatever its parsers did: one that died fails the body it
was given, and leaves nothing holding the run's process at its exit (a script calling the
API hung there, on a queue's feeder thread blocked on the dead parser's pipe)."""

from __future__ import annotations

import ast
import asyncio
import errno
import fcntl
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

_PREFIX = b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
_SCENARIO = """
import asyncio, sys
from pathlib import Path
from extractor.errors import ExtractorError
from extractor.records.orders import Selection
from extractor.records.parse_pool import ParsePool
from extractor.records.parsing import InvoiceTables

async def main():
    selection = Selection()
    pool = ParsePool(1, selection, InvoiceTables(Path(sys.argv[1]), selection, "run-1"), backlog=4)
    async with pool:
        (parser,) = pool._parsers
        sink = pool.open([1, 2, 3], "00000000")
        sink.feed(PREFIX)
        parser.process.kill()
        await asyncio.to_thread(parser.process.wait)
        for _ in range(64):  # far more than a pipe holds
            sink.feed(b"x" * 65536)
        try:
            await asyncio.wait_for(sink.finish(), 60)
        except ExtractorError as exc:
            print(f"{type(exc).__name__}: {exc}")
        again = pool.open([4, 5], "00000001")  # on the parser started in its place
        again.feed(EMPTY)
        await asyncio.wait_for(again.finish(), 60)
        print(f"replaced: {again.counts.invoices} invoices, missing {again.counts.missing}")

asyncio.run(main())
print("left the pool")
"""


_EMPTY_ANSWER = (
    b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
    b'<GetInvoicesResponse xmlns="http://24sevenOffice.com/webservices"><GetInvoicesResult/>'
    b"</GetInvoicesResponse></soap:Body></soap:Envelope>"
)


_SCENARIO_CODE = f"PREFIX = {_PREFIX!r}\nEMPTY = {_EMPTY_ANSWER!r}\n" + _SCENARIO


def test_a_parser_that_died_fails_its_body_and_the_process_still_exits(tmp_path: Path) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _SCENARIO_CODE, str(tmp_path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired as hung:  # the child is killed by run() on the timeout
        raise AssertionError(f"the process did not exit: {hung.stdout!r}") from None
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "ParserDied: a parser process died (exit code -9)",
        "replaced: 0 invoices, missing [4, 5]",
        "left the pool",
    ], done.stderr


async def test_a_parser_that_cannot_start_fails_in_one_line_and_stops_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from extractor.errors import FatalError
    from extractor.records import parse_pool, parser_process
    from extractor.records.orders import Selection
    from extractor.records.parsing import InvoiceTables

    started: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen

    def second_fails(*args: Any, **options: Any) -> subprocess.Popen[bytes]:
        if len(started) == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        started.append(popen(*args, **options))
        return started[-1]

    monkeypatch.setattr(parser_process.subprocess, "Popen", second_fails)
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


async def test_parsers_start_from_any_sys_path_and_get_wide_pipes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's ``sys.path`` reaches the parsers whole: a ``Path`` entry, an entry holding
    the path separator. Their pipes hold PIPE_BYTES where Linux allows it."""
    from extractor.records import parse_pool, parser_process
    from extractor.records.orders import Selection
    from extractor.records.parsing import InvoiceTables

    monkeypatch.setattr(sys, "path", [*sys.path, tmp_path / "a", f"{tmp_path}/b:c"])
    path = orjson.loads(parser_process.helper_environment()["EXTRACTOR_PARSER_PATH"])
    assert path[-2:] == [str(tmp_path / "a"), f"{tmp_path}/b:c"]
    selection = Selection()
    tables = InvoiceTables(tmp_path, selection, "run-1")
    async with parse_pool.ParsePool(2, selection, tables, backlog=4) as pool:
        sink = pool.open([7, 8], "00000000")
        sink.feed(_EMPTY_ANSWER)
        await asyncio.wait_for(sink.finish(), 60)  # a parser that could not start: died
        assert (sink.counts.invoices, sink.counts.missing) == (0, [7, 8])
        wide = int(Path("/proc/sys/fs/pipe-max-size").read_text()) >= parser_process.PIPE_BYTES
        for parser in pool._parsers:
            inbox = parser._writer.get_extra_info("pipe").fileno()  # type: ignore[union-attr]
            size = fcntl.fcntl(inbox, fcntl.F_GETPIPE_SZ)  # type: ignore[attr-defined]
            assert size == parser_process.PIPE_BYTES if wide else size > 0


def test_parsers_see_no_credential_in_any_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from extractor.records.parser_process import helper_environment

    for name, value in {
        "TFSO_PASSWORD": "s3cret", "ACME_TFSO_PASSWORD": "s3cret", "MY_TOKEN": "s3cret",
        "PYTHONFAULTHANDLER": "1", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    seen = helper_environment()
    assert "s3cret" not in seen.values()
    assert {"PYTHONFAULTHANDLER", "LANG", "LC_ALL", "PATH"} <= set(seen)


def test_parsers_run_with_the_run_s_interpreter_flags() -> None:
    probe = (
        "from extractor.records.parser_process import interpreter_flags; print(interpreter_flags())"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-X", "utf8", "-c", probe], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    flags = ast.literal_eval(done.stdout)
    assert "-I" in flags and "utf8" in flags


async def test_parsers_that_keep_dying_stop_the_run_in_one_line(tmp_path: Path) -> None:
    """Each death fails the body its parser held with a transient error (the batch is fetched
    again, on a parser started in its place), until more died than the run allows."""
    from extractor.errors import ExtractorError, FatalError, ParserDied
    from extractor.records import parse_pool
    from extractor.records.orders import Selection
    from extractor.records.parsing import InvoiceTables

    selection = Selection()
    tables = InvoiceTables(tmp_path, selection, "run-1")
    failures: list[BaseException] = []
    async with parse_pool.ParsePool(1, selection, tables, backlog=4) as pool:
        for attempt in range(parse_pool.MAX_DEATHS_PER_PARSER + 1):
            sink = pool.open([1], f"{attempt:08d}")
            sink.feed(_PREFIX)
            (parser,) = pool._parsers
            parser.process.kill()
            with pytest.raises(ExtractorError) as failed:
                await asyncio.wait_for(sink.finish(), 60)
            failures.append(failed.value)
    *replaced, last = failures
    assert all(type(error) is ParserDied for error in replaced)
    assert type(last) is FatalError
    assert str(last) == (
        "parser processes keep dying (5 of them, the last with exit code -9); "
        "run with --parse-workers 0 to parse in the run's process"
    )


async def test_a_stuck_parser_is_killed_and_replaced(tmp_path: Path) -> None:
    """A parser that stops reading (stopped, swapping) would hold its bodies forever: past
    the stall limit it is killed, its bodies fail as a dead parser's, and another parses."""
    import os
    import signal

    from extractor.errors import ParserDied
    from extractor.records import parse_pool
    from extractor.records.orders import Selection
    from extractor.records.parsing import InvoiceTables

    selection = Selection()
    tables = InvoiceTables(tmp_path, selection, "run-1")
    pool = parse_pool.ParsePool(1, selection, tables, backlog=4, stall_seconds=0.2)
    async with pool:
        (stuck,) = pool._parsers
        sink = pool.open([1], "00000000")
        sink.feed(_PREFIX)
        os.kill(stuck.process.pid, signal.SIGSTOP)
        with pytest.raises(ParserDied):
            await asyncio.wait_for(sink.finish(), 60)  # its answer awaited: stalled
        assert stuck.process.returncode == -signal.SIGKILL
        # the replacement is judged by the real limit: on a loaded machine its start alone can
        # take longer than 0.2 s, and it would be killed as stuck in turn
        pool._stall_seconds = parse_pool.STALL_SECONDS
        again = pool.open([2], "00000001")
        again.feed(_EMPTY_ANSWER)
        await asyncio.wait_for(again.finish(), 60)
        assert again.counts.missing == [2]


async def test_a_parser_waiting_for_its_body_is_not_stuck(tmp_path: Path) -> None:
    """Only a parser the run waits on can be stuck: one whose body is still arriving (a slow
    service) is idle, however long, and is left alone."""
    from extractor.records import parse_pool
    from extractor.records.orders import Selection
    from extractor.records.parsing import InvoiceTables

    selection = Selection()
    tables = InvoiceTables(tmp_path, selection, "run-1")
    async with parse_pool.ParsePool(1, selection, tables, backlog=4) as pool:
        (parser,) = pool._parsers
        later = asyncio.get_running_loop().time() + 3600
        sink = pool.open([1], "00000000")
        sink.feed(_PREFIX)
        assert not parser.stalled(later, parse_pool.STALL_SECONDS)  # the body still arrives
        (key,) = parser.pending
        parser.awaiting(key)  # its end sent: the run waits on it now
        assert parser.stalled(later, parse_pool.STALL_SECONDS)
        sink.feed(_EMPTY_ANSWER[len(_PREFIX) :])
        await asyncio.wait_for(sink.finish(), 60)
        assert not parser.stalled(later, parse_pool.STALL_SECONDS)  # answered


async def test_a_body_opened_while_a_dead_parser_is_replaced_is_fetched_again(
    tmp_path: Path,
) -> None:
    """Found by attack: with no parser living while one is started in a dead one's place, a
    body opened then failed with a fatal error and stopped the run."""
    from extractor.errors import ParserDied
    from extractor.records import parse_pool
    from extractor.records.orders import Selection
    from extractor.records.parsing import InvoiceTables

    selection = Selection()
    tables = InvoiceTables(tmp_path, selection, "run-1")
    async with parse_pool.ParsePool(1, selection, tables, backlog=4) as pool:
        replacing, release = asyncio.Event(), asyncio.Event()
        replace = pool._replace

        async def held(dead: Any) -> Any:
            replacing.set()
            await release.wait()
            return await replace(dead)

        (dead,) = pool._parsers
        dead._replace = held
        dead.process.kill()
        await asyncio.wait_for(replacing.wait(), 60)  # the window: none living, one starting
        try:
            during = pool.open([1], "00000000")
            with pytest.raises(ParserDied):
                await asyncio.wait_for(during.finish(), 60)
        finally:
            release.set()
        await asyncio.wait_for(dead._failing, 60)
        after = pool.open([2], "00000001")
        after.feed(_EMPTY_ANSWER)
        await asyncio.wait_for(after.finish(), 60)
        assert after.counts.missing == [2]
