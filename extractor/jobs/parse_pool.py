"""Parser processes: each takes whole GetInvoices responses, chunk by chunk, as they arrive.

The event loop keeps all HTTP (session, retries, the limiter) in one place and forwards each
chunk to one of N processes that run the same :class:`~extractor.records.orders.OrderSink` as
:class:`~extractor.jobs.parsing.LocalSinks` and stage the result themselves, so parsing uses
every core. A process ends with the run's process (a watchdog thread watches its parent's
pid: a killed writer can leave half a message in their pipe, so a queue timeout is not enough).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

from extractor.errors import ExtractorError, FatalError
from extractor.jobs.parsing import BatchCounts, CountedSink, InvoiceTables, count
from extractor.records.orders import OrderSink, Selection


class PooledSink:
    """The event loop's end of one response being parsed in a parser process."""

    def __init__(self, pool: ParsePool, worker: int, key: int, answer: asyncio.Future[Any]) -> None:
        self._pool, self._worker, self._key, self._answer = pool, worker, key, answer
        self.bytes_fed = 0
        self.counts = BatchCounts()

    def feed(self, chunk: bytes) -> None:
        self.bytes_fed += len(chunk)
        self._pool.send_chunk(self._worker, self._key, chunk)

    async def room(self) -> None:
        """Wait while the parser process is behind; raise at once if it failed this body."""
        await self._pool.room(self._worker, self._answer)

    async def finish(self) -> None:
        self.counts, self.staged = await self._pool.result(self._worker, self._key, self._answer)

    def abort(self) -> None:
        self._pool.send(self._worker, ("abort", self._key))
        self._pool.forget(self._worker, self._key)


_POLL: Final = 0.5
#: Bytes of response a parser process may have waiting, sent but not parsed, before the
#: downloads feeding it wait: the network outrunning the parsers costs no memory.
MAX_IN_FLIGHT: Final = 4 * 1024 * 1024


class ParsePool:
    """N parser processes, each taking whole responses, chunk by chunk, as they arrive."""

    def __init__(self, workers: int, selection: Selection, out: Path, run_id: str) -> None:
        context = multiprocessing.get_context("spawn")
        with _as_helpers():  # the first queue starts multiprocessing's resource tracker
            self._results: multiprocessing.Queue[Any] = context.Queue()
            self._inboxes: list[multiprocessing.Queue[Any]] = [
                context.Queue() for _ in range(workers)
            ]
        self._processes = [
            context.Process(
                target=_serve,
                args=(inbox, self._results, selection, out, run_id, number, os.getpid()),
                name=f"extractor-parser-{number}",
                daemon=True,
            )
            for number, inbox in enumerate(self._inboxes)
        ]
        # per response key: (parser process, future); answered "parsed", then "staged"
        self._pending: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self._staged: dict[int, tuple[int, asyncio.Future[Any]]] = {}
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
        self._stopping.set()
        if self._reader is not None:
            await loop.run_in_executor(None, self._reader.join)

    def open(self, ids: Sequence[int], name: str) -> CountedSink:
        load = [0] * len(self._inboxes)
        for worker, _ in self._pending.values():
            load[worker] += 1
        worker = load.index(min(load))
        key = next(self._keys)
        assert self._loop is not None
        answer = self._loop.create_future()
        self._pending[key] = (worker, answer)
        self.send(worker, ("begin", key, list(ids), name))
        return PooledSink(self, worker, key, answer)

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

    async def result(
        self, worker: int, key: int, answer: asyncio.Future[Any]
    ) -> tuple[BatchCounts, asyncio.Future[None]]:
        self.send(worker, ("end", key))
        parsed: tuple[BatchCounts, asyncio.Future[None]] = await answer
        return parsed

    def forget(self, worker: int, key: int) -> None:
        self._pending.pop(key, None)
        self._staged.pop(key, None)

    async def drain(self) -> None:
        """Wait until every parsed batch is staged; raise the first staging error."""
        await asyncio.gather(*(future for _, future in self._staged.values()))
        self._staged.clear()

    def _read_results(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self._results.get(timeout=_POLL)
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
        for table in (self._pending, self._staged):
            for key, (owner, future) in list(table.items()):
                if owner == worker:
                    del table[key]
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
        table = self._pending if kind == "parsed" else self._staged
        entry = table.pop(key, None)
        if entry is None or entry[1].done():
            return
        if error is not None:
            entry[1].set_exception(error)
            return
        if kind == "parsed":  # only a batch that parsed is staged; "staged" follows
            assert self._loop is not None
            staged = self._loop.create_future()
            self._staged[key] = (entry[0], staged)
            value = (value, staged)
        entry[1].set_result(value)


@contextlib.contextmanager
def _as_helpers() -> Iterator[None]:
    """Start processes as helpers of the run: without the TFSO_* variables (parser processes
    see bytes, never credentials), and deaf to Ctrl-C, which a terminal sends to the whole
    process group (the run's process stops them in order). Both are inherited at spawn."""
    saved = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith("TFSO_")}
    interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, interrupt)
        os.environ.update(saved)


