"""The simulated general ledger: balanced vouchers linked to the tenant's invoices.

Deterministic from the tenant's seed. Each invoiced order posts an invoice voucher
(receivable, sales, VAT), some are paid later (bank, receivable), and now and then a loss is
written off with a SystemType the 2024 WSDL does not list (``InvoiceLoss``). Every voucher
(TransactionNo) sums to zero. Entry dates carry a time of day, so a window must end at
``T23:59:59`` to include its last day, as on the live service.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import random
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from extractor import schema
from extractor.simulator import values
from extractor.simulator.tenant import Tenant
from extractor.soap import NIL, Raw

Wire = dict[str, Any]
NOT_SET_INT: Final = Raw("-2147483648")
NOT_SET_SHORT: Final = Raw("-32768")
NOT_SET_DECIMAL: Final = Raw("-79228162514264337593543950335")
NOT_SET_TIME: Final = Raw("0001-01-01T00:00:00")
NOT_SET_DATE: Final = Raw("0001-01-01")  # the WSDL default of PeriodDate
#: The accounts its vouchers post to: receivable, bank, output VAT, sales, losses.
ACCOUNTS: Final = frozenset({1500, 1920, 2700, 3000, 7830})
#: The customers an invoice's receivable line names in its Customer dimension (by OrderId).
DIMENSION_CUSTOMERS: Final = range(10_000, 10_700)
_ID_SPACE: Final = uuid.UUID("2f0c9f53-0a51-4b8e-9d3c-6e0b8d6c7f10")


def transaction_type() -> schema.Struct:
    return schema.service("transactionService").type("Transaction")


@dataclass(frozen=True)
class Line:
    """One ledger line: what the service sends, and the keys its search parameters filter on."""

    wire: Wire
    date: dt.datetime  # entry date, whole seconds
    changed: dt.datetime
    registered: dt.datetime
    account: int
    number: int  # TransactionNo
    link_id: int | None
    system_type: str
    type_id: int
    vat_code: int | None
    invoice_no: str
    open: bool
    dimensions: Mapping[str, str]  # dimension type -> value


class Ledger:
    """Every line of the tenant's ledger, in TransactionNo order."""

    def __init__(self, tenant: Tenant, seed: int) -> None:
        self._type = transaction_type()
        self.lines: list[Line] = []
        self._settled = 0  # settlements so far: they change lines, which the index must see
        self._index: dict[bool, tuple[tuple[int, int], _Index]] = {}
        number = 0
        for order_id in tenant.ids:
            rng = random.Random(f"ledger:{seed}:{order_id}")
            if rng.random() < 0.3:
                continue  # not invoiced yet: no voucher
            for voucher in _vouchers(rng, order_id, tenant.registered[order_id]):
                number += 1
                self.lines.extend(self._post(rng, number, order_id, voucher))

    def settle(self, order_ids: Iterable[int], when: dt.datetime) -> int:
        """Post a payment dated ``when`` for each open invoice of ``order_ids`` and close its
        receivable line (which then changes at ``when`` too); the number of lines posted."""
        wanted, before = set(order_ids), len(self.lines)
        for index, line in enumerate(list(self.lines)):
            if not (line.open and line.link_id in wanted):
                continue
            wire = {**line.wire, "Open": False, "DateChanged": when}
            self.lines[index] = dataclasses.replace(line, wire=wire, open=False, changed=when)
            rng = random.Random(f"settle:{line.wire['Id']}:{when.isoformat()}")
            gross = Decimal(line.wire["Amount"])
            postings = ((1920, gross, None), (1500, -gross, None))
            voucher = _Voucher(when, "Payment", 2, postings, line.invoice_no)
            number = self.lines[-1].number + 1
            self.lines.extend(self._post(rng, number, line.link_id or 0, voucher, changed=when))
        self._settled += 1
        return len(self.lines) - before

    def between(
        self, start: dt.datetime | None, end: dt.datetime | None, by_change: bool
    ) -> list[Line]:
        """The lines whose entry date (``by_change``: DateChanged), to the second, is from
        ``start`` to ``end`` inclusive (None: open), in TransactionNo order. From an index
        sorted by that time: a scan of every line per request was most of a sync's time at
        600,000 lines (a request a day, for years)."""
        version = (self._settled, len(self.lines))
        held = self._index.get(by_change)
        if held is None or held[0] != version:
            held = (version, _Index(self.lines, by_change))
            self._index[by_change] = held
        return [self.lines[at] for at in held[1].between(start, end)]

    def truth(self, line: Line) -> dict[str, Any]:
        """What a correct extractor writes for ``line``."""
        return {f.name: values.truth(f.type, line.wire.get(f.name)) for f in self._type.fields}

    def ground_truth(self, lines: Iterator[Line] | None = None) -> dict[str, dict[str, Any]]:
        """Typed truth by Id, without going through XML."""
        return {str(line.wire["Id"]): self.truth(line) for line in lines or iter(self.lines)}

    def _post(
        self,
        rng: random.Random,
        number: int,
        order_id: int,
        voucher: _Voucher,
        changed: dt.datetime | None = None,
    ) -> Iterator[Line]:
        """The voucher's lines; registered and changed some time after its date, or both at
        ``changed`` when given (a voucher posted now)."""
        registered = changed or voucher.date + dt.timedelta(minutes=rng.randint(1, 600))
        if changed is None:
            changed = registered + dt.timedelta(
                days=rng.choice((0, 0, 0, 1, 12)), seconds=rng.randint(0, 5000)
            )
            changed = changed.replace(microsecond=rng.randint(0, 999_999))
        department = str(rng.randint(1, 9))
        for sequence, (account, amount, vat_code) in enumerate(voucher.postings, start=1):
            dims = {"Department": department} if rng.random() < 0.6 else {}
            if voucher.system_type == "InvoiceCustomer" and account == 1500:
                customers = DIMENSION_CUSTOMERS
                dims["Customer"] = str(customers[order_id % len(customers)])
            line_id = uuid.uuid5(_ID_SPACE, f"{number}:{sequence}")
            is_open = voucher.open and account == 1500
            wire: Wire = {
                "Date": voucher.date,
                "AccountNo": account,
                "Currency": voucher.currency,
                "CurrencyRate": voucher.rate,
                "CurrencyUnit": 1 if voucher.currency != "NOK" else NOT_SET_SHORT,
                "Amount": amount,
                "StampNo": number,
                "Period": voucher.date.month,
                "TransactionTypeId": voucher.type_id,
                "Comment": values.text(rng, "Comment") if rng.random() < 0.7 else None,
                "TransactionNo": number,
                "VatCode": vat_code if vat_code is not None else NOT_SET_SHORT,
                "Id": str(line_id),
                "LinkId": order_id if voucher.linked else NOT_SET_INT,
                "InvoiceNo": voucher.invoice_no,
                "SequenceNo": sequence,
                "SystemType": voucher.system_type,
                "DueDate": voucher.due if account == 1500 else NOT_SET_TIME,
                "Dimensions": _dimensions(rng, dims),
                "RegistrationDate": registered,
                "DateChanged": changed,
                "Hidden": False,
                "Open": is_open,
                "OCR": f"{order_id:010d}" if account == 1500 else None,
                "VatDividend": NOT_SET_DECIMAL if vat_code is None else Decimal("100"),
                "HasVatDividend": vat_code is not None,
                # some payments carry no period, as the service says it: its "not set" date
                "PeriodDate": NOT_SET_DATE
                if voucher.system_type == "Payment" and number % 3 == 0
                else voucher.date.date().replace(day=1),
            }
            wire = {name: value for name, value in wire.items() if value is not None}  # absent
            yield Line(
                wire, voucher.date, changed, registered, account, number,
                order_id if voucher.linked else None, voucher.system_type, voucher.type_id,
                vat_code, voucher.invoice_no, is_open, dims,
            )  # fmt: skip


