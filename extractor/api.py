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
:class:`~extractor.cli.signals.Interrupted`: what the CLI does; the same call resumes.

The CLI is a thin layer over these functions: it parses the flags, calls them, and renders
what they return (or raise) as text or JSON and an exit status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
import math
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar, overload

from extractor.config import (
    DEFAULT_PARSE_WORKERS,
    DEFAULT_SINCE,
    DEFAULT_UPDATE_SERVICE,
    MAX_OVERLAP_MINUTES,
    Credentials,
    ServiceConfig,
    service_config,
)
from extractor.errors import UsageError
from extractor.fleet.cluster import PER_WORKER
from extractor.log import Log

if TYPE_CHECKING:
    from extractor.engine.destination import Destination
    from extractor.engine.lists import ListJob
    from extractor.engine.spec import Spec
    from extractor.engine.summary import RunSummary, SyncSummary
    from extractor.fleet.launch import FleetOptions, FleetSummary, MemberJob
    from extractor.jobs.invoices import InvoiceJob
    from extractor.jobs.ledger import TransactionJob
    from extractor.jobs.sync import SyncJob
    from extractor.jobs.verify import Verification
    from extractor.records.update_files import Update

__all__ = [
    "UpdateOutcome",
    "invoices",
    "sync",
    "tables",
    "transactions",
    "update_invoices",
    "verify",
]

T = TypeVar("T")
Format = Literal["parquet", "delta"]
Identities = str | Sequence[str] | None


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
    work_dir: str | Path | None = None,
    endpoint_url: str | None = None,
    identity: Identities = None,
    exclude_identity: Sequence[str] = (),
    workers: int | None = None,
    identities_per_worker: int = PER_WORKER,
    scheduler: str | None = None,
    fleet_requests_per_hour: int = 0,
    credentials: Credentials | None = None,
    log: IO[str] | Log | None = None,
    handle_signals: bool = False,
    service: ServiceConfig | None = None,
    **settings: Any,
) -> RunSummary | FleetSummary:
    """``extractor invoices``: backfill invoices and their rows into ``out``; resumable."""
    from extractor.jobs.invoices import InvoiceJob

    where = destination(out, format, work_dir, endpoint_url, "invoices", resume=resume)
    job = InvoiceJob(
        where, service=_service(service, settings), changed_after=_naive(changed_after),
        registered_after=_naive(registered_after), batch_size=batch_size,
        invoice_properties=tuple(invoice_properties), row_properties=tuple(row_properties),
        parse_workers=parse_workers,
    )  # fmt: skip
    call = _Call(
        identity, exclude_identity, workers, identities_per_worker, scheduler,
        fleet_requests_per_hour, credentials, log, handle_signals,
    )  # fmt: skip
    # a fleet's identities parse in their workers' threads: no parser processes of their own
    return _dataset(job, lambda member: replace(job, destination=member, parse_workers=0),
                    work_dir, call)  # fmt: skip


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
    work_dir: str | Path | None = None,
    endpoint_url: str | None = None,
    identity: Identities = None,
    exclude_identity: Sequence[str] = (),
    workers: int | None = None,
    identities_per_worker: int = PER_WORKER,
    scheduler: str | None = None,
    fleet_requests_per_hour: int = 0,
    credentials: Credentials | None = None,
    log: IO[str] | Log | None = None,
    handle_signals: bool = False,
    service: ServiceConfig | None = None,
    **settings: Any,
) -> RunSummary | FleetSummary:
    """``extractor transactions``: the general ledger, a date window a request; resumable."""
    from extractor.jobs.ledger import TransactionJob

    where = destination(out, format, work_dir, endpoint_url, "transactions", resume=resume)
    job = TransactionJob(
        where, date_from=date_from, date_to=date_to, service=_service(service, settings),
        date_field=date_field, window=window, account_from=account_from,
        account_to=account_to, system_types=tuple(system_types),
    )  # fmt: skip
    call = _Call(
        identity, exclude_identity, workers, identities_per_worker, scheduler,
        fleet_requests_per_hour, credentials, log, handle_signals,
    )  # fmt: skip
    return _dataset(job, lambda member: replace(job, destination=member), work_dir, call)