def _serve(
    inbox: multiprocessing.Queue[Any],
    results: multiprocessing.Queue[Any],
    selection: Selection,
    out: Path,
    run_id: str,
    number: int,
    parent: int,
) -> None:
    """A parser process: keeps one OrderSink per response in flight. Each chunk is
    acknowledged once parsed ("ate"); a body that fails is answered at once, so that its
    download stops. ``parent`` is the run's pid, given rather than read here: a run killed
    while this process was still starting is already gone, and ``getppid`` says 1."""
    tables = InvoiceTables(out, selection, run_id)
    sinks: dict[int, tuple[OrderSink, str]] = {}
    failed: set[int] = set()  # answered already: their later chunks and end are ignored
    watchdog = threading.Thread(target=_end_with_parent, args=(parent,), daemon=True)
    watchdog.start()
    while (message := inbox.get())[0] != "stop":
        kind, key = message[0], message[1]
        try:
            if kind == "begin":
                sinks[key] = (OrderSink(selection, message[2]), message[3])
            elif kind == "chunk":
                try:
                    if key in sinks:
                        sinks[key][0].feed(message[2])
                finally:
                    results.put(("ate", key, None, (number, len(message[2]))))
            elif kind == "abort":
                sinks.pop(key, None)
                failed.discard(key)
            elif kind == "end" and key not in failed:
                _end(key, sinks, tables, results)
            elif kind == "end":
                failed.discard(key)
        except Exception as exc:  # an ExtractorError, or a bug: report it rather than hang
            sinks.pop(key, None)
            failed.add(key)
            results.put(("parsed", key, _describe(exc), None))


def _end_with_parent(parent: int) -> None:
    """Once the run's process is gone (killed, say), end this one at once, wherever its main
    thread is blocked (a killed writer can leave half a message in the pipe). Nothing is
    lost: a batch counts only once the run's journal holds it."""
    while os.getppid() == parent:
        time.sleep(_POLL)
    os._exit(0)


def _end(
    key: int,
    sinks: dict[int, tuple[OrderSink, str]],
    tables: InvoiceTables,
    results: multiprocessing.Queue[Any],
) -> None:
    """Answer "parsed" (counts or error) at once, then "staged" once the batch is on disk."""
    try:
        sink, name = sinks.pop(key)
        sink.complete()
        batch = sink.combined()
        results.put(("parsed", key, None, count(batch, sink.missing)))
    except Exception as exc:
        results.put(("parsed", key, _describe(exc), None))
        return
    try:
        tables.stage(batch, name)
        results.put(("staged", key, None, None))
    except Exception as exc:
        results.put(("staged", key, _describe(exc), None))
    finally:
        del batch, sink
        pa.default_memory_pool().release_unused()  # mimalloc keeps freed pages otherwise


def _describe(exc: Exception) -> ExtractorError:
    """The error as the run sees it (errors pickle with their fields); anything else, which
    would be a bug, as a FatalError naming it."""
    if isinstance(exc, ExtractorError):
        return exc
    return FatalError(f"parser process: {type(exc).__name__}: {exc}")
