"""Realistic field values for the simulated tenant, chosen by XSD type and field name."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from extractor import schema
from extractor.soap import NIL, Raw

Wire = dict[str, Any]


@dataclass(frozen=True)
class Cdata(Raw):
    """A string the simulator sends as a CDATA section; ``value`` is what it means."""

    value: str = ""

    @classmethod
    def of(cls, value: str) -> Cdata:
        return cls(f"<![CDATA[{value}]]>", value)


_COMPANIES: Final = (
    "Ærlig & Sønn AS", "Østlandske Rør <Drift> AS", "Blåbær Bakeri", "Fjøsnes Maskin ANS",
    "Ålesund Fisk & Fangst AS", "Nordlys \"Hotell\" AS", "Bjørk Regnskap", "Sæther og Co",
    "Trøndelag Tre AS", "Kræsj 'n' Bang ENK", "Håkonsen Elektro", "Vågen Marina AS",
)  # fmt: skip
_STREETS: Final = (
    "Storgata", "Kongens gate", "Møllergata", "Bjørnstjerne Bjørnsons vei", "Åsveien",
    "Fjordgata", "Sørkedalsveien", "Løkkeveien",
)  # fmt: skip
_CITIES: Final = (
    ("0150", "Oslo"), ("5003", "Bergen"), ("7010", "Trondheim"), ("9008", "Tromsø"),
    ("6002", "Ålesund"), ("4006", "Stavanger"), ("8006", "Bodø"), ("2317", "Hamar"),
)  # fmt: skip
_WORDS: Final = (
    "faktura", "konsulenttimer", "lisens", "frakt", "rabatt", "årsavgift", "støtte",
    "vedlikehold", "kjøp", "leie", "tjenester", "møte", "reise", "blåskjell", "grønnsåpe",
)  # fmt: skip
_TRICKY: Final = (
    "  ledende og etterfølgende mellomrom  ", "linje 1\r\nlinje 2", "a < b && c > d",
    "]]> står i teksten", "tab\tinne", "«sitat» – “typografi” ✓", "",  # noqa: RUF001
)  # fmt: skip
_CURRENCIES: Final = (("NOK", "1"), ("EUR", "11.4523"), ("SEK", "0.9871"), ("USD", "10.6078"))
_FIRST_NAMES: Final = (
    "Åse", "Bjørn", "Kari", "Ola", "Sølvi", "Håkon", "Ærling", "Øystein", "Marte", "Jørgen",
    "Ingrid", "Lars", "Siv", "Tor Åge",
)  # fmt: skip
_LAST_NAMES: Final = (
    "Hansen", "Bjørnstad", "Sæther", "Ødegård", "Håland", "Aas", "Kvalsvik", "Løvås", "Strøm",
    "Bråthen", "Nygård", "Fjærli",
)  # fmt: skip
_TRADES: Final = (
    "Bygg", "Elektro", "Rør & Varme", "Regnskap", "Maskin", "Fisk & Fangst", "Transport",
    "Eiendom", "Tre <Interiør>", "Bakeri", "Data", "Landbruk", "Sjømat", "Frisør",
)  # fmt: skip
_FORMS: Final = ("AS", "AS", "AS", "ANS", "ENK", "SA", "DA")
#: Values the live service sends that the 2024 WSDL does not list.
UNKNOWN_ENUMS: Final = {
    "OrderSlipStateType": ("Archived", "CreditNote"),
    "Distributor": ("Peppol",),
    "DistributionMethod": ("Ehf",),
    "ChangeState": ("Moved",),
    "RowType": ("Subtotal",),
}


def text(rng: random.Random, name: str) -> str:
    """A string that fits the field ``name``; now and then one that is hard to carry."""
    if rng.random() < 0.04:
        return rng.choice(_TRICKY)
    if name in ("CustomerName", "CustomerDeliveryName", "Name"):
        return rng.choice(_COMPANIES)
    if name in ("Street",):
        return f"{rng.choice(_STREETS)} {rng.randint(1, 120)}"
    if name in ("City", "PostalArea"):
        return rng.choice(_CITIES)[1]
    if name == "PostalCode":
        return rng.choice(_CITIES)[0]
    if name in ("Country", "State"):
        return rng.choice(("Norge", "NO", "Sverige", "Danmark"))
    if name in ("InvoiceEmailAddress",):
        return f"faktura{rng.randint(1, 999)}@bedrift-{rng.randint(1, 99)}.no"
    if name in ("OCR", "CustomerOrgNo", "VippsNumber", "GLNNumber", "ProductNo", "SerialNumber"):
        return str(rng.randint(10**8, 10**13))
    if name in ("CustomerDeliveryPhone",):
        return f"+47 {rng.randint(400, 999)} {rng.randint(10, 99)} {rng.randint(100, 999)}"
    words = rng.choices(_WORDS, k=rng.randint(1, 5))
    return " ".join(words).capitalize()


def person(rng: random.Random) -> tuple[str, str]:
    """A first and a last name."""
    return rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)


def company_name(rng: random.Random) -> str:
    """A Norwegian company's name, now and then one of the hard ones."""
    if rng.random() < 0.1:
        return rng.choice(_COMPANIES)
    return f"{rng.choice(_LAST_NAMES)} {rng.choice(_TRADES)} {rng.choice(_FORMS)}"


