"""The Python API: one function a command, the same jobs the CLI runs, for a scheduler's task
(an Airflow operator, a Dagster asset) or a notebook::

    import extractor

    summary = extractor.sync("s3://lake/24so", reconcile=True)
    if not summary.complete:
        ...  # some ids or lists could not be fetched: the next sync fetches them
    checked = extractor.verify("s3://lake/24so")

Keyword arguments are named as the command's flags (``--max-requests-per-hour`` is
``max_requests_per_hour``, ``--format`` is ``format``, ``--from`` is ``date_from``).
Credentials come from the environment (``TFSO_*``) unless ``credentials`` is given; nothing
is printed unless ``log`` is given (a stream, or an :class:`extractor.log.Log`); a typed
summary is returned (:class:`~extractor.engine.summary.RunSummary`,
:class:`~extractor.engine.summary.SyncSummary`, :class:`~extractor.jobs.verify.Verification`,
:class:`UpdateOutcome`); every failure is raised from the error tree
(:mod:`extractor.errors`): a :class:`~extractor.errors.UsageError` for what the caller must
correct (before any request), a :class:`~extractor.errors.FatalError` for what a retry will
not mend (a refused login, an output that cannot be written), other errors for what a later
run may. Nothing here exits the process. Each function runs its own event loop: call it
from synchronous code (from async code, in a thread: ``asyncio.to_thread``).

A partial run is not an error: its summary says ``partial`` and the same call again fetches
exactly what is left. ``identity`` picks one identity (client company); several, or
``"all"``, run as a fleet on Dask, one run an identity, and return a
:class:`~extractor.fleet.launch.FleetSummary`. ``handle_signals=True`` makes SIGINT and
SIGTERM stop a run cleanly (journal closed, parser processes stopped) and raise
:class:`~extractor.signals.Interrupted`: what the CLI does; the same call resumes.

The CLI is a thin layer over these functions: it parses the flags, calls them, and renders
what they return (or raise) as text or JSON and an exit status.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from extractor.config import (
    DEFAULT_PARSE_WORKERS,
    DEFAULT_SINCE,
    DEFAULT_UPDATE_SERVICE,
    MAX_OVERLAP_MINUTES,
    Credentials,
    ServiceConfig,
)
from extractor.errors import UsageError
from extractor.invocation import (
    Call,
    RunOptions,
    ServiceSettings,
    as_identity,
    dataset,
    destination,
    joined,
    list_specs,
    naive,
    path_or_none,
    quiet_unless,
    run,
    service_of,
)
from extractor.log import Log

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's from 3.12 on

    from extractor.engine.destination import Destination
    from extractor.engine.summary import RunSummary, SyncSummary
    from extractor.fleet.launch import FleetSummary
    from extractor.jobs.sync import SyncJob
    from extractor.jobs.update_journal import UpdateJournal
    from extractor.jobs.verify import Verification
    from extractor.records.update_files import Update
    from extractor.service.identities import Identity

__all__ = [
    "RunOptions",
    "ServiceSettings",
    "UpdateOutcome",
    "identities",
    "invoices",
    "sync",
    "tables",
    "transactions",
    "update_invoices",
    "verify",
]

Format = Literal["parquet", "delta"]


def invoices(
    out: str | Path,
    *,
    format: Format = "parquet",
    changed_after: dt.datetime | None = None,
    registered_after: dt.datetime | None = None,
    batch_size: int = 1000,
    invoice_properties: Sequence[str] = (),
    row_properties: Sequence[str] = (),
    parse_workers: int = DEFAULT_PARSE_WORKERS,
    resume: bool = False,
    **options: Unpack[RunOptions],
) -> RunSummary | FleetSummary:
    """``extractor invoices``: backfill invoices and their rows into ``out``; resumable."""
    from extractor.jobs.invoices import InvoiceJob

    call = Call.of(options)
    where = destination(out, format, call.work_dir, call.endpoint_url, "invoices", resume=resume)
    job = InvoiceJob(
        where, service=call.service, changed_after=naive(changed_after),
        registered_after=naive(registered_after), batch_size=batch_size,
        invoice_properties=tuple(invoice_properties), row_properties=tuple(row_properties),
        parse_workers=parse_workers,
    )  # fmt: skip
    # a fleet's identities parse in their workers' threads: no parser processes of their own
    return dataset(job, lambda member: replace(job, destination=member, parse_workers=0), call)


def transactions(
    out: str | Path,
    *,
    date_from: dt.date,
    date_to: dt.date,
    format: Format = "parquet",
    date_field: Literal["entry", "changed"] = "entry",
    window: Literal["month", "week", "day"] = "month",
    account_from: int | None = None,
    account_to: int | None = None,
    system_types: Sequence[str] = (),
    resume: bool = False,
    **options: Unpack[RunOptions],
) -> RunSummary | FleetSummary:
    """``extractor transactions``: the general ledger, a date window a request; resumable."""
    from extractor.jobs.ledger import TransactionJob

    call = Call.of(options)
    where = destination(out, format, call.work_dir, call.endpoint_url, "transactions",
                        resume=resume)  # fmt: skip
    job = TransactionJob(
        where, date_from=date_from, date_to=date_to, service=call.service,
        date_field=date_field, window=window, account_from=account_from,
        account_to=account_to, system_types=tuple(system_types),
    )  # fmt: skip
    return dataset(job, lambda member: replace(job, destination=member), call)


def tables(
    out: str | Path,
    *,
    format: Format = "parquet",
    tables: Sequence[str] | str | None = None,
    skip_tables: Sequence[str] | str | None = None,
    resume: bool = False,
    **options: Unpack[RunOptions],
) -> RunSummary | FleetSummary:
    """``extractor tables``: the accounting picture (accounts, customers, products,
    dimensions, balances, every reference list), each table written whole; resumable."""
    from extractor.engine.lists import ListJob

    chosen = list_specs(joined(tables), joined(skip_tables))
    call = Call.of(options)
    where = destination(out, format, call.work_dir, call.endpoint_url, "tables", resume=resume)
    job = ListJob(where, chosen, call.service, command="tables")
    return dataset(job, lambda member: replace(job, destination=member), call)


def sync(
    out: str | Path,
    *,
    tables: Sequence[str] | str | None = None,
    skip_tables: Sequence[str] | str | None = None,
    reconcile: bool = False,
    overlap: float = 10.0,
    since: dt.date = DEFAULT_SINCE,
    no_ledger: bool = False,
    parse_workers: int = DEFAULT_PARSE_WORKERS,
    **options: Unpack[RunOptions],
) -> SyncSummary | FleetSummary:
    """``extractor sync``: bring the Delta tables under ``out`` up to date (``overlap`` in
    minutes, as the flag); resumable after a crash, never skipping a change."""
    from extractor.jobs.sync import SyncJob
    from extractor.operations import choose
    from extractor.output.targets import Target

    call = Call.of(options)
    if not math.isfinite(overlap) or not 0 <= overlap <= MAX_OVERLAP_MINUTES:
        raise UsageError(f"{{overlap}} {overlap} is not a number of minutes from 0 to ten years")
    job = SyncJob(
        target=Target.parse(str(out), call.endpoint_url), work_dir=call.work_dir,
        service=call.service, overlap=dt.timedelta(minutes=overlap),
        since=since, reconcile=reconcile, ledger=not no_ledger,
        tables=choose(joined(tables), joined(skip_tables)), parse_workers=parse_workers,
    )  # fmt: skip

    def member_job(member: Destination) -> SyncJob:
        return replace(job, identity=member.placement.identity, member_work=member.work,
                       parse_workers=0)  # fmt: skip

    return dataset(job, member_job, call)


def verify(
    out: str | Path,
    *,
    identity: str | None = None,
    endpoint_url: str | None = None,
    credentials: Credentials | None = None,
    handle_signals: bool = False,
    service: ServiceConfig | None = None,
    **settings: Unpack[ServiceSettings],
) -> Verification:
    """``extractor verify``: the lake under ``out`` against the service and itself; the
    checks, each holding or naming its first mismatches (``.holds`` for all of them).
    ``identity``: in a fleet's lake, that identity's part, checked logged in as it."""
    from extractor.jobs.verify import verify as verify_lake
    from extractor.output.targets import Target

    target = Target.parse(str(out), endpoint_url)
    creds = credentials or Credentials.from_env()
    if identity is not None and identity.strip().lower() == "all":
        raise UsageError("{identity}: verify checks one identity's part at a time; give its guid")
    creds = as_identity(creds, identity)
    config = service_of(service, settings, concurrency=1)
    found = verify_lake(target, creds, config, identity=creds.identity_id if identity else None)
    return run(found, handle_signals)


def identities(
    *,
    credentials: Credentials | None = None,
    handle_signals: bool = False,
    service: ServiceConfig | None = None,
    **settings: Unpack[ServiceSettings],
) -> list[Identity]:
    """``extractor identities``: the identities (client companies) the credentials reach,
    as GetIdentities lists them (``.id``, ``.client_name``, ``.disabled``, ...): what a
    scheduler maps its tasks over, or what ``identity`` picks from."""
    from extractor.service.identities import listed_identities

    config = service_of(service, settings, concurrency=1)
    creds = credentials or Credentials.from_env()
    return run(listed_identities(config, creds), handle_signals)


@dataclass(frozen=True)
class UpdateOutcome:
    """What ``update_invoices`` did: each order's outcome (``updated``, ``refused``,
    ``failed``, ``not returned``), in input order, and where the report is; for a
    ``dry_run``, no outcome and the updates read (what would be sent)."""

    outcomes: list[dict[str, Any]]
    report: Path
    updates: Sequence[Update] = ()

    @property
    def complete(self) -> bool:
        """Every update applied."""
        return all(outcome["status"] == "updated" for outcome in self.outcomes)


def update_invoices(
    input: str | Path,
    *,
    report: str | Path | None = None,
    batch_size: int = 100,
    dry_run: bool = False,
    credentials: Credentials | None = None,
    identity: str | None = None,
    log: IO[str] | Log | None = None,
    handle_signals: bool = False,
    service: ServiceConfig | None = None,
    **settings: Unpack[ServiceSettings],
) -> UpdateOutcome:
    """``extractor update-invoices``: InvoiceTitle / ReferenceNumber of invoiced orders from
    a CSV, JSON Lines or Parquet file, each applied once however often this is called.
    ``dry_run``: the file read and checked, nothing sent."""
    from extractor.errors import ExtractorError
    from extractor.jobs.update_journal import UpdateJournal
    from extractor.jobs.updates import UpdateJob, apply_updates
    from extractor.records.update_files import check_report, read_updates, write_report

    defaults = {"concurrency": DEFAULT_UPDATE_SERVICE.concurrency}
    job = UpdateJob(
        input=Path(input), report=path_or_none(report), dry_run=dry_run, batch_size=batch_size,
        service=service_of(service, settings, **defaults),
    )  # fmt: skip
    updates = read_updates(job.input)
    check_report(job.report_path)
    if dry_run:
        return UpdateOutcome([], job.report_path, updates)
    creds = as_identity(credentials or Credentials.from_env(), identity)
    journal = UpdateJournal(job.report_path)
    try:
        _said_resuming(journal, updates, quiet_unless(log))
        outcomes = run(apply_updates(job, updates, creds, journal=journal), handle_signals)
        write_report(job.report_path, outcomes)  # every row once, rebuilt from the journal
    except ExtractorError as exc:
        message = exc.args[0] if exc.args else type(exc).__name__  # its settings still in braces
        exc.args = (f"{message}; the outcomes so far are in {journal.path}",)
        raise
    finally:
        journal.close()
    return UpdateOutcome(list(outcomes), job.report_path, updates)


def _said_resuming(journal: UpdateJournal, updates: Sequence[Update], log: Log) -> None:
    """What an earlier run of these updates left: answered, or sent without an answer."""
    resume = journal.resume(updates)
    if resume.settled or resume.unsure:
        log.info(
            "resuming",
            f"{journal.path}: {len(resume.settled):,} updates answered before (not sent "
            f"again), {len(resume.unsure):,} sent without a recorded answer (read back "
            "first, sent again only if not applied)",
            answered=len(resume.settled), unsure=len(resume.unsure),
        )  # fmt: skip
