"""The ``extractor`` command: a thin click layer over the library.

Library errors become one line on stderr and an exit status; nothing here does real work.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import click

from extractor import redact
from extractor.config import (
    DEFAULT_BASE_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_PAUSE,
    DEFAULT_MAX_REQUESTS_PER_HOUR,
    DEFAULT_PARSE_WORKERS,
    DEFAULT_SOAP_VERSION,
    DEFAULT_TIMEOUTS,
    Credentials,
    ServiceConfig,
    Timeouts,
    parse_when,
)
from extractor.errors import ExtractorError, UsageError
from extractor.jobs.invoices import InvoiceJob
from extractor.jobs.runner import run
from extractor.jobs.sync import DEFAULT_SINCE
from extractor.jobs.updates import DEFAULT_UPDATE_SERVICE
from extractor.output.destination import destination
from extractor.output.lock import target_lock
from extractor.output.staging import Output
from extractor.output.targets import Target
from extractor.runs.progress import render_ledger_summary, render_summary
from extractor.simulator.faults import KINDS, FaultConfig

EXIT_FATAL: Final = 1
EXIT_USAGE: Final = 2
EXIT_PARTIAL: Final = 3
T = TypeVar("T")


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(name.strip() for name in (text or "").split(",") if name.strip())


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; SIGINT or SIGTERM cancels it, so that it stops cleanly
    (journal closed, parser processes stopped), then :class:`Interrupted`."""
    return asyncio.run(_until_signalled(coroutine))


