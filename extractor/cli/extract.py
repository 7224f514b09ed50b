"""``extractor invoices``, ``transactions``, ``tables`` and ``sync``: the extracting
commands, each its flags parsed and handed to its function of :mod:`extractor.api`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from extractor.cli.common import (
    dataset_options,
    finite_minutes,
    json_option,
    names,
    parse_day,
    parse_when,
    service_options,
    show_run,
    stack,
    storage_options,
    through_cli,
)
from extractor.cli.fleet import fleet_options
from extractor.config import DEFAULT_PARSE_WORKERS, DEFAULT_SINCE, ServiceConfig

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
    **fleet: Any,
) -> None:
    """Backfill invoices and their rows into OUT/invoices and OUT/invoice_rows.

    Resumable: after a crash, run the same command again; it continues where it stopped.
    With several --identity (or all), each identity is one run on a Dask cluster, its
    partitions under identity_id=<guid>.
    """
    from extractor import api

    summary = api.invoices(
        out, format=output_format,  # type: ignore[arg-type]  # click's choice
        changed_after=parse_when(changed_after, "--changed-after") if changed_after else None,
        registered_after=parse_when(registered_after, "--registered-after")
        if registered_after
        else None,
        batch_size=batch_size, invoice_properties=names(invoice_properties),
        row_properties=names(row_properties), parse_workers=parse_workers, resume=resume,
        work_dir=work_dir, endpoint_url=endpoint_url, service=service, **fleet, **through_cli(),
    )  # fmt: skip
    show_run(summary)


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
    **fleet: Any,
) -> None:
    """Extract the general ledger into OUT/transactions, a date window per request.

    Resumable: after a crash, run the same command again; it continues where it stopped.
    With several --identity (or all), each identity is one run on a Dask cluster.
    """
    from extractor import api

    summary = api.transactions(
        out, date_from=parse_day(date_from, "--from"), date_to=parse_day(date_to, "--to"),
        format=output_format, date_field=date_field, window=window,  # type: ignore[arg-type]
        account_from=account_from, account_to=account_to, system_types=system_types,
        resume=resume, work_dir=work_dir, endpoint_url=endpoint_url, service=service,
        **fleet, **through_cli(),
    )  # fmt: skip
    show_run(summary)


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
@click.option("--list", "names", multiple=True, hidden=True)  # the earlier spelling of --tables
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
    **fleet: Any,
) -> None:
    """Fetch the accounting picture once into OUT/<table>: the chart of accounts, tax codes,
    entry and transaction types, fiscal years, dimensions and their values, the balances of
    every fiscal year, payment and delivery methods, invoice templates, departments,
    currencies, customers and products.

    Each table in one folder, written whole. Into --format delta each table is kept as sync
    keeps it. Resumable: after a crash, run the same command again.
    """
    from extractor import api

    if names:
        tables_given = ",".join(filter(None, (tables_given, *names)))
    summary = api.tables(
        out, format=output_format, tables=tables_given,  # type: ignore[arg-type]
        skip_tables=skip_tables, resume=resume, work_dir=work_dir, endpoint_url=endpoint_url,
        service=service, **fleet, **through_cli(),
    )  # fmt: skip
    show_run(summary)


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
    **fleet: Any,
) -> None:
    """Bring the Delta tables under OUT up to date: invoices, invoice_rows, transactions,
    and the accounting picture (see `extractor tables`), every one unless --tables or
    --skip-tables say otherwise.

    The first sync backfills; later ones merge what changed since the watermark committed
    with the data. After a crash, run it again: it resumes, and never skips a change.
    """
    from extractor import api

    summary = api.sync(
        out, tables=tables_given, skip_tables=skip_tables, reconcile=reconcile,
        overlap=overlap, since=parse_day(since, "--since"), no_ledger=no_ledger,
        parse_workers=parse_workers, work_dir=work_dir, endpoint_url=endpoint_url,
        service=service, **fleet, **through_cli(),
    )  # fmt: skip
    show_run(summary)
