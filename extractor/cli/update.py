"""``extractor update-invoices``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from extractor import log
from extractor.cli.common import EXIT_PARTIAL, service_options
from extractor.cli.signals import run_command
from extractor.config import DEFAULT_UPDATE_SERVICE, Credentials, ServiceConfig
from extractor.errors import ExtractorError

if TYPE_CHECKING:
    from extractor.jobs.update_journal import UpdateJournal
    from extractor.records.update_files import Update


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
    from extractor.jobs.update_journal import UpdateJournal
    from extractor.jobs.updates import UpdateJob, apply_updates
    from extractor.records.update_files import (
        check_report,
        describe,
        read_updates,
        summarize,
        write_report,
    )

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
    journal = UpdateJournal(job.report_path)
    try:
        _say_resuming(journal, updates)
        outcomes = run_command(apply_updates(job, updates, credentials, journal=journal))
        write_report(job.report_path, outcomes)  # every row once, rebuilt from the journal
    except ExtractorError as exc:
        message = exc.args[0] if exc.args else type(exc).__name__  # its settings still in braces
        exc.args = (f"{message}; the outcomes so far are in {journal.path}",)
        raise
    finally:
        journal.close()
    if not summarize(outcomes, job.report_path):
        log.current().warning("partial", f"some updates were not applied: see {job.report_path}")
        sys.exit(EXIT_PARTIAL)


def _say_resuming(journal: UpdateJournal, updates: Sequence[Update]) -> None:
    """What an earlier run of these updates left: answered, or sent without an answer."""
    resume = journal.resume(updates)
    if resume.settled or resume.unsure:
        log.current().info(
            "resuming",
            f"{journal.path}: {len(resume.settled):,} updates answered before (not sent "
            f"again), {len(resume.unsure):,} sent without a recorded answer (read back "
            "first, sent again only if not applied)",
            answered=len(resume.settled), unsure=len(resume.unsure),
        )  # fmt: skip
