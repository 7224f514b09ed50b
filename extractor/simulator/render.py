"""A tenant's orders as the XML the service sends, in a dialect, with pooled parts cached.

Two dialects: ``"compact"``, as the ASMX service writes it (one line, default namespace,
``xsi:nil``); and ``"wcf"``, as proxies and other server versions send the same data: a byte
order mark, CRLF line breaks and indentation, an empty ``soap:Header``, every element of a
result under an ``a:`` prefix, ``i:nil``, empty values as ``<a:X />``. Both mean the same, to
the byte of every value.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from extractor import schema, soap
from extractor.simulator.tenant import Tenant, restrict

XmlDialect = Literal["compact", "wcf"]
XML_DIALECTS: Final = ("compact", "wcf")
#: How deep an operation's result items sit: Envelope, Body, Response, Result, item.
ITEM_DEPTH: Final = 4
BOM: Final = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Dialect:
    """How one server spells the same XML."""

    prefix: str = ""  # of every element inside a result
    nil: str = 'xsi:nil="true"'
    newline: str = ""  # and, when set, ``indent`` per level
    indent: str = ""
    bom: bool = False
    header: bool = False  # an empty soap:Header before the Body
    self_closing: bool = False  # an empty value as <X />

    def pad(self, depth: int) -> str:
        return self.newline + self.indent * depth if self.newline else ""


DIALECTS: Final = {
    "compact": Dialect(),
    "wcf": Dialect("a:", 'i:nil="true"', "\r\n", "  ", bom=True, header=True, self_closing=True),
}


class Encoder:
    """Values as elements of one dialect, at a depth (for the indentation)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect

    def value(self, name: str, ftype: schema.FieldType, value: Any, depth: int) -> str:
        d = self.dialect
        tag, pad = d.prefix + name, d.pad(depth)
        if value is soap.NIL:
            return f"{pad}<{tag} {d.nil} />"
        if isinstance(ftype, schema.Scalar):
            text = soap.format_scalar(ftype.xsd, value)
        elif isinstance(value, soap.Raw):
            text = value.text  # content rendered beforehand
        elif isinstance(ftype, schema.Struct):
            text = "".join(self.fields(ftype, value, depth + 1))
        else:
            text = "".join(self.value(ftype.item_tag, ftype.item, v, depth + 1) for v in value)
        return self.element(tag, text, pad, leaf=isinstance(ftype, schema.Scalar))

    def element(self, tag: str, text: str, pad: str, *, leaf: bool) -> str:
        if not text and self.dialect.self_closing:
            return f"{pad}<{tag} />"
        close = "" if leaf or not text else pad
        return f"{pad}<{tag}>{text}{close}</{tag}>"

    def fields(self, struct: schema.Struct, values: dict[str, Any], depth: int) -> Iterable[str]:
        for f in struct.fields:
            if f.name in values:
                yield self.value(f.name, f.type, values[f.name], depth)


#: Records rendered as items, by the record's identity, name and dialect (see Renderer.item).
_RENDERED: dict[tuple[int, str, Dialect], tuple[dict[str, Any], bytes]] = {}
_RENDERED_MAX: Final = 16_384


