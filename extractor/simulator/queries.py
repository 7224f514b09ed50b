"""The operations a simulated company answers from a request's parameters: dimension values,
aggregated balances, customers and products.

:data:`QUERIES` maps each to its service path, its record type in the WSDL and what it answers
(:class:`Asked` in, records out), as :data:`~extractor.simulator.lists.LISTS` does for the
whole lists; :class:`~extractor.simulator.service.SimulatedService` serves every entry the same
way, faults included. What each finds is its company's books as they are at the call
(:mod:`~.dimensions`, :mod:`~.fiscal`, :mod:`~.customers`, :mod:`~.products`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from lxml import etree

from extractor import schema, soap
from extractor.simulator import customers, dimensions, fiscal, params, products
from extractor.simulator.lists import Records
from extractor.simulator.messages import SERVICES, Fault
from extractor.simulator.register import Register
from extractor.simulator.render import check_properties
from extractor.simulator.tenant import restrict

if TYPE_CHECKING:
    from extractor.simulator.config import SimulatorConfig
    from extractor.simulator.identities import Company


@dataclass(frozen=True)
class Asked:
    """One request, as a query reads it."""

    company: Company
    params: etree._Element  # the operation's element
    config: SimulatorConfig
    listed: Callable[[str], Records]  # the company's whole lists, as the service answers them


@dataclass(frozen=True)
class Query:
    """One operation that answers from its parameters."""

    path: str
    record: str  # the WSDL type of an item (and its element name); with ``single``, of the result
    answer: Callable[[Asked], Any]  # the records; with ``single``, the one result
    single: bool = False

    @property
    def struct(self) -> schema.Struct:
        return schema.service(SERVICES[self.path]).type(self.record)


def dimension_values(asked: Asked) -> Records:
    """GetUserDefinedDimensionValues(DimensionType): that type's values, none if unknown."""
    type_id, company = params.number(asked.params, "DimensionType"), asked.company
    if type_id is None:
        return []
    departments = asked.listed("GetDepartmentList")
    return dimensions.dimension_values(type_id, departments, company.customers, company.seed)


def aggregated(asked: Asked) -> Records:
    """GetAggregated: balances by account from the ledger as it is now (:mod:`~.fiscal`)."""
    found = asked.params
    start = params.when(found, "startDate")
    if start is None:
        raise Fault("Server was unable to process request. ---> startDate is not set")
    return fiscal.aggregated(
        asked.company.ledger.lines,
        start,
        accounts=params.ints(found, "accountNos", "short") or None,
        months=params.text(found, "periodType") == "Month",  # absent: the enum's first, None
        incoming=params.flag(found, "returnIB") is True,
        dimensions=[
            {etree.QName(e).localname: e.text or "" for e in dimension}
            for dimension in found.iterfind(params.path("dimensions/Dimension"))
        ],
    )


def company_sync_list(asked: Asked) -> dict[str, Any]:
    """GetCompanySyncList: one page of the customers its filters keep (page 1 unless a later
    one is asked for)."""
    where = "syncSearchParameters/"
    return customers.sync_page(
        asked.company.customers,
        max(params.number(asked.params, where + "Page") or 1, 1),
        asked.config.companies_per_page,
        params.flag(asked.params, where + "Active"),
        params.when(asked.params, where + "ChangedAfter"),
        params.when(asked.params, where + "RegisteredAfter"),
    )


def companies(asked: Asked) -> Records:
    """GetCompanies: the customers asked for by id (unknown ones skipped), changed after
    ChangedAfter; every customer when no id is given."""
    found = asked.params
    ids = params.at_most(
        params.ints(found, "searchParams/CompanyIds"), asked.config.max_ids, "CompanyIds"
    )
    one = params.number(found, "searchParams/CompanyId")
    changed = params.when(found, "searchParams/ChangedAfter")
    register = asked.company.customers
    wanted = ids or ([one] if one is not None else register.ids)
    kept = [
        i
        for i in dict.fromkeys(wanted)
        if i in register.entries and (changed is None or register.entries[i].changed > changed)
    ]
    return _selected(asked, register, schema.service("companyService").type("Company"), kept)


def products_changed(asked: Asked) -> Records:
    """GetProducts: the products changed at or after DateChanged, among ProductIds if given."""
    ids = params.ints(asked.params, "searchParams/ProductIds") or None
    changed = params.when(asked.params, "searchParams/DateChanged")
    register = asked.company.products
    struct = schema.service("productService").type("Product")
    return _selected(asked, register, struct, products.search(register, changed, ids))


def _selected(asked: Asked, register: Register, struct: schema.Struct, ids: list[int]) -> Records:
    """Those records with the properties ``returnProperties`` names (all when it names none;
    a name ``struct`` does not have is a fault)."""
    names = params.strings(asked.params, "returnProperties")
    check_properties(struct, names, Fault)
    return [restrict(register.wire(i), names) for i in ids]


_TRANSACTIONS, _COMPANIES = soap.TRANSACTION_PATH, soap.COMPANY_PATH
QUERIES: Final = {
    "GetUserDefinedDimensionValues": Query(_TRANSACTIONS, "Dimension", dimension_values),
    "GetAggregated": Query(_TRANSACTIONS, "AggregatedData", aggregated),
    "GetCompanySyncList": Query(_COMPANIES, "PageOfSyncCompany", company_sync_list, single=True),
    "GetCompanies": Query(_COMPANIES, "Company", companies),
    "GetProducts": Query(soap.PRODUCT_PATH, "Product", products_changed),
}
