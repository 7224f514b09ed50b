"""Named moments of a run where a crash test can have the process SIGKILL itself.

``EXTRACTOR_KILL_AT=NAME`` kills the process the first time it reaches ``NAME``;
``NAME@N`` the N-th time. The names: ``journal:<event>`` once an event of that kind is
durably in the journal (``journal:plan``, ``journal:staged``, ``journal:published``),
``publish:written`` once the partitions are written but not yet revealed, and the Delta
commits' ``before-commits`` and ``between-commits``. A test thus crashes a run at an exact
point, however fast or loaded the machine, instead of after a guessed number of seconds.
With ``EXTRACTOR_KILL_ONCE=PATH`` too, only the first process to create the file ``PATH``
dies: one worker of a fleet, whose others (and its replacement) go on.
"""

from __future__ import annotations

import collections
import os
import signal
from typing import Final

KILL_AT: Final = "EXTRACTOR_KILL_AT"
KILL_ONCE: Final = "EXTRACTOR_KILL_ONCE"
_reached: collections.Counter[str] = collections.Counter()


def checkpoint(name: str) -> None:
    """Die here if the environment asks for it."""
    wanted = os.environ.get(KILL_AT)
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] >= int(nth or 1) and _first(os.environ.get(KILL_ONCE)):
        os.kill(os.getpid(), signal.SIGKILL)


def _first(marker: str | None) -> bool:
    """Whether this process is the one to die: always, or the first to create ``marker``."""
    if not marker:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
