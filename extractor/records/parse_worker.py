"""A parser process's side of :mod:`~extractor.records.parse_pool`: bytes in, raw parts out.

The process imports lxml and :mod:`extractor.parser`, never pyarrow: the Arrow library and
its compute kernels were two thirds of a parser process's memory, and the parse itself
needs neither. Each response is fed, chunk by chunk, to a
:class:`~extractor.parser.PartStream`; once complete, its raw parts (plain tuples of
bytes) go back to the run's process, which types them and stages them.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from typing import Any, Final

from extractor import memory, schema
from extractor.errors import ExtractorError, FatalError, ResponseTooLarge
from extractor.parser import PartStream

POLL: Final = 0.5


def serve(
    inbox: multiprocessing.Queue[Any],
    results: multiprocessing.Queue[Any],
    shape: tuple[str, schema.Struct, str],
    number: int,
    parent: int,
) -> None:
    """A parser process: keeps one :class:`PartStream` (``shape``: record tag, struct,
    namespace) per response in flight. Each chunk is acknowledged once parsed ("ate"); a
    body that fails is answered at once, so that its download stops. ``parent`` is the
    run's pid, given rather than read here: a run killed while this process was still
    starting is already gone, and ``getppid`` says 1."""
    streams: dict[int, PartStream] = {}
    failed: set[int] = set()  # answered already: their later chunks and end are ignored
    asked: dict[int, int] = {}  # ids each response was asked for
    threading.Thread(target=_end_with_parent, args=(parent,), daemon=True).start()
    while (message := inbox.get())[0] != "stop":
        kind, key = message[0], message[1]
        try:
            if kind == "begin":
                streams[key] = PartStream(*shape)
                asked[key] = message[2]
            elif kind == "chunk":
                try:
                    if key in streams:
                        streams[key].feed(message[2])
                        _check_count(streams[key], asked[key])
                finally:
                    results.put(("ate", key, None, (number, len(message[2]))))
            elif kind == "abort":
                streams.pop(key, None)
                failed.discard(key)
            elif kind == "end" and key not in failed:
                stream = streams.pop(key)
                stream.complete()
                results.put(("parsed", key, None, stream.parts))
                del stream
                memory.trim()  # else the heap keeps the largest response's high-water mark
            elif kind == "end":
                failed.discard(key)
        except Exception as exc:  # an ExtractorError, or a bug: report it rather than hang
            streams.pop(key, None)
            failed.add(key)
            results.put(("parsed", key, describe(exc), None))


def _check_count(stream: PartStream, asked: int) -> None:
    """A body holding far more orders than were asked for (an endless one, repeating) is
    refused while it arrives: its parts are held until it ends, so they must stay bounded."""
    held = sum(len(part[1]) if part[0] == "r" else part[1] for part in stream.parts)
    if held > 2 * asked + 1000:
        raise ResponseTooLarge(
            f"the response holds over {held:,} orders for {asked:,} ids asked for; aborted"
        )


def _end_with_parent(parent: int) -> None:
    """Once the run's process is gone (killed, say), end this one at once, wherever its main
    thread is blocked (a killed writer can leave half a message in the pipe). Nothing is
    lost: a batch counts only once the run's journal holds it."""
    while os.getppid() == parent:
        time.sleep(POLL)
    os._exit(0)


def describe(exc: Exception) -> ExtractorError:
    """The error as the run sees it (errors pickle with their fields); anything else, which
    would be a bug, as a FatalError naming it."""
    if isinstance(exc, ExtractorError):
        return exc
    return FatalError(f"parser process: {type(exc).__name__}: {exc}")
