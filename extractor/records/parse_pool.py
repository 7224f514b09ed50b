"""Parser processes: each takes whole GetInvoices responses, chunk by chunk, as they arrive.

The event loop keeps all HTTP (session, retries, the limiter) in one place and forwards each
chunk to one of N processes (:mod:`~extractor.records.parse_worker`) that parse it into raw
parts, so parsing uses every core. A finished response's parts come back here, are typed by
the same :class:`~extractor.records.orders.Orders` as in
:class:`~extractor.records.parsing.LocalSinks` (on a thread, off the event loop) and staged by
its :class:`~extractor.records.parsing.Stager`. The processes never import pyarrow, which was
two thirds of their memory. A process ends with the run's process (a watchdog thread watches
its parent's pid: a killed writer can leave half a message in their pipe, so a queue timeout
is not enough).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import queue
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from extractor.errors import ExtractorError, FatalError
from extractor.parser import RawPart
from extractor.records import parse_worker
from extractor.records.orders import NAMESPACE, ORDER_TAG, Orders, Selection
from extractor.records.parsing import BatchCounts, CountedSink, InvoiceTables, Stager, count


class PooledSink:
    """The event loop's end of one response being parsed in a parser process."""

    def __init__(
        self,
        pool: ParsePool,
        worker: int,
        key: int,
        answer: asyncio.Future[Any],
        batch: tuple[Sequence[int], str],
    ) -> None:
        self._pool, self._worker, self._key, self._answer = pool, worker, key, answer
        self._ids, self._name = batch
        self.bytes_fed = 0
        self.counts = BatchCounts()

    def feed(self, chunk: bytes) -> None:
        self.bytes_fed += len(chunk)
        self._pool.send_chunk(self._worker, self._key, chunk)

    async def room(self) -> None:
        """Wait while the parser process is behind; raise at once if it failed this body."""
        await self._pool.room(self._worker, self._answer)

    async def finish(self) -> None:
        parts = await self._pool.result(self._worker, self._key, self._answer)
        self.counts, self.staged = await self._pool.stage(parts, self._ids, self._name)

    def abort(self) -> None:
        self._pool.send(self._worker, ("abort", self._key))
        self._pool.forget(self._worker, self._key)


#: Bytes of response a parser process may have waiting, sent but not parsed, before the
#: downloads feeding it wait: the network outrunning the parsers costs no memory.
MAX_IN_FLIGHT: Final = 4 * 1024 * 1024


