"""The simulator's accounting picture (issue 26): one consistent tenant behind every list,
GetAggregated computed from its own ledger, customers and products that change, page by
page and by date; each answer, parsed back by the extractor's own reader, equals the truth.

Every call goes through :meth:`SimulatedService.answer` with a real envelope, on a manual
clock: no socket, no wait."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
from lxml import etree

from extractor import schema, soap
from extractor.clock import ManualClock
from extractor.records.tables import TableSink
from extractor.simulator.config import SimulatorConfig
from extractor.simulator.faults import FaultConfig
from extractor.simulator.fiscal import first_month
from extractor.simulator.lists import LISTS
from extractor.simulator.messages import SERVICES, Request
from extractor.simulator.register import MasterChurn
from extractor.simulator.service import SESSION_COOKIE, SimulatedService
from extractor.simulator.tenant import Churn, Tenant

#: When the tests' service lives: its fiscal year 2026 is open, 2027 not yet begun.
NOW = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)
CALENDAR_SEED, JULY_SEED = 7, 4
AGGREGATED = soap.Operation("transactionService", soap.TRANSACTION_PATH, "GetAggregated")
VALUES = soap.Operation(
    "transactionService", soap.TRANSACTION_PATH, "GetUserDefinedDimensionValues"
)
SYNC = soap.Operation("companyService", soap.COMPANY_PATH, "GetCompanySyncList")
COMPANIES = soap.Operation("companyService", soap.COMPANY_PATH, "GetCompanies")
PRODUCTS = soap.Operation("productService", soap.PRODUCT_PATH, "GetProducts")


def service(orders: int = 400, seed: int = CALENDAR_SEED, **options: Any) -> SimulatedService:
    """A service whose books follow ``seed`` (its fiscal year, customers, lists) and whose
    orders are the calendar seed's, whatever ``seed`` is: their pools are made once a process."""
    clock = ManualClock(NOW.timestamp())
    config = SimulatorConfig(orders=orders, seed=seed, **options)
    return SimulatedService(config, Tenant(orders, CALENDAR_SEED), clock)