def tables(
    out: str | Path,
    *,
    format: Format = "parquet",
    tables: Sequence[str] | str | None = None,
    skip_tables: Sequence[str] | str | None = None,
    resume: bool = False,
    work_dir: str | Path | None = None,
    endpoint_url: str | None = None,
    identity: Identities = None,
    exclude_identity: Sequence[str] = (),
    workers: int | None = None,
    identities_per_worker: int = PER_WORKER,
    scheduler: str | None = None,
    fleet_requests_per_hour: int = 0,
    credentials: Credentials | None = None,
    log: IO[str] | Log | None = None,
    handle_signals: bool = False,
    service: ServiceConfig | None = None,
    **settings: Any,
) -> RunSummary | FleetSummary:
    """``extractor tables``: the accounting picture (accounts, customers, products,
    dimensions, balances, every reference list), each table written whole; resumable."""
    from extractor.engine.lists import ListJob

    chosen = list_specs(_joined(tables), _joined(skip_tables))
    where = destination(out, format, work_dir, endpoint_url, "tables", resume=resume)
    job = ListJob(where, chosen, _service(service, settings), command="tables")
    call = _Call(
        identity, exclude_identity, workers, identities_per_worker, scheduler,
        fleet_requests_per_hour, credentials, log, handle_signals,
    )  # fmt: skip
    return _dataset(job, lambda member: replace(job, destination=member), work_dir, call)


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
    work_dir: str | Path | None = None,
    endpoint_url: str | None = None,
    identity: Identities = None,
    exclude_identity: Sequence[str] = (),
    workers: int | None = None,
    identities_per_worker: int = PER_WORKER,
    scheduler: str | None = None,
    fleet_requests_per_hour: int = 0,
    credentials: Credentials | None = None,
    log: IO[str] | Log | None = None,
    handle_signals: bool = False,
    service: ServiceConfig | None = None,
    **settings: Any,
) -> SyncSummary | FleetSummary:
    """``extractor sync``: bring the Delta tables under ``out`` up to date (``overlap`` in
    minutes, as the flag); resumable after a crash, never skipping a change."""
    from extractor.jobs.sync import SyncJob
    from extractor.operations import choose
    from extractor.output.targets import Target

    if not math.isfinite(overlap) or not 0 <= overlap <= MAX_OVERLAP_MINUTES:
        raise UsageError(f"{{overlap}} {overlap} is not a number of minutes from 0 to ten years")
    job = SyncJob(
        target=Target.parse(str(out), endpoint_url), work_dir=_path(work_dir),
        service=_service(service, settings), overlap=dt.timedelta(minutes=overlap),
        since=since, reconcile=reconcile, ledger=not no_ledger,
        tables=choose(_joined(tables), _joined(skip_tables)), parse_workers=parse_workers,
    )  # fmt: skip
    call = _Call(
        identity, exclude_identity, workers, identities_per_worker, scheduler,
        fleet_requests_per_hour, credentials, log, handle_signals,
    )  # fmt: skip

    def member_job(member: Destination) -> SyncJob:
        return replace(job, identity=member.placement.identity, member_work=member.work,
                       parse_workers=0)  # fmt: skip

    return _dataset(job, member_job, work_dir, call)


