"""SOAP on bytes: operations, envelopes, the value serializer and fault reading. No I/O.

The serializer walks the WSDL type table, so the client's requests and the simulator's
responses are written by the same code.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

from lxml import etree

from extractor import schema
from extractor.errors import (
    ExtractorError,
    IdentityRefused,
    InvalidRequest,
    MalformedResponse,
    Quarantined,
    RequestFault,
    ServerError,
    ServerFault,
    SessionExpired,
)

XSI: Final = "http://www.w3.org/2001/XMLSchema-instance"
XSD: Final = "http://www.w3.org/2001/XMLSchema"


class Soap(StrEnum):
    """A SOAP version by its number, as ``--soap-version`` names it."""

    V1_1 = "1.1"
    V1_2 = "1.2"


@dataclass(frozen=True)
class SoapVersion:
    name: Soap
    namespace: str
    prefix: str
    content_type: str

    def headers(self, action: str) -> dict[str, str]:
        """The HTTP headers that carry ``action`` in this SOAP version."""
        if self.name is Soap.V1_1:
            return {"Content-Type": self.content_type, "SOAPAction": f'"{action}"'}
        return {"Content-Type": f'{self.content_type}; action="{action}"'}

    def envelope(self, body: bytes) -> bytes:
        p = self.prefix.encode()
        return b"".join((
            b'<?xml version="1.0" encoding="utf-8"?>\n<', p, b':Envelope xmlns:xsi="', XSI.encode(),
            b'" xmlns:xsd="', XSD.encode(), b'" xmlns:', p, b'="', self.namespace.encode(),
            b'"><', p, b":Body>", body, b"</", p, b":Body></", p, b":Envelope>",
        ))  # fmt: skip


SOAP11: Final = SoapVersion(
    Soap.V1_1, "http://schemas.xmlsoap.org/soap/envelope/", "soap", "text/xml; charset=utf-8"
)
SOAP12: Final = SoapVersion(
    Soap.V1_2,
    "http://www.w3.org/2003/05/soap-envelope",
    "soap12",
    "application/soap+xml; charset=utf-8",
)
SOAP_VERSIONS: Final = {Soap.V1_1: SOAP11, Soap.V1_2: SOAP12}

AUTH_PATH: Final = "/authenticate/v001/authenticate.asmx"
INVOICE_PATH: Final = "/Economy/InvoiceOrder/V001/InvoiceService.asmx"
TRANSACTION_PATH: Final = "/Economy/Accounting/V001/TransactionService.asmx"
ACCOUNT_PATH: Final = "/Economy/Account/V004/Accountservice.asmx"
CLIENT_PATH: Final = "/Client/V001/ClientService.asmx"
COMPANY_PATH: Final = "/CRM/Company/V001/CompanyService.asmx"
PRODUCT_PATH: Final = "/Logistics/Product/V001/ProductService.asmx"


@dataclass(frozen=True)
class Operation:
    """One WSDL operation at its service path."""

    wsdl: str
    path: str
    name: str

    @property
    def service(self) -> schema.Service:
        return schema.service(self.wsdl)

    @property
    def action(self) -> str:
        return self.service.actions[self.name]

    def body(self, params: Mapping[str, Any]) -> bytes:
        """The operation element with ``params`` serialized in WSDL order."""
        struct = self.service.elements[self.name]
        ns = self.service.namespace
        inner = "".join(encode_fields(struct, params))
        return f'<{self.name} xmlns="{ns}">{inner}</{self.name}>'.encode()


LOGIN: Final = Operation("authService", AUTH_PATH, "Login")
HAS_SESSION: Final = Operation("authService", AUTH_PATH, "HasSession")
GET_IDENTITIES: Final = Operation("authService", AUTH_PATH, "GetIdentities")
GET_ORDER_SYNC_LIST: Final = Operation("invoiceService", INVOICE_PATH, "GetOrderSyncList")
GET_INVOICES: Final = Operation("invoiceService", INVOICE_PATH, "GetInvoices")
UPDATE_INVOICES: Final = Operation("invoiceService", INVOICE_PATH, "UpdateInvoices")
GET_TRANSACTIONS: Final = Operation("transactionService", TRANSACTION_PATH, "GetTransactions")


class _Nil:
    def __repr__(self) -> str:
        return "NIL"


#: Serialize the element as ``xsi:nil="true"``.
NIL: Final = _Nil()


@dataclass(frozen=True)
class Raw:
    """Text written verbatim: a sentinel as the service spells it, or a CDATA section."""

    text: str


_ESCAPES: Final = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", "&#13;"))


def escape(text: str) -> str:
    """Escape character data; carriage returns as ``&#13;`` so they survive parsing."""
    for char, entity in _ESCAPES:
        if char in text:
            text = text.replace(char, entity)
    return text


def format_scalar(xsd: str, value: Any) -> str:
    """The lexical form of ``value`` for XSD type ``xsd``."""
    if isinstance(value, Raw):
        return value.text
    if xsd == "boolean":
        return "true" if value else "false"
    if xsd == "decimal":
        return format(Decimal(value), "f")
    if xsd == "dateTime":
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return str(value.isoformat())
    if xsd == "date":
        return str(value.isoformat())
    if xsd == "base64Binary":
        return base64.b64encode(value).decode()
    if isinstance(value, int):
        return str(value)
    return escape(str(value))


