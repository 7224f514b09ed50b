"""What turns a command's job into a fleet's: which identities ``identity`` names (guids, or
``all`` less ``exclude_identity``), whether they run alone or as a fleet, and the fleet's run
on a Dask cluster (:func:`launch`), for the Python API and so for the CLI.

One identity into a new output keeps the layout of a run of one identity (that identity's
run, nothing more); several, ``all``, or an output that already holds a fleet run each
identity as a task on a Dask cluster (:mod:`extractor.fleet.run`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from extractor.errors import UsageError
from extractor.fleet.cluster import PER_WORKER, cluster, scheduler_address

if TYPE_CHECKING:
    from extractor.config import Credentials, ServiceConfig
    from extractor.engine.destination import Destination
    from extractor.engine.lists import ListJob
    from extractor.jobs.invoices import InvoiceJob
    from extractor.jobs.ledger import TransactionJob
    from extractor.jobs.sync import SyncJob
    from extractor.log import Log

T = TypeVar("T")
#: One identity's job in a fleet, from its destination (its work folder, its partitions).
MemberJob = Callable[["Destination"], "InvoiceJob | TransactionJob | ListJob | SyncJob"]
#: How a coroutine is run to its end (the API's event loop, signals handled or not).
Runner = Callable[[Coroutine[Any, Any, Any]], Any]


@dataclass(frozen=True)
class FleetOptions:
    """Which identities a command extracts, and how their fleet runs (named as the flags)."""

    identity: tuple[str, ...] = ()  # guids, or ("all",); empty: TFSO_IDENTITY_ID's alone
    exclude_identity: tuple[str, ...] = ()
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    identities_per_worker: int = PER_WORKER
    scheduler: str | None = None
    fleet_requests_per_hour: int = 0

    @property
    def asked(self) -> bool:
        return bool(self.identity or self.exclude_identity)


@dataclass(frozen=True)
class FleetSummary:
    """What a fleet did: its status and each identity's outcome and run summary, as written
    to ``_runs/fleet-<run_id>.json`` (:meth:`as_json`)."""

    document: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.document["run_id"])

    @property
    def status(self) -> str:
        return str(self.document["status"])

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def identities(self) -> list[dict[str, Any]]:
        """Each identity's outcome: ``identity_id``, ``status``, ``error``, ``summary``."""
        return list(self.document["identities"])

    @property
    def summary_file(self) -> str:
        return str(self.document["summary_file"])

    def as_json(self) -> dict[str, Any]:
        return self.document


def launch(
    job: InvoiceJob | TransactionJob | ListJob | SyncJob,
    member_job: MemberJob,
    options: FleetOptions,
    credentials: Callable[[], Credentials],
    service: ServiceConfig,
    log: Log,
    run: Runner,
) -> FleetSummary | Credentials:
    """Run ``job`` as a fleet of the identities ``options`` name, each identity's job
    ``member_job`` of its destination (the fleet's summary); or, for one identity into an
    output no fleet holds, the ``credentials`` to run ``job`` alone as that identity
    (``run``: how the listing of identities is run)."""
    from extractor.fleet.layout import check_fleet_into, holds_fleet
    from extractor.service.identities import ALL, chosen, listed_identities

    job.check()  # refused once here, not by each identity's run
    if options.exclude_identity and list(options.identity) != [ALL]:
        raise UsageError("{exclude_identity} leaves identities out of {identity} all; give it")
    where = job.destination
    out = where.target.uri
    scheduler = scheduler_address(options.scheduler)
    if scheduler is not None and where.target.local is not None:
        raise UsageError(
            f"{{scheduler}}: the workers of {scheduler} cannot all reach the local path {out}; "
            "give an --out they all reach (s3://bucket/prefix), or drop --scheduler"
        )
    given = credentials()
    listed = run(listed_identities(service, given))
    members = chosen(listed, options.identity, options.exclude_identity)
    alone = len(options.identity) == 1 and options.identity != (ALL,)
    if alone and not holds_fleet(where.work):
        return replace(given, identity_id=members[0].id)
    if not members:
        raise UsageError("no identity left to extract: every one is disabled or excluded")
    check_fleet_into(where.work, out)
    return _run_fleet(job, member_job, members, options, scheduler, given, log)


def _run_fleet(
    job: InvoiceJob | TransactionJob | ListJob | SyncJob,
    member_job: MemberJob,
    members: list[Any],
    options: FleetOptions,
    scheduler: str | None,
    credentials: Credentials,
    log: Log,
) -> FleetSummary:
    from extractor.fleet.layout import member_dir
    from extractor.fleet.members import Member
    from extractor.fleet.run import Fleet, run_fleet

    where, command = job.destination, job.command
    work = where.work
    fleet = Fleet(
        command=command,
        members=[
            Member(
                identity,
                member_job(where.member(member_dir(work, identity.id), identity.id)),
                replace(credentials, identity_id=identity.id),
                log.format,
            )
            for identity in members
        ],
        work=work,
        target=where.target,
        fleet_requests_per_hour=options.fleet_requests_per_hour,
        delta=where.format == "delta",
    )
    workers = min(options.workers, len(members))
    with (
        where.locked(f"{command} (fleet)"),
        cluster(scheduler, workers, per_worker=options.identities_per_worker) as client,
    ):
        return FleetSummary(run_fleet(fleet, client, log=log))
