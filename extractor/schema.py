"""The type table: field names, order and XSD types read from the shipped WSDLs.

Nothing here is transcribed by hand. The envelope builder, the parser, the Arrow schema and
the simulator all walk the same :class:`Struct` trees, so adding a field to the WSDL is the
only change a new field needs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Final

from lxml import etree

from extractor.errors import InvalidOption

if TYPE_CHECKING:
    import pyarrow as pa

XS = "http://www.w3.org/2001/XMLSchema"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP11 = "http://schemas.xmlsoap.org/wsdl/soap/"

#: Exact decimals: 28 digits before the point, 10 after. A value that needs more is
#: refused with a DataError rather than rounded. (The Arrow types are made on first use:
#: parser processes read this module and never import pyarrow.)
DECIMAL_DIGITS: Final = (38, 10)


@functools.cache
def arrow_scalars() -> dict[str, pa.DataType]:
    """The Arrow type of each XSD scalar type."""
    import pyarrow as pa

    return {
        "int": pa.int32(),
        "short": pa.int16(),
        "long": pa.int64(),
        "unsignedByte": pa.uint8(),
        "decimal": pa.decimal128(*DECIMAL_DIGITS),
        "double": pa.float64(),
        "dateTime": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(),
        "boolean": pa.bool_(),
        "guid": pa.string(),
        "string": pa.string(),
        "base64Binary": pa.binary(),
        "enum": pa.dictionary(pa.int32(), pa.string()),
        "anyType": pa.string(),  # an element without a type (``PageOfSyncCompany.Context``)
    }


#: How the service says "not set" for each XSD type (see shared/api/README.md).
SENTINELS: dict[str, str] = {
    "int": "-2147483648",
    "short": "-32768",
    "decimal": "-79228162514264337593543950335",
    "double": "-1.7976931348623157E+308",  # Double.MinValue: Product.CashPriceIncTax's default
    "dateTime": "0001-01-01T00:00:00",
    "date": "0001-01-01",  # the WSDL's default of Transaction.PeriodDate: "not set" too
    "guid": "00000000-0000-0000-0000-000000000000",
}


@dataclass(frozen=True)
class Scalar:
    """A leaf: an XSD built-in, the Microsoft guid, or an enumeration."""

    xsd: str
    enum_values: tuple[str, ...] = ()
    type_name: str = ""

    @property
    def arrow(self) -> pa.DataType:
        return arrow_scalars()[self.xsd]

    @property
    def sentinel(self) -> str | None:
        return SENTINELS.get(self.xsd)


@dataclass(frozen=True)
class Struct:
    """A complex type with a sequence of fields."""

    name: str
    fields: tuple[Field, ...]

    @property
    def arrow(self) -> pa.DataType:
        import pyarrow as pa

        return pa.struct([pa.field(f.name, f.type.arrow) for f in self.fields])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


@dataclass(frozen=True)
class ListOf:
    """An ``ArrayOfX`` type: a repeated ``item_tag`` element."""

    name: str
    item_tag: str
    item: Scalar | Struct

    @property
    def arrow(self) -> pa.DataType:
        import pyarrow as pa

        return pa.list_(pa.field("item", self.item.arrow))


FieldType = Scalar | Struct | ListOf


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType
    nillable: bool = False
    doc: str = ""  # the WSDL's ``<s:annotation><s:documentation>``, if it has one


@dataclass(frozen=True)
class Service:
    """One WSDL: its target namespace, complex types and SOAP actions."""

    namespace: str
    types: dict[str, FieldType]
    elements: dict[str, Struct]
    actions: dict[str, str]
    name: str = ""  # as the WSDL's ``<wsdl:service>`` names it (``InvoiceService``)
    #: Each operation's ``<wsdl:documentation>``, where it has one
    docs: dict[str, str] = field(default_factory=dict)

    def type(self, name: str) -> Struct:
        found = self.types[name]
        assert isinstance(found, Struct)
        return found


def _local(qname: str) -> tuple[str, str]:
    prefix, _, local = qname.rpartition(":")
    return prefix, local


class _Loader:
    def __init__(self, schema: etree._Element) -> None:
        self._complex = {e.get("name"): e for e in schema.iterfind(f"{{{XS}}}complexType")}
        self._simple = {e.get("name"): e for e in schema.iterfind(f"{{{XS}}}simpleType")}
        self.types: dict[str, FieldType] = {}
        self._building: set[str] = set()

    def resolve(self, qname: str) -> FieldType:
        prefix, name = _local(qname)
        if prefix == "s" or name == "guid":
            return Scalar(name)
        if name in self._building:
            # A type that contains itself (companyService's Group.Children): no table
            # column can hold it; the inner occurrence is left untyped.
            return Scalar("anyType", type_name=name)
        if name not in self.types:
            self._building.add(name)
            self.types[name] = self._build(name)
            self._building.discard(name)
        return self.types[name]

    def _build(self, name: str) -> FieldType:
        if name in self._simple:
            values = self._simple[name].iterfind(f".//{{{XS}}}enumeration")
            return Scalar("enum", tuple(str(v.get("value")) for v in values), name)
        struct = self.struct(name, self._complex[name])
        only = struct.fields[0] if len(struct.fields) == 1 else None
        if name.startswith("ArrayOf") and only is not None and only.name != name:
            repeated = self._complex[name].find(f".//{{{XS}}}element")
            if repeated is not None and repeated.get("maxOccurs") == "unbounded":
                item = only.type
                assert not isinstance(item, ListOf)
                return ListOf(name, only.name, item)
        return struct

    def struct(self, name: str, node: etree._Element) -> Struct:
        fields = tuple(
            Field(
                str(e.get("name")),
                self.resolve(e.get("type", "s:anyType")),  # no type: anything (xs:anyType)
                e.get("nillable") == "true",
                _documentation(e, _FIELD_DOC),
            )
            for e in node.iterfind(f"{{{XS}}}sequence/{{{XS}}}element")
        )
        return Struct(name, fields)


def _documentation(node: etree._Element, path: str) -> str:
    """The text at ``path`` under ``node`` (its documentation), whitespace collapsed."""
    found = node.find(path)
    text = "".join(str(part) for part in found.itertext()) if found is not None else ""
    return " ".join(text.split())


_FIELD_DOC: Final = f"{{{XS}}}annotation/{{{XS}}}documentation"
_OPERATION_DOC: Final = f"{{{WSDL}}}documentation"


def _parse_wsdl(data: bytes) -> Service:
    root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    schema = root.find(f"{{{WSDL}}}types/{{{XS}}}schema")
    assert schema is not None
    loader = _Loader(schema)
    elements: dict[str, Struct] = {}
    for element in schema.iterfind(f"{{{XS}}}element"):
        name = str(element.get("name"))
        node = element.find(f"{{{XS}}}complexType")
        if node is not None:
            elements[name] = loader.struct(name, node)
    actions = {
        str(op.get("name")): str(op.find(f"{{{WSDL_SOAP11}}}operation").get("soapAction"))  # type: ignore[union-attr]
        for op in root.iterfind(f"{{{WSDL}}}binding/{{{WSDL}}}operation")
        if op.find(f"{{{WSDL_SOAP11}}}operation") is not None
    }
    docs = {
        str(op.get("name")): _documentation(op, _OPERATION_DOC)
        for op in root.iterfind(f"{{{WSDL}}}portType/{{{WSDL}}}operation")
    }
    named = root.find(f"{{{WSDL}}}service")
    return Service(
        str(schema.get("targetNamespace")), loader.types, elements, actions,
        str(named.get("name")) if named is not None else "",
        {name: text for name, text in docs.items() if text},
    )  # fmt: skip


@functools.cache
def service(name: str) -> Service:
    """Load ``extractor/wsdl/<name>.wsdl`` (``authService``, ``invoiceService``, ...)."""
    data = resources.files("extractor.wsdl").joinpath(f"{name}.wsdl").read_bytes()
    return _parse_wsdl(data)


def invoice_order() -> Struct:
    return service("invoiceService").type("InvoiceOrder")


def invoice_row() -> Struct:
    return service("invoiceService").type("InvoiceRow")


def select(struct: Struct, names: Sequence[str]) -> tuple[Field, ...]:
    """The fields named (all of them when none are), in WSDL order."""
    wanted = set(names)
    return tuple(f for f in struct.fields if not names or f.name in wanted)


def check_properties(struct: Struct, names: tuple[str, ...], setting: str) -> None:
    """Raise InvalidOption naming the first property the WSDL does not know."""
    known = set(struct.names)
    for name in names:
        if name not in known:
            raise InvalidOption(
                f"{{{setting}}}: unknown {struct.name} property {name!r}; "
                f"valid names are listed in the WSDL, e.g. {', '.join(struct.names[:4])}, ..."
            )
