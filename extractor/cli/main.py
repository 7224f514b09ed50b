"""The ``extractor`` command: a thin click layer over the library.

Library errors become one line on stderr and an exit status; nothing here does real work.
"""

from __future__ import annotations

import copy
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, Final

import click

from extractor import log, redact
from extractor.cli import settings
from extractor.cli.check import check
from extractor.cli.common import EXIT_FATAL, EXIT_PERMANENT, EXIT_USAGE
from extractor.cli.extract import invoices, sync, tables, transactions
from extractor.cli.identities import list_identities
from extractor.cli.properties import list_properties
from extractor.cli.reset import reset
from extractor.cli.simulate import demo, simulate
from extractor.cli.status import status
from extractor.cli.update import update_invoices
from extractor.cli.verify import verify
from extractor.config import password_variable
from extractor.errors import ExtractorError, Permanent, UsageError
from extractor.parser import parser_in_use
from extractor.signals import Interrupted

EPILOG: Final = (
    "Credentials come from the environment only: TFSO_APPLICATION_ID, TFSO_USERNAME, "
    "TFSO_PASSWORD (and TFSO_IDENTITY_ID for one identity). Exit statuses: 0 done; 1 failed "
    "(the service, the network or the output); 2 bad input or a refusal, before any request; "
    "3 partial (see OUT/_runs/ and OUT/_failures/; run the same command again); 4 failed for "
    "good (the login or identity refused, not the service, no such bucket: do not retry); "
    "130 Ctrl-C, "
    "143 SIGTERM (resumable). Every option can also be set as EXTRACTOR_<OPTION> (e.g. "
    "EXTRACTOR_MAX_REQUESTS_PER_HOUR) or in a --config TOML file; a flag beats a variable "
    "beats the file."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(
    package_name="extractor", message=f"%(prog)s %(version)s; parser: {parser_in_use()}"
)
def main() -> None:
    """Bulk extractor for the 24SevenOffice SOAP API into typed, partitioned Parquet."""


for command in (
    invoices, transactions, tables, sync, verify, update_invoices, status, reset, check,
    list_identities, list_properties, simulate, demo,
):  # fmt: skip
    main.add_command(command)
settings.equip(main.commands.values())
settings.equip_group(main)
#: ``lists``, as 0.2 called ``tables`` (with ``--list NAME``): kept working, not listed.
main.add_command(copy.copy(tables), "lists")
main.commands["lists"].hidden = True


def _flags() -> dict[str, str]:
    """Each setting's flag, by the field the library names it by (``date_from``: ``--from``)."""
    flags: dict[str, str] = {}
    for command in main.commands.values():
        for param in command.params:
            if isinstance(param, click.Option) and param.name:
                flags.setdefault(param.name, param.opts[0])
    return flags


FLAGS: Final = _flags()


def flag(field: str) -> str:
    """The flag of a setting the library names (a field of a job or of ServiceConfig)."""
    return FLAGS.get(field) or "--" + field.replace("_", "-")


def _say(event: str, message: object) -> None:
    """One line on stderr (an ``error`` event of the log), with the password blanked should
    any code path ever carry it."""
    for name in {"TFSO_PASSWORD", password_variable()}:
        redact.register(os.environ.get(name))  # also before Credentials were read
    log.current().error(event, str(message))


def entry(argv: list[str] | None = None, *, run: Callable[..., Any] = main.main) -> int:
    """Run the CLI; user errors become one line and a non-zero status, never a traceback.
    Bare ``extractor`` prints its help."""
    args = sys.argv[1:] if argv is None else argv
    if not args and run == main.main:
        with click.Context(main, info_name="extractor") as context:
            click.echo(main.get_help(context))
        return 0
    settings.start(args)
    try:
        defaults = settings.defaults(main, args)
        run(args=argv, prog_name="extractor", standalone_mode=False, default_map=defaults)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "extractor"
        _say("usage_error", f"{command}: error: {exc.format_message()} (see '{command} --help')")
        return EXIT_USAGE
    except Interrupted as stopped:
        _say("interrupted", f"extractor: interrupted ({stopped}); run the same command to resume")
        return 128 + stopped.signum
    except (click.Abort, KeyboardInterrupt):
        _say("interrupted", "extractor: interrupted; run the same command to resume")
        return 130
    except ExtractorError as exc:
        _say("error", f"extractor: error: {exc.naming(flag)}")
        if isinstance(exc, UsageError):
            return EXIT_USAGE
        return EXIT_PERMANENT if isinstance(exc, Permanent) else EXIT_FATAL
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_FATAL
    except Exception as exc:  # a defect: as text its traceback, as JSON one event holding it
        if log.current().format != "json":
            raise
        log.current().error(
            "internal_error", f"extractor: internal error: {type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
        )  # fmt: skip
        return EXIT_FATAL
    return 0


def run_cli() -> None:
    sys.exit(entry())