class ParsePool:
    """N parser processes, each taking whole responses, chunk by chunk, as they arrive."""

    def __init__(
        self, workers: int, selection: Selection, tables: InvoiceTables, backlog: int
    ) -> None:
        self._selection = selection
        self._stager = Stager(tables, backlog)
        self._typing = ThreadPoolExecutor(workers, thread_name_prefix="typing")
        shape = (ORDER_TAG, selection.response_struct, NAMESPACE)
        context = multiprocessing.get_context("spawn")
        with _as_helpers():  # the first queue starts multiprocessing's resource tracker
            self._results: multiprocessing.Queue[Any] = context.Queue()
            self._inboxes: list[multiprocessing.Queue[Any]] = [
                context.Queue() for _ in range(workers)
            ]
        self._processes = [
            context.Process(
                target=parse_worker.serve,
                args=(inbox, self._results, shape, number, os.getpid()),
                name=f"extractor-parser-{number}",
                daemon=True,
            )
            for number, inbox in enumerate(self._inboxes)
        ]
        # per response key: (parser process, future of its raw parts)
        self._pending: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self._keys = itertools.count()
        self._in_flight = [0] * workers  # bytes sent to each parser, not yet parsed
        self._caught_up = [asyncio.Event() for _ in range(workers)]
        self._stopping = threading.Event()
        self._reader: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> ParsePool:
        self._loop = asyncio.get_running_loop()
        with _as_helpers():
            for process in self._processes:
                process.start()
        self._reader = threading.Thread(target=self._read_results, name="parser-results")
        self._reader.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for inbox in self._inboxes:
            inbox.put(("stop",))
        loop = asyncio.get_running_loop()
        for process in self._processes:
            await loop.run_in_executor(None, process.join, 30)
            if process.is_alive():
                process.kill()
        for inbox in self._inboxes:
            # nothing reads them any more: a feeder thread blocked on the full pipe of a parser
            # that died must not hold this process at its exit (multiprocessing joins them)
            inbox.cancel_join_thread()
            inbox.close()
        self._stopping.set()
        if self._reader is not None:
            await loop.run_in_executor(None, self._reader.join)
        self._typing.shutdown(wait=True)
        self._stager.close()

    def open(self, ids: Sequence[int], name: str) -> CountedSink:
        load = [0] * len(self._inboxes)
        for worker, _ in self._pending.values():
            load[worker] += 1
        worker = load.index(min(load))
        key = next(self._keys)
        assert self._loop is not None
        answer = self._loop.create_future()
        self._pending[key] = (worker, answer)
        self.send(worker, ("begin", key, len(ids)))
        return PooledSink(self, worker, key, answer, (ids, name))

    def send(self, worker: int, message: tuple[Any, ...]) -> None:
        self._inboxes[worker].put(message)

    def send_chunk(self, worker: int, key: int, chunk: bytes) -> None:
        self._in_flight[worker] += len(chunk)
        self.send(worker, ("chunk", key, chunk))

    async def room(self, worker: int, answer: asyncio.Future[Any]) -> None:
        """Backpressure: wait until ``worker`` has caught up; the parser's error for this
        body as soon as it has one (the download is then aborted, not read to its end)."""
        while self._in_flight[worker] > MAX_IN_FLIGHT and not answer.done():
            self._caught_up[worker].clear()
            await self._caught_up[worker].wait()
        if answer.done() and (error := answer.exception()) is not None:
            raise error

    async def result(self, worker: int, key: int, answer: asyncio.Future[Any]) -> list[RawPart]:
        """The body's raw parts, once its parser process has read all of it."""
        self.send(worker, ("end", key))
        parts: list[RawPart] = await answer
        return parts

    async def stage(
        self, parts: list[RawPart], ids: Sequence[int], name: str
    ) -> tuple[BatchCounts, asyncio.Future[None]]:
        """Type ``parts`` (on a thread: the event loop stays free), count them, and queue
        them for staging: the counts, and the future done once they are on disk."""
        orders = Orders(self._selection, ids)
        loop = asyncio.get_running_loop()
        batch = await loop.run_in_executor(self._typing, orders.typed, parts)
        return count(batch, orders.missing), await self._stager.stage_later(batch, name)

    def forget(self, worker: int, key: int) -> None:
        self._pending.pop(key, None)

    async def drain(self) -> None:
        """Wait until every parsed batch is staged; raise the first staging error."""
        await self._stager.drain()

    def _read_results(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self._results.get(timeout=parse_worker.POLL)
            except queue.Empty:
                self._check_alive()
                continue
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._resolve, message)

    def _check_alive(self) -> None:
        for number, process in enumerate(self._processes):
            if not process.is_alive() and process.exitcode not in (0, None):
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._fail_worker, number, process.exitcode)

    def _fail_worker(self, worker: int, exitcode: int | None) -> None:
        died = FatalError(f"a parser process died (exit code {exitcode})")
        self._caught_up[worker].set()  # nothing more will be parsed: wake who waits
        for key, (owner, future) in list(self._pending.items()):
            if owner == worker:
                del self._pending[key]
                if not future.done():
                    future.set_exception(died)

    def _resolve(self, message: tuple[str, int, ExtractorError | None, Any]) -> None:
        kind, key, error, value = message
        if kind == "ate":  # a chunk parsed: (worker, bytes)
            worker, size = value
            self._in_flight[worker] -= size
            if self._in_flight[worker] <= MAX_IN_FLIGHT:
                self._caught_up[worker].set()
            return
        entry = self._pending.pop(key, None)  # "parsed": the parts, or the body's error
        if entry is None or entry[1].done():
            return
        if error is not None:
            entry[1].set_exception(error)
            return
        entry[1].set_result(value)


@contextlib.contextmanager
def _as_helpers() -> Iterator[None]:
    """Start processes as helpers of the run: without the TFSO_* variables (parser processes
    see bytes, never credentials), and deaf to Ctrl-C, which a terminal sends to the whole
    process group (the run's process stops them in order). Both are inherited at spawn.
    Off the main thread (the Python API called from a worker thread) signals are the host's:
    Python lets only the main thread set a handler, so Ctrl-C's disposition is left as is.

    And without the caller's ``__main__``: a spawned process imports the parent's main
    module before its target, so a script calling the Python API without an
    ``if __name__ == "__main__":`` guard would run again in every parser (and fail there).
    The parsers' target lives in the package, so they need none of it."""
    saved = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith("TFSO_")}
    main = threading.current_thread() is threading.main_thread()
    interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    caller = sys.modules["__main__"]
    hidden: dict[str, Any] = {
        name: caller.__dict__[name] for name in ("__spec__", "__file__") if name in caller.__dict__
    }
    caller.__dict__.pop("__file__", None)
    caller.__spec__ = None  # spawn reads it: None, and no file, is "leave main alone"
    try:
        yield
    finally:
        caller.__dict__.update(hidden)
        if main:
            signal.signal(signal.SIGINT, interrupt)
        os.environ.update(saved)
