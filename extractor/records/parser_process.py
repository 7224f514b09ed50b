"""One parser process, as the run's event loop sees it (:class:`ParserProcess`): a plain
subprocess (:func:`~extractor.records.parse_worker.main`) and the loop's ends of its two pipes.

Chunks go out unpickled through a non-blocking write transport, whose buffer over
:data:`MAX_IN_FLIGHT` pauses the downloads feeding it; answers come back pickled through a
read transport, whose end says the process stopped or died. The process is started with the
run's ``sys.path`` and interpreter flags, and only what Python, the C library and the locale
read of the environment (never a credential), in a process group of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final

from extractor import schema
from extractor.errors import ExtractorError, FatalError, ParserDied
from extractor.parser import RawPart
from extractor.records import parse_worker

#: Bytes of response a parser process may have waiting, sent but not parsed, before the
#: downloads feeding it wait (beyond what its pipe holds, :data:`PIPE_BYTES`): the network
#: outrunning the parsers costs no memory. 4 MiB cost 5-10 MB of the tree's peak at 20,000
#: and 200,000 orders, for no speed.
MAX_IN_FLIGHT: Final = 1 * 1024 * 1024
#: What each pipe is asked to hold (Linux's own is 64 KiB: a 256 KiB chunk woke its reader
#: four times). Linux lets anyone ask for up to /proc/sys/fs/pipe-max-size, 1 MiB by default.
PIPE_BYTES: Final = 1024 * 1024
_LENGTH: Final = struct.Struct("!i")  # multiprocessing.Connection's framing: a length first


class ParserProcess(asyncio.Protocol):
    """One parser process and the event loop's ends of its two pipes: messages go out
    through a non-blocking write transport (its buffer, over :data:`MAX_IN_FLIGHT`, pauses
    the downloads), answers come in through a read transport, whose end says the process
    died (or stopped)."""

    def __init__(
        self,
        environment: dict[str, str],
        replace: Callable[[ParserProcess], Awaitable[ExtractorError]],
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
                [sys.executable, *interpreter_flags(), "-c", _BOOT, str(inbox), str(answers)],
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
        # while the pool starts another, a body opened here fails as one to fetch again
        self.died = ParserDied(f"a parser process died (exit code {self.process.returncode})")
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
    """The write transport's protocol: passes its pauses on to the :class:`ParserProcess`."""

    def __init__(self, parser: ParserProcess) -> None:
        self._parser = parser

    @classmethod
    def of(cls, parser: ParserProcess) -> Callable[[], _Flow]:
        return lambda: cls(parser)

    def pause_writing(self) -> None:
        self._parser.pause_writing()

    def resume_writing(self) -> None:
        self._parser.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._parser.written_off()


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


def helper_environment() -> dict[str, str]:
    """What a parser process sees of the environment (:data:`_KEPT`), and the run's
    ``sys.path``."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name in _KEPT or name.startswith(_KEPT_PREFIXES)
    }
    environment["EXTRACTOR_PARSER_PATH"] = json.dumps([str(entry) for entry in sys.path])
    return environment


def interpreter_flags() -> list[str]:
    """The run's interpreter flags (``-I``, ``-E``, ``-X ...``), as multiprocessing's spawn
    passes them on (through the same function of the standard library)."""
    flags: Any = getattr(subprocess, "_args_from_interpreter_flags", list)
    return list(flags())
