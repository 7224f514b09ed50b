"""One call of a command, for :mod:`extractor.api` (and so for the CLI): its options checked
and made values (:class:`Call`), its job run alone or as a fleet (:func:`dataset`), on an
event loop of its own with signals handled or not (:func:`run`), reporting to its log or to
nothing; and the checks every dataset command makes before any request."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, overload

from extractor.config import Credentials, ServiceConfig, service_config
from extractor.errors import UsageError
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

T = TypeVar("T")


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
    work = path_or_none(work_dir)
    return Destination.of(str(out), format, work, endpoint_url, command, resume=resume)


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


class ServiceSettings(TypedDict, total=False):
    """The service's settings, each named as its flag (:func:`~extractor.config.service_config`);
    or all at once, ``service``."""

    base_url: str
    concurrency: int | Literal["auto"]
    soap_version: str
    max_requests_per_hour: int
    timeout: float
    max_pause: float
    insecure: bool


class RunOptions(ServiceSettings, total=False):
    """What every dataset function (invoices, transactions, tables, sync) also takes, named
    as the flags: where its runs live, which identities (one, several or ``all``: a fleet),
    the credentials (default: the environment's), its log (default: none), whether signals
    stop it, and the service's settings."""

    work_dir: str | Path | None
    endpoint_url: str | None
    identity: str | Sequence[str] | None
    exclude_identity: Sequence[str]
    workers: int
    identities_per_worker: int
    scheduler: str | None
    fleet_requests_per_hour: int
    credentials: Credentials | None
    log: IO[str] | Log | None
    handle_signals: bool
    service: ServiceConfig | None


@dataclass(frozen=True)
class Call:
    """A dataset function's :class:`RunOptions`, checked and made values."""

    work_dir: Path | None
    endpoint_url: str | None
    service: ServiceConfig
    fleet: FleetOptions
    credentials: Credentials | None
    log: Log
    handle_signals: bool

    @classmethod
    def of(cls, options: RunOptions) -> Call:
        from extractor.fleet.launch import FleetOptions

        unknown = sorted(set(options) - RunOptions.__optional_keys__)
        if unknown:
            raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
        given: dict[str, Any] = dict(options)
        settings = {k: given.pop(k) for k in ServiceSettings.__optional_keys__ if k in given}
        identity = given.get("identity") or ()
        fleet = {k: given[k] for k in ("workers", "identities_per_worker", "scheduler",
                                       "fleet_requests_per_hour") if k in given}  # fmt: skip
        return cls(
            work_dir=path_or_none(given.get("work_dir")), endpoint_url=given.get("endpoint_url"),
            service=service_of(given.get("service"), settings),
            fleet=FleetOptions(
                (identity,) if isinstance(identity, str) else tuple(identity),
                tuple(given.get("exclude_identity", ())), **fleet,
            ),
            credentials=given.get("credentials"), log=quiet_unless(given.get("log")),
            handle_signals=given.get("handle_signals", False),
        )  # fmt: skip

    def given_credentials(self) -> Credentials:
        return self.credentials or Credentials.from_env()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return run(coroutine, self.handle_signals)


@overload
def dataset(job: SyncJob, member_job: MemberJob, call: Call) -> SyncSummary | FleetSummary: ...
@overload
def dataset(
    job: InvoiceJob | TransactionJob | ListJob, member_job: MemberJob, call: Call
) -> RunSummary | FleetSummary: ...
def dataset(
    job: InvoiceJob | TransactionJob | ListJob | SyncJob, member_job: MemberJob, call: Call
) -> RunSummary | SyncSummary | FleetSummary:
    """Run ``job``, or its fleet (each identity's job ``member_job`` of its destination)."""
    from extractor.fleet.launch import FleetSummary, launch

    fleet, log = call.fleet, call.log
    checked(job.destination, call.work_dir, alone=not fleet.asked)
    if not fleet.asked:
        return alone(job, call.given_credentials(), log, call)
    launched = launch(job, member_job, fleet, call.given_credentials, job.service, log, call.run)
    if isinstance(launched, FleetSummary):
        return launched
    return alone(job, launched, log, call)


def alone(
    job: InvoiceJob | TransactionJob | ListJob | SyncJob,
    credentials: Credentials,
    log: Log,
    call: Call,
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


def service_of(
    given: ServiceConfig | None, settings: Mapping[str, Any], **defaults: Any
) -> ServiceConfig:
    """``service`` as given, else built from its settings (named as the flags)."""
    if given is None:
        return service_config(**{**defaults, **settings})
    if settings:
        raise TypeError(f"give service= or its settings ({', '.join(settings)}), not both")
    return given


def as_identity(credentials: Credentials, identity: str | None) -> Credentials:
    from extractor.service.identities import normalized

    if identity is None:
        return credentials
    return dataclasses.replace(credentials, identity_id=normalized(identity, "{identity}"))


def run(coroutine: Coroutine[Any, Any, T], handle_signals: bool = False) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        if handle_signals:
            from extractor.signals import run_until_signalled  # SIGINT, SIGTERM: Interrupted

            return run_until_signalled(coroutine)
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


def quiet_unless(log: IO[str] | Log | None) -> Log:
    return Log.to(log if log is not None else _Discard())


def joined(names: Sequence[str] | str | None) -> str | None:
    if names is None or isinstance(names, str):
        return names
    return ",".join(names)


def path_or_none(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


def naive(moment: dt.datetime | None) -> dt.datetime | None:
    """A time as the service takes it: UTC, without an offset (a naive one is UTC)."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(dt.UTC).replace(tzinfo=None)
