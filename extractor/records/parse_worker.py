"""A parser process's side of :mod:`~extractor.records.parse_pool`: bytes in, raw parts out.

The process imports lxml and :mod:`extractor.parser`, never pyarrow: the Arrow library and
its compute kernels were two thirds of a parser process's memory, and the parse itself
needs neither. Each response is fed, chunk by chunk, to a
:class:`~extractor.parser.PartStream`; once complete, its raw parts (plain tuples of
bytes) go back to the run's process, which types them and stages them.

Two pipes, no queue: the run's process writes each message as a :data:`HEADER` (kind,
response key, a number), a chunk's header followed by the chunk's bytes as a message of
their own (fed to libxml2 as read: no pickling, no copy); answers go back pickled. The
pipes' own buffers are the backpressure, so no chunk is acknowledged. And the process
starts no thread: glibc's allocator then takes no lock per ``malloc``, a tenth of a
parser's time when it had a watchdog thread. None is needed: the process ends when its
inbox ends (the run's process closed it, or is gone, killed or not).
"""

from __future__ import annotations

import pickle
import struct
from multiprocessing.connection import Connection
from typing import Any, Final

from extractor import memory, schema
from extractor.errors import ExtractorError, FatalError, ResponseTooLarge
from extractor.parser import PartStream

#: A message's header: its kind, the response's key, and a number (the ids asked, for BEGIN).
HEADER: Final = struct.Struct("!BQQ")
BEGIN, CHUNK, END, ABORT, STOP = range(5)


def serve(inbox: Connection, results: Connection, shape: tuple[str, schema.Struct, str]) -> None:
    """A parser process: reads messages until STOP or the inbox's end, answering each
    finished (or failed) response."""
    responses = _Responses(shape)
    try:
        while (header := HEADER.unpack(inbox.recv_bytes()))[0] != STOP:
            kind, key, number = header
            chunk = inbox.recv_bytes() if kind == CHUNK else b""
            answer = responses.take(kind, key, number, chunk)
            if answer is not None:
                results.send_bytes(pickle.dumps(answer, pickle.HIGHEST_PROTOCOL))
                del answer
                memory.trim()  # else the heap keeps the largest response's high-water mark
    except (EOFError, OSError):
        return  # the run's process is gone: nobody to answer


class _Responses:
    """One :class:`PartStream` (``shape``: record tag, struct, namespace) per response in
    flight. A body that fails is answered at once, so that its download stops; its later
    chunks are dropped."""

    def __init__(self, shape: tuple[str, schema.Struct, str]) -> None:
        self._shape = shape
        self._streams: dict[int, PartStream] = {}
        self._asked: dict[int, int] = {}  # ids each response was asked for

    def take(
        self, kind: int, key: int, number: int, chunk: bytes
    ) -> tuple[str, int, ExtractorError | None, Any] | None:
        """One message; the answer to send, if any."""
        streams = self._streams
        try:
            if kind == BEGIN:
                streams[key] = PartStream(*self._shape)
                self._asked[key] = number
            elif kind == CHUNK and key in streams:
                streams[key].feed(chunk)
                _check_count(streams[key], self._asked[key])
            elif kind == END and key in streams:  # else it failed, and was answered
                stream = self._forget(key)
                assert stream is not None
                stream.complete()
                return ("parsed", key, None, stream.parts)
            elif kind == ABORT:
                self._forget(key)
        except Exception as exc:  # an ExtractorError, or a bug: report it rather than hang
            self._forget(key)
            return ("parsed", key, describe(exc), None)
        return None

    def _forget(self, key: int) -> PartStream | None:
        self._asked.pop(key, None)
        return self._streams.pop(key, None)


def _check_count(stream: PartStream, asked: int) -> None:
    """A body holding far more orders than were asked for (an endless one, repeating) is
    refused while it arrives: its parts are held until it ends, so they must stay bounded."""
    held = sum(len(part[1]) if part[0] == "r" else part[1] for part in stream.parts)
    if held > 2 * asked + 1000:
        raise ResponseTooLarge(
            f"the response holds over {held:,} orders for {asked:,} ids asked for; aborted"
        )


def describe(exc: Exception) -> ExtractorError:
    """The error as the run sees it (errors pickle with their fields); anything else, which
    would be a bug, as a FatalError naming it."""
    if isinstance(exc, ExtractorError):
        return exc
    return FatalError(f"parser process: {type(exc).__name__}: {exc}")