@dataclass(frozen=True)
class _Voucher:
    date: dt.datetime
    system_type: str
    type_id: int
    postings: tuple[tuple[int, Decimal, int | None], ...]  # account, amount, VAT code
    invoice_no: str
    currency: str = "NOK"
    rate: Decimal | Raw = NOT_SET_DECIMAL
    due: dt.datetime | Raw = NOT_SET_TIME
    linked: bool = True
    open: bool = False


def _vouchers(rng: random.Random, order_id: int, registered: dt.datetime) -> Iterator[_Voucher]:
    """The vouchers one invoiced order causes: the invoice, maybe a payment or a loss."""
    day = (registered + dt.timedelta(days=rng.randint(0, 20))).date()
    invoiced = dt.datetime.combine(
        day, dt.time(rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59))
    )
    net = Decimal(rng.randint(100, 2_500_000)) / 100
    vat = (net * Decimal("0.25")).quantize(Decimal("0.01"))
    gross = net + vat
    invoice_no = str(100_000 + order_id)
    currency, rate = ("EUR", Decimal("11.4523")) if rng.random() < 0.1 else ("NOK", NOT_SET_DECIMAL)
    due = dt.datetime.combine(day + dt.timedelta(days=14), dt.time())
    paid = rng.random() < 0.6
    yield _Voucher(
        invoiced, "InvoiceCustomer", 1,
        ((1500, gross, None), (3000, -net, 3), (2700, -vat, 3)),
        invoice_no, currency, rate, due, open=not paid,
    )  # fmt: skip
    if paid:
        when = invoiced + dt.timedelta(days=rng.randint(5, 45), hours=rng.randint(0, 5))
        yield _Voucher(when, "Payment", 2, ((1920, gross, None), (1500, -gross, None)), invoice_no)
    elif rng.random() < 0.1:
        when = invoiced + dt.timedelta(days=rng.randint(90, 200))
        postings = ((7830, gross, None), (1500, -gross, None))
        yield _Voucher(when, "InvoiceLoss", 5, postings, invoice_no, linked=rng.random() < 0.5)


