"""The options that make ``invoices`` and ``transactions`` run a fleet of identities, and
what turns a command's job into a fleet's (:func:`run_as_fleet`).

``--identity GUID`` (repeatable) or ``--identity all`` (less ``--exclude-identity``) picks
the identities from ``GetIdentities``. One ``--identity`` into a new output keeps today's
layout (that identity's run, nothing more); several, ``all``, or an output that already
holds a fleet run each identity as a task on a Dask cluster (:mod:`extractor.fleet`).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from extractor import log
from extractor.cli.common import EXIT_PARTIAL, show_document, stack
from extractor.cli.signals import run_command
from extractor.config import Credentials, ServiceConfig
from extractor.errors import UsageError
from extractor.fleet.cluster import PER_WORKER, cluster, scheduler_address

if TYPE_CHECKING:  # a fleet imports the engine when it runs: ``--help`` loads none of it
    from extractor.engine.destination import Destination
    from extractor.engine.lists import ListJob
    from extractor.jobs.invoices import InvoiceJob
    from extractor.jobs.ledger import TransactionJob
    from extractor.jobs.sync import SyncJob

F = TypeVar("F", bound=Callable[..., Any])
#: A command's job for one identity: (its out, its output, where its tables go).
JobFor = Callable[["Destination"], "InvoiceJob | TransactionJob | ListJob | SyncJob"]


@dataclass(frozen=True)
class FleetOptions:
    identities: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    workers: int = 1
    scheduler: str | None = None
    fleet_requests_per_hour: int = 0
    per_worker: int = PER_WORKER

    @property
    def asked(self) -> bool:
        return bool(self.identities or self.excluded)


def fleet_options(command: F) -> F:
    """The fleet's options, handed to the command as one ``fleet: FleetOptions``."""
    options = stack(
        click.option(
            "--identity", "identities", multiple=True, metavar="GUID|all",
            help="Extract this identity (client company); repeat it, or 'all' (GetIdentities, "
            "less disabled ones). Several run as a fleet on Dask.",
        ),
        click.option(
            "--exclude-identity", "excluded", multiple=True, metavar="GUID",
            help="Leave this identity out of --identity all (repeatable).",
        ),
        click.option(
            "--workers", type=click.IntRange(1, 512), default=os.cpu_count() or 1,
            show_default="the cores",
            help="Worker processes of the embedded Dask cluster (a fleet's).",
        ),
        click.option(
            "--identities-per-worker", "per_worker", type=click.IntRange(1, 64),
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

    @functools.wraps(command)
    def with_fleet(
        *args: Any, identities: tuple[str, ...], excluded: tuple[str, ...], workers: int,
        per_worker: int, scheduler: str | None, fleet_requests_per_hour: int, **kwargs: Any,
    ) -> Any:  # fmt: skip
        fleet = FleetOptions(
            identities, excluded, workers, scheduler, fleet_requests_per_hour, per_worker
        )
        return command(*args, fleet=fleet, **kwargs)

    return options(cast(F, with_fleet))


def run_as_fleet(
    command: str,
    where: Destination,
    service: ServiceConfig,
    options: FleetOptions,
    job_for: JobFor,
) -> Credentials | None:
    """Run ``command`` as a fleet when the options ask for one (and exit with its status);
    else the credentials of the one identity asked for, to run as today."""
    from extractor.fleet.layout import check_fleet_into, holds_fleet, member_dir
    from extractor.fleet.members import Member
    from extractor.fleet.run import Fleet, render_fleet, run_fleet
    from extractor.service.identities import ALL, chosen, listed_identities

    if options.excluded and list(options.identities) != [ALL]:
        raise UsageError("--exclude-identity leaves identities out of --identity all; give it")
    target, work, out = where.target, where.work, where.target.uri
    scheduler = scheduler_address(options.scheduler)
    if scheduler is not None and target.local is not None:
        raise UsageError(
            f"--scheduler: the workers of {scheduler} cannot all reach the local path {out}; "
            "give an --out they all reach (s3://bucket/prefix), or drop --scheduler"
        )
    credentials = Credentials.from_env()
    listed = run_command(listed_identities(service, credentials))
    members = chosen(listed, options.identities, options.excluded)
    alone = len(options.identities) == 1 and options.identities != (ALL,)
    if alone and not holds_fleet(work):
        return replace(credentials, identity_id=members[0].id)
    if not members:
        raise UsageError("no identity left to extract: every one is disabled or excluded")
    check_fleet_into(work, out)
    fleet = Fleet(
        command=command,
        members=[
            Member(
                identity,
                job_for(where.member(member_dir(work, identity.id), identity.id)),
                replace(credentials, identity_id=identity.id),
                log.current().format,
            )
            for identity in members
        ],
        work=work,
        target=target,
        fleet_requests_per_hour=options.fleet_requests_per_hour,
        delta=where.format == "delta",
    )
    workers = min(options.workers, len(members))
    with (
        where.locked(f"{command} (fleet)"),
        cluster(scheduler, workers, per_worker=options.per_worker) as client,
    ):
        summary = run_fleet(fleet, client)
    show_document(summary, lambda: render_fleet(summary))
    if summary["status"] != "complete":
        log.current().warning("partial", f"fleet was partial: see {summary['summary_file']}")
        sys.exit(EXIT_PARTIAL)
    sys.exit(0)
