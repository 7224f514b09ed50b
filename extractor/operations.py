"""The API operations the extractor brings into the lake, each a :class:`Spec`.

Adding an operation is adding its spec here (and the simulator's data for it): the engine
(:mod:`extractor.engine`) plans, fetches, stages, journals, publishes and syncs it. The
lists (whole lists, lists per row of another, and the tables kept by their changes) are
fetched by ``extractor tables`` and kept by ``sync``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import pyarrow as pa

from extractor import arrow, soap
from extractor.engine.spec import Changes, Derived, Keeping, PerRow, Spec, Strategy
from extractor.errors import InvalidOption
from extractor.schema import DECIMAL_DIGITS

#: ``GetOrderSyncList`` → ``GetInvoices``: run by :mod:`extractor.jobs.invoices`, its rows
#: (``invoice_rows``) beside it.
INVOICES: Final = Spec(
    "invoices", soap.GET_INVOICES, "InvoiceOrder", ("OrderId",), Strategy.ID_BATCHES,
    Keeping.RECONCILE, partition="order_month", listing=soap.GET_ORDER_SYNC_LIST,
)  # fmt: skip
#: ``GetTransactions`` by date windows: run by :mod:`extractor.jobs.ledger`.
TRANSACTIONS: Final = Spec(
    "transactions", soap.GET_TRANSACTIONS, "Transaction", ("Id",), Strategy.DATE_WINDOWS,
    Keeping.UPSERT, partition="date_month",
)  # fmt: skip


def _op(wsdl: str, path: str, name: str) -> soap.Operation:
    return soap.Operation(wsdl, path, name)


def _whole(table: str, operation: soap.Operation, record: str, key: str) -> Spec:
    return Spec(table, operation, record, (key,), Strategy.WHOLE_LIST, Keeping.REPLACE)


_ACCOUNTS: Final = ("accountService", soap.ACCOUNT_PATH)
_LEDGER: Final = ("transactionService", soap.TRANSACTION_PATH)
_INVOICING: Final = ("invoiceService", soap.INVOICE_PATH)
_CLIENT: Final = ("clientService", soap.CLIENT_PATH)

ACCOUNTS: Final = _whole("accounts", _op(*_ACCOUNTS, "GetAccountList"), "AccountData", "AccountId")
TAX_CODES: Final = _whole("tax_codes", _op(*_ACCOUNTS, "GetTaxCodeList"), "TaxCodeElement", "TaxId")
ENTRY_TYPES: Final = _whole("entry_types", _op(*_ACCOUNTS, "GetTypeList"), "TypeData", "TypeId")
TRANSACTION_TYPES: Final = _whole(
    "transaction_types", _op(*_LEDGER, "GetTransactionTypes"), "TransactionType", "Id"
)
FISCAL_YEARS: Final = _whole("fiscal_years", _op(*_LEDGER, "GetFiscalYears"), "FiscalYear", "Id")
DIMENSIONS: Final = _whole(
    "dimensions", _op(*_LEDGER, "GetUserDefinedDimensions"), "Dimension", "TypeId"
)
PAYMENT_METHODS: Final = _whole(
    "payment_methods", _op(*_INVOICING, "GetPaymentMethods"), "PaymentMethod", "Id"
)
DELIVERY_METHODS: Final = _whole(
    "delivery_methods", _op(*_INVOICING, "GetDeliveryMethods"), "DeliveryMethod", "Id"
)
INVOICE_TEMPLATES: Final = _whole(
    "invoice_templates", _op(*_INVOICING, "GetInvoiceTemplates"), "TemplateModel", "Id"
)
DEPARTMENTS: Final = _whole("departments", _op(*_CLIENT, "GetDepartmentList"), "Department", "Id")
CURRENCIES: Final = _whole("currencies", _op(*_CLIENT, "GetCurrencyList"), "Currency", "Id")


def _dimension_type(table: pa.Table, dimension: Any) -> pa.Table:
    """The dimension's TypeId each value was asked by."""
    asked = pa.array([dimension["TypeId"]] * table.num_rows, pa.int32())
    return table.append_column("DimensionType", asked)