def encode_value(name: str, ftype: schema.FieldType, value: Any) -> str:
    if value is NIL:
        return f'<{name} xsi:nil="true" />'
    if isinstance(ftype, schema.Scalar):
        return f"<{name}>{format_scalar(ftype.xsd, value)}</{name}>"
    if isinstance(value, Raw):
        return f"<{name}>{value.text}</{name}>"  # content rendered beforehand
    if isinstance(ftype, schema.Struct):
        return f"<{name}>{''.join(encode_fields(ftype, value))}</{name}>"
    items = "".join(encode_value(ftype.item_tag, ftype.item, item) for item in value)
    return f"<{name}>{items}</{name}>"


def encode_fields(struct: schema.Struct, values: Mapping[str, Any]) -> Iterable[str]:
    """Serialize the fields of ``values`` present in ``struct``, in WSDL order."""
    for f in struct.fields:
        if f.name in values:
            yield encode_value(f.name, f.type, values[f.name])


def fault_body(version: SoapVersion, message: str, code: str = "Server") -> bytes:
    """A fault the way ASMX writes it, in either SOAP version."""
    text = escape(message)
    if version is SOAP11:
        inner = (
            f"<soap:Fault><faultcode>soap:{code}</faultcode>"
            f"<faultstring>{text}</faultstring><detail /></soap:Fault>"
        )
        return version.envelope(inner.encode())
    value = "soap12:Receiver" if code == "Server" else "soap12:Sender"
    inner = (
        f"<soap12:Fault><soap12:Code><soap12:Value>{value}</soap12:Value></soap12:Code>"
        f'<soap12:Reason><soap12:Text xml:lang="en">{text}</soap12:Text></soap12:Reason>'
        "<soap12:Detail /></soap12:Fault>"
    )
    return version.envelope(inner.encode())


_SAFE_PARSER: Final = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_pis=True
)
_HTML_PARSER: Final = etree.HTMLParser(no_network=True, remove_comments=True)


def read_fault(body: bytes) -> str | None:
    """The fault text of a SOAP 1.1 or 1.2 fault body, or None when it is not a fault (a
    body with a DOCTYPE, as libxml2 reports it, is never trusted as one)."""
    try:
        root = etree.fromstring(body, _SAFE_PARSER)
    except etree.XMLSyntaxError:
        return None
    info: Any = root.getroottree().docinfo  # lxml-stubs lack doctype
    if info.doctype:
        return None
    for path in ("faultstring", f"{{{SOAP12.namespace}}}Reason/{{{SOAP12.namespace}}}Text"):
        found = root.find(f".//{{*}}Fault/{path}")
        if found is not None:
            return found.text or ""
    return None


_TRANSIENT_HINTS: Final = ("timeout", "deadlock", "temporarily", "try again", "unavailable")
_INVALID_HINTS: Final = ("maximum", "must be", "invalid", "not valid", "did not recognize")


_QUARANTINE: Final = re.compile(r"Quarantine ends at\s*(\S+(?:\s+\d\d:\d\d:\d\d\S*)?)")


def classify_fault(message: str) -> ExtractorError:
    """Turn a fault text into the error type that says what to do about it."""
    lowered = message.lower()
    if "not authenticated" in lowered:
        return SessionExpired(message)
    if "identityid is blocked" in lowered or ("identity" in lowered and "not found" in lowered):
        return IdentityRefused(message)
    if "limit exceeded" in lowered or "quarantine" in lowered:
        return Quarantined(message, _quarantine_end(message))
    if any(hint in lowered for hint in _TRANSIENT_HINTS):
        return ServerFault(message)
    if any(hint in lowered for hint in _INVALID_HINTS):
        return InvalidRequest(message)
    return RequestFault(message)


def _quarantine_end(message: str) -> float | None:
    """The end the fault names (UTC when no offset is given); None if it names none."""
    match = _QUARANTINE.search(message)
    if match is not None:
        text = match.group(1).rstrip(".").replace("Z", "+00:00")
        with contextlib.suppress(ValueError, OverflowError):
            when = dt.datetime.fromisoformat(text)
            return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()
    return None


def fault_error(body: bytes, status: int) -> ExtractorError:
    """The error a non-200 (or fault-carrying) body stands for."""
    message = read_fault(body)
    if message is None:
        if 200 <= status < 300:
            return MalformedResponse(f"not a SOAP document: {describe_body(body)}")
        return ServerError(status, describe_body(body))
    return classify_fault(message)


def describe_body(body: bytes) -> str:
    """A body that is not SOAP, in a few words for an error line: an HTML page by its title
    (never its markup), text by its first line."""
    head = body[: 64 * 1024].lstrip()
    if not head:
        return "an empty body"
    if head[:1] == b"<":
        try:
            page = etree.fromstring(head, _HTML_PARSER)
        except (etree.XMLSyntaxError, ValueError):
            page = None
        text = "" if page is None else page.findtext(".//title") or str(page.xpath("string()"))
        words = " ".join(text.split())
        kind = "an HTML page" if b"<html" in head[:4096].lower() else "an XML document"
        return f"{kind} ({words[:80]!r})" if words else kind
    line = head.decode("utf-8", "replace").splitlines()[0].strip()
    return repr(line[:120])