async def _until_signalled(coroutine: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    received: list[int] = []

    def stop(signum: int) -> None:
        if not received:  # a second signal while stopping changes nothing
            main_task.cancel()
        received.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await coroutine
    except asyncio.CancelledError:
        if received:
            raise Interrupted(received[0]) from None
        raise
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


class Interrupted(Exception):
    """The run was stopped by a signal, cleanly."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


F = TypeVar("F", bound=Callable[..., Any])


def _stack(*options: Callable[[F], F]) -> Callable[[F], F]:
    def apply(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def service_options(concurrency: int = DEFAULT_CONCURRENCY) -> Callable[[F], F]:
    """The options of every command that calls the service, handed to it as one
    ``service: ServiceConfig``; ``concurrency`` is the command's default."""
    options = _stack(
        click.option(
            "--base-url", default=DEFAULT_BASE_URL, show_default=True,
            help="Root of the service paths.",
        ),
        click.option(
            "--concurrency", default=concurrency, show_default=True, type=click.IntRange(1, 64),
            help="Requests in flight at once.",
        ),
        click.option(
            "--soap-version", type=click.Choice(["1.1", "1.2"]), default=DEFAULT_SOAP_VERSION,
            show_default=True,
        ),
        click.option(
            "--max-requests-per-hour", default=DEFAULT_MAX_REQUESTS_PER_HOUR, show_default=True,
            type=click.IntRange(0),
            help="Client-side rate limit shared by all workers (0: off, for simulators).",
        ),
        click.option(
            "--timeout", default=DEFAULT_TIMEOUTS.attempt, show_default=True,
            type=click.FloatRange(min=0.1),
            help="Seconds one attempt may take, response body included.",
        ),
        click.option(
            "--max-pause", default=DEFAULT_MAX_PAUSE, show_default=True,
            type=click.FloatRange(min=0),
            help="Seconds of pause the service may ask for (Retry-After, budget reset, "
            "quarantine) that are waited out; a longer one stops the run, resumable.",
        ),
        click.option("--insecure", is_flag=True, help="Do not verify TLS certificates."),
    )  # fmt: skip

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def with_service(
            *args: Any, base_url: str, concurrency: int, soap_version: str,
            max_requests_per_hour: int, timeout: float, max_pause: float, insecure: bool,
            **kwargs: Any,
        ) -> Any:  # fmt: skip
            timeouts = Timeouts(
                connect=min(DEFAULT_TIMEOUTS.connect, timeout), attempt=timeout,
                max_pause=max_pause,
            )  # fmt: skip
            service = ServiceConfig(
                base_url=base_url, concurrency=concurrency, soap_version=soap_version,
                max_requests_per_hour=max_requests_per_hour, timeouts=timeouts,
                insecure=insecure,
            )  # fmt: skip
            return command(*args, service=service, **kwargs)

        return options(cast(F, with_service))

    return decorate


#: Every command that may write to an object store.
_storage_options = (
    click.option(
        "--work-dir",
        type=click.Path(path_type=Path),
        help="Local folder for the journal and staging of an s3:// or Delta --out "
        "(default: under ~/.cache/extractor).",
    ),
    click.option(
        "--endpoint-url", help="S3-compatible endpoint (default: AWS, or AWS_ENDPOINT_URL)."
    ),
)
#: Every command that writes a resumable dataset.
_dataset_options = _stack(
    click.option("--out", "out", required=True, help="Dataset directory, or s3://bucket/prefix."),
    click.option("--resume", is_flag=True, help="Insist on continuing the unfinished run in OUT."),
    click.option(
        "--format",
        "output_format",
        type=click.Choice(["parquet", "delta"]),
        default="parquet",
        show_default=True,
        help="Hive-partitioned Parquet, or Delta tables (merged; what sync continues).",
    ),
    *_storage_options,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="extractor")
def main() -> None:
    """Bulk extractor for the 24SevenOffice SOAP API into typed, partitioned Parquet."""


@main.command()
@_dataset_options
@service_options()
@click.option("--changed-after", help="Only orders changed after this UTC time.")
@click.option("--registered-after", help="Only orders registered after this UTC time.")
@click.option(
    "--batch-size", default=1000, show_default=True, type=int, help="Ids per GetInvoices (1..1000)."
)
@click.option("--invoice-properties", help="Comma-separated InvoiceOrder properties (default all).")
@click.option("--row-properties", help="Comma-separated InvoiceRow properties (default all).")
@click.option(
    "--parse-workers",
    type=click.IntRange(0, 64),
    default=DEFAULT_PARSE_WORKERS,
    show_default=True,
    help="Parser processes (0: parse on the event loop).",
)
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
) -> None:
    """Backfill invoices and their rows into OUT/invoices and OUT/invoice_rows.

    Resumable: after a crash, run the same command again; it continues where it stopped.
    """
    if changed_after and registered_after:
        raise UsageError("give --changed-after or --registered-after, not both")
    if output_format == "delta" and (invoice_properties or row_properties):
        raise UsageError(
            "--format delta keeps whole records (what sync merges into); "
            "drop --invoice-properties and --row-properties"
        )
    work, output = destination(out, output_format, work_dir, endpoint_url, "invoices")
    job = InvoiceJob(
        out=work,
        output=output,
        service=service,
        changed_after=parse_when(changed_after, "--changed-after") if changed_after else None,
        registered_after=parse_when(registered_after, "--registered-after")
        if registered_after
        else None,
        batch_size=batch_size,
        invoice_properties=_names(invoice_properties),
        row_properties=_names(row_properties),
        parse_workers=parse_workers,
        resume=resume,
    )
    credentials = Credentials.from_env()
    with _target_lock(out, output, work_dir, "invoices"):
        summary = _run(run(job, credentials))
    click.echo(render_summary(summary))
    _exit_if_partial(summary, work)


def _target_lock(
    out: str, output: Output | None, work_dir: Path | None, command: str
) -> contextlib.AbstractContextManager[object]:
    """A Delta or object-store target is one output whatever the command (sync included):
    lock its work root too. A local Parquet ``--out`` is locked by the run itself."""
    if output is None:
        return contextlib.nullcontext()
    return target_lock(output.target, work_dir, command)


