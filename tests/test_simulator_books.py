"""The simulator's accounting picture (issue 26): one consistent tenant behind every list;
each answer, parsed back by the extractor's own reader, equals the truth.

Every call goes through :meth:`SimulatedService.answer` with a real envelope, on a manual
clock: no socket, no wait."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import pytest

from extractor import schema, soap
from extractor.clock import ManualClock
from extractor.records.tables import TableSink
from extractor.simulator.config import SimulatorConfig
from extractor.simulator.lists import LISTS
from extractor.simulator.messages import SERVICES, Request
from extractor.simulator.service import SESSION_COOKIE, SimulatedService
from extractor.simulator.tenant import Tenant

#: When the tests' service lives: its fiscal year 2026 is open, 2027 not yet begun.
NOW = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)
CALENDAR_SEED, JULY_SEED = 7, 4


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
    assert (
        len(later) == len(years) + 1
        and later[-3]["Id"] == years[-2]["Id"]
        and later[-3]["IsLocked"]
    )


@pytest.mark.parametrize("xml", ["wcf", "compact"])
async def test_every_whole_list_parses_back_to_its_truth(xml: str) -> None:
    sim = service(orders=300, xml=xml)
    caller = Caller(sim)
    for name, whole in LISTS.items():
        rows = await caller.records(list_operation(name), whole.record)
        assert by_key(rows, whole.key) == sim.table_truth(whole.table), name


def test_the_truth_is_the_seed_s_and_each_identity_s_own() -> None:
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
