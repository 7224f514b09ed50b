"""The identities (client companies) a login reaches, and which of them a command works on.

``GetIdentities`` lists them for the logged-in user. A session works on one identity at a
time (``Login`` with ``credential.IdentityId``); a fleet gives each its own session rather
than switching one that other workers use (``SetIdentityById``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from lxml import etree

from extractor import soap
from extractor.config import Credentials, ServiceConfig
from extractor.errors import MalformedResponse, UsageError
from extractor.parser import RecordStream
from extractor.service.session import Session, connected

NAMESPACE: Final = "http://24sevenOffice.com/webservices"
IDENTITY_TAG: Final = f"{{{NAMESPACE}}}Identity"
#: ``--identity all``: every identity the user has, less the disabled ones.
ALL: Final = "all"
_GUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class Identity:
    """One identity of GetIdentities: a client company the user reaches."""

    id: str  # a guid, lower case
    client_id: int | None
    client_name: str
    current: bool = False
    default: bool = False
    disabled: bool = False

    @property
    def label(self) -> str:
        """How a message names it: its id and, when known, its company."""
        return f"{self.id} ({self.client_name})" if self.client_name else self.id


def read_identity(elem: etree._Element) -> Identity:
    """An ``Identity`` element."""

    def text(path: str) -> str:
        qualified = "/".join(f"{{{NAMESPACE}}}{step}" for step in path.split("/"))
        return (elem.findtext(qualified) or "").strip()

    identity_id = text("Id").lower()
    if not _GUID.fullmatch(identity_id):
        raise MalformedResponse(f"GetIdentities: an Identity's Id {identity_id!r} is not a guid")
    client = text("Client/Id")
    return Identity(
        id=identity_id,
        client_id=int(client) if client.lstrip("-").isdigit() else None,
        client_name=text("Client/Name"),
        current=text("IsCurrent") == "true",
        default=text("IsDefault") == "true",
        disabled=text("IsDisabled") == "true",
    )


async def identities(session: Session) -> list[Identity]:
    """The identities of the logged-in user, as GetIdentities lists them."""
    stream = await session.call(
        soap.GET_IDENTITIES, {}, lambda: RecordStream(IDENTITY_TAG, read_identity)
    )
    return list(stream.records)


async def listed_identities(service: ServiceConfig, credentials: Credentials) -> list[Identity]:
    """Log in once and list the user's identities."""
    async with connected(service, credentials) as session:
        return await identities(session)


def normalized(value: str, flag: str) -> str:
    """A guid as given on the command line, lower case; UsageError if it is none."""
    guid = value.strip().lower()
    if not _GUID.fullmatch(guid):
        raise UsageError(
            f"{flag} {value!r} is not a guid (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) or '{ALL}'"
        )
    return guid


def chosen(
    listed: Sequence[Identity], asked: Sequence[str], excluded: Sequence[str] = ()
) -> list[Identity]:
    """The identities a command works on: those ``asked`` for (guids, or ``all``: every one
    listed that is not disabled), less ``excluded``; in the order listed. UsageError for an
    identity the user does not have, or a disabled one asked for by its id."""
    by_id = {identity.id: identity for identity in listed}
    wanted = {normalized(guid, "--exclude-identity") for guid in excluded}
    for guid in sorted(wanted - by_id.keys()):
        raise UsageError(f"--exclude-identity {guid}: {_not_yours(listed)}")
    if ALL in asked and len(asked) > 1:
        raise UsageError(f"--identity {ALL} already means every identity; give it alone")
    if list(asked) == [ALL]:
        return [i for i in listed if not i.disabled and i.id not in wanted]
    picked = []
    for value in asked:
        guid = normalized(value, "--identity")
        if guid not in by_id:
            raise UsageError(f"--identity {guid}: {_not_yours(listed)}")
        if by_id[guid].disabled:
            raise UsageError(f"--identity {by_id[guid].label} is disabled (GetIdentities)")
        if guid not in wanted and by_id[guid] not in picked:
            picked.append(by_id[guid])
    return sorted(picked, key=list(listed).index)


def _not_yours(listed: Sequence[Identity]) -> str:
    return (
        f"not one of the {len(listed)} identities this user has "
        "(run 'extractor identities' to list them)"
    )