class Renderer:
    """Renders one tenant's answers; order templates and rows are cached by what they share."""

    def __init__(self, tenant: Tenant, dialect: XmlDialect = "compact") -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"xml {dialect!r} is not one of {', '.join(XML_DIALECTS)}")
        self.tenant = tenant
        self.dialect = DIALECTS[dialect]
        self.encoder = Encoder(self.dialect)
        self._order_type = schema.invoice_order()
        self._row_type = schema.invoice_row()
        self._row_cache, self._templates = _pooled_parts(tenant.seed, dialect)

    def check(
        self, props: tuple[str, ...], row_props: tuple[str, ...], fault: type[Exception]
    ) -> None:
        """Raise ``fault`` as the service does for a property name it does not know."""
        check_properties(self._order_type, props, fault)
        check_properties(self._row_type, row_props, fault)

    def item(self, name: str, ftype: schema.FieldType, value: Any) -> bytes:
        """One item of a result (a Transaction, an UpdateInvoices answer, an int). A record
        (a dict) is rendered once while it lives: records are never changed in place (a
        change is a new record: :mod:`~extractor.simulator.register`, ``Ledger.settle``), and
        customers and products are shared by every simulator of the process."""
        if not isinstance(value, dict):
            return self.encoder.value(name, ftype, value, ITEM_DEPTH).encode()
        key = (id(value), name, self.dialect)
        found = _RENDERED.get(key)
        if found is not None and found[0] is value:
            return found[1]
        if len(_RENDERED) >= _RENDERED_MAX:
            _RENDERED.clear()
        rendered = self.encoder.value(name, ftype, value, ITEM_DEPTH).encode()
        _RENDERED[key] = (value, rendered)  # the record kept, so its id is not reused
        return rendered

    def content(self, struct: schema.Struct, value: dict[str, Any]) -> bytes:
        """A result that is one ``struct`` rather than a list: its fields, as the content of
        the result element."""
        return "".join(self.encoder.fields(struct, value, ITEM_DEPTH)).encode()

    def order(
        self, order_id: int, props: tuple[str, ...] = (), row_props: tuple[str, ...] = ()
    ) -> str:
        """One ``InvoiceOrder`` element exactly as GetInvoices sends it."""
        template, own = self.tenant.parts(order_id)
        cached = self._template_parts(template)
        wanted = set(props)
        out = []
        encode, depth = self.encoder.value, ITEM_DEPTH + 1
        for f in self._order_type.fields:
            if wanted and f.name not in wanted:
                continue
            if f.name == "InvoiceRows" and "InvoiceRows" in own:
                rows = "".join(self._row(n, row_props) for n in own["InvoiceRows"])
                tag = self.dialect.prefix + "InvoiceRows"
                out.append(self.encoder.element(tag, rows, self.dialect.pad(depth), leaf=False))
            elif f.name in own:
                out.append(encode(f.name, f.type, own[f.name], depth))
            elif f.name in cached:
                out.append(cached[f.name])
        tag = self.dialect.prefix + "InvoiceOrder"
        return self.encoder.element(tag, "".join(out), self.dialect.pad(ITEM_DEPTH), leaf=False)

    def reply(
        self,
        version: soap.SoapVersion,
        operation: str,
        wsdl: str,
        parts: Iterable[bytes],
        *,
        leaf: bool = False,
    ) -> Iterable[bytes]:
        """The whole body of an operation's answer, its result holding ``parts`` (the items,
        or with ``leaf`` its text)."""
        namespace = schema.service(wsdl).namespace
        head, tail = self._envelope(version, operation, namespace)
        d, element = self.dialect, f"{operation}Result"
        declared = f' xmlns:a="{namespace}" xmlns:i="{soap.XSI}"' if d.prefix else ""
        pad = d.pad(ITEM_DEPTH - 1)
        opening = f"{pad}<{element}{declared}>".encode()
        closing = f"{'' if leaf else pad}</{element}>".encode()
        return itertools.chain((head, opening), parts, (closing, tail))

    def _envelope(
        self, version: soap.SoapVersion, operation: str, namespace: str
    ) -> tuple[bytes, bytes]:
        d = self.dialect
        if not d.newline:
            marker = b"\x00"
            body = f'<{operation}Response xmlns="{namespace}">'.encode() + marker
            compact = version.envelope(body + f"</{operation}Response>".encode())
            before, after = compact.split(marker)
            return before, after
        p, nl = version.prefix, d.newline
        head = (
            f'<?xml version="1.0" encoding="utf-8"?>{nl}'
            f'<{p}:Envelope xmlns:{p}="{version.namespace}" xmlns:xsi="{soap.XSI}" '
            f'xmlns:xsd="{soap.XSD}">'
            + (f"{d.pad(1)}<{p}:Header />" if d.header else "")
            + f'{d.pad(1)}<{p}:Body>{d.pad(2)}<{operation}Response xmlns="{namespace}">'
        )
        tail = f"{d.pad(2)}</{operation}Response>{d.pad(1)}</{p}:Body>{nl}</{p}:Envelope>{nl}"
        return (BOM if d.bom else b"") + head.encode(), tail.encode()

    def _template_parts(self, template: int) -> dict[str, str]:
        parts = self._templates.get(template)
        if parts is None:
            pooled = self.tenant.order_pool[template]
            parts = self._templates[template] = {
                f.name: self.encoder.value(f.name, f.type, pooled[f.name], ITEM_DEPTH + 1)
                for f in self._order_type.fields
                if f.name in pooled and f.name != "InvoiceRows"
            }
        return parts

    def _row(self, number: int, row_props: tuple[str, ...]) -> str:
        key = (number, row_props)
        cached = self._row_cache.get(key)
        if cached is None:
            row = restrict(self.tenant.row_pool[number], row_props)
            cached = self._row_cache[key] = self.encoder.value(
                "InvoiceRow", self._row_type, row, ITEM_DEPTH + 2
            )
        return cached


@functools.lru_cache(maxsize=4)  # a few seeds at a time: a fleet's, or a test's
def _pooled_parts(
    seed: int, dialect: XmlDialect
) -> tuple[dict[tuple[int, tuple[str, ...]], str], dict[int, dict[str, str]]]:
    """The caches of a seed's rendered rows and templates in a dialect, shared by every
    renderer in the process: the pools are made once per seed and never change
    (:func:`~extractor.simulator.tenant.pools`), so a simulator made again renders what the
    one before it did for nothing."""
    return {}, {}


def check_properties(struct: schema.Struct, names: Iterable[str], fault: type[Exception]) -> None:
    """Raise ``fault`` as the service does for a property name ``struct`` does not have."""
    unknown = sorted(set(names) - set(struct.names))
    if unknown:
        raise fault(
            f"Server was unable to process request. ---> Invalid property name: {unknown[0]}"
        )
