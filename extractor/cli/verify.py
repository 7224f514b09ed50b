"""``extractor verify``: prove a lake complete, against the service and against itself."""

from __future__ import annotations

import dataclasses
import sys

import click

from extractor.cli.common import EXIT_PARTIAL, json_option, service_options, show_document
from extractor.cli.signals import run_command
from extractor.config import Credentials, ServiceConfig
from extractor.errors import UsageError


@click.command("verify")
@click.argument("out")
@click.option("--endpoint-url", help="S3-compatible endpoint (default: AWS, or AWS_ENDPOINT_URL).")
@click.option(
    "--identity", metavar="GUID", help="In a fleet's lake, this identity's part (default: none)."
)
@service_options(concurrency=1)
@json_option
def verify(
    out: str, endpoint_url: str | None, identity: str | None, service: ServiceConfig
) -> None:
    """Check the Delta lake OUT (what sync keeps) against the service and itself, one line a
    check: invoices against GetOrderSyncList, every voucher summing to zero, the ledger by
    month against the service's account balances, customers and products against the
    service's lists, and every account, customer, product and transaction type the facts
    use present in its table. Exit 0 when all hold, 3 when a mismatch is found."""
    from extractor.jobs.verify import render
    from extractor.jobs.verify import verify as verify_lake
    from extractor.output.targets import Target
    from extractor.service.identities import normalized

    target = Target.parse(out, endpoint_url)
    credentials = Credentials.from_env()
    if identity is not None and identity.strip().lower() == "all":
        raise UsageError("--identity: verify checks one identity's part at a time; give its guid")
    if identity is not None:  # its part of a fleet's lake, checked logged in as it
        identity = normalized(identity, "--identity")
        credentials = dataclasses.replace(credentials, identity_id=identity)
    found = run_command(verify_lake(target, credentials, service, identity=identity))
    show_document(found.as_json(), lambda: render(found))
    if not found.holds:
        sys.exit(EXIT_PARTIAL)