def _exit_if_partial(summary: dict[str, Any], work: Path) -> None:
    if summary["status"] != "complete":
        report = work / "_runs" / f"{summary['run_id']}.json"
        click.echo(f"run was partial: see {report}", err=True)
        sys.exit(EXIT_PARTIAL)


@main.command()
@_dataset_options
@service_options()
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
) -> None:
    """Extract the general ledger into OUT/transactions, a date window per request.

    Resumable: after a crash, run the same command again; it continues where it stopped.
    """
    from extractor.jobs.ledger import TransactionJob

    work, output = destination(out, output_format, work_dir, endpoint_url, "transactions")
    job = TransactionJob(
        out=work,
        output=output,
        date_from=parse_when(date_from, "--from").date(),
        date_to=parse_when(date_to, "--to").date(),
        service=service,
        date_field=date_field,
        window=window,
        account_from=account_from,
        account_to=account_to,
        system_types=system_types,
        resume=resume,
    )
    with _target_lock(out, output, work_dir, "transactions"):
        summary = _run(run(job, Credentials.from_env()))
    click.echo(render_ledger_summary(summary))
    _exit_if_partial(summary, work)


@main.command()
@click.option(
    "--out", required=True, help="Root of the Delta tables: a directory or s3://bucket/prefix."
)
@click.option(
    "--overlap",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Minutes before the watermark to list changes from (clock skew).",
)
@click.option(
    "--since",
    default=DEFAULT_SINCE.isoformat(),
    show_default=True,
    help="First sync only: ledger lines changed since this day.",
)
@click.option("--reconcile", is_flag=True, help="Also mark orders the service no longer has.")
@click.option("--no-ledger", is_flag=True, help="Invoices only; leave the transactions table.")
@click.option(
    "--parse-workers",
    type=click.IntRange(0, 64),
    default=DEFAULT_PARSE_WORKERS,
    show_default=True,
    help="Parser processes (0: parse on the event loop).",
)
@_stack(*_storage_options)
@service_options()
def sync(
    out: str,
    overlap: float,
    since: str,
    reconcile: bool,
    no_ledger: bool,
    parse_workers: int,
    work_dir: Path | None,
    endpoint_url: str | None,
    service: ServiceConfig,
) -> None:
    """Bring the Delta tables under OUT up to date: invoices, invoice_rows, transactions.

    The first sync backfills; later ones merge what changed since the watermark committed
    with the data. After a crash, run it again: it resumes, and never skips a change.
    """
    from extractor.jobs.sync import SyncJob, render_sync_summary, run_sync

    job = SyncJob(
        target=Target.parse(out, endpoint_url), work_dir=work_dir, service=service,
        overlap=dt.timedelta(minutes=overlap), since=parse_when(since, "--since").date(),
        reconcile=reconcile, ledger=not no_ledger, parse_workers=parse_workers,
    )  # fmt: skip
    summary = _run(run_sync(job, Credentials.from_env()))
    click.echo(render_sync_summary(summary))
    if summary["status"] != "complete":
        click.echo(f"sync was partial: see {job.work}/sync-*/_runs/", err=True)
        sys.exit(EXIT_PARTIAL)


