"""What time it is, and the names of runs that derive from it."""

from __future__ import annotations

import datetime as dt
import secrets


def now() -> dt.datetime:
    """The current time, in UTC."""
    return dt.datetime.now(dt.UTC)


def new_run_id() -> str:
    """A run's id: when it began, and a few random hex digits (two runs in one second)."""
    return now().strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
