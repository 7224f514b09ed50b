"""``extractor update-invoices``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from extractor import log
from extractor.cli.common import EXIT_PARTIAL, service_options, through_cli
from extractor.config import DEFAULT_UPDATE_SERVICE, ServiceConfig


@click.command("update-invoices")
@service_options(concurrency=DEFAULT_UPDATE_SERVICE.concurrency)
@click.option(
    "--input", "input_path", required=True, type=click.Path(path_type=Path),
    help="CSV, JSON Lines or Parquet with OrderId and InvoiceTitle and/or ReferenceNumber.",
)  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Check the input and show what would be sent.")
@click.option(
    "--report", type=click.Path(path_type=Path), help="Outcome per order (.parquet or .csv)."
)
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1, 1000))
def update_invoices(
    input_path: Path,
    dry_run: bool,
    report: Path | None,
    batch_size: int,
    service: ServiceConfig,
) -> None:
    """Set InvoiceTitle / ReferenceNumber of invoiced orders, in batches, from a file."""
    from extractor import api
    from extractor.records.update_files import describe, summarize

    done = api.update_invoices(
        input_path, report=report, batch_size=batch_size, dry_run=dry_run, service=service,
        **through_cli(),
    )  # fmt: skip
    if dry_run:
        updates = done.updates
        batches = -(-len(updates) // batch_size)
        click.echo(
            f"dry run: {len(updates):,} orders in {batches:,} UpdateInvoices requests; nothing sent"
        )
        for line in describe(updates):
            click.echo(line)
        return
    if not summarize(done.outcomes, done.report):
        log.current().warning("partial", f"some updates were not applied: see {done.report}")
        sys.exit(EXIT_PARTIAL)
