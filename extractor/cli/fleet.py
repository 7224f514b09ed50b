"""The options that make ``invoices`` and ``transactions`` run a fleet of identities, and
what turns a command's job into a fleet's (:func:`run_as_fleet`).

``--identity GUID`` (repeatable) or ``--identity all`` (less ``--exclude-identity``) picks
the identities from ``GetIdentities``. One ``--identity`` into a new output keeps today's
layout (that identity's run, nothing more); several, ``all``, or an output that already
holds a fleet run each identity as a task on a Dask cluster (:mod:`extractor.fleet`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from extractor import log
from extractor.cli.common import EXIT_PARTIAL, show_summary, stack
from extractor.cli.signals import run_command
from extractor.config import Credentials, ServiceConfig
from extractor.errors import UsageError
from extractor.fleet.cluster import PER_WORKER, cluster, scheduler_address

if TYPE_CHECKING:  # a fleet imports the engine when it runs: ``--help`` loads none of it
    from extractor.jobs.invoices import InvoiceJob
    from extractor.jobs.ledger import TransactionJob
    from extractor.jobs.sync import SyncJob
    from extractor.output.parquet import Output
    from extractor.output.staging import Placement
    from extractor.output.targets import Target

F = TypeVar("F", bound=Callable[..., Any])
#: A command's job for one identity: (its out, its output, where its tables go).
JobFor = Callable[[Path, "Output | None", "Placement"], "InvoiceJob | TransactionJob | SyncJob"]


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


@dataclass(frozen=True)
class Where:
    """Where a command writes: its target, its work root, its output (None: local Parquet
    in the target's directory, which is also the work root)."""

    target: Target
    work: Path
    output: Output | None
    work_dir: Path | None  # as given (--work-dir)


def run_as_fleet(
    command: str,
    where: Where,
    service: ServiceConfig,
    options: FleetOptions,
    job_for: JobFor,
) -> Credentials | None:
    """Run ``command`` as a fleet when the options ask for one (and exit with its status);
    else the credentials of the one identity asked for, to run as today."""
    from extractor.fleet.layout import check_fleet_into, holds_fleet
    from extractor.fleet.members import Member
    from extractor.fleet.run import Fleet, render_fleet, run_fleet
    from extractor.output.lock import OutputLock, target_lock
    from extractor.service.identities import ALL, chosen, listed_identities

    if options.excluded and list(options.identities) != [ALL]:
        raise UsageError("--exclude-identity leaves identities out of --identity all; give it")
    target, work, output, out = where.target, where.work, where.output, where.target.uri
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
                _member_job(job_for, work, output, identity.id),
                replace(credentials, identity_id=identity.id),
                log.current().format,
            )
            for identity in members
        ],
        work=work,
        target=target,
        fleet_requests_per_hour=options.fleet_requests_per_hour,
        delta=output is not None and output.format == "delta",
    )
    workers = min(options.workers, len(members))
    with (  # the target's locks before the fleet's own folder's, as every command takes them
        target_lock(target, where.work_dir, command) if output else contextlib.nullcontext(),
        OutputLock.take(work, f"{command} (fleet)"),
        cluster(scheduler, workers, per_worker=options.per_worker) as client,
    ):
        summary = run_fleet(fleet, client)
    show_summary(summary, render_fleet)
    if summary["status"] != "complete":
        log.current().warning("partial", f"fleet was partial: see {summary['summary_file']}")
        sys.exit(EXIT_PARTIAL)
    sys.exit(0)


def _member_job(
    job_for: JobFor, work: Path, output: Output | None, identity: str
) -> InvoiceJob | TransactionJob | SyncJob:
    """The command's job for one identity: its run under ``_identities/<guid>/``, its tables
    under ``identity_id=<guid>`` of the fleet's (for local Parquet, in ``work`` itself)."""
    from extractor.fleet.layout import member_dir
    from extractor.output.parquet import ParquetOutput
    from extractor.output.staging import Placement

    own = member_dir(work, identity)
    if output is None:  # local Parquet: the tables are in the fleet's root
        return job_for(own, ParquetOutput.at(work), Placement(work, identity))
    if output.format == "delta":  # its part of the fleet's tables
        from extractor.output.delta import DeltaOutput

        assert isinstance(output, DeltaOutput)
        return job_for(own, replace(output, identity=identity), Placement(None, identity))
    return job_for(own, output, Placement(None, identity))