@main.command("update-invoices")
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
    from extractor.jobs.updates import (
        OutcomeLog,
        UpdateJob,
        apply_updates,
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
    log = OutcomeLog(job.report_path)
    try:
        outcomes = _run(apply_updates(job, updates, credentials, log=log))
        write_report(job.report_path, outcomes)
    except ExtractorError as exc:
        log.close(done=False)
        exc.args = (f"{exc}; the outcomes so far are in {log.path}",)
        raise
    log.close(done=True)
    if not summarize(outcomes, job.report_path):
        click.echo(f"some updates were not applied: see {job.report_path}", err=True)
        sys.exit(EXIT_PARTIAL)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--orders", default=50_000, show_default=True, type=click.IntRange(0, 10_000_000))
@click.option("--seed", default=7, show_default=True, type=int)
@click.option(
    "--latency",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds per request.",
)
@click.option(
    "--latency-per-1000",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds per 1000 invoices.",
)
@click.option(
    "--session-ttl-calls",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Expire sessions after N calls (0: never).",
)
@click.option(
    "--fault-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of data requests that fail.",
)
@click.option(
    "--fault-kinds",
    default=",".join(KINDS),
    show_default=True,
    help="Comma-separated kinds the failures are spread over.",
)
@click.option(
    "--slow-seconds",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Stall of a 'slow' fault.",
)
@click.option("--poison-ids", help="Comma-separated OrderIds that make any GetInvoices fail.")
@click.option("--hostile", is_flag=True, help="Answer data requests with a DOCTYPE of entities.")
@click.option(
    "--rate-budget",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Requests per window before a quarantine (0: no limit, no headers).",
)
@click.option("--rate-window", default=3600.0, show_default=True, type=click.FloatRange(1))
@click.option("--quarantine-seconds", default=60.0, show_default=True, type=click.FloatRange(0))
def simulate(
    host: str,
    port: int,
    orders: int,
    seed: int,
    latency: float,
    latency_per_1000: float,
    session_ttl_calls: int,
    fault_rate: float,
    fault_kinds: str,
    slow_seconds: float,
    poison_ids: str | None,
    hostile: bool,
    rate_budget: int,
    rate_window: float,
    quarantine_seconds: float,
) -> None:
    """Serve the built-in 24SevenOffice simulator until interrupted."""
    from extractor.simulator.cli import serve

    try:
        poison = frozenset(int(i) for i in _names(poison_ids))
        faults = FaultConfig(
            rate=fault_rate,
            kinds=_names(fault_kinds),
            seed=seed,
            slow_seconds=slow_seconds,
            poison_ids=poison,
            hostile=hostile,
            budget=rate_budget,
            window=rate_window,
            quarantine=quarantine_seconds,
        )
    except ValueError as exc:
        raise UsageError(f"simulate: {exc}") from None
    try:
        _run(serve(host, port, orders, seed, latency, latency_per_1000, session_ttl_calls, faults))
    except Interrupted:
        click.echo("simulator stopped")  # how a simulator is meant to end


@main.command()
@click.option("--out", default="demo-output", show_default=True, type=click.Path(path_type=Path))
@click.option("--orders", default=50_000, show_default=True, type=click.IntRange(1, 10_000_000))
def demo(out: Path, orders: int) -> None:
    """Backfill the built-in simulator's orders into ./demo-output and show the result."""
    from extractor.simulator.cli import prepare_demo_dir, run_demo

    prepare_demo_dir(out)
    _run(run_demo(out, orders))


def _say(message: object) -> None:
    """One line on stderr, with the password blanked should any code path ever carry it."""
    redact.register(os.environ.get("TFSO_PASSWORD"))  # also before Credentials were read
    click.echo(redact.mask(str(message).replace("\n", " ")), err=True)


def entry(argv: list[str] | None = None, *, run: Callable[..., Any] = main.main) -> int:
    """Run the CLI; user errors become one line and a non-zero status, never a traceback."""
    try:
        run(args=argv, prog_name="extractor", standalone_mode=False)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "extractor"
        _say(f"{command}: error: {exc.format_message()} (see '{command} --help')")
        return EXIT_USAGE
    except Interrupted as stopped:
        _say(f"extractor: interrupted ({stopped}); run the same command to resume")
        return 128 + stopped.signum
    except (click.Abort, KeyboardInterrupt):
        _say("extractor: interrupted; run the same command to resume")
        return 130
    except UsageError as exc:
        _say(f"extractor: error: {exc}")
        return EXIT_USAGE
    except ExtractorError as exc:
        _say(f"extractor: error: {exc}")
        return EXIT_FATAL
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_FATAL
    return 0


def run_cli() -> None:
    sys.exit(entry())
