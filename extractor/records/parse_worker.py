"""A parser process's side of :mod:`~extractor.records.parse_pool`: bytes in, raw parts out.

The process imports lxml and :mod:`extractor.parser`, never pyarrow: the Arrow library and
its compute kernels were two thirds of a parser process's memory, and the parse itself
needs neither. Each response is fed, chunk by chunk, to a
:class:`~extractor.parser.PartStream`; its raw parts (plain tuples of bytes) go back to
the run's process as they are collected, and are typed and staged there once the response
is complete.

Two pipes, no queue: the run's process writes each message as a :data:`HEADER` (kind,
response key, a number), a chunk's header followed by the chunk's bytes as a message of
their own (fed to libxml2 as read: no pickling, no copy); answers go back pickled. The
pipes' own buffers are the backpressure, so no chunk is acknowledged. And the process
starts no thread: glibc's allocator then takes no lock per ``malloc``, a tenth of a
parser's time when it had a watchdog thread. None is needed: the process ends when its
inbox ends (the run's process closed it, or is gone, killed or not). It is started as a
plain subprocess (:func:`main`), not by multiprocessing, whose spawning also starts a
resource tracker process, and imports the caller's ``__main__`` again.
"""

from __future__ import annotations

import pickle
import struct
import sys
from multiprocessing.connection import Connection
from typing import Any, Final

from extractor import memory, schema
from extractor.errors import ExtractorError, FatalError, ResponseTooLarge
from extractor.parser import PartStream

#: A message's header: its kind, the response's key, and a number (the ids asked, for BEGIN).
HEADER: Final = struct.Struct("!BQQ")
BEGIN, CHUNK, END, ABORT, STOP = range(5)


def main(argv: list[str]) -> None:
    """The process's entry (``argv``: the inbox's and the answers' file descriptors): the
    first message is the shape of the records, pickled."""
    inbox = Connection(int(argv[0]), writable=False)
    results = Connection(int(argv[1]), readable=False)
    try:
        shape = pickle.loads(inbox.recv_bytes())
    except (EOFError, OSError):
        return  # the run's process is gone already
    serve(inbox, results, shape)


def serve(inbox: Connection, results: Connection, shape: tuple[str, schema.Struct, str]) -> None:
    """Read messages until STOP or the inbox's end, answering as parts are collected."""
    responses = _Responses(shape)
    try:
        while (header := HEADER.unpack(inbox.recv_bytes()))[0] != STOP:
            kind, key, number = header
            chunk = inbox.recv_bytes() if kind == CHUNK else b""
            answers = responses.take(kind, key, number, chunk)
            for answer in answers:
                results.send_bytes(pickle.dumps(answer, pickle.HIGHEST_PROTOCOL))
            if answers:
                del answers
                memory.trim()  # else the heap keeps the largest part's high-water mark
    except (EOFError, OSError):
        return  # the run's process is gone: nobody to answer


Answer = tuple[str, int, ExtractorError | None, Any]


class _Responses:
    """One :class:`PartStream` (``shape``: record tag, struct, namespace) per response in
    flight. Each part goes back as soon as it is collected (``("part", key, None, part)``),
    so a parser holds a part, not a response; the end of a response, or its failure, is
    answered ``("parsed", key, error, None)``. A body that fails is answered at once, so
    that its download stops; its later chunks are dropped."""

    def __init__(self, shape: tuple[str, schema.Struct, str]) -> None:
        self._shape = shape
        self._streams: dict[int, PartStream] = {}
        self._asked: dict[int, int] = {}  # ids each response was asked for
        self._held: dict[int, int] = {}  # orders each response sent so far

    def take(self, kind: int, key: int, number: int, chunk: bytes) -> list[Answer]:
        """One message; the answers to send."""
        streams = self._streams
        try:
            if kind == BEGIN:
                streams[key] = PartStream(*self._shape)
                self._asked[key], self._held[key] = number, 0
            elif kind == CHUNK and key in streams:
                streams[key].feed(chunk)
                return self._parts(key)
            elif kind == END and key in streams:  # else it failed, and was answered
                streams[key].complete()
                parts = self._parts(key)
                self._forget(key)
                return [*parts, ("parsed", key, None, None)]
            elif kind == ABORT:
                self._forget(key)
        except Exception as exc:  # an ExtractorError, or a bug: report it rather than hang
            self._forget(key)
            return [("parsed", key, describe(exc), None)]
        return []

    def _parts(self, key: int) -> list[Answer]:
        """The parts collected since the last answer, counted against the ids asked for."""
        stream = self._streams[key]
        parts, stream.parts = stream.parts, []
        self._held[key] += sum(len(part[1]) if part[0] == "r" else part[1] for part in parts)
        _check_count(self._held[key], self._asked[key])
        return [("part", key, None, part) for part in parts]

    def _forget(self, key: int) -> None:
        for held in (self._streams, self._asked, self._held):
            held.pop(key, None)


def _check_count(held: int, asked: int) -> None:
    """A body holding far more orders than were asked for (an endless one, repeating) is
    refused while it arrives: the run's process holds its parts until it ends, so they must
    stay bounded."""
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


if __name__ == "__main__":
    main(sys.argv[1:])
