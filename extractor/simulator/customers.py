"""A simulated company's customers (CompanyService): a :class:`~.register.Register` of
``Company`` records, and the pages of GetCompanySyncList.

Every CustomerId the company's order templates name, and every customer its ledger's lines
name (:data:`~extractor.simulator.ledger.DIMENSION_CUSTOMERS`), is a customer; so is about one
in ten more that nothing names (leads, new ones). Those named are never deleted, deactivated
instead. A record is a business most often (organisation number, contacts, bank account),
sometimes a consumer, supplier or lead; ``Username`` and ``Password`` are never sent.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import random
from decimal import Decimal
from typing import Any

from extractor.simulator import values
from extractor.simulator.ledger import DIMENSION_CUSTOMERS
from extractor.simulator.register import Entry, Register, history, with_unnamed
from extractor.simulator.tenant import FIRST_DAY, LAST_DAY, Tenant
from extractor.soap import NIL

Wire = dict[str, Any]
#: How long before the first order the oldest customers were registered.
_BEFORE: dt.timedelta = dt.timedelta(days=3 * 365)


def register(seed: int, tenant: Tenant) -> Register:
    """The customers of the company whose seed and orders these are (see the module)."""
    named = {order.get("CustomerId") for order in tenant.order_pool}
    referenced = frozenset({i for i in named if isinstance(i, int)} | set(DIMENSION_CUSTOMERS))
    rng = random.Random(f"customers:{seed}")
    entries = history(rng, with_unnamed(rng, referenced), FIRST_DAY - _BEFORE, LAST_DAY)
    for entry in entries.values():
        entry.active = rng.random() > 0.04
    return Register(entries, referenced, functools.partial(record, seed), deactivates=True)


def record(seed: int, customer_id: int, entry: Entry) -> Wire:
    """The ``Company`` record of one customer, in this version of it (made once per process:
    never changed, a change is a new version)."""
    return _record(seed, customer_id, entry.version, entry.registered, entry.changed)


@functools.lru_cache(maxsize=16_384)
def _record(
    seed: int, customer_id: int, version: int, registered: dt.datetime, changed: dt.datetime
) -> Wire:
    rng = random.Random(f"customer:{seed}:{customer_id}:{version}")
    kind = rng.choices(("Business", "Consumer", "Supplier", "Lead"), (70, 20, 6, 4))[0]
    person = kind == "Consumer"
    first, last = values.person(rng)
    name = last if person else values.company_name(rng)
    wire: Wire = {"Id": customer_id, "Name": name, "Type": kind}
    if rng.random() < 0.2:
        wire["ExternalId"] = f"CRM-{customer_id:06d}"
    if person:
        wire |= {"FirstName": first, "Private": True}
    else:
        wire |= _business(rng, name)
    wire |= _contact(rng, f"{first} {last}" if person else name)
    wire |= {
        "Country": "NO" if rng.random() < 0.9 else rng.choice(("SE", "DK")),
        "InvoiceLanguage": rng.choice(("NO", "NO", "NO", "EN")),
        "DateCreated": registered,
        "DateChanged": changed,
        "Status": values.or_not_set(rng, 0.7, rng.choice((1, 1, 2, 3)), "int"),
        "Owner": values.or_not_set(rng, 0.6, rng.randint(1001, 1020), "int"),
        "Discount": Decimal(rng.choice(("0", "0", "5", "10", "12.5"))),
        "BlockInvoice": rng.random() < 0.05,
        "DistributionMethod": rng.choice(("Print", "EMail", "EMail", "ElectronicInvoice")),
        "CurrencyId": rng.choice(("LOCAL",) * 6 + ("NOK", "EUR", "SEK", "USD")),
        "PaymentTime": values.or_not_set(rng, 0.8, rng.choice((10, 14, 14, 30)), "short"),
        "Factoring": NIL if rng.random() < 0.4 else rng.random() < 0.05,
    }
    if rng.random() < 0.03:
        wire["DistributionMethod"] = "Ehf"  # a method the WSDL does not list
    if rng.random() < 0.15:
        wire["Note"] = values.text(rng, "Note")
    account, ledger = (
        (2400, "LedgerSupplierAccount") if kind == "Supplier" else (1500, "LedgerCustomerAccount")
    )
    wire[ledger] = values.or_not_set(rng, 0.6, account, "short")
    return wire


def _business(rng: random.Random, name: str) -> Wire:
    """What a company (not a person) has: an organisation number, maybe more."""
    number = str(rng.randint(810_000_000, 999_999_999))
    wire: Wire = {"OrganizationNumber": number, "Private": NIL if rng.random() < 0.5 else False}
    if rng.random() < 0.4:
        wire["Url"] = f"https://www.{values.slug(name)}.no"
    if rng.random() < 0.3:
        wire["VatNumber"] = f"NO{number}MVA"
    if rng.random() < 0.5:
        founded = dt.datetime(rng.randint(1950, 2022), rng.randint(1, 12), rng.randint(1, 28))
        wire["IncorporationDate"] = founded
    if name.endswith(" AS"):
        wire["ShareCapital"] = Decimal(rng.choice((30_000, 100_000, 1_000_000)))
    if rng.random() < 0.3:
        turnover = Decimal(rng.randint(100_000, 900_000_000)) / 100
        wire |= {
            "Turnover": turnover,
            "Profit": (turnover * Decimal("0.07")).quantize(Decimal("0.01")),
        }
    wire["NumberOfEmployees"] = values.or_not_set(rng, 0.6, rng.randint(1, 250), "int")
    if rng.random() < 0.4:
        wire["BankAccountNo"] = (
            f"{rng.randint(1000, 9999)}.{rng.randint(10, 99)}.{rng.randint(10000, 99999)}"
        )
    if rng.random() < 0.1:
        wire["GlnNumber"] = str(rng.randint(10**12, 10**13 - 1))
    if rng.random() < 0.6:
        wire["Relations"] = [_relation(rng) for _ in range(rng.randint(0, 2))]
    return wire


def _contact(rng: random.Random, name: str) -> Wire:
    """Addresses, phone numbers and e-mail addresses, each kind where the customer has it."""
    post = values.address(rng, name)
    addresses: Wire = {"Post": post, "Invoice": post}
    if rng.random() < 0.5:
        addresses["Visit"] = values.address(rng)
    if rng.random() < 0.2:
        addresses["Delivery"] = values.address(rng, name)
    phones: Wire = {"Primary": {"Value": values.phone(rng)}}
    if rng.random() < 0.5:
        phones["Mobile"] = {"Description": "Mobil", "Value": values.phone(rng)}
    emails: Wire = {"Primary": {"Name": name, "Value": values.email(rng, name)}}
    if rng.random() < 0.4:
        emails["Invoice"] = {"Description": "Faktura", "Value": values.email(rng, "faktura")}
    return {"Addresses": addresses, "PhoneNumbers": phones, "EmailAddresses": emails}


def _relation(rng: random.Random) -> Wire:
    first, last = values.person(rng)
    return {
        "ContactId": rng.randint(200_000, 299_999),
        "FirstName": first,
        "LastName": last,
        "Role": rng.choice(("Daglig leder", "Økonomiansvarlig", "Innkjøper", "Kontakt & salg")),
        "PhoneNumbers": {"Mobile": {"Value": values.phone(rng)}},
        "EmailAddresses": {"Work": {"Value": values.email(rng, f"{first}.{last}")}},
    }


def sync_page(
    customers: Register,
    page: int,
    per_page: int,
    active: bool | None,
    changed_after: dt.datetime | None,
    registered_after: dt.datetime | None,
) -> Wire:
    """The ``PageOfSyncCompany`` GetCompanySyncList answers: the customers the filters keep
    (changed, registered strictly after; active or not), by id, ``per_page`` a page."""
    listed = [
        customer_id
        for customer_id in customers.ids
        if (active is None or customers.entries[customer_id].active is active)
        and (changed_after is None or customers.entries[customer_id].changed > changed_after)
        and (
            registered_after is None or customers.entries[customer_id].registered > registered_after
        )
    ]
    start = (page - 1) * per_page
    items = [_sync_item(customers, customer_id) for customer_id in listed[start : start + per_page]]
    return {
        "CurrentPage": page,
        "TotalPages": math.ceil(len(listed) / per_page),
        "TotalItems": len(listed),
        "ItemsPerPage": per_page,
        "Items": items,
    }


def _sync_item(customers: Register, customer_id: int) -> Wire:
    entry, wire = customers.entries[customer_id], customers.wire(customer_id)
    item: Wire = {"CompanyId": customer_id}
    if "ExternalId" in wire:
        item["ExternalId"] = wire["ExternalId"]
    return item | {
        "DateChanged": entry.changed,
        "DateRegistered": entry.registered,
        "Active": entry.active,
    }
