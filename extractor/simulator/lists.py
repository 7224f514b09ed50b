"""The reference lists a simulated company answers whole (one call, the whole list).

:data:`LISTS` maps each operation to its service path, its record type in the WSDL, the table
a correct extractor writes it to (and that table's key) and the company's list;
:class:`~extractor.simulator.service.SimulatedService` serves every entry the same way, so a
new list is an entry here and the function that makes its records. Each company's lists follow
from its seed and agree with its books: the accounts, transaction types, VAT codes,
departments and currencies its ledger posts with, the fiscal years its ledger spans, the
dimensions its lines carry, templates its customers use. Some entries are titled in
Norwegian, some untitled; the service answers in no particular order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from extractor import schema, soap
from extractor.simulator import chart, client, dimensions, fiscal, invoicing
from extractor.simulator.messages import SERVICES

if TYPE_CHECKING:
    from extractor.simulator.identities import Company

Records = list[dict[str, Any]]

#: The transaction types every company has: those its ledger posts under (1, 2 and 5:
#: :mod:`extractor.simulator.ledger`) and the usual others.
STANDARD_TYPES: Final = (
    (1, "Utgående faktura", True),
    (2, "Innbetaling", True),
    (3, "Inngående faktura", True),
    (4, "Utbetaling", True),
    (5, "Tap på fordring", True),
    (6, "Kassesalg", True),
    (7, "Bilag & korreksjon <manuell>", False),
    (8, "Åpningsbalanse", False),
)
_OWN_TITLES: Final = (
    "Lønn", "Avskrivning", "Periodisering", "Prosjektbilag", "Valutajustering", "Reiseregning",
)  # fmt: skip


def transaction_types(seed: int) -> Records:
    """A company's ``TransactionType`` list: the standard types, then 0 to 9 of its own
    (Id from 100, ``No`` its number), a few without a title."""
    rng = random.Random(f"transaction-types:{seed}")
    types: Records = [
        {"Id": number, "No": number, "Title": title, "Turnover": turnover}
        for number, title, turnover in STANDARD_TYPES
    ]
    for offset in range(rng.randint(0, 9)):
        number = 100 + offset
        entry: dict[str, Any] = {
            "Id": number,
            "No": rng.randint(20, 999),
            "Turnover": rng.random() < 0.5,
        }
        if rng.random() > 0.15:  # else no Title element: minOccurs 0
            entry["Title"] = f"{rng.choice(_OWN_TITLES)} {offset + 1}"
        types.append(entry)
    rng.shuffle(types)  # the service answers in no particular order
    return types


@dataclass(frozen=True)
class WholeList:
    """One operation that answers a whole list."""

    path: str
    record: str  # the WSDL type of an item (and the item's element name)
    table: str  # where a correct extractor writes it
    key: str  # the field that tells its records apart
    records: Callable[[Company], Records]  # the company's list

    @property
    def struct(self) -> schema.Struct:
        return schema.service(SERVICES[self.path]).type(self.record)


def _seeded(make: Callable[[int], Records]) -> Callable[[Company], Records]:
    """A list that follows from the company's seed alone."""
    return lambda company: make(company.seed)


def _fiscal_years(company: Company) -> Records:
    return fiscal.fiscal_years(company.seed, company.ledger.lines, company.now())


def _invoice_templates(company: Company) -> Records:
    return invoicing.invoice_templates(company.seed, sorted(company.customers.referenced))


_ACCOUNTS, _TRANSACTIONS = soap.ACCOUNT_PATH, soap.TRANSACTION_PATH
_INVOICES, _CLIENT = soap.INVOICE_PATH, soap.CLIENT_PATH
LISTS: Final = {
    "GetAccountList": WholeList(
        _ACCOUNTS, "AccountData", "accounts", "AccountId", _seeded(chart.accounts)
    ),
    "GetTaxCodeList": WholeList(
        _ACCOUNTS, "TaxCodeElement", "tax_codes", "TaxId", _seeded(chart.vat_codes)
    ),
    "GetTypeList": WholeList(
        _ACCOUNTS, "TypeData", "entry_types", "TypeId", _seeded(chart.entry_types)
    ),
    "GetTransactionTypes": WholeList(
        _TRANSACTIONS, "TransactionType", "transaction_types", "Id", _seeded(transaction_types)
    ),
    "GetFiscalYears": WholeList(_TRANSACTIONS, "FiscalYear", "fiscal_years", "Id", _fiscal_years),
    "GetUserDefinedDimensions": WholeList(
        _TRANSACTIONS, "Dimension", "dimensions", "TypeId", _seeded(dimensions.dimension_types)
    ),
    "GetPaymentMethods": WholeList(
        _INVOICES, "PaymentMethod", "payment_methods", "Id", _seeded(invoicing.payment_methods)
    ),
    "GetDeliveryMethods": WholeList(
        _INVOICES, "DeliveryMethod", "delivery_methods", "Id", _seeded(invoicing.delivery_methods)
    ),
    "GetInvoiceTemplates": WholeList(
        _INVOICES, "TemplateModel", "invoice_templates", "Id", _invoice_templates
    ),
    "GetDepartmentList": WholeList(
        _CLIENT, "Department", "departments", "Id", _seeded(client.departments)
    ),
    "GetCurrencyList": WholeList(
        _CLIENT, "Currency", "currencies", "Id", _seeded(client.currencies)
    ),
}