#: ``GetUserDefinedDimensionValues`` once per dimension (``DimensionType`` = its TypeId).
DIMENSION_VALUES: Final = Spec(
    "dimension_values", _op(*_LEDGER, "GetUserDefinedDimensionValues"), "Dimension",
    ("DimensionType", "Value"), Strategy.PER_ROW, Keeping.REPLACE,
    per=PerRow("dimensions", "TypeId", "DimensionType"),
    derived=Derived((pa.field("DimensionType", pa.int32()),), _dimension_type),
)  # fmt: skip

_AMOUNT: Final = pa.decimal128(*DECIMAL_DIGITS)
PERIOD_AMOUNT: Final = pa.struct([pa.field("Month", pa.date32()), pa.field("Amount", _AMOUNT)])


def _balances(table: pa.Table, year: Any) -> pa.Table:
    """The fiscal year each balance was asked from (``FiscalYearStart``), whether the year
    was locked then (``FiscalYearLocked``: its balances are final), and its periods typed
    (``PeriodAmounts``): by our reading of ``GetAggregated``, period Key ``n`` is the n-th
    month from the start, its Value that month's sum. A Key that is not a month number or a
    Value that is not a decimal gives a null there (``verify`` says which)."""
    start: dt.datetime = year["StartingDate"]
    typed = [
        None if periods is None else [_period(start, item) for item in periods]
        for periods in table.column("Periods").to_pylist()
    ]
    rows = table.num_rows
    table = table.append_column(
        "FiscalYearStart", pa.array([start] * rows, pa.timestamp("us", tz="UTC"))
    )
    table = table.append_column("FiscalYearLocked", pa.array([year["IsLocked"]] * rows, pa.bool_()))
    return table.append_column("PeriodAmounts", pa.array(typed, pa.list_(PERIOD_AMOUNT)))


