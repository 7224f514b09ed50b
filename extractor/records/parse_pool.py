"""Parser processes: each takes whole GetInvoices responses, chunk by chunk, as they arrive.

The event loop keeps all HTTP (session, retries, the limiter) in one place and forwards each
chunk to one of N processes (:mod:`~extractor.records.parse_worker`) that parse it into raw
parts, so parsing uses every core. A finished response's parts come back here, are typed by
the same :class:`~extractor.records.orders.Orders` as in
:class:`~extractor.records.parsing.LocalSinks` (on a thread, off the event loop) and staged by
its :class:`~extractor.records.parsing.Stager`. The processes never import pyarrow, which was
two thirds of their memory.

Each process has two pipes, both on the event loop (no thread, no queue): chunks go out as
they arrive, unpickled, through a non-blocking transport whose buffer is the backpressure;
answers come back pickled. A process that dies ends its answers' pipe, which fails the
responses it held; a run's process that dies ends the inbox, which ends the parser.
Through ``multiprocessing.Queue`` a chunk was pickled by a feeder thread, written through a
64 KiB pipe, and acknowledged: a quarter of the run's process and a fifth of each parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from extractor import schema
from extractor.errors import ExtractorError, FatalError, ParserDied
from extractor.parser import RawPart
from extractor.records import parse_worker
from extractor.records.orders import NAMESPACE, ORDER_TAG, Orders, Selection
from extractor.records.parsing import BatchCounts, CountedSink, InvoiceTables, Stager, count


class PooledSink:
    """The event loop's end of one response being parsed in a parser process."""

    def __init__(
        self,
        pool: ParsePool,
        parser: _Parser,
        key: int,
        answer: asyncio.Future[Any],
        batch: tuple[Sequence[int], str],
    ) -> None:
        self._pool, self._parser, self._key, self._answer = pool, parser, key, answer
        self._ids, self._name = batch
        self.bytes_fed = 0
        self.counts = BatchCounts()

    def feed(self, chunk: bytes) -> None:
        self.bytes_fed += len(chunk)
        self._parser.send(parse_worker.CHUNK, self._key, chunk=chunk)

    async def room(self) -> None:
        """Wait while the parser process is behind; raise at once if it failed this body."""
        await self._parser.room(self._answer)

    async def finish(self) -> None:
        self._parser.send(parse_worker.END, self._key)
        self._parser.awaiting(self._key)
        parts: list[RawPart] = await self._answer
        self.counts, self.staged = await self._pool.stage(parts, self._ids, self._name)

    def abort(self) -> None:
        self._parser.send(parse_worker.ABORT, self._key)
        self._parser.forget(self._key)


#: Seconds a parser process may leave its inbox full, or a body it has whole unanswered,
#: without a word, before it is taken for stuck (stopped, swapping, a parse that never ends)
#: and killed, so that it is replaced and its bodies fetched again: a parse of what its pipe
#: and buffer hold takes a tenth of a second.
STALL_SECONDS: Final = 60.0
#: Parser processes that may die in a run, per parser asked for, each replaced, before the run
#: stops (a body that kills its parser is isolated by splitting its batch: a few deaths).
MAX_DEATHS_PER_PARSER: Final = 4
#: Bytes of response a parser process may have waiting, sent but not parsed, before the
#: downloads feeding it wait (beyond what its pipe holds, :data:`PIPE_BYTES`): the network
#: outrunning the parsers costs no memory. 4 MiB cost 5-10 MB of the tree's peak at 20,000
#: and 200,000 orders, for no speed.
MAX_IN_FLIGHT: Final = 1 * 1024 * 1024
#: What each pipe is asked to hold (Linux's own is 64 KiB: a 256 KiB chunk woke its reader
#: four times). Linux lets anyone ask for up to /proc/sys/fs/pipe-max-size, 1 MiB by default.
PIPE_BYTES: Final = 1024 * 1024
_LENGTH: Final = struct.Struct("!i")  # multiprocessing.Connection's framing: a length first


