"""Secrets never leave the process: every text a sink writes (stderr, the journal, the
summary, the failures report, an update report) passes :func:`mask` first.

Credentials register their password when they are made; a service error that echoes it (in
a fault text, a proxy page) is masked wherever it ends up, also in its JSON- and
XML-escaped spellings.
"""

from __future__ import annotations

import html
from typing import Final

import orjson

MASK: Final = "***"
#: Shorter secrets would mask ordinary words; the live service requires longer passwords.
MIN_LENGTH: Final = 4
_SECRETS: set[str] = set()


def register(secret: str | None) -> None:
    """From now on, mask ``secret`` (and its escaped spellings) in every sink."""
    if not secret or len(secret) < MIN_LENGTH:
        return
    json_form = orjson.dumps(secret).decode()[1:-1]
    _SECRETS.update({secret, json_form, html.escape(secret, quote=False), html.escape(secret)})


def mask(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def mask_bytes(data: bytes) -> bytes:
    for secret in _SECRETS:
        encoded = secret.encode()
        if encoded in data:
            data = data.replace(encoded, MASK.encode())
    return data