def _period(start: dt.datetime, item: dict[str, str | None] | None) -> dict[str, Any]:
    key, value = (item or {}).get("Key"), (item or {}).get("Value")
    month = None
    if key is not None and key.strip().isdigit() and 1 <= int(key) <= 240:
        index = start.year * 12 + start.month - 1 + int(key) - 1
        month = dt.date(index // 12, index % 12 + 1, 1)
    return {"Month": month, "Amount": _amount(value)}


def _amount(value: str | None) -> Decimal | None:
    """A period's Value as an exact decimal of the lake's type; None when it is not one."""
    try:
        amount = Decimal((value or "").strip())
        exact = amount.is_finite() and amount == amount.quantize(Decimal("1e-10"))
    except InvalidOperation:
        return None
    return amount if exact and abs(amount) < Decimal(10) ** 28 else None


#: ``GetAggregated`` once per fiscal year (from its StartingDate, by month, with the incoming
#: balance); a year's balances fetched once it was locked are final, an open year's are
#: fetched again on every sync.
ACCOUNT_BALANCES: Final = Spec(
    "account_balances", _op(*_LEDGER, "GetAggregated"), "AggregatedData",
    ("FiscalYearStart", "AccountNo"), Strategy.PER_ROW, Keeping.REPLACE,
    request={"periodType": "Month", "returnIB": True},
    per=PerRow(
        "fiscal_years", "StartingDate", "startDate", settled="IsLocked",
        held_by=("FiscalYearStart", "FiscalYearLocked"),
    ),
    derived=Derived(
        (pa.field("FiscalYearStart", pa.timestamp("us", tz="UTC")),
         pa.field("FiscalYearLocked", pa.bool_()),
         pa.field("PeriodAmounts", pa.list_(PERIOD_AMOUNT))),
        _balances,
    ),
)  # fmt: skip


def _active(table: pa.Table, given: Any) -> pa.Table:
    """The sync list's ``Active`` of each company (``given``: its listed item by CompanyId)."""
    active = [(given.get(i) or {}).get("Active") for i in table.column("Id").to_pylist()]
    return table.append_column("Active", arrow.booleans(active))


_COMPANIES: Final = ("companyService", soap.COMPANY_PATH)
#: ``GetCompanySyncList`` (paged, changed after the watermark) → ``GetCompanies`` by ids.
#: A customer's ``Username`` and ``Password`` are never asked for.
CUSTOMERS: Final = Spec(
    "customers", _op(*_COMPANIES, "GetCompanies"), "Company", ("Id",), Strategy.CHANGES,
    Keeping.RECONCILE, properties="returnProperties",
    changes=Changes(
        after=("syncSearchParameters", "ChangedAfter"),
        listing=_op(*_COMPANIES, "GetCompanySyncList"), id="CompanyId",
        fixed={"syncSearchParameters": {"Active": soap.NIL}},  # minOccurs 1: nil, all kinds
        page=("syncSearchParameters", "Page"),
        ids=("searchParams", "CompanyIds"),
    ),
    derived=Derived((pa.field("Active", pa.bool_()),), _active),
    left_out=("Username", "Password"),
)  # fmt: skip
#: ``GetProducts`` changed at or after the watermark.
PRODUCTS: Final = Spec(
    "products", _op("productService", soap.PRODUCT_PATH, "GetProducts"), "Product", ("Id",),
    Strategy.CHANGES, Keeping.RECONCILE, properties="returnProperties",
    changes=Changes(after=("searchParams", "DateChanged")),
)  # fmt: skip

SPECS: Final = {
    spec.table: spec
    for spec in (
        INVOICES, TRANSACTIONS, ACCOUNTS, TAX_CODES, ENTRY_TYPES, TRANSACTION_TYPES,
        FISCAL_YEARS, DIMENSIONS, DIMENSION_VALUES, ACCOUNT_BALANCES, PAYMENT_METHODS,
        DELIVERY_METHODS, INVOICE_TEMPLATES, DEPARTMENTS, CURRENCIES, CUSTOMERS, PRODUCTS,
    )
}  # fmt: skip
#: The lists (every table but the invoices and the ledger), in the order a run fetches
#: them: a parent list before the lists per its rows.
LISTS: Final = tuple(
    spec
    for spec in SPECS.values()
    if spec.strategy not in (Strategy.ID_BATCHES, Strategy.DATE_WINDOWS)
)
#: The tables written beside a spec's (an invoice's rows).
COMPANIONS: Final = {"invoices": ("invoice_rows",)}
#: Every table a sync keeps, by the names ``--tables`` takes (``invoices`` brings its rows).
TABLES: Final = tuple(SPECS)


def choose(tables: str | None = None, skip: str | None = None) -> tuple[str, ...]:
    """The tables ``--tables`` (comma-separated; default all) less ``--skip-tables`` name,
    in :data:`TABLES` order; a list fetched per rows of another brings that one too. An
    unknown name, or skipping a list another needs, is an InvalidOption."""
    wanted, skipped = _names(tables, "tables"), _names(skip, "skip_tables")
    chosen = {name for name in wanted or TABLES if name not in skipped}
    for name in sorted(chosen):
        per = SPECS[name].per
        if per is not None and per.table not in chosen:
            if per.table in skipped:
                raise InvalidOption(
                    f"{{skip_tables}}: {name} is fetched per row of {per.table}; skip both "
                    "or neither"
                )
            chosen.add(per.table)
    if not chosen:
        raise InvalidOption("{skip_tables} leaves no table to fetch")
    return tuple(name for name in TABLES if name in chosen)


def chosen_lists(tables: str | None = None, skip: str | None = None) -> tuple[Spec, ...]:
    """The lists ``--tables`` and ``--skip-tables`` choose (:func:`choose`; none given: every
    list), in :data:`LISTS` order: a parent list before the list per its rows."""
    given = choose(tables, skip) if tables or skip else TABLES
    return tuple(spec for spec in LISTS if spec.table in given)


def _names(given: str | None, setting: str) -> list[str]:
    names = [name.strip() for name in (given or "").split(",") if name.strip()]
    aliases = {"invoice_rows": "invoices"}
    names = [aliases.get(name, name) for name in names]
    unknown = [name for name in names if name not in SPECS]
    if unknown:
        raise InvalidOption(
            f"{{{setting}}}: {unknown[0]!r} is not a table; choose from {', '.join(TABLES)}"
        )
    return names