def verify(
    out: str | Path,
    *,
    identity: str | None = None,
    endpoint_url: str | None = None,
    credentials: Credentials | None = None,
    handle_signals: bool = False,
    service: ServiceConfig | None = None,
    **settings: Any,
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
    creds = _as_identity(creds, identity)
    config = _service(service, settings, concurrency=1)
    found = verify_lake(target, creds, config, identity=creds.identity_id if identity else None)
    return _run(found, handle_signals)


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
    **settings: Any,
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
        input=Path(input), report=_path(report), dry_run=dry_run, batch_size=batch_size,
        service=_service(service, settings, **defaults),
    )  # fmt: skip
    updates = read_updates(job.input)
    check_report(job.report_path)
    if dry_run:
        return UpdateOutcome([], job.report_path, updates)
    creds = _as_identity(credentials or Credentials.from_env(), identity)
    journal = UpdateJournal(job.report_path)
    try:
        _said_resuming(journal, updates, _log(log))
        outcomes = _run(apply_updates(job, updates, creds, journal=journal), handle_signals)
        write_report(job.report_path, outcomes)  # every row once, rebuilt from the journal
    except ExtractorError as exc:
        message = exc.args[0] if exc.args else type(exc).__name__  # its settings still in braces
        exc.args = (f"{message}; the outcomes so far are in {journal.path}",)
        raise
    finally:
        journal.close()
    return UpdateOutcome(list(outcomes), job.report_path, updates)


def list_specs(tables: str | None, skip_tables: str | None) -> tuple[Spec, ...]:
    """The lists ``tables`` and ``skip_tables`` (comma-separated names) choose, parents
    first; a fact table named is refused (it has its own command)."""
    from extractor.operations import LISTS, choose, chosen_lists

    chosen = chosen_lists(tables, skip_tables)
    lists = [spec.table for spec in LISTS]
    facts = [name for name in (choose(tables, skip_tables) if tables else ()) if name not in lists]
    if facts or not chosen:
        raise UsageError(
            f"{{tables}}: {' and '.join(facts) or 'invoices and transactions'} have their "
            "own commands (invoices, transactions, sync); choose from " + ", ".join(lists)
        )
    return chosen


def destination(
    out: str | Path,
    format: str,
    work_dir: str | Path | None,
    endpoint_url: str | None,
    command: str,
    *,
    resume: bool = False,
) -> Destination:
    """Where a dataset command writes: ``out`` as ``format``, its runs in ``work_dir``."""
    from extractor.engine.destination import Destination

    if format not in ("parquet", "delta"):
        raise UsageError(f"{{output_format}} {format!r} is neither parquet nor delta")
    return Destination.of(str(out), format, _path(work_dir), endpoint_url, command, resume=resume)


def checked(where: Destination, work_dir: str | Path | None, *, alone: bool = True) -> None:
    """Refuse, before any request, an output a run must not write: a work directory that is
    no folder, a local output of another tool, Delta tables over plain Parquet ones; and,
    for a run of one identity (``alone``), an output a fleet holds."""
    from extractor.fleet.layout import check_alone_into
    from extractor.output.targets import check_no_parquet_tables, check_not_foreign, check_work_dir

    if work_dir is not None:
        check_work_dir(str(work_dir))
    if where.target.local is not None:
        check_not_foreign(where.target.local)
        if where.format == "delta":
            check_no_parquet_tables(where.target.local)
    if not alone:
        return
    check_alone_into(where.work, where.target.uri)
    if where.root is not None:  # a fleet's sync keeps its runs in the work root's _work
        check_alone_into(where.root / "_work", where.target.uri)


@dataclass(frozen=True)
class _Call:
    """How a dataset command runs: as which identities (a fleet, or one), with which
    credentials, reporting where, stopped by signals or not."""

    identity: Identities
    exclude_identity: Sequence[str]
    workers: int | None
    identities_per_worker: int
    scheduler: str | None
    fleet_requests_per_hour: int
    credentials: Credentials | None
    log: IO[str] | Log | None
    handle_signals: bool

    @property
    def fleet(self) -> FleetOptions:
        from extractor.fleet.launch import FleetOptions

        identity = (self.identity,) if isinstance(self.identity, str) else self.identity
        given = {} if self.workers is None else {"workers": self.workers}
        return FleetOptions(
            tuple(identity or ()), tuple(self.exclude_identity), **given,
            identities_per_worker=self.identities_per_worker, scheduler=self.scheduler,
            fleet_requests_per_hour=self.fleet_requests_per_hour,
        )  # fmt: skip

    def given_credentials(self) -> Credentials:
        return self.credentials or Credentials.from_env()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return _run(coroutine, self.handle_signals)


