"""Where a fleet's jobs run: an embedded Dask ``LocalCluster`` on 127.0.0.1 by default, or an
existing cluster by its scheduler's address (``--scheduler``, ``DASK_SCHEDULER_ADDRESS``).

Each worker is a process; a task runs one identity's asyncio job, and its parsing, in one of
the worker's threads, so parsing spreads over the cluster's cores. A worker runs several
identities at once (``per_worker`` threads): an identity's run spends most of its time
waiting for the service (its rate limit, its latency), so one run a core leaves the core
idle. Dask is imported here only: a run of one identity never loads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from extractor import log
from extractor.errors import FatalError, InvalidOption

if TYPE_CHECKING:
    from distributed import Client

SCHEDULER_VARIABLE: Final = "DASK_SCHEDULER_ADDRESS"
#: How long to wait for an existing scheduler to answer.
CONNECT_TIMEOUT: Final = "10s"
#: Identities a worker process runs at once (its threads).
PER_WORKER: Final = 4


def scheduler_address(given: str | None) -> str | None:
    """The scheduler to use: ``--scheduler``, else the environment's, else None (embedded)."""
    address = (given or os.environ.get(SCHEDULER_VARIABLE) or "").strip()
    if address and "://" not in address:
        raise InvalidOption(f"{{scheduler}} {address!r}: expected tcp://host:port")
    return address or None


@contextlib.contextmanager
def cluster(
    scheduler: str | None,
    workers: int,
    connect_timeout: str = CONNECT_TIMEOUT,
    per_worker: int = PER_WORKER,
) -> Iterator[Client]:
    """A client of the cluster at ``scheduler``, or of an embedded ``LocalCluster`` of
    ``workers`` processes of ``per_worker`` threads on 127.0.0.1, stopped on leaving."""
    from distributed import Client, LocalCluster

    if workers < 1 or per_worker < 1:
        raise InvalidOption(
            f"{{workers}} {workers} and {{identities_per_worker}} {per_worker} must be at least 1"
        )
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=connect_timeout)  # type: ignore[no-untyped-call]
        except (OSError, TimeoutError) as exc:
            raise FatalError(
                f"cannot reach the Dask scheduler at {scheduler}: {exc}; check {{scheduler}}"
            ) from None
        with client:
            yield client
        return
    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers,
            threads_per_worker=per_worker,
            processes=True,
            host="127.0.0.1",
            # the scheduler serves HTTP (metrics) whatever this says; None binds it to port
            # 8787 on every interface, refused when another cluster holds it
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        ) as local,
        Client(local) as client,  # type: ignore[no-untyped-call]
    ):
        log.capture_others()  # Dask's own loggers too, in JSON
        yield client