def phone(rng: random.Random) -> str:
    return f"+47 {rng.randint(400, 999)} {rng.randint(10, 99)} {rng.randint(100, 999)}"


def email(rng: random.Random, local: str) -> str:
    """An address at one of a few made-up domains (local part ASCII, as most are)."""
    domain = rng.choice(("firma.no", "bedrift.no", "online.no", "epost.no", "example.no"))
    return f"{slug(local, '.')}@{domain}"


def slug(name: str, joiner: str = "-") -> str:
    """``name`` in lower-case ASCII letters and digits, its words joined by ``joiner``."""
    words = (
        "".join(c for c in word if c.isalnum()) for word in name.lower().translate(_ASCII).split()
    )
    return joiner.join(word for word in words if word)


_ASCII: Final = str.maketrans({"æ": "ae", "ø": "o", "å": "a", "&": "og"})


def address(rng: random.Random, name: str | None = None) -> Wire:
    """An ``Address``: street, postal code and city that belong together, Norway mostly."""
    code, city = rng.choice(_CITIES)
    found: Wire = {"Street": text(rng, "Street"), "PostalCode": code, "City": city}
    if rng.random() < 0.5:
        found["PostalArea"] = city.upper()
    if name is not None:
        found["Name"] = name
    found["Country"] = "NO" if rng.random() < 0.9 else rng.choice(("SE", "DK"))
    return found


def enum(rng: random.Random, scalar: schema.Scalar) -> str:
    unknown = UNKNOWN_ENUMS.get(scalar.type_name, ())
    if unknown and rng.random() < 0.03:
        return rng.choice(unknown)
    return rng.choice(scalar.enum_values)


def decimal(rng: random.Random, name: str) -> Decimal:
    if name in ("VatRate", "TaxRate"):
        return Decimal(rng.choice(("25", "15", "12", "0", "25.00")))
    if name in ("DiscountRate",):
        return Decimal(rng.choice(("0", "5", "10", "12.5")))
    if name == "Rate":
        return Decimal(rng.choice(_CURRENCIES)[1])
    if name.startswith("Quantity"):
        return Decimal(rng.randint(1, 4000)) / Decimal(rng.choice((1, 10, 100, 1000)))
    cents = rng.randint(-50_000, 5_000_000) if rng.random() < 0.1 else rng.randint(0, 5_000_000)
    return Decimal(cents) / 100


def moment(rng: random.Random, anchor: dt.datetime) -> dt.datetime:
    """A time near ``anchor``, sometimes with microseconds."""
    stamp = anchor + dt.timedelta(seconds=rng.randint(0, 90 * 86400))
    if rng.random() < 0.3:
        stamp = stamp.replace(microsecond=rng.randint(0, 999_999))
    return stamp


def scalar(rng: random.Random, scalar_type: schema.Scalar, name: str, anchor: dt.datetime) -> Any:
    xsd = scalar_type.xsd
    if xsd in ("int", "long"):
        return rng.randint(1, 99_999)
    if xsd == "short":
        return rng.randint(1, 30)
    if xsd == "unsignedByte":
        return rng.randint(0, 13)
    if xsd == "decimal":
        return decimal(rng, name)
    if xsd == "dateTime":
        return moment(rng, anchor)
    if xsd == "date":
        return moment(rng, anchor).date()
    if xsd == "boolean":
        return rng.random() < 0.5
    if xsd == "guid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if xsd == "base64Binary":
        return rng.randbytes(rng.randint(0, 16))
    value = text(rng, name)
    # a CDATA section cannot carry "]]>", and XML turns a literal CR inside it into LF
    carries = "]]>" not in value and "\r" not in value
    return Cdata.of(value) if carries and rng.random() < 0.03 else value


def not_set(xsd: str) -> Raw:
    """The service's "not set" for the XSD type ``xsd`` (an int, a decimal, a dateTime...)."""
    return Raw(schema.SENTINELS[xsd])


def or_not_set(rng: random.Random, share: float, value: Any, xsd: str) -> Any:
    """``value`` for about ``share`` of the records, else the "not set" of ``xsd``."""
    return value if rng.random() < share else not_set(xsd)


def blank(rng: random.Random, field: schema.Field) -> Any:
    """How the service says 'nothing here' for ``field``: a sentinel, nil, or absence (None)."""
    ftype = field.type
    sentinel = ftype.sentinel if isinstance(ftype, schema.Scalar) else None
    roll = rng.random()
    if sentinel is not None and roll < 0.6:
        return Raw(sentinel)
    if roll < 0.8 and (field.nillable or not isinstance(ftype, schema.Scalar)):
        return NIL
    return None


def truth(ftype: schema.FieldType, wire: Any) -> Any:
    """The typed value a correct extractor produces for ``wire`` (None for every blank)."""
    if wire is None or wire is NIL:
        return None
    if isinstance(ftype, schema.Struct):
        return {f.name: truth(f.type, wire.get(f.name)) for f in ftype.fields}
    if isinstance(ftype, schema.ListOf):
        return [truth(ftype.item, item) for item in wire]
    if isinstance(wire, Cdata):
        return wire.value
    if isinstance(wire, Raw):
        return None  # a sentinel
    if ftype.xsd == "dateTime":
        return wire.replace(tzinfo=dt.UTC)
    return wire