@overload
def _dataset(
    job: SyncJob, member_job: MemberJob, work_dir: str | Path | None, call: _Call
) -> SyncSummary | FleetSummary: ...
@overload
def _dataset(
    job: InvoiceJob | TransactionJob | ListJob,
    member_job: MemberJob,
    work_dir: str | Path | None,
    call: _Call,
) -> RunSummary | FleetSummary: ...
def _dataset(
    job: InvoiceJob | TransactionJob | ListJob | SyncJob,
    member_job: MemberJob,
    work_dir: str | Path | None,
    call: _Call,
) -> RunSummary | SyncSummary | FleetSummary:
    """Run ``job``, or its fleet (each identity's job ``member_job`` of its destination)."""
    from extractor.fleet.launch import FleetSummary, launch

    fleet, log = call.fleet, _log(call.log)
    checked(job.destination, work_dir, alone=not fleet.asked)
    if not fleet.asked:
        return _alone(job, call.given_credentials(), log, call)
    launched = launch(job, member_job, fleet, call.given_credentials, job.service, log, call.run)
    if isinstance(launched, FleetSummary):
        return launched
    return _alone(job, launched, log, call)


def _alone(
    job: InvoiceJob | TransactionJob | ListJob | SyncJob,
    credentials: Credentials,
    log: Log,
    call: _Call,
) -> RunSummary | SyncSummary:
    """One identity's run of ``job``; its summary, knowing where it is written."""
    from extractor.engine import runner
    from extractor.jobs.sync import SyncJob, run_sync

    if isinstance(job, SyncJob):
        synced = call.run(run_sync(job, credentials, log=log))
        synced.work = job.work
        return synced
    one: Any = job  # the runner's type parameter is each job's unit
    summary = call.run(runner.run(one, credentials, log=log))
    summary.summary_file = job.destination.work / "_runs" / f"{summary.run_id}.json"
    return summary


def _service(
    given: ServiceConfig | None, settings: dict[str, Any], **defaults: Any
) -> ServiceConfig:
    """``service`` as given, else built from its settings (named as the flags)."""
    if given is None:
        return service_config(**(defaults | settings))
    if settings:
        raise TypeError(f"give service= or its settings ({', '.join(settings)}), not both")
    return given


def _as_identity(credentials: Credentials, identity: str | None) -> Credentials:
    from extractor.service.identities import normalized

    if identity is None:
        return credentials
    return dataclasses.replace(credentials, identity_id=normalized(identity, "{identity}"))


def _said_resuming(journal: Any, updates: Sequence[Update], log: Log) -> None:
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


def _run(coroutine: Coroutine[Any, Any, T], handle_signals: bool = False) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        if handle_signals:
            from extractor.cli.signals import run_command  # SIGINT, SIGTERM: Interrupted

            return run_command(coroutine)
        return asyncio.run(coroutine)
    coroutine.close()
    raise UsageError(
        "the extractor's functions run their own event loop: call them from synchronous "
        "code, or from async code in a thread (asyncio.to_thread)"
    )


class _Discard(io.StringIO):
    """A stream that keeps nothing: the API prints nothing unless asked."""

    def write(self, text: str) -> int:
        return len(text)


def _log(log: IO[str] | Log | None) -> Log:
    return Log.to(log if log is not None else _Discard())


def _joined(names: Sequence[str] | str | None) -> str | None:
    if names is None or isinstance(names, str):
        return names
    return ",".join(names)


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


def _naive(moment: dt.datetime | None) -> dt.datetime | None:
    """A time as the service takes it: UTC, without an offset (a naive one is UTC)."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(dt.UTC).replace(tzinfo=None)