class Caller:
    """One session on ``service``: real envelopes in, bodies out."""

    def __init__(self, service: SimulatedService) -> None:
        self.service, self.cookie = service, ""

    async def call(self, operation: soap.Operation, params: dict[str, Any]) -> tuple[int, bytes]:
        if not self.cookie:
            config = self.service.config
            credential = {
                "ApplicationId": config.application_id,
                "Username": config.username,
                "Password": config.password,
            }
            login = await self._post(soap.LOGIN, {"credential": credential})
            self.cookie = f"{SESSION_COOKIE}={login.cookies[SESSION_COOKIE]}"
        reply = await self._post(operation, params)
        return reply.status, b"".join(reply.parts)

    async def body(self, operation: soap.Operation, params: dict[str, Any] | None = None) -> bytes:
        status, body = await self.call(operation, params or {})
        assert status == 200, body
        return body

    async def records(
        self, operation: soap.Operation, record: str, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The answer's records as the extractor reads them (typed from the WSDL)."""
        return parsed(await self.body(operation, params), operation.wsdl, record)

    async def _post(self, operation: soap.Operation, params: dict[str, Any]) -> Any:
        version = soap.SOAP11
        headers = version.headers(operation.action) | (
            {"Cookie": self.cookie} if self.cookie else {}
        )
        body = version.envelope(operation.body(params))
        return await self.service.answer(Request.of(operation.path, headers, body))


def parsed(body: bytes, wsdl: str, record: str) -> list[dict[str, Any]]:
    service = schema.service(wsdl)
    sink = TableSink(f"{{{service.namespace}}}{record}", service.type(record), service.namespace)
    sink.feed(body)
    sink.complete()
    assert sink.table is not None
    return sink.table.to_pylist()


def list_operation(name: str) -> soap.Operation:
    return soap.Operation(SERVICES[LISTS[name].path], LISTS[name].path, name)


def by_key(rows: list[dict[str, Any]], *key: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    keyed = {tuple(row[name] for name in key): row for row in rows}
    assert len(keyed) == len(rows), "one row per key"
    return keyed


def fields_of(truth: dict[tuple[Any, ...], dict[str, Any]], struct: schema.Struct) -> Any:
    """The truth's rows cut to the WSDL record's fields (what an answer carries)."""
    return {key: {f.name: row[f.name] for f in struct.fields} for key, row in truth.items()}


def test_every_reference_the_books_make_is_in_its_list() -> None:
    sim = service(orders=600)
    company, listed = sim.company(1), sim.whole_list
    lines = company.ledger.lines
    accounts = {a["AccountNo"] for a in listed("GetAccountList")}
    assert {line.account for line in lines} <= accounts
    assert {1500, 1920, 2700, 3000, 7830} <= accounts and 40 <= len(accounts) <= 130
    assert all(a["AccountId"] != a["AccountNo"] for a in listed("GetAccountList"))
    assert {
        c["AccountNo"] for c in listed("GetTaxCodeList") if isinstance(c.get("AccountNo"), int)
    } <= accounts
    assert {str(line.vat_code) for line in lines if line.vat_code} <= {
        c["TaxNo"] for c in listed("GetTaxCodeList")
    }
    assert {line.type_id for line in lines} <= {t["Id"] for t in listed("GetTransactionTypes")}
    assert {line.wire["Currency"] for line in lines} <= {
        c["Symbol"] for c in listed("GetCurrencyList")
    }
    departments = {str(d["Id"]) for d in listed("GetDepartmentList")}
    used = defaultdict(set)
    for line in lines:
        for kind, value in line.dimensions.items():
            used[kind].add(value)
    assert used["Department"] and used["Department"] <= departments
    customers = set(company.customers.ids)
    assert {int(value) for value in used["Customer"]} <= customers
    named = {company.tenant.wire(order_id).get("CustomerId") for order_id in company.tenant.ids}
    assert {c for c in named if isinstance(c, int)} <= customers
    rows = {r.get("ProductId") for o in company.tenant.ids for r in company.tenant.truth(o).rows}
    assert {p for p in rows if p is not None} <= set(company.products.ids)
    assert len(customers - company.customers.referenced) > 100, "customers no order names"
    templates = listed("GetInvoiceTemplates")
    assert sum(t["IsDefault"] for t in templates) == 1
    assert {c for t in templates for c in t.get("Customers", ())} <= company.customers.referenced


async def test_dimension_values_hold_every_value_the_lines_carry() -> None:
    sim = service(orders=300)
    caller, lines = Caller(sim), sim.ledger.lines
    types = {d["Type"]: d["TypeId"] for d in sim.whole_list("GetUserDefinedDimensions")}
    assert {"Department", "Customer", "UserDefined"} <= set(types)
    for kind in ("Department", "Customer"):
        values = await caller.records(VALUES, "Dimension", {"DimensionType": types[kind]})
        assert {(v["Type"], v["TypeId"]) for v in values} == {(kind, types[kind])}
        carried = {line.dimensions[kind] for line in lines if kind in line.dimensions}
        assert carried < {v["Value"] for v in values}, "every value carried, and unused ones"
    assert await caller.records(VALUES, "Dimension", {"DimensionType": 999}) == []


@pytest.mark.parametrize("seed", [CALENDAR_SEED, JULY_SEED])
async def test_get_aggregated_sums_the_ledger_by_month_from_the_start(seed: int) -> None:
    sim = service(orders=300, seed=seed)
    years = sim.whole_list("GetFiscalYears")
    month = first_month(seed)
    assert month == (1 if seed == CALENDAR_SEED else 7)
    assert {y["StartingDate"].month for y in years} == {month} and not years[-1]["IsLocked"]
    start = years[len(years) // 2]["StartingDate"]
    answer = await Caller(sim).records(
        AGGREGATED, "AggregatedData", {"startDate": start, "periodType": "Month", "returnIB": True}
    )
    expected = _sums(sim, start)
    assert {row["AccountNo"]: _read(row) for row in answer} == expected
    truth = sim.table_truth("account_balances")
    at = start.replace(tzinfo=dt.UTC)
    for row in answer:
        balance = truth[(at, row["AccountNo"])]
        assert {name: balance[name] for name in row} == row
        assert [p["Month"] for p in balance["PeriodAmounts"]] == [
            dt.date(start.year + (month - 1 + n) // 12, (month - 1 + n) % 12 + 1, 1)
            for n in range(12)
        ]
        assert [p["Amount"] for p in balance["PeriodAmounts"]] == expected[row["AccountNo"]][1]


def _sums(sim: SimulatedService, start: dt.datetime) -> dict[int, tuple[Decimal, list[Decimal]]]:
    """Per account, the lines before ``start`` and in each of its twelve months, summed."""
    sums: dict[int, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 13)
    for line in sim.ledger.lines:
        month = (line.date.year - start.year) * 12 + line.date.month - start.month + 1
        if line.date < start:
            sums[line.account][0] += line.wire["Amount"]
        elif month <= 12:
            sums[line.account][month] += line.wire["Amount"]
    return {account: (amounts[0], amounts[1:]) for account, amounts in sums.items()}


def _read(row: dict[str, Any]) -> tuple[Decimal, list[Decimal]]:
    """An answer's incoming balance and periods, checked for form and total."""
    periods = row["Periods"]
    assert [p["Key"] for p in periods] == [str(n) for n in range(1, 13)]
    assert all("E" not in p["Value"] and p["Value"].count(".") == 1 for p in periods)
    amounts = [Decimal(p["Value"]) for p in periods]
    assert row["TotalBalance"] == row["IncomingBalance"] + sum(amounts) and row["Dimension"] is None
    return row["IncomingBalance"], amounts


async def test_get_aggregated_options_and_churned_lines() -> None:
    sim = service(orders=300)
    caller = Caller(sim)
    start = sim.whole_list("GetFiscalYears")[-1]["StartingDate"]  # the year that holds now
    ask = {"startDate": start, "periodType": "Month", "returnIB": True}
    before = by_key(await caller.records(AGGREGATED, "AggregatedData", ask), "AccountNo")
    plain = {**ask, "periodType": "None", "returnIB": False, "accountNos": [1920]}
    (bank,) = await caller.records(AGGREGATED, "AggregatedData", plain)
    assert bank["Periods"] is None and bank["IncomingBalance"] == 0
    whole = before[(1920,)]
    assert bank["TotalBalance"] == whole["TotalBalance"] - whole["IncomingBalance"]
    department = {**ask, "dimensions": [{"Type": "Department", "Value": "3"}]}
    in_department = await caller.records(AGGREGATED, "AggregatedData", department)
    assert {row["AccountNo"] for row in in_department} >= {1500, 3000}
    for row in in_department:
        lines = [
            x
            for x in sim.ledger.lines
            if x.account == row["AccountNo"] and x.dimensions.get("Department") == "3"
        ]
        assert row["IncomingBalance"] == sum(x.wire["Amount"] for x in lines if x.date < start)
        assert row["Dimension"]["Value"] == "3"
    posted = sim.churn(Churn(changed=60))  # open invoices of these are paid now
    assert sim.stats["ledger_lines_posted"] > 0 and posted.changed
    after = by_key(await caller.records(AGGREGATED, "AggregatedData", ask), "AccountNo")
    now_month = str(NOW.month - start.month + 1)
    paid = sum(
        x.wire["Amount"]
        for x in sim.ledger.lines
        if x.account == 1920 and x.date >= NOW.replace(tzinfo=None, microsecond=0)
    )
    assert paid > 0
    period = {p["Key"]: Decimal(p["Value"]) for p in after[(1920,)]["Periods"]}
    was = {p["Key"]: Decimal(p["Value"]) for p in before[(1920,)]["Periods"]}
    assert period[now_month] - was[now_month] == paid


def test_fiscal_years_follow_the_clock() -> None:
    sim = service(orders=300, seed=JULY_SEED)
    years = sim.whole_list("GetFiscalYears")
    first = min(line.date for line in sim.ledger.lines)
    assert years[0]["StartingDate"] <= first < years[1]["StartingDate"]
    assert years[-1]["StartingDate"] == dt.datetime(2026, 7, 1)
    assert years[-1]["EndingDate"] == dt.datetime(2027, 6, 30)
    assert [y["IsLocked"] for y in years[-3:]] == [True, False, False]
    assert len({y["Id"] for y in years}) == len(years)
    sim.clock.advance(365 * 86400)  # type: ignore[attr-defined]
    later = sim.whole_list("GetFiscalYears")
    assert len(later) == len(years) + 1
    assert later[-3]["Id"] == years[-2]["Id"] and later[-3]["IsLocked"]


async def test_the_sync_list_pages_add_up() -> None:
    sim = service(orders=300, companies_per_page=250)
    caller, customers = Caller(sim), sim.company(1).customers
    seen: list[int] = []
    page, pages = 1, 1
    while page <= pages:
        header, items = await sync_page(caller, Page=page)
        assert header["CurrentPage"] == page and header["ItemsPerPage"] == 250
        assert header["TotalItems"] == len(customers.ids)
        pages = header["TotalPages"]
        seen += [item["CompanyId"] for item in items]
        page += 1
    assert pages == -(-len(customers.ids) // 250)
    assert len(seen) == len(set(seen)) == len(customers.ids)
    header, items = await sync_page(caller)  # no Page: the first
    assert header["CurrentPage"] == 1 and items[0]["CompanyId"] == seen[0]
    assert (await sync_page(caller, Page=pages + 1))[1] == []
    active, _ = await sync_page(caller, Active=True)
    idle, _ = await sync_page(caller, Active=False)
    assert active["TotalItems"] + idle["TotalItems"] == len(seen) and idle["TotalItems"] > 0
    none, _ = await sync_page(caller, ChangedAfter=dt.datetime(2030, 1, 1))
    assert none["TotalPages"] == none["TotalItems"] == 0


async def sync_page(caller: Caller, **search: Any) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """One GetCompanySyncList: its page numbers and its items (Active nil unless given)."""
    body = await caller.body(SYNC, {"syncSearchParameters": {"Active": soap.NIL} | search})
    result = etree.fromstring(body).find(".//{*}GetCompanySyncListResult")
    assert result is not None
    names = ("CurrentPage", "TotalPages", "TotalItems", "ItemsPerPage")
    header = {name: int(result.findtext(f"{{*}}{name}") or "") for name in names}
    return header, parsed(body, "companyService", "SyncCompany")


async def test_after_churn_the_change_filters_find_exactly_the_changes() -> None:
    sim = service(orders=300)
    caller = Caller(sim)
    since = NOW.replace(tzinfo=None)
    sim.clock.advance(120)  # type: ignore[attr-defined]
    reports = sim.churn_master(
        MasterChurn(changed=5, deleted=2, added=3, deactivated=2), MasterChurn(changed=4, added=2)
    )
    customers, products = reports["customers"], reports["products"]
    _, listed = await sync_page(caller, ChangedAfter=since)
    touched = {*customers.changed, *customers.added, *customers.deactivated}
    assert {c["CompanyId"] for c in listed} == touched and len(touched) == 10
    _, fresh = await sync_page(caller, RegisteredAfter=since)
    assert [c["CompanyId"] for c in fresh] == customers.added
    now = since + dt.timedelta(seconds=120)
    found = await caller.records(PRODUCTS, "Product", {"searchParams": {"DateChanged": now}})
    assert {p["Id"] for p in found} == {*products.changed, *products.added}
    assert {p["DateChanged"] for p in found} == {now.replace(tzinfo=dt.UTC)}
    every = await caller.records(PRODUCTS, "Product", {"searchParams": {}})
    assert len(every) == len(sim.company(1).products.ids)


async def test_deleted_records_vanish_and_named_customers_are_deactivated_instead() -> None:
    sim = service(orders=300, companies_per_page=5000)
    caller, company = Caller(sim), sim.company(1)
    free = sorted(set(company.customers.ids) - company.customers.referenced)
    reports = sim.churn_master(MasterChurn(deleted=len(free) + 3))
    report = reports["customers"]
    assert sorted(report.deleted) == free and len(report.deactivated) == 3
    assert set(report.deactivated) <= company.customers.referenced
    _, listed = await sync_page(caller)
    state = {c["CompanyId"]: c["Active"] for c in listed}
    assert not set(free) & set(state) and all(state[i] is False for i in report.deactivated)
    asked = {"searchParams": {"CompanyIds": [*free[:5], *report.deactivated]}}
    found = await caller.records(COMPANIES, "Company", asked)
    assert {c["Id"] for c in found} == set(report.deactivated)
    values = await caller.records(VALUES, "Dimension", {"DimensionType": 5})
    assert not {str(i) for i in free} & {v["Value"] for v in values}
    product_free = set(company.products.ids) - company.products.referenced
    gone = sim.churn_master(products=MasterChurn(deleted=len(product_free) + 5))["products"]
    assert set(gone.deleted) == product_free and gone.deactivated == []
    assert set(company.products.ids) == set(company.products.referenced)
    with pytest.raises(ValueError, match="products cannot be deactivated"):
        sim.churn_master(products=MasterChurn(deactivated=1))


async def test_get_companies_takes_at_most_1000_ids_and_returns_what_is_asked() -> None:
    sim = service(orders=300)
    caller, ids = Caller(sim), sim.company(1).customers.ids
    status, body = await caller.call(COMPANIES, {"searchParams": {"CompanyIds": [*range(1001)]}})
    assert status == 500 and soap.read_fault(body) == (
        "Server was unable to process request. ---> Maximum 1000 CompanyIds per request, got 1001."
    )
    most = await caller.records(COMPANIES, "Company", {"searchParams": {"CompanyIds": ids[:1000]}})
    assert len(most) == 1000
    names = ["Id", "Name", "DateChanged"]
    chosen = {"searchParams": {"CompanyIds": [ids[3], 0, ids[7]]}, "returnProperties": names}
    body = await caller.body(COMPANIES, chosen)  # 0: no such customer, skipped
    sent = [
        [etree.QName(e).localname for e in c] for c in etree.fromstring(body).iter("{*}Company")
    ]
    assert sent == [names, names]
    truth = sim.table_truth("customers")
    for row in parsed(body, "companyService", "Company"):
        assert {n: row[n] for n in names} == {n: truth[(row["Id"],)][n] for n in names}
        assert row["Addresses"] is None
    status, body = await caller.call(COMPANIES, {"searchParams": {}, "returnProperties": ["Nope"]})
    assert status == 500
    assert soap.read_fault(body) == (
        "Server was unable to process request. ---> Invalid property name: Nope"
    )


async def test_a_fault_mode_applies_to_the_new_operations() -> None:
    sim = service(orders=300, faults=FaultConfig(rate=1.0, kinds=("http500",)))
    caller = Caller(sim)
    start = {"startDate": dt.datetime(2020, 1, 1), "periodType": "Month", "returnIB": True}
    for operation, params in (
        (AGGREGATED, start),
        (SYNC, {"syncSearchParameters": {}}),
        (PRODUCTS, {}),
        (list_operation("GetAccountList"), {}),
    ):
        status, body = await caller.call(operation, params)
        assert (status, body) == (500, b"Internal Server Error"), operation.name
    assert sim.stats["fault:http500"] == 4


@pytest.mark.parametrize("xml", ["wcf", "compact"])
async def test_every_whole_list_parses_back_to_its_truth(xml: str) -> None:
    sim = service(orders=300, xml=xml)
    caller = Caller(sim)
    for name, whole in LISTS.items():
        rows = await caller.records(list_operation(name), whole.record)
        assert by_key(rows, whole.key) == sim.table_truth(whole.table), name


async def test_every_query_answer_parses_back_to_its_truth() -> None:
    sim = service(orders=300)
    caller = Caller(sim)
    values: list[dict[str, Any]] = []
    for kind in sim.whole_list("GetUserDefinedDimensions"):
        found = await caller.records(VALUES, "Dimension", {"DimensionType": kind["TypeId"]})
        values += [row | {"DimensionType": kind["TypeId"]} for row in found]
    assert by_key(values, "DimensionType", "Value") == sim.table_truth("dimension_values")
    aggregated = schema.service("transactionService").type("AggregatedData")
    balances: dict[tuple[Any, ...], dict[str, Any]] = {}
    for year in sim.whole_list("GetFiscalYears"):
        ask = {"startDate": year["StartingDate"], "periodType": "Month", "returnIB": True}
        at = year["StartingDate"].replace(tzinfo=dt.UTC)
        for row in await caller.records(AGGREGATED, "AggregatedData", ask):
            balances[(at, row["AccountNo"])] = row
    assert balances == fields_of(sim.table_truth("account_balances"), aggregated)
    customers = by_key(await caller.records(COMPANIES, "Company", {"searchParams": {}}), "Id")
    truth = sim.table_truth("customers")
    for key, row in customers.items():
        assert row.pop("Username") is None and row.pop("Password") is None, "never sent"
        assert row == {name: value for name, value in truth[key].items() if name != "Active"}
    assert customers.keys() == truth.keys()
    product = schema.service("productService").type("Product")
    products = by_key(await caller.records(PRODUCTS, "Product", {"searchParams": {}}), "Id")
    assert products == fields_of(sim.table_truth("products"), product)
    digits = [len(repr(p["CashPriceIncTax"])) for p in products.values()]
    assert max(digits) > 14, "doubles with every digit"


def test_the_truth_follows_from_the_seed_and_the_clock() -> None:
    tables = [
        *(w.table for w in LISTS.values()),
        "dimension_values",
        "account_balances",
        "customers",
        "products",
    ]
    one, again = service(orders=300), service(orders=300)
    for table in tables:
        assert one.table_truth(table) == again.table_truth(table), table
    customer = next(iter(one.table_truth("customers").values()))
    assert "Username" not in customer and isinstance(customer["Active"], bool)
    with pytest.raises(KeyError, match="no table 'nope'"):
        one.table_truth("nope")


def test_churn_over_json_keeps_its_old_keys_and_takes_customers_and_products() -> None:
    sim = service(orders=300)
    status, answer = sim.churn_json({"changed": 2, "added": 1})
    assert (
        status == 200
        and set(answer) == {"changed", "deleted", "added"}
        and len(answer["changed"]) == 2
    )
    status, answer = sim.churn_json(
        {"customers": {"changed": 3, "deactivated": 1}, "products": {"added": 2}, "seed": 4}
    )
    assert status == 200 and answer["changed"] == [] and len(answer["customers"]["changed"]) == 3
    assert len(answer["customers"]["deactivated"]) == 1 and len(answer["products"]["added"]) == 2
    assert sim.stats["customers_changed"] == 3 and sim.stats["products_added"] == 2
    for bad in ({"customers": {"renamed": 1}}, {"products": {"deactivated": 1}}, {"customers": 3}):
        status, answer = sim.churn_json(bad)
        assert status == 400 and answer["error"].startswith("bad churn request"), bad
    assert dataclasses.asdict(MasterChurn()) == dict.fromkeys(
        ("changed", "deleted", "added", "deactivated"), 0
    )
