"""Running a run's coroutine so that SIGINT and SIGTERM stop it cleanly (the library's:
the Python API's ``handle_signals=True`` and every CLI command)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from extractor.engine.summary import attach, attached

T = TypeVar("T")


def run_until_signalled(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on an event loop of its own; SIGINT or SIGTERM cancels it, so that it
    stops cleanly (journal closed, parser processes stopped), then :class:`Interrupted`.
    asyncio is imported here, not with the module: ``extractor --help`` needs none of it."""
    import asyncio

    return asyncio.run(_until_signalled(coroutine))


async def _until_signalled(coroutine: Coroutine[Any, Any, T]) -> T:
    import asyncio

    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    received: list[int] = []

    def stop(signum: int) -> None:
        if not received:  # a second signal while stopping changes nothing
            main_task.cancel()
        received.append(signum)

    # only the main thread receives signals (a command run from a thread, as the in-process
    # CLI tests do, is stopped by its caller instead)
    signals = (signal.SIGINT, signal.SIGTERM) if _in_main_thread() else ()
    for signum in signals:
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await coroutine
    except asyncio.CancelledError as exc:
        if received:
            raise Interrupted(received[0], attached(exc)) from None
        raise
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class Interrupted(Exception):
    """The run was stopped by a signal, cleanly; ``record``: the record it left in ``_runs/``."""

    def __init__(self, signum: int, record: dict[str, Any] | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        if record is not None:
            attach(self, record)
