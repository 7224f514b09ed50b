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
exactly what is left. Several identities at once (a fleet on Dask) are the CLI's
(``--identity``); here ``identity`` picks one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar

from extractor.config import (
    DEFAULT_PARSE_WORKERS,
    DEFAULT_SINCE,
    DEFAULT_UPDATE_SERVICE,
    Credentials,
    service_config,
)
from extractor.errors import UsageError
from extractor.log import Log

if TYPE_CHECKING:
    from extractor.engine.destination import Destination
    from extractor.engine.spec import Spec
    from extractor.engine.summary import RunSummary, SyncSummary
    from extractor.jobs.verify import Verification

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
    identity: str | None = None,
    credentials: Credentials | None = None,
    log: IO[str] | Log | None = None,
    **service: Any,
) -> RunSummary:
    """``extractor invoices``: backfill invoices and their rows into ``out``; resumable."""
    from extractor.jobs.invoices import InvoiceJob

    where = destination(out, format, work_dir, endpoint_url, "invoices", resume=resume)
    job = InvoiceJob(
        where, service=service_config(**service), changed_after=_naive(changed_after),
        registered_after=_naive(registered_after), batch_size=batch_size,
        invoice_properties=tuple(invoice_properties), row_properties=tuple(row_properties),
        parse_workers=parse_workers,
    )  # fmt: skip
    return _run(_dataset(job, where, work_dir, identity, credentials, log))


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
    identity: str | None = None,
    credentials: Credentials | None = None,
    log: IO[str] | Log | None = None,
    **service: Any,
) -> RunSummary:
    """``extractor transactions``: the general ledger, a date window a request; resumable."""
    from extractor.jobs.ledger import TransactionJob

    where = destination(out, format, work_dir, endpoint_url, "transactions", resume=resume)
    job = TransactionJob(
        where, date_from=date_from, date_to=date_to, service=service_config(**service),
        date_field=date_field, window=window, account_from=account_from,
        account_to=account_to, system_types=tuple(system_types),
    )  # fmt: skip
    return _run(_dataset(job, where, work_dir, identity, credentials, log))


def tables(
    out: str | Path,
    *,
    format: Format = "parquet",
    tables: Sequence[str] | str | None = None,
    skip_tables: Sequence[str] | str | None = None,
    resume: bool = False,
    work_dir: str | Path | None = None,
    endpoint_url: str | None = None,
    identity: str | None = None,
    credentials: Credentials | None = None,
    log: IO[str] | Log | None = None,
    **service: Any,
) -> RunSummary:
    """``extractor tables``: the accounting picture (accounts, customers, products,
    dimensions, balances, every reference list), each table written whole; resumable."""
    from extractor.engine.lists import ListJob

    chosen = list_specs(_joined(tables), _joined(skip_tables))
    where = destination(out, format, work_dir, endpoint_url, "tables", resume=resume)
    job = ListJob(where, chosen, service_config(**service), command="tables")
    return _run(_dataset(job, where, work_dir, identity, credentials, log))


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
    identity: str | None = None,
    credentials: Credentials | None = None,
    log: IO[str] | Log | None = None,
    **service: Any,
) -> SyncSummary:
    """``extractor sync``: bring the Delta tables under ``out`` up to date (``overlap`` in
    minutes, as the flag); resumable after a crash, never skipping a change."""
    import math

    from extractor.jobs.sync import SyncJob, run_sync
    from extractor.operations import choose
    from extractor.output.targets import Target

    if not math.isfinite(overlap) or not 0 <= overlap <= 7 * 24 * 60:
        raise UsageError("{overlap} must be a number of minutes from 0 to a week")
    target = Target.parse(str(out), endpoint_url)
    job = SyncJob(
        target=target, work_dir=_path(work_dir), service=service_config(**service),
        overlap=dt.timedelta(minutes=overlap), since=since, reconcile=reconcile,
        ledger=not no_ledger, tables=choose(_joined(tables), _joined(skip_tables)),
        parse_workers=parse_workers,
    )  # fmt: skip
    checked(job.destination, work_dir)
    creds = _credentials(credentials, identity)
    return _run(run_sync(job, creds, log=_log(log)))


def verify(
    out: str | Path,
    *,
    identity: str | None = None,
    endpoint_url: str | None = None,
    credentials: Credentials | None = None,
    **service: Any,
) -> Verification:
    """``extractor verify``: the lake under ``out`` against the service and itself; the
    checks, each holding or naming its first mismatches (``.holds`` for all of them)."""
    from extractor.jobs.verify import verify as verify_lake
    from extractor.output.targets import Target

    target = Target.parse(str(out), endpoint_url)
    creds = _credentials(credentials, identity)
    found = verify_lake(target, creds, service_config(**{"concurrency": 1, **service}),
                        identity=creds.identity_id if identity else None)  # fmt: skip
    return _run(found)


@dataclass(frozen=True)
class UpdateOutcome:
    """What ``update_invoices`` did: each order's outcome (``updated``, ``refused``,
    ``failed``, ``not returned``), in input order, and where the report is."""

    outcomes: list[dict[str, Any]]
    report: Path

    @property
    def complete(self) -> bool:
        """Every update applied."""
        return all(outcome["status"] == "updated" for outcome in self.outcomes)


def update_invoices(
    input: str | Path,
    *,
    report: str | Path | None = None,
    batch_size: int = 100,
    credentials: Credentials | None = None,
    identity: str | None = None,
    **service: Any,
) -> UpdateOutcome:
    """``extractor update-invoices``: InvoiceTitle / ReferenceNumber of invoiced orders from
    a CSV, JSON Lines or Parquet file, each applied once however often this is called."""
    from extractor.jobs.update_journal import UpdateJournal
    from extractor.jobs.updates import UpdateJob, apply_updates
    from extractor.records.update_files import check_report, read_updates, write_report

    defaults = {"concurrency": DEFAULT_UPDATE_SERVICE.concurrency}
    job = UpdateJob(
        input=Path(input), report=_path(report), batch_size=batch_size,
        service=service_config(**(defaults | service)),
    )  # fmt: skip
    updates = read_updates(job.input)
    check_report(job.report_path)
    creds = _credentials(credentials, identity)
    journal = UpdateJournal(job.report_path)
    try:
        outcomes = _run(apply_updates(job, updates, creds, journal=journal))
        write_report(job.report_path, outcomes)
    finally:
        journal.close()
    return UpdateOutcome(list(outcomes), job.report_path)


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


async def _dataset(
    job: Any,
    where: Destination,
    work_dir: str | Path | None,
    identity: str | None,
    credentials: Credentials | None,
    log: IO[str] | Log | None,
) -> RunSummary:
    from extractor.engine.runner import run

    checked(where, work_dir)
    return await run(job, _credentials(credentials, identity), log=_log(log))


def _credentials(given: Credentials | None, identity: str | None) -> Credentials:
    from extractor.service.identities import normalized

    credentials = given or Credentials.from_env()
    if identity is not None:
        credentials = dataclasses.replace(
            credentials, identity_id=normalized(identity, "{identity}")
        )
    return credentials


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
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
