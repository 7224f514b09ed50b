"""Parser processes: each takes whole GetInvoices responses, chunk by chunk, as they arrive.

The event loop keeps all HTTP (session, retries, the limiter) in one place and forwards each
chunk to one of N processes (:mod:`~extractor.records.parse_worker`) that parse it into raw
parts, so parsing uses every core. A finished response's parts come back here, are typed by
the same :class:`~extractor.records.orders.Orders` as in
:class:`~extractor.records.parsing.LocalSinks` (on a thread, off the event loop) and staged by
its :class:`~extractor.records.parsing.Stager`. The processes never import pyarrow, which was
two thirds of their memory.

Each process has two pipes, both on the event loop (no thread, no queue;
:mod:`~extractor.records.parser_process`): chunks go out as they arrive, unpickled, through a
non-blocking transport whose buffer is the backpressure; answers come back pickled. Through
``multiprocessing.Queue`` a chunk was pickled by a feeder thread, written through a 64 KiB
pipe, and acknowledged: a quarter of the run's process and a fifth of each parser.

A process that dies (or is killed for being stuck, :data:`STALL_SECONDS`) is replaced, and
the bodies it held fail with :class:`~extractor.errors.ParserDied`, a transient error: the
batch is fetched again, on a living parser. A run's process that dies ends the parsers'
inboxes, which ends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from extractor.errors import ExtractorError, FatalError, ParserDied
from extractor.parser import RawPart
from extractor.records import parse_worker
from extractor.records.orders import NAMESPACE, ORDER_TAG, Orders, Selection
from extractor.records.parser_process import ParserProcess, helper_environment
from extractor.records.parsing import BatchCounts, CountedSink, InvoiceTables, Stager, count


class PooledSink:
    """The event loop's end of one response being parsed in a parser process."""

    def __init__(
        self,
        pool: ParsePool,
        parser: ParserProcess,
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
STALL_SECONDS: Final = 20.0
#: Seconds a parser told to stop may take to end before it is killed (all of them at once).
STOP_SECONDS: Final = 10.0
#: Parser processes that may die in a run, per parser asked for, each replaced, before the run
#: stops (a body that kills its parser is isolated by splitting its batch: a few deaths).
MAX_DEATHS_PER_PARSER: Final = 4


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
        self._parsers: list[ParserProcess] = []
        self._dead: list[ParserProcess] = []
        self._keys = itertools.count()
        self._environment: dict[str, str] = {}
        self._closing = False

    async def __aenter__(self) -> ParsePool:
        self._environment = helper_environment()
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
        everyone = [*self._parsers, *self._dead]
        await asyncio.gather(*(loop.run_in_executor(None, _ended, p.process) for p in everyone))
        for parser in everyone:
            await parser.closed()
        self._typing.shutdown(wait=True)
        self._stager.close()

    def _started(self) -> ParserProcess:
        return ParserProcess(self._environment, self._replace)

    async def _replace(self, dead: ParserProcess) -> ExtractorError:
        """A parser died: start one in its place (unless the run is closing, or parsers keep
        dying); the error the bodies it held fail with."""
        self._dead.append(dead)
        code = dead.process.returncode
        if self._closing or len(self._dead) > MAX_DEATHS_PER_PARSER * self._workers:
            return FatalError(
                f"parser processes keep dying ({len(self._dead)} of them, the last with exit "
                f"code {code}); run with --parse-workers 0 to parse in the run's process"
            )
        try:
            fresh = self._started()
            await fresh.connect(self._shape)
        except FatalError as exc:  # it could not start
            return exc
        if self._closing:  # the pool closed while it started: it ends with the others
            fresh.stop()
            await asyncio.get_running_loop().run_in_executor(None, _ended, fresh.process)
            await fresh.closed()
            return FatalError(f"a parser process died (exit code {code})")
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


def _ended(process: subprocess.Popen[bytes]) -> None:
    """Wait for a parser told to stop (at once, unless it is stuck: then killed)."""
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
