"""The ground truth of the accounting picture: per table, the rows a correct extractor writes.

Each row is typed from the wire values the service sends (:func:`~.values.truth`), never
through XML, and keyed by the table's key (always a tuple). A row holds the WSDL record's
fields in WSDL order, then the columns the product adds:

- the whole lists (:data:`~extractor.simulator.lists.LISTS`: ``accounts``, ``tax_codes``, ...):
  the record alone, keyed by its key field;
- ``dimension_values``: ``DimensionType`` (the request's), keyed (DimensionType, Value);
- ``account_balances``: ``FiscalYearStart`` (the request's startDate, UTC) and
  ``PeriodAmounts`` (per period: ``Month``, the first day of its month, and ``Amount``),
  keyed (FiscalYearStart, AccountNo), one GetAggregated (Month, with incoming balances) per
  fiscal year;
- ``customers``: ``Company`` without ``Username`` and ``Password``, then ``Active`` (from the
  sync list), keyed by Id; ``products``: ``Product``, keyed by Id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from extractor import schema
from extractor.simulator import dimensions, fiscal, values
from extractor.simulator.lists import LISTS, Records

if TYPE_CHECKING:
    from extractor.simulator.identities import Company
    from extractor.simulator.register import Register

Row = dict[str, Any]
Truth = dict[tuple[Any, ...], Row]
Listed = Callable[[str], Records]  # an operation's whole list, as the service answers it now
#: Fields of Company the product never asks for.
SECRET: Final = frozenset({"Username", "Password"})


def typed(struct: schema.Struct, wire: dict[str, Any], leave_out: Iterable[str] = ()) -> Row:
    """``wire`` (a ``struct`` as the service sends it) as a correct extractor writes it."""
    skipped = frozenset(leave_out)
    return {
        f.name: values.truth(f.type, wire.get(f.name))
        for f in struct.fields
        if f.name not in skipped
    }


#: Typed records by the identity of the record they were typed from: records are made once
#: per process and never changed (:func:`~.customers.record`), so each is typed once. The
#: record is kept beside its typing, so its id is not reused while the entry lives.
_TYPED: dict[tuple[int, str, frozenset[str]], tuple[dict[str, Any], Row]] = {}
_TYPED_MAX: Final = 32_768


def _typed_record(struct: schema.Struct, wire: dict[str, Any], leave_out: frozenset[str]) -> Row:
    """:func:`typed` of a register's record, remembered (do not change what it returns)."""
    key = (id(wire), struct.name, leave_out)
    found = _TYPED.get(key)
    if found is not None and found[0] is wire:
        return found[1]
    if len(_TYPED) >= _TYPED_MAX:
        _TYPED.clear()
    row = typed(struct, wire, leave_out)
    _TYPED[key] = (wire, row)
    return row


def truth(table: str, company: Company, listed: Listed) -> Truth:
    """``table``'s rows for ``company`` now (``listed``: its whole lists as answered)."""
    for operation, whole in LISTS.items():
        if whole.table == table:
            struct = whole.struct
            return {(row[whole.key],): row for row in (typed(struct, r) for r in listed(operation))}
    if table not in TABLES:
        known = ", ".join(sorted([*TABLES, *(whole.table for whole in LISTS.values())]))
        raise KeyError(f"no table {table!r}; known: {known}")
    return TABLES[table](company, listed)


def _dimension_values(company: Company, listed: Listed) -> Truth:
    struct = schema.service("transactionService").type("Dimension")
    departments = listed("GetDepartmentList")
    rows: Truth = {}
    for dimension in listed("GetUserDefinedDimensions"):
        type_id = dimension["TypeId"]
        for wire in dimensions.dimension_values(
            type_id, departments, company.customers, company.seed
        ):
            row = typed(struct, wire) | {"DimensionType": type_id}
            rows[(type_id, row["Value"])] = row
    return rows


def _account_balances(company: Company, listed: Listed) -> Truth:
    struct = schema.service("transactionService").type("AggregatedData")
    rows: Truth = {}
    for year in listed("GetFiscalYears"):
        start = year["StartingDate"]
        at = start.replace(tzinfo=dt.UTC)
        for wire in fiscal.aggregated(company.ledger.lines, start):
            row = typed(struct, wire) | {
                "FiscalYearStart": at,
                "PeriodAmounts": _amounts(start, wire),
            }
            rows[(at, row["AccountNo"])] = row
    return rows


def _amounts(start: dt.datetime, wire: dict[str, Any]) -> list[Row]:
    """The periods of an AggregatedData as the product types them: month and amount."""
    return [
        {
            "Month": fiscal.add_months(start, int(p["Key"]) - 1).date().replace(day=1),
            "Amount": Decimal(p["Value"]),
        }
        for p in wire.get("Periods") or ()
    ]


def _customers(company: Company, listed: Listed) -> Truth:
    struct = schema.service("companyService").type("Company")
    return _register(company.customers, struct, SECRET, with_active=True)


def _products(company: Company, listed: Listed) -> Truth:
    struct = schema.service("productService").type("Product")
    return _register(company.products, struct, (), with_active=False)


def _register(
    register: Register, struct: schema.Struct, leave_out: Iterable[str], *, with_active: bool
) -> Truth:
    rows: Truth = {}
    skipped = frozenset(leave_out)
    for record_id in register.ids:
        row = dict(_typed_record(struct, register.wire(record_id), skipped))
        if with_active:
            row["Active"] = register.entries[record_id].active
        rows[(record_id,)] = row
    return rows


#: The tables that are not whole lists, and how their truth is made.
TABLES: Final[dict[str, Callable[[Company, Listed], Truth]]] = {
    "dimension_values": _dimension_values,
    "account_balances": _account_balances,
    "customers": _customers,
    "products": _products,
}
