"""Reading a request's parameters as the service does: by element path, in any namespace.

An absent element, an empty one, ``xsi:nil`` and the service's "not set" sentinels all mean
"not given" (None); text that cannot be read is a :class:`~.messages.Fault`, as ASMX answers it.
"""

from __future__ import annotations

import datetime as dt

from lxml import etree

from extractor import schema
from extractor.simulator.messages import Fault

UNREADABLE = "Server was unable to read request. ---> "


def path(names: str) -> str:
    """``a/b`` as an lxml path in any namespace."""
    return "/".join(f"{{*}}{name}" for name in names.split("/"))


def text(params: etree._Element, at: str) -> str | None:
    """The stripped text at ``at`` ("" when empty or nil), None when the element is absent."""
    found = params.find(path(at))
    return None if found is None else (found.text or "").strip()


def strings(params: etree._Element, at: str) -> tuple[str, ...]:
    """The items of an ``ArrayOfString`` at ``at`` (none when it is absent)."""
    return tuple(e.text or "" for e in params.iterfind(path(f"{at}/string")))


def ints(params: etree._Element, at: str, item: str = "int") -> list[int]:
    """The numbers of an ``ArrayOfInt`` (or of ``short``) at ``at``; none when it is absent."""
    try:
        return [int(e.text or "") for e in params.iterfind(path(f"{at}/{item}"))]
    except ValueError as exc:
        raise Fault(f"{UNREADABLE}{exc}") from None


def number(params: etree._Element, at: str) -> int | None:
    """The int at ``at``; None when it is not given."""
    found = text(params, at)
    if not found or found == schema.SENTINELS["int"]:
        return None
    try:
        return int(found)
    except ValueError:
        raise Fault(f"{UNREADABLE}invalid int {found!r}") from None


def flag(params: etree._Element, at: str) -> bool | None:
    """The boolean at ``at``; None when it is not given."""
    found = text(params, at)
    return None if not found else found in ("true", "1")


def when(params: etree._Element, at: str) -> dt.datetime | None:
    """The dateTime at ``at`` (UTC, without offset); None when it is not given."""
    found = text(params, at)
    if not found or found.startswith("0001-01-01"):
        return None
    try:
        moment = dt.datetime.fromisoformat(found.removesuffix("Z"))
    except ValueError:
        raise Fault(f"{UNREADABLE}invalid dateTime {found!r}") from None
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


def at_most(ids: list[int], limit: int, what: str) -> list[int]:
    """``ids``, unless there are more than the service takes in one request."""
    if len(ids) > limit:
        raise Fault(
            "Server was unable to process request. ---> "
            f"Maximum {limit} {what} per request, got {len(ids)}."
        )
    return ids
