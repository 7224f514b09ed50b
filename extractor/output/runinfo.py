"""What a run's published records and commits carry (:class:`RunInfo`), in a module of its
own: a journal's state makes one, and ``status`` reads journals without loading Arrow."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class RunInfo:
    """What a run's published records and commits carry."""

    run_id: str
    as_of: dt.datetime  # UTC, when the run began listing what to fetch
