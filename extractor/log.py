"""What the extractor tells whoever watches it: events, as text for people or JSON Lines for
machines (``--log-format json``), on stderr.

Every event has a name (``plan``, ``progress``, ``paused``, ``publishing``, ``finished``, ...),
a level, a line of text and the counts it is about. As text, it is that line; on a stream that
is not a terminal, after a UTC timestamp. As JSON, one object a line::

    {"time": "2026-12-03T09:50:35.120Z", "level": "info", "event": "plan",
     "run_id": "20261203T095035Z-3f2a", "message": "...", "ids": 1200}

``run_id`` is on every line: the run the event is about once it has one, until then the
invocation's own id; once the invocation's run has its id (a sync's or a fleet's own), the
process's last events (``error``, ``interrupted``) carry it too (:func:`claim_run`);
``identity_id`` and ``command`` where they are known. ``-q`` keeps warnings and errors only,
``-v`` adds debug events (each retry).

The command line configures the process's log once (:func:`configure`); library calls given
a plain stream (a test's ``StringIO``) write text to it; every text passes
:func:`extractor.redact.mask`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import IO, Any, Final, Literal

import orjson

from extractor import redact

Format = Literal["text", "json"]
Level = Literal["debug", "info", "warning", "error"]
FORMATS: Final = ("text", "json")
_RANK: Final = {"debug": 10, "info": 20, "warning": 30, "error": 40}
#: The lowest level shown, by verbosity (-1: ``-q``, 0, 1: ``-v``).
_THRESHOLD: Final = {-1: 30, 0: 20, 1: 10}
_CLEAR: Final = "\r\033[K"


@dataclass(frozen=True)
class Log:
    """Where events go, and what every one of them carries (``run_id``, ``identity_id``)."""

    stream: IO[str] | None = None  # None: the process's stderr at the time of writing
    format: Format = "text"
    verbosity: int = 0
    context: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def to(cls, where: IO[str] | Log | None) -> Log:
        """``where`` as a log: a log as it is, a stream as text, None as the process's log."""
        if isinstance(where, Log):
            return where
        if where is None:
            return _configured
        return cls(where)

    @property
    def out(self) -> IO[str]:
        return self.stream if self.stream is not None else sys.stderr

    @property
    def live(self) -> bool:
        """A line redrawn in place: text on a terminal, not quietened."""
        return self.format == "text" and self.verbosity >= 0 and _isatty(self.out)

    def bind(self, **context: Any) -> Log:
        """This log, with ``context`` on every event from now on."""
        return replace(self, context={**self.context, **context})

    def shows(self, level: Level) -> bool:
        return _RANK[level] >= _THRESHOLD[max(-1, min(1, self.verbosity))]

    def debug(self, event: str, message: str, **counts: Any) -> None:
        self.emit("debug", event, message, counts)

    def info(self, event: str, message: str, **counts: Any) -> None:
        self.emit("info", event, message, counts)

    def warning(self, event: str, message: str, **counts: Any) -> None:
        self.emit("warning", event, message, counts)

    def error(self, event: str, message: str, **counts: Any) -> None:
        self.emit("error", event, message, counts)

    def emit(self, level: Level, event: str, message: str, counts: Mapping[str, Any]) -> None:
        if not self.shows(level):
            return
        message = redact.mask(message.replace("\n", " "))
        if self.format == "json":
            self._write(self._json(level, event, message, counts) + "\n")
        elif self.live:
            self._write(f"{_CLEAR}{message}\n")
        else:
            self._write(f"{stamp()} {message}\n")

    def status(self, message: str, **counts: Any) -> None:
        """The live state of a run: redrawn in place on a terminal, else a ``progress`` event
        (text: ``progress: ...``)."""
        if self.live:
            self._write(f"{_CLEAR}{redact.mask(message)}")
        else:
            self.info("progress", f"progress: {message}", **counts)

    def clear(self) -> None:
        """Wipe the live line (before the summary, or a line that is not the log's)."""
        if self.live:
            self._write(_CLEAR)

    def _json(self, level: str, event: str, message: str, counts: Mapping[str, Any]) -> str:
        record = {"time": stamp(), "level": level, "event": event, **self.context}
        record.update(counts)
        record["message"] = message
        return redact.mask(orjson.dumps(record, default=str).decode())

    def _write(self, text: str) -> None:
        """Write and flush; a reader that went away (``2>&1 | head``, a closed pipe, a full
        disk under a log file) silences the log, it does not stop the run."""
        out = self.out
        with contextlib.suppress(TypeError):  # a stream without weak references: no note
            if out in _GONE:
                return
        try:
            out.write(text)
            out.flush()
        except (OSError, ValueError):  # BrokenPipeError, ENOSPC, a closed file
            with contextlib.suppress(TypeError):
                _GONE.add(out)


