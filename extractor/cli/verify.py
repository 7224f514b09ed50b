"""``extractor verify``: prove a lake complete, against the service and against itself."""

from __future__ import annotations

import sys

import click

from extractor.cli.common import (
    EXIT_PARTIAL,
    json_option,
    service_options,
    show_document,
    show_failure,
)
from extractor.clock import new_run_id
from extractor.config import ServiceConfig


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
    from extractor import api
    from extractor.jobs.verify import render

    try:
        found = api.verify(
            out, identity=identity, endpoint_url=endpoint_url, service=service,
            handle_signals=True,
        )  # fmt: skip
    except Exception as exc:  # a scheduler's JSON log gets a line for this night too
        from extractor.engine.history import failed_record

        known = {"command": "verify", "output": out, "identity_id": identity}
        show_failure(failed_record(new_run_id(), exc, "failed", known))
        raise
    show_document(found.as_json(), lambda: render(found))
    if not found.holds:
        sys.exit(EXIT_PARTIAL)
