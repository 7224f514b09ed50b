"""The options that make ``invoices``, ``transactions``, ``tables`` and ``sync`` run a fleet
of identities, named as the API's keyword arguments (:mod:`extractor.fleet.launch` decides
and runs the fleet).

``--identity GUID`` (repeatable) or ``--identity all`` (less ``--exclude-identity``) picks
the identities from ``GetIdentities``. One ``--identity`` into a new output keeps today's
layout (that identity's run, nothing more); several, ``all``, or an output that already
holds a fleet run each identity as a task on a Dask cluster (:mod:`extractor.fleet`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from extractor.cli.common import stack
from extractor.fleet.cluster import PER_WORKER

F = TypeVar("F", bound=Callable[..., Any])

#: The fleet's options, handed to the command as the API's keyword arguments of the same
#: names (``identity``, ``exclude_identity``, ``workers``, ``identities_per_worker``,
#: ``scheduler``, ``fleet_requests_per_hour``).
fleet_options: Callable[[F], F] = stack(
    click.option(
        "--identity", "identity", multiple=True, metavar="GUID|all",
        help="Extract this identity (client company); repeat it, or 'all' (GetIdentities, "
        "less disabled ones). Several run as a fleet on Dask.",
    ),
    click.option(
        "--exclude-identity", "exclude_identity", multiple=True, metavar="GUID",
        help="Leave this identity out of --identity all (repeatable).",
    ),
    click.option(
        "--workers", type=click.IntRange(1, 512), default=os.cpu_count() or 1,
        show_default="the cores",
        help="Worker processes of the embedded Dask cluster (a fleet's).",
    ),
    click.option(
        "--identities-per-worker", "identities_per_worker", type=click.IntRange(1, 64),
        default=PER_WORKER, show_default=True,
        help="Identities each worker runs at once (they mostly wait for the service).",
    ),
    click.option(
        "--scheduler",
        help="An existing Dask cluster's scheduler, tcp://host:8786 "
        "(default: DASK_SCHEDULER_ADDRESS, else an embedded cluster).",
    ),
    click.option(
        "--fleet-requests-per-hour", type=click.IntRange(0), default=0, show_default=True,
        help="A budget all identities share, on top of each one's own (0: none).",
    ),
)  # fmt: skip