def _dimensions(rng: random.Random, dims: Mapping[str, str]) -> Any:
    roll = rng.random()
    if not dims:
        return NIL if roll < 0.3 else None if roll < 0.5 else []
    dimensions = []
    for kind, value in dims.items():
        dimension = {"Type": kind, "Value": value, "Percent": Decimal(100), "TypeId": NOT_SET_INT}
        if rng.random() < 0.5:
            dimension["Name"] = values.text(rng, "Name")
        dimensions.append(dimension)
    return dimensions


Filter = Callable[[Line], bool]
#: Values that mean "not set" in a search parameter.
_UNSET: Final = frozenset({"", "-2147483648", "-32768", "0001-01-01T00:00:00"})
_WINDOW: Final = frozenset({"DateSearchParameters", "DateStart", "DateEnd"})


def search(ledger: Ledger, params: Mapping[str, str]) -> list[Line]:
    """The lines GetTransactions returns for ``params`` (element name -> text), in order.

    DateStart and DateEnd are inclusive and compared to the second, on the entry date or, with
    ``DateSearchParameters`` DateChangedUTC, on DateChanged.
    """
    by_change = params.get("DateSearchParameters") == "DateChangedUTC"
    start, end = (_when(params.get(name, "")) for name in ("DateStart", "DateEnd"))
    checks = [
        _check(name, text.strip())
        for name, text in params.items()
        if name not in _WINDOW and text.strip() not in _UNSET
    ]

    return [line for line in ledger.between(start, end, by_change) if all(c(line) for c in checks)]


class _Index:
    """The ledger's lines by their entry date or DateChanged, to the second."""

    def __init__(self, lines: list[Line], by_change: bool) -> None:
        stamps = [
            (line.changed if by_change else line.date).replace(microsecond=0) for line in lines
        ]
        self._order = sorted(range(len(lines)), key=stamps.__getitem__)
        self._stamps = [stamps[at] for at in self._order]

    def between(self, start: dt.datetime | None, end: dt.datetime | None) -> list[int]:
        """The positions of the lines from ``start`` to ``end`` inclusive, ascending."""
        low = 0 if start is None else bisect.bisect_left(self._stamps, start)
        high = len(self._stamps) if end is None else bisect.bisect_right(self._stamps, end)
        return sorted(self._order[low:high])


def _when(text: str) -> dt.datetime | None:
    text = text.strip()
    if text in _UNSET:
        return None
    return dt.datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=None)


def _check(name: str, text: str) -> Filter:
    """One search parameter as a filter (a parameter the ledger cannot filter on keeps all)."""
    number = int(text) if text.lstrip("-").isdigit() else None
    after = _when(text) if name == "RegisteredAfter" else None
    checks: dict[str, Filter] = {
        "ShowOpenEntries": lambda line: line.open or text != "true",
        "LinkId": lambda line: line.link_id == number,
        "ProjectId": lambda line: line.dimensions.get("Project") == text,
        "CustomerId": lambda line: line.dimensions.get("Customer") == text,
        "DepartmentId": lambda line: line.dimensions.get("Department") == text,
        "AccountNoStart": lambda line: number is not None and line.account >= number,
        "AccountNoEnd": lambda line: number is not None and line.account <= number,
        "TransactionNoStart": lambda line: number is not None and line.number >= number,
        "TransactionNoEnd": lambda line: number is not None and line.number <= number,
        "TransactionTypeId": lambda line: line.type_id == number,
        "SystemType": lambda line: line.system_type == text,
        "RegisteredAfter": lambda line: after is None or line.registered > after,
        "HasInvoiceId": lambda line: bool(line.invoice_no) == (text == "true"),
        "InvoiceNo": lambda line: line.invoice_no == text,
        "VatCode": lambda line: line.vat_code == number,
    }
    return checks.get(name, lambda line: True)
