"""What goes in and out of the simulated service: requests, replies, SOAP envelopes, faults."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from extractor import schema, soap

SERVICES: Final = {
    soap.AUTH_PATH: "authService",
    soap.INVOICE_PATH: "invoiceService",
    soap.TRANSACTION_PATH: "transactionService",
    soap.ACCOUNT_PATH: "accountService",
    soap.CLIENT_PATH: "clientService",
    soap.COMPANY_PATH: "companyService",
    soap.PRODUCT_PATH: "productService",
}


class Fault(Exception):
    """Answer the request with a SOAP fault (HTTP 500)."""


@dataclass(frozen=True)
class Request:
    """One POST as the service sees it; ``headers`` keyed in lower case."""

    path: str
    headers: Mapping[str, str]
    body: bytes
    cookies: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, path: str, headers: Mapping[str, str], body: bytes) -> Request:
        """From the headers a client sends (its ``Cookie`` header read into ``cookies``)."""
        lower = {name.lower(): value for name, value in headers.items()}
        cookies = dict(
            part.strip().split("=", 1) for part in lower.get("cookie", "").split(";") if "=" in part
        )
        return cls(path, lower, body, cookies)


@dataclass
class Reply:
    """The answer: ``parts`` of the body; ``cut`` breaks it halfway ("reset": the connection
    drops; "truncate": the message ends early)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    parts: Iterable[bytes] = ()
    cut: str | None = None
    cookies: dict[str, str] = field(default_factory=dict)


def sent_action(request: Request, version: soap.SoapVersion) -> str | None:
    if version is soap.SOAP11:
        return request.headers.get("soapaction", "").strip('"')
    for part in request.headers.get("content-type", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == "action":
            return value.strip('"')
    return None


def envelope_parts(
    version: soap.SoapVersion, operation: str, wsdl: str = "invoiceService"
) -> tuple[bytes, bytes]:
    """The bytes before and after an operation's result, as the service wraps it."""
    ns = schema.service(wsdl).namespace
    marker = b"\x00"
    body = (
        f'<{operation}Response xmlns="{ns}">'.encode() + marker + f"</{operation}Response>".encode()
    )
    head, tail = version.envelope(body).split(marker)
    return head, tail


def wrapped(element: str, parts: Iterable[bytes]) -> Iterable[bytes]:
    return itertools.chain([f"<{element}>".encode()], parts, [f"</{element}>".encode()])


def fault_reply(version: soap.SoapVersion, message: str, headers: dict[str, str]) -> Reply:
    content_type = version.content_type.split(";")[0] + "; charset=utf-8"
    return Reply(
        500, {"Content-Type": content_type, **headers}, [soap.fault_body(version, message)]
    )


def text_reply(status: int, text: str, headers: dict[str, str]) -> Reply:
    return Reply(status, {"Content-Type": "text/plain; charset=utf-8", **headers}, [text.encode()])
