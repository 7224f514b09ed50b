"""``extractor invoices``, ``transactions`` and ``sync``: the extracting commands."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from extractor import log
from extractor.cli.common import (
    EXIT_PARTIAL,
    dataset_options,
    exit_if_partial,
    finite_minutes,
    json_option,
    names,
    parse_day,
    parse_when,
    service_options,
    show_summary,
    stack,
    storage_options,
)
from extractor.cli.fleet import FleetOptions, JobFor, fleet_options, run_as_fleet
from extractor.cli.signals import run_command
from extractor.config import DEFAULT_PARSE_WORKERS, DEFAULT_SINCE, Credentials, ServiceConfig

if TYPE_CHECKING:  # a command imports the engine when it runs: ``--help`` loads none of it
    from extractor.engine.destination import Destination
    from extractor.jobs.invoices import InvoiceJob
    from extractor.jobs.ledger import TransactionJob
    from extractor.jobs.sync import SyncJob

#: The commands that fetch invoices: where their responses are parsed.
parse_workers_option = click.option(
    "--parse-workers",
    type=click.IntRange(0, 64),
    default=DEFAULT_PARSE_WORKERS,
    show_default=True,
    help="Parser processes (0: parse on the event loop).",
)


@click.command()
@dataset_options
@service_options()
@json_option
@click.option("--changed-after", help="Only orders changed after this UTC time.")
@click.option("--registered-after", help="Only orders registered after this UTC time.")
@click.option(
    "--batch-size", default=1000, show_default=True, type=int, help="Ids per GetInvoices (1..1000)."
)
@click.option("--invoice-properties", help="Comma-separated InvoiceOrder properties (default all).")
@click.option("--row-properties", help="Comma-separated InvoiceRow properties (default all).")
@parse_workers_option
@fleet_options
def invoices(
    out: str,
    output_format: str,
    work_dir: Path | None,
    endpoint_url: str | None,
    service: ServiceConfig,
    changed_after: str | None,
    registered_after: str | None,
    batch_size: int,
    invoice_properties: str | None,
    row_properties: str | None,
    parse_workers: int,
    resume: bool,
    fleet: FleetOptions,
) -> None:
    """Backfill invoices and their rows into OUT/invoices and OUT/invoice_rows.

    Resumable: after a crash, run the same command again; it continues where it stopped.
    With several --identity (or all), each identity is one run on a Dask cluster, its
    partitions under identity_id=<guid>.
    """
    from extractor.engine.destination import Destination
    from extractor.engine.runner import run
    from extractor.jobs.invoices import InvoiceJob

    def job_for(destination: Destination, parsers: int = 0) -> InvoiceJob:
        return InvoiceJob(
            destination,
            service=service,
            changed_after=parse_when(changed_after, "--changed-after") if changed_after else None,
            registered_after=parse_when(registered_after, "--registered-after")
            if registered_after
            else None,
            batch_size=batch_size,
            invoice_properties=names(invoice_properties),
            row_properties=names(row_properties),
            parse_workers=parsers,
        )

    where = Destination.of(out, output_format, work_dir, endpoint_url, "invoices", resume=resume)
    credentials = credentials_for("invoices", where, work_dir, service, fleet, job_for)
    summary = run_command(run(job_for(where, parse_workers), credentials))
    show_summary(summary)
    exit_if_partial(summary, where.work)


@click.command()
@dataset_options
@service_options()
@fleet_options
@json_option
@click.option("--from", "date_from", required=True, help="First day, YYYY-MM-DD.")
@click.option("--to", "date_to", required=True, help="Last day (included), YYYY-MM-DD.")
@click.option(
    "--date-field",
    type=click.Choice(["entry", "changed"]),
    default="entry",
    show_default=True,
    help="Cut windows by entry date or by DateChangedUTC.",
)
@click.option(
    "--window", type=click.Choice(["month", "week", "day"]), default="month", show_default=True
)
@click.option("--account-from", type=int, help="Lowest account number.")
@click.option("--account-to", type=int, help="Highest account number.")
@click.option(
    "--system-type", "system_types", multiple=True, help="Only this SystemType (repeatable)."
)
def transactions(
    out: str,
    output_format: str,
    work_dir: Path | None,
    endpoint_url: str | None,
    date_from: str,
    date_to: str,
    service: ServiceConfig,
    date_field: str,
    window: str,
    account_from: int | None,
    account_to: int | None,
    system_types: tuple[str, ...],
    resume: bool,
    fleet: FleetOptions,
) -> None:
    """Extract the general ledger into OUT/transactions, a date window per request.

    Resumable: after a crash, run the same command again; it continues where it stopped.
    With several --identity (or all), each identity is one run on a Dask cluster.
    """
    from extractor.engine.destination import Destination
    from extractor.engine.runner import run
    from extractor.jobs.ledger import TransactionJob

    def job_for(destination: Destination) -> TransactionJob:
        return TransactionJob(
            destination,
            date_from=parse_day(date_from, "--from"),
            date_to=parse_day(date_to, "--to"),
            service=service,
            date_field=date_field,
            window=window,
            account_from=account_from,
            account_to=account_to,
            system_types=system_types,
        )

    where = Destination.of(
        out, output_format, work_dir, endpoint_url, "transactions", resume=resume
    )
    credentials = credentials_for("transactions", where, work_dir, service, fleet, job_for)
    summary = run_command(run(job_for(where), credentials))
    show_summary(summary)
    exit_if_partial(summary, where.work)


tables_option = click.option(
    "--tables", "tables_given", metavar="A,B",
    help="Only these tables (comma-separated; default every one).",
)  # fmt: skip
skip_tables_option = click.option(
    "--skip-tables", metavar="A,B", help="Every table but these (comma-separated)."
)


@click.command("tables")
@dataset_options
@service_options()
@fleet_options
@json_option
@tables_option
@skip_tables_option
@click.option("--list", "names", multiple=True, hidden=True)  # the 0.2 spelling of --tables
def tables(
    out: str,
    output_format: str,
    work_dir: Path | None,
    endpoint_url: str | None,
    service: ServiceConfig,
    tables_given: str | None,
    skip_tables: str | None,
    names: tuple[str, ...],
    resume: bool,
    fleet: FleetOptions,
) -> None:
    """Fetch the accounting picture once into OUT/<table>: the chart of accounts, tax codes,
    entry and transaction types, fiscal years, dimensions and their values, the balances of
    every fiscal year, payment and delivery methods, invoice templates, departments,
    currencies, customers and products.

    Each table in one folder, written whole. Into --format delta each table is kept as sync
    keeps it. Resumable: after a crash, run the same command again.
    """
    from extractor.api import list_specs
    from extractor.engine.destination import Destination
    from extractor.engine.lists import ListJob
    from extractor.engine.runner import run

    if names:
        tables_given = ",".join(filter(None, (tables_given, *names)))
    chosen = list_specs(tables_given, skip_tables)

    def job_for(destination: Destination) -> ListJob:
        return ListJob(destination, chosen, service, command="tables")

    where = Destination.of(out, output_format, work_dir, endpoint_url, "tables", resume=resume)
    credentials = credentials_for("tables", where, work_dir, service, fleet, job_for)
    summary = run_command(run(job_for(where), credentials))
    show_summary(summary)
    exit_if_partial(summary, where.work)


def credentials_for(
    command: str,
    where: Destination,
    work_dir: Path | None,
    service: ServiceConfig,
    fleet: FleetOptions,
    job_for: JobFor,
) -> Credentials:
    """The credentials of a run of one identity into ``where``; a fleet, when asked for,
    runs (and exits) here. An output that holds a fleet is refused without --identity."""
    from extractor.api import checked

    checked(where, work_dir, alone=not fleet.asked)
    if fleet.asked:
        job_for(where).check()  # refused once here, not by each identity's run
        alone = run_as_fleet(command, where, service, fleet, job_for)
        assert alone is not None  # a fleet exits with its status
        return alone
    return Credentials.from_env()


@click.command()
@click.option(
    "--out", required=True, help="Root of the Delta tables: a directory or s3://bucket/prefix."
)
@click.option(
    "--overlap",
    default=10.0,
    show_default=True,
    type=float,
    callback=finite_minutes,
    help="Minutes before the watermark (the service's time) to list changes from.",
)
@click.option(
    "--since",
    default=DEFAULT_SINCE.isoformat(),
    show_default=True,
    help="First sync only: ledger lines changed since this day.",
)
@click.option(
    "--reconcile", is_flag=True,
    help="Also mark orders, customers and products the service no longer has.",
)  # fmt: skip
@click.option("--no-ledger", is_flag=True, help="Leave the transactions table (as --skip-tables).")
@tables_option
@skip_tables_option
@parse_workers_option
@stack(*storage_options)
@service_options()
@fleet_options
@json_option
def sync(
    out: str,
    overlap: float,
    since: str,
    reconcile: bool,
    no_ledger: bool,
    tables_given: str | None,
    skip_tables: str | None,
    parse_workers: int,
    work_dir: Path | None,
    endpoint_url: str | None,
    service: ServiceConfig,
    fleet: FleetOptions,
) -> None:
    """Bring the Delta tables under OUT up to date: invoices, invoice_rows, transactions,
    and the accounting picture (see `extractor tables`), every one unless --tables or
    --skip-tables say otherwise.

    The first sync backfills; later ones merge what changed since the watermark committed
    with the data. After a crash, run it again: it resumes, and never skips a change.
    """
    from extractor.jobs.sync import SyncJob, run_sync
    from extractor.operations import choose
    from extractor.output.targets import Target

    target = Target.parse(out, endpoint_url)
    chosen = choose(tables_given, skip_tables)

    def job_for(member: Destination | None) -> SyncJob:
        identity = member.placement.identity if member is not None else None
        return SyncJob(
            target=target, work_dir=work_dir, service=service,
            overlap=dt.timedelta(minutes=overlap), since=parse_day(since, "--since"),
            reconcile=reconcile, ledger=not no_ledger, tables=chosen,
            parse_workers=parse_workers if identity is None else 0,
            identity=identity, member_work=member.work if member is not None else None,
        )  # fmt: skip

    job = job_for(None)
    credentials = credentials_for("sync", job.destination, work_dir, service, fleet, job_for)
    summary = run_command(run_sync(job, credentials))
    show_summary(summary)
    if not summary.complete:
        log.current().warning("partial", f"sync was partial: see {job.work}/sync-*/_runs/")
        sys.exit(EXIT_PARTIAL)
