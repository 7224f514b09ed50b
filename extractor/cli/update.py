"""``extractor update-invoices``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from extractor import log
from extractor.cli.common import EXIT_PARTIAL, service_options
from extractor.cli.signals import run_command
from extractor.config import (
    Credentials,
    ServiceConfig,
)
from extractor.errors import ExtractorError
from extractor.jobs.updates import DEFAULT_UPDATE_SERVICE


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
    from extractor.jobs.update_files import (
        OutcomeLog,
        check_report,
        describe,
        read_updates,
        summarize,
        write_report,
    )
    from extractor.jobs.updates import UpdateJob, apply_updates

    job = UpdateJob(
        input=input_path, report=report, dry_run=dry_run, batch_size=batch_size,
        service=service,
    )  # fmt: skip
    updates = read_updates(input_path)
    check_report(job.report_path)
    batches = -(-len(updates) // batch_size)
    if dry_run:
        click.echo(
            f"dry run: {len(updates):,} orders in {batches:,} UpdateInvoices requests; nothing sent"
        )
        for line in describe(updates):
            click.echo(line)
        return
    credentials = Credentials.from_env()
    kept = OutcomeLog(job.report_path)
    try:
        outcomes = run_command(apply_updates(job, updates, credentials, log=kept))
        write_report(job.report_path, outcomes)
    except ExtractorError as exc:
        kept.close(done=False)
        message = exc.args[0] if exc.args else type(exc).__name__  # its settings still in braces
        exc.args = (f"{message}; the outcomes so far are in {kept.path}",)
        raise
    kept.close(done=True)
    if not summarize(outcomes, job.report_path):
        log.current().warning("partial", f"some updates were not applied: see {job.report_path}")
        sys.exit(EXIT_PARTIAL)