def stamp() -> str:
    """Now, in UTC to the millisecond: ``2026-12-03T09:50:35.120Z``."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream
        return False


#: The streams that could not be written any more: not tried again.
_GONE: weakref.WeakSet[IO[str]] = weakref.WeakSet()
#: The process's log: what :func:`configure` made of the command line's flags.
_configured: Log = Log()
#: Whether the invocation's run has yet to claim the process's log (:func:`claim_run`).
_claimable = False


def configure(format: Format = "text", verbosity: int = 0, **context: Any) -> Log:
    """Set the process's log (the command line does, at every invocation); it."""
    global _configured, _claimable
    _configured = Log(None, format, verbosity, context)
    _claimable = "run_id" in context  # an invocation's own id, until its run claims it
    return _configured


def claim_run(run_id: str) -> None:
    """The invocation's run has its id: the process's log carries it from now on (the last
    events, ``interrupted`` or ``error``, are about that run). The first claim after
    :func:`configure` counts (a sync's or a fleet's own id, not its parts'); a library call
    outside a command invocation changes nothing."""
    global _configured, _claimable
    if _claimable:
        _claimable = False
        _configured = _configured.bind(run_id=run_id)


def current() -> Log:
    """The process's log."""
    return _configured


def capture_others() -> None:
    """In JSON, what libraries say goes through the process's log too: Python warnings
    (``python_warning``) and ``logging`` records (``library_log``, of WARNING and above; a
    library's own stderr handlers, Dask's, are replaced), so that every stderr line stays one
    JSON object. As text they are left as they are. Call it again after importing a library
    that sets up its logging (the fleet does, once its cluster is up)."""
    if _configured.format != "json":
        return
    if warnings.showwarning is not _show_warning:
        _SHOWN.append(warnings.showwarning)
        warnings.showwarning = _show_warning
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and logger.handlers  # distributed has its own
    ]
    for logger in loggers:
        stderr = [
            handler for handler in logger.handlers
            if isinstance(handler, logging.StreamHandler)
            and handler.stream in (sys.stderr, sys.__stderr__)
        ]  # fmt: skip
        for handler in stderr:
            logger.removeHandler(handler)
        ours = any(isinstance(handler, _Handler) for handler in logger.handlers)
        if (logger is logging.root or stderr) and not ours:
            logger.addHandler(_Handler(logging.WARNING))
    logging.lastResort = None  # no bare text for a record nobody handles


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int,
    file: IO[str] | None = None, line: str | None = None,
) -> None:  # fmt: skip
    if _configured.format != "json":  # the process went back to text (tests do)
        _SHOWN[-1](message, category, filename, lineno, file, line)
        return
    _configured.warning(
        "python_warning", f"{category.__name__}: {message}", category=category.__name__,
        file=filename, line=lineno,
    )  # fmt: skip


#: ``warnings.showwarning`` as it was before :func:`capture_others`.
_SHOWN: list[Callable[..., None]] = []


class _Handler(logging.Handler):
    """``logging`` records as events of the process's log."""

    def emit(self, record: logging.LogRecord) -> None:
        if _configured.format != "json":
            return
        level: Level = "error" if record.levelno >= logging.ERROR else "warning"
        if record.levelno < logging.WARNING:
            level = "info" if record.levelno >= logging.INFO else "debug"
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        _configured.emit(level, "library_log", message, {"logger": record.name})
