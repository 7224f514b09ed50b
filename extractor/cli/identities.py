"""``extractor identities``: the client companies the credentials reach."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import orjson

from extractor.cli.common import service_options
from extractor.config import ServiceConfig

if TYPE_CHECKING:  # the service is imported when the command runs: ``--help`` loads none of it
    from extractor.service.identities import Identity


@click.command("identities")
@service_options(concurrency=1)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per identity.")
def list_identities(service: ServiceConfig, as_json: bool) -> None:
    """List the identities (client companies) the TFSO_* credentials reach (GetIdentities)."""
    from extractor import api

    listed = api.identities(service=service, handle_signals=True)
    for identity in listed:
        click.echo(orjson.dumps(_fields(identity)).decode() if as_json else _line(identity))
    if not as_json:
        disabled = sum(identity.disabled for identity in listed)
        click.echo(f"{len(listed)} identities, {disabled} disabled")


def _fields(identity: Identity) -> dict[str, object]:
    return {
        "identity_id": identity.id,
        "client_id": identity.client_id,
        "client_name": identity.client_name,
        "current": identity.current,
        "default": identity.default,
        "disabled": identity.disabled,
    }


def _line(identity: Identity) -> str:
    marks = [name for name in ("current", "default", "disabled") if getattr(identity, name)]
    note = f"  ({', '.join(marks)})" if marks else ""
    client = "" if identity.client_id is None else f"{identity.client_id}  "
    return f"{identity.id}  {client}{identity.client_name}{note}"
