"""What the commands share: options (one ``service_options`` yielding a ServiceConfig), exit
statuses, and the lock a Delta or object-store target takes."""

from __future__ import annotations

import datetime as dt
import functools
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast

import click
import orjson

from extractor import log
from extractor.config import (
    DEFAULT_BASE_URL,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_PAUSE,
    DEFAULT_MAX_REQUESTS_PER_HOUR,
    DEFAULT_SOAP_VERSION,
    DEFAULT_TIMEOUTS,
    MAX_CONCURRENCY,
    MAX_OVERLAP_MINUTES,
    service_config,
)
from extractor.errors import UsageError
from extractor.soap import Soap

if TYPE_CHECKING:  # the commands import what they run only when they run (quick --help)
    from extractor.engine.summary import RunSummary, SyncSummary
    from extractor.fleet.launch import FleetSummary

EXIT_FATAL: Final = 1
EXIT_USAGE: Final = 2
EXIT_PARTIAL: Final = 3
#: A failure that running again will not mend (a refused login, a URL that is not the service).
EXIT_PERMANENT: Final = 4


def names(text: str | None) -> tuple[str, ...]:
    return tuple(name.strip() for name in (text or "").split(",") if name.strip())


F = TypeVar("F", bound=Callable[..., Any])


def stack(*options: Callable[[F], F]) -> Callable[[F], F]:
    def apply(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


class ConcurrencyType(click.ParamType[int | Literal["auto"], Any]):
    """``auto`` or a number of requests in flight, 1..MAX_CONCURRENCY."""

    name = "auto|N"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | Literal["auto"]:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        elif isinstance(value, str) and value.strip().isdigit():
            number = int(value)
        else:
            self.fail(f"{value!r} is not a valid integer, nor auto", param, ctx)
        if not 1 <= number <= MAX_CONCURRENCY:
            self.fail(
                f"{number} is not in the range 1..{MAX_CONCURRENCY}: give auto (adapt to the "
                "service) or a number of requests in flight",
                param,
                ctx,
            )
        return number


def service_options(
    concurrency: int | Literal["auto"] = DEFAULT_CONCURRENCY,
) -> Callable[[F], F]:
    """The options of every command that calls the service, handed to it as one
    ``service: ServiceConfig``; ``concurrency`` is the command's default."""
    options = stack(
        click.option(
            "--base-url", default=DEFAULT_BASE_URL, show_default=True,
            help="Root of the service paths.",
        ),
        click.option(
            "--concurrency", default=concurrency, show_default=True, type=ConcurrencyType(),
            help="Requests in flight at once: auto adapts them to the service (more while its "
            "budget is unused and answers do not slow, fewer when they slow or fail, "
            f"1..{MAX_CONCURRENCY}); a number keeps them fixed.",
        ),
        click.option(
            "--soap-version", type=click.Choice([version.value for version in Soap]),
            default=DEFAULT_SOAP_VERSION.value, show_default=True,
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
            *args: Any, base_url: str, concurrency: int | Literal["auto"], soap_version: str,
            max_requests_per_hour: int, timeout: float, max_pause: float, insecure: bool,
            **kwargs: Any,
        ) -> Any:  # fmt: skip
            service = service_config(
                base_url=base_url, concurrency=concurrency, soap_version=soap_version,
                max_requests_per_hour=max_requests_per_hour, timeout=timeout,
                max_pause=max_pause, insecure=insecure,
            )  # fmt: skip
            return command(*args, service=service, **kwargs)

        return options(cast(F, with_service))

    return decorate


#: Every command that may write to an object store.
storage_options = (
    click.option(
        "--work-dir",
        callback=lambda _ctx, _param, value: _work_dir(value),
        help="Local folder for the journal and staging of an s3:// or Delta --out "
        "(default: OUT itself when local, else $XDG_CACHE_HOME/extractor/<hash of OUT>, "
        "~/.cache without it).",
    ),
    click.option(
        "--endpoint-url", help="S3-compatible endpoint (default: AWS, or AWS_ENDPOINT_URL)."
    ),
)
#: Every command that writes a resumable dataset.
dataset_options = stack(
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
    *storage_options,
)


def _remember_json(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    ctx.meta["summary_json"] = value


#: ``--json``: the run's summary as one JSON document on stdout, for schedulers.
json_option = click.option(
    "--json", is_flag=True, expose_value=False, callback=_remember_json,
    help="Print the run's summary as one JSON line on stdout instead of text.",
)  # fmt: skip


def through_cli() -> dict[str, Any]:
    """What every API call of a command is given: the command's log (its events on stderr,
    as the flags configured it) and signals handled (SIGINT, SIGTERM: a clean stop)."""
    return {"log": log.current(), "handle_signals": True}


def show_run(summary: RunSummary | SyncSummary | FleetSummary) -> None:
    """A run's, a sync's or a fleet's summary on stdout (text, or JSON with ``--json``); a
    partial one says where to look, and exits with :data:`EXIT_PARTIAL`."""
    from extractor.engine.summary import SyncSummary, render
    from extractor.fleet.launch import FleetSummary
    from extractor.fleet.run import render_fleet

    if isinstance(summary, FleetSummary):
        show_document(summary.as_json(), lambda: render_fleet(summary.document))
        what, where = "fleet", summary.summary_file
    else:
        show_document(summary.as_json(), lambda: render(summary))
        if isinstance(summary, SyncSummary):
            what, where = "sync", f"{summary.work}/sync-*/_runs/"
        else:
            what, where = "run", str(summary.summary_file)
    if not summary.complete:
        log.current().warning("partial", f"{what} was partial: see {where}")
        sys.exit(EXIT_PARTIAL)


def show_document(document: dict[str, Any], text: Callable[[], str]) -> None:
    """``document`` on stdout as one compact JSON line when ``--json`` was given (a
    scheduler reads the last line: Airflow's BashOperator pushes it), else ``text()``."""
    context = click.get_current_context(silent=True)
    if context is not None and context.meta.get("summary_json"):
        click.echo(orjson.dumps(document).decode())
    else:
        click.echo(text())


def show_failure(record: dict[str, Any]) -> None:
    """The record of a run that failed, on stdout as one compact JSON line when ``--json``
    was given (the error itself is the log's last line on stderr, either way)."""
    context = click.get_current_context(silent=True)
    if context is not None and context.meta.get("summary_json"):
        click.echo(orjson.dumps(record).decode())


def parse_when(text: str, flag: str) -> dt.datetime:
    """``YYYY-MM-DD`` or an ISO date-time; naive values are UTC. Returns naive UTC."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{flag}: {text!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS (UTC)"
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if value > now + dt.timedelta(minutes=5):  # a typo of a year, or local time taken for UTC
        log.current().warning(
            "future", f"{flag} {value.isoformat()} is in the future (UTC now "
            f"{now.isoformat(timespec='seconds')}): nothing has changed after it yet",
        )  # fmt: skip
    return value


def _work_dir(value: str | None) -> Path | None:
    """``--work-dir`` as given; an empty one is refused (it would mean the current folder)."""
    if value is not None and not value.strip():
        raise click.BadParameter("is empty; give a local folder (or leave the flag out)")
    return None if value is None else Path(value)


def finite_minutes(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """A number of minutes that a date can be moved by (not inf, nan or past ten years)."""
    if not math.isfinite(value) or not 0 <= value <= MAX_OVERLAP_MINUTES:
        raise click.BadParameter(f"{value} is not a number of minutes from 0 to ten years")
    return value


def parse_day(text: str, flag: str) -> dt.date:
    """``YYYY-MM-DD``; a time part is refused, not silently dropped."""
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"{flag}: {text!r} is not a day; use YYYY-MM-DD (whole days are fetched)"
        ) from None
