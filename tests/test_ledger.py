"""The simulated ledger: balanced, linked to the invoices, every search parameter honoured."""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from decimal import Decimal

import pytest

from extractor.simulator.ledger import Ledger, Line, search
from extractor.simulator.tenant import Tenant


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger(Tenant(800, 7), 7)


def test_every_voucher_sums_to_zero_and_ids_are_unique(ledger: Ledger) -> None:
    sums: dict[int, Decimal] = defaultdict(Decimal)
    for line in ledger.lines:
        sums[line.number] += line.wire["Amount"]
    assert len(sums) > 500 and set(sums.values()) == {Decimal(0)}
    ids = [line.wire["Id"] for line in ledger.lines]
    assert len(set(ids)) == len(ids)


def test_vouchers_link_to_invoices_and_keep_unlisted_system_types(ledger: Ledger) -> None:
    tenant_ids = set(Tenant(800, 7).ids)
    assert {line.link_id for line in ledger.lines} - {None} <= tenant_ids
    kinds = {line.system_type for line in ledger.lines}
    assert {"InvoiceCustomer", "Payment", "InvoiceLoss"} <= kinds
    truth = ledger.truth(next(line for line in ledger.lines if line.system_type == "InvoiceLoss"))
    assert truth["SystemType"] == "InvoiceLoss"


def test_the_last_day_needs_the_last_second(ledger: Ledger) -> None:
    day = max(line.date for line in ledger.lines if line.date.hour > 0).date()
    midnight = f"{day}T00:00:00"
    on_day = [line for line in ledger.lines if line.date.date() == day]
    whole = search(ledger, {"DateStart": midnight, "DateEnd": f"{day}T23:59:59"})
    assert whole == on_day and on_day
    short = search(ledger, {"DateStart": midnight, "DateEnd": midnight})
    assert len(short) < len(on_day)


@pytest.mark.parametrize(
    ("name", "value", "holds"),
    [
        ("AccountNoStart", "2000", lambda line: line.account >= 2000),
        ("AccountNoEnd", "1600", lambda line: line.account <= 1600),
        ("TransactionNoStart", "100", lambda line: line.number >= 100),
        ("TransactionNoEnd", "50", lambda line: line.number <= 50),
        ("SystemType", "Payment", lambda line: line.system_type == "Payment"),
        ("TransactionTypeId", "5", lambda line: line.type_id == 5),
        ("DepartmentId", "3", lambda line: line.dimensions.get("Department") == "3"),
        ("ShowOpenEntries", "true", lambda line: line.open),
        ("VatCode", "3", lambda line: line.vat_code == 3),
        ("HasInvoiceId", "true", lambda line: line.invoice_no != ""),
        ("AccountNoStart", "-32768", lambda line: True),  # the sentinel: not set
    ],
)
def test_search_parameters_filter(ledger: Ledger, name: str, value: str, holds: object) -> None:
    found = search(ledger, {name: value})
    assert found and all(holds(line) for line in found)  # type: ignore[operator]
    assert found == [line for line in ledger.lines if holds(line)]  # type: ignore[operator]


def test_search_by_link_invoice_and_change_date(ledger: Ledger) -> None:
    line = ledger.lines[40]
    assert line.link_id is not None
    assert line in search(ledger, {"LinkId": str(line.link_id)})
    assert {x.invoice_no for x in search(ledger, {"InvoiceNo": line.invoice_no})} == {
        line.invoice_no
    }
    changed = line.changed.replace(microsecond=0)
    found = search(
        ledger,
        {
            "DateSearchParameters": "DateChangedUTC",
            "DateStart": changed.isoformat(),
            "DateEnd": (changed + dt.timedelta(seconds=0)).isoformat(),
        },
    )
    assert line in found and all(x.changed.replace(microsecond=0) == changed for x in found)
    after = line.registered.isoformat()
    assert all(x.registered > line.registered for x in search(ledger, {"RegisteredAfter": after}))


def test_a_window_finds_what_a_scan_finds_before_and_after_a_settlement() -> None:
    """The index by time must follow the ledger: a settlement changes lines and adds some."""
    ledger = Ledger(Tenant(300, 3), 3)  # its own: this one is settled
    rng = random.Random(5)

    def scan(start: dt.datetime, end: dt.datetime, by_change: bool) -> list[Line]:
        stamp = (lambda x: x.changed) if by_change else (lambda x: x.date)
        return [x for x in ledger.lines if start <= stamp(x).replace(microsecond=0) <= end]

    def windows() -> None:
        dates = sorted(line.changed.replace(microsecond=0) for line in ledger.lines)
        for _ in range(40):
            start, end = sorted(rng.sample(dates, 2))
            for by_change in (False, True):
                params = {"DateStart": start.isoformat(), "DateEnd": end.isoformat()}
                if by_change:
                    params["DateSearchParameters"] = "DateChangedUTC"
                assert search(ledger, params) == scan(start, end, by_change)

    windows()
    open_ids = [x.link_id for x in ledger.lines if x.open and x.link_id is not None][:5]
    when = max(x.changed for x in ledger.lines).replace(microsecond=0) + dt.timedelta(days=1)
    assert ledger.settle(open_ids, when) > 0
    settled = search(
        ledger,
        {"DateSearchParameters": "DateChangedUTC", "DateStart": when.isoformat(),
         "DateEnd": when.isoformat()},
    )  # fmt: skip
    assert settled == scan(when, when, True) and len(settled) > len(open_ids)
    windows()