class ParsePool:
    """N parser processes, each taking whole responses, chunk by chunk, as they arrive."""

    def __init__(
        self,
        workers: int,
        selection: Selection,
        tables: InvoiceTables,
        backlog: int,
        stall_seconds: float = STALL_SECONDS,
    ) -> None:
        self._stall_seconds = stall_seconds
        self._watching: asyncio.Future[None] | None = None
        self._selection = selection
        self._workers = workers
        self._stager = Stager(tables, backlog)
        self._typing = ThreadPoolExecutor(workers, thread_name_prefix="typing")
        self._shape = (ORDER_TAG, selection.response_struct, NAMESPACE)
        self._parsers: list[_Parser] = []
        self._dead: list[_Parser] = []
        self._keys = itertools.count()
        self._environment: dict[str, str] = {}
        self._closing = False

    async def __aenter__(self) -> ParsePool:
        self._environment = _helper_environment()
        try:
            for _ in range(self._workers):
                self._parsers.append(self._started())
            for parser in self._parsers:
                await parser.connect(self._shape)
        except BaseException:
            await self.__aexit__()  # the ones started end with their inbox
            raise
        self._watching = asyncio.ensure_future(self._watch())
        return self

    async def _watch(self) -> None:
        """Kill a parser that stalls (:data:`STALL_SECONDS`): its death replaces it."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self._stall_seconds / 4))
            for parser in list(self._parsers):
                if parser.stalled(loop.time(), self._stall_seconds):
                    with contextlib.suppress(ProcessLookupError):
                        parser.process.kill()

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True  # no parser is started in a dead one's place any more
        if self._watching is not None:
            self._watching.cancel()
        loop = asyncio.get_running_loop()
        for parser in self._parsers:
            parser.stop()
        for parser in [*self._parsers, *self._dead]:
            try:
                await loop.run_in_executor(None, parser.process.wait, 30)
            except subprocess.TimeoutExpired:
                parser.process.kill()
                await loop.run_in_executor(None, parser.process.wait)
            await parser.closed()
        self._typing.shutdown(wait=True)
        self._stager.close()

    def _started(self) -> _Parser:
        return _Parser(self._environment, self._replace)

    async def _replace(self, dead: _Parser) -> ExtractorError:
        """A parser died: start one in its place (unless the run is closing, or parsers keep
        dying); the error the bodies it held fail with."""
        self._dead.append(dead)
        code = dead.process.returncode
        if self._closing or len(self._dead) > MAX_DEATHS_PER_PARSER * self._workers:
            return FatalError(
                f"parser processes keep dying ({len(self._dead)} of them, the last with exit "
                f"code {code}); run with --parse-workers 0 to parse in the run's process"
            )
        fresh = self._started()
        try:
            await fresh.connect(self._shape)
        except OSError as exc:
            return FatalError(f"cannot start a parser process ({exc}); run with --parse-workers 0")
        self._parsers[self._parsers.index(dead)] = fresh
        return ParserDied(f"a parser process died (exit code {code})")

    def open(self, ids: Sequence[int], name: str) -> CountedSink:
        """A sink for one response, on the living parser with the fewest responses."""
        living = [parser for parser in self._parsers if parser.died is None] or self._parsers
        parser = min(living, key=lambda parser: len(parser.pending))
        key = next(self._keys)
        answer = asyncio.get_running_loop().create_future()
        answer.add_done_callback(_retrieved)  # a body given up on is no "never retrieved"
        if parser.died is not None:
            answer.set_exception(parser.died)
        else:
            parser.pending[key] = answer
            parser.send(parse_worker.BEGIN, key, len(ids))
        return PooledSink(self, parser, key, answer, (ids, name))

    async def stage(
        self, parts: list[RawPart], ids: Sequence[int], name: str
    ) -> tuple[BatchCounts, asyncio.Future[None]]:
        """Type ``parts`` (on a thread: the event loop stays free), count them, and queue
        them for staging: the counts, and the future done once they are on disk."""
        orders = Orders(self._selection, ids)
        loop = asyncio.get_running_loop()
        batch = await loop.run_in_executor(self._typing, orders.typed, parts)
        return count(batch, orders.missing), await self._stager.stage_later(batch, name)

    async def drain(self) -> None:
        """Wait until every parsed batch is staged; raise the first staging error."""
        await self._stager.drain()


class _Parser(asyncio.Protocol):
    """One parser process and the event loop's ends of its two pipes: messages go out
    through a non-blocking write transport (its buffer, over :data:`MAX_IN_FLIGHT`, pauses
    the downloads), answers come in through a read transport, whose end says the process
    died (or stopped)."""

    def __init__(
        self,
        environment: dict[str, str],
        replace: Callable[[_Parser], Awaitable[ExtractorError]],
    ) -> None:
        """``replace``: what the pool does when this process dies; it says the error the
        bodies it held fail with."""
        self._replace = replace
        inbox, self._inbox = os.pipe()
        self._answers, answers = os.pipe()
        for end in (self._inbox, answers):
            _widen(end)
        try:
            self.process = subprocess.Popen(
                [sys.executable, *_interpreter_flags(), "-c", _BOOT, str(inbox), str(answers)],
                pass_fds=(inbox, answers),
                env=environment,
                stdin=subprocess.DEVNULL,
                process_group=0,  # a terminal's Ctrl-C goes to the run's process only
            )
        except OSError as exc:
            os.close(self._inbox)
            os.close(self._answers)
            raise FatalError(
                f"cannot start a parser process ({exc.strerror or exc}); "
                "run with --parse-workers 0 to parse in the run's process"
            ) from None
        finally:
            os.close(inbox)  # the process has its copies: the pipes end with it
            os.close(answers)
        #: per response key: the future of its raw parts, and the parts come so far
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self._parts: dict[int, list[RawPart]] = {}
        self.died: ExtractorError | None = None
        self._writer: asyncio.WriteTransport | None = None
        self._written_off = False  # the inbox's transport is closed, for good
        self._reader: asyncio.ReadTransport | None = None
        self._received = bytearray()
        self._caught_up = asyncio.Event()
        self._caught_up.set()
        self._stopping = False
        self._gone = asyncio.Event()
        self._failing: asyncio.Future[None] | None = None
        #: bodies sent whole, whose answer is awaited; and when the process was last heard
        #: from, or began to be waited on (the loop's clock)
        self._awaited: set[int] = set()
        self._heard = 0.0

    async def connect(self, shape: tuple[str, schema.Struct, str]) -> None:
        """The pipes onto the event loop, and the shape of the records sent first."""
        loop = asyncio.get_running_loop()
        inbox = os.fdopen(self._inbox, "wb", buffering=0)  # the transport closes it
        self._writer, _ = await loop.connect_write_pipe(_Flow.of(self), inbox)
        self._writer.set_write_buffer_limits(high=MAX_IN_FLIGHT)
        answers = os.fdopen(self._answers, "rb", buffering=0)
        self._reader, _ = await loop.connect_read_pipe(lambda: self, answers)
        shaped = pickle.dumps(shape, pickle.HIGHEST_PROTOCOL)
        self._writer.write(_LENGTH.pack(len(shaped)) + shaped)

    def send(self, kind: int, key: int, number: int = 0, chunk: bytes | None = None) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            return  # it died: its responses are failed already
        header = parse_worker.HEADER.pack(kind, key, number)
        writer.write(_LENGTH.pack(len(header)) + header)
        if chunk is not None:
            writer.write(_LENGTH.pack(len(chunk)))
            writer.write(chunk)

    async def room(self, answer: asyncio.Future[Any]) -> None:
        """Backpressure: wait until the process has caught up; its error for this body as
        soon as it has one (the download is then aborted, not read to its end)."""
        if not self._caught_up.is_set() and not answer.done():
            caught_up = asyncio.ensure_future(self._caught_up.wait())
            try:
                await asyncio.wait([caught_up, answer], return_when=asyncio.FIRST_COMPLETED)
            finally:
                caught_up.cancel()
        if answer.done() and (error := answer.exception()) is not None:
            raise error

    def pause_writing(self) -> None:
        self._caught_up.clear()
        self._heard = asyncio.get_running_loop().time()  # waiting on it starts now

    def resume_writing(self) -> None:
        self._caught_up.set()
        self._heard = asyncio.get_running_loop().time()

    def awaiting(self, key: int) -> None:
        """The body ``key`` is sent whole: its answer is awaited."""
        if key in self.pending:
            if not self._awaited:
                self._heard = asyncio.get_running_loop().time()  # waiting on it starts now
            self._awaited.add(key)

    def stalled(self, now: float, limit: float) -> bool:
        """Whether the process has been waited on (its inbox full, or an answer awaited) for
        over ``limit`` seconds without a word."""
        waited_on = not self._caught_up.is_set() or bool(self._awaited)
        return self.died is None and waited_on and now - self._heard > limit

    def written_off(self) -> None:
        """The inbox's transport closed: nothing waits on it any more."""
        self._written_off = True
        self._caught_up.set()

    def _abort_writer(self) -> None:
        writer = self._writer
        if writer is not None and not self._written_off and not writer.is_closing():
            writer.abort()  # what it still holds is for a process that is gone

    def data_received(self, data: bytes) -> None:
        self._heard = asyncio.get_running_loop().time()
        received = self._received
        received += data
        while len(received) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(received)
            if size < 0:  # Connection's framing of a message of 2 GiB or more
                if len(received) < 12:
                    return
                (size,), start = struct.unpack_from("!Q", received, 4), 12
            else:
                start = 4
            if len(received) < start + size:
                return
            with memoryview(received) as view:
                message = pickle.loads(view[start : start + size])
            del received[: start + size]
            self._resolve(message)

    def connection_lost(self, exc: Exception | None) -> None:
        """The answers' pipe ended: the process stopped, or died."""
        self._gone.set()
        if not self._stopping:
            self._failing = asyncio.ensure_future(self._fail())

    async def _fail(self) -> None:
        """The process died: the pool starts another in its place first, so that the bodies
        this one held, failed now, are fetched again on a living one."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(subprocess.TimeoutExpired):  # for its exit code
            await loop.run_in_executor(None, self.process.wait, 5)
        self.died = FatalError(f"a parser process died (exit code {self.process.returncode})")
        self._caught_up.set()  # nothing more will be parsed: wake who waits
        self._abort_writer()
        self.died = await self._replace(self)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(self.died)
        self.pending.clear()
        self._parts.clear()
        self._awaited.clear()

    def _resolve(self, message: tuple[str, int, ExtractorError | None, Any]) -> None:
        kind, key, error, value = message
        if kind == "part":
            if key in self.pending:
                self._parts.setdefault(key, []).append(value)
            return
        future = self.pending.pop(key, None)  # "parsed": the end, or the body's error
        parts = self._parts.pop(key, [])
        self._awaited.discard(key)
        if future is None or future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(parts)

    def forget(self, key: int) -> None:
        self.pending.pop(key, None)
        self._parts.pop(key, None)
        self._awaited.discard(key)

    def stop(self) -> None:
        self._stopping = True
        self.send(parse_worker.STOP, 0)
        if self._writer is not None:
            self._writer.close()  # once what it holds is written
        else:  # never connected (another parser failed to start): its inbox ends here
            os.close(self._inbox)
            os.close(self._answers)

    async def closed(self) -> None:
        """After the process ended: both pipes closed."""
        self._abort_writer()
        if self._reader is not None:
            self._reader.close()
            await self._gone.wait()
        if self._failing is not None:
            await self._failing


class _Flow(asyncio.BaseProtocol):
    """The write transport's protocol: passes its pauses on to the :class:`_Parser`."""

    def __init__(self, parser: _Parser) -> None:
        self._parser = parser

    @classmethod
    def of(cls, parser: _Parser) -> Callable[[], _Flow]:
        return lambda: cls(parser)

    def pause_writing(self) -> None:
        self._parser.pause_writing()

    def resume_writing(self) -> None:
        self._parser.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._parser.written_off()


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _widen(descriptor: int) -> None:
    """Ask for a :data:`PIPE_BYTES` pipe; keep the default where that is refused."""
    setting = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if setting is not None:
        with contextlib.suppress(OSError):  # over a user's limit
            fcntl.fcntl(descriptor, setting, PIPE_BYTES)


#: What a parser process runs: the run's ``sys.path`` (as multiprocessing's spawn would give
#: it; JSON, since an entry may hold the path separator), then
#: :func:`~extractor.records.parse_worker.main` with its pipes' descriptors.
_BOOT: Final = (
    "import json, os, sys; sys.path[:] = json.loads(os.environ.pop('EXTRACTOR_PARSER_PATH'));"
    "from extractor.records.parse_worker import main; main(sys.argv[1:])"
)
#: The run's environment a parser process gets: what Python, the C library and the locale
#: read, and nothing else, so never a credential, whatever variable holds it (``TFSO_*``, or
#: one a config file names).
_KEPT: Final = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
    "VIRTUAL_ENV", "GLIBC_TUNABLES", "EXTRACTOR_PURE_PYTHON",
)  # fmt: skip
_KEPT_PREFIXES: Final = ("LC_", "PYTHON", "LD_", "MALLOC_")


def _helper_environment() -> dict[str, str]:
    """What a parser process sees of the environment (:data:`_KEPT`), and the run's
    ``sys.path``."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name in _KEPT or name.startswith(_KEPT_PREFIXES)
    }
    environment["EXTRACTOR_PARSER_PATH"] = json.dumps([str(entry) for entry in sys.path])
    return environment


def _interpreter_flags() -> list[str]:
    """The run's interpreter flags (``-I``, ``-E``, ``-X ...``), as multiprocessing's spawn
    passes them on (through the same function of the standard library)."""
    flags: Any = getattr(subprocess, "_args_from_interpreter_flags", list)
    return list(flags())
