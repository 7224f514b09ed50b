"""A simulated company's fiscal years, and the balances GetAggregated computes from its ledger.

Most companies' fiscal year is the calendar year; one in four (by seed, :func:`first_month`)
starts it on 1 July. The years run from the one holding the ledger's first line to the one
holding the service's current time (churn posts lines dated now), or its last line if later;
all but the last two are locked. ``EndingDate`` is the year's last day, at midnight.

GetAggregated follows our reading of it (the documentation does not say): per account, the
``IncomingBalance`` is the sum of its lines dated before ``startDate``; period ``n`` ("1" to
"12") the sum of those dated in the n-th month from ``startDate``, as a decimal string; the
``TotalBalance`` the incoming balance plus the twelve periods. Every account with a line
before the twelve months end is answered.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
import random
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

from extractor.simulator.ledger import Line

Records = list[dict[str, Any]]
#: The share of companies whose fiscal year starts on 1 July.
JULY_SHARE: Final = 0.25
MONTHS: Final = 12
CENT: Final = Decimal("0.01")
_YEAR_SPACE: Final = uuid.UUID("5c0e7f0a-9d1b-4a8e-8f3c-2b6d4e1a9c33")


def first_month(seed: int) -> int:
    """The month the company's fiscal year starts in: January, or for some July."""
    return 7 if random.Random(f"fiscal-year:{seed}").random() < JULY_SHARE else 1


def add_months(start: dt.datetime, months: int) -> dt.datetime:
    """``start`` moved on ``months`` months (its day kept, or the month's last)."""
    years, month = divmod(start.month - 1 + months, 12)
    year = start.year + years
    day = min(start.day, calendar.monthrange(year, month + 1)[1])
    return start.replace(year=year, month=month + 1, day=day)


def fiscal_years(seed: int, lines: Sequence[Line], now: dt.datetime) -> Records:
    """``FiscalYear`` records (see the module), oldest first."""
    month = first_month(seed)
    oldest = min((line.date for line in lines), default=now)
    newest = max(max((line.date for line in lines), default=now), now)
    first, last = _year_of(oldest, month), _year_of(newest, month)
    starts = [dt.datetime(year, month, 1) for year in range(first, last + 1)]
    return [
        {
            "Id": str(uuid.uuid5(_YEAR_SPACE, f"{seed}:{start.date()}")),
            "StartingDate": start,
            "EndingDate": add_months(start, MONTHS) - dt.timedelta(days=1),
            "IsLocked": index < len(starts) - 2,
        }
        for index, start in enumerate(starts)
    ]


def aggregated(
    lines: Iterable[Line],
    start: dt.datetime,
    *,
    accounts: Collection[int] | None = None,
    months: bool = True,
    incoming: bool = True,
    dimensions: Sequence[Mapping[str, Any]] = (),
) -> Records:
    """The ``AggregatedData`` GetAggregated answers for these lines (see the module), by
    account: only ``accounts`` if given, only lines carrying every one of ``dimensions``
    (their Type and Value); without ``months`` no Periods, without ``incoming`` an incoming
    balance of 0 (the total then the periods' alone)."""
    bounds = [add_months(start, n) for n in range(MONTHS + 1)]
    sums: dict[int, list[Decimal]] = {}
    for line in lines:
        slot = bisect.bisect_right(bounds, line.date)  # 0: before; 1..12: a month; 13: after
        if slot > MONTHS or (accounts is not None and line.account not in accounts):
            continue
        if any(line.dimensions.get(d.get("Type", "")) != d.get("Value") for d in dimensions):
            continue
        sums.setdefault(line.account, [Decimal(0)] * (MONTHS + 1))[slot] += line.wire["Amount"]
    records: Records = []
    for account, (before, *periods) in sorted(sums.items()):
        balance = before.quantize(CENT) if incoming else CENT * 0
        record: dict[str, Any] = {
            "IncomingBalance": balance,
            "TotalBalance": (balance + sum(periods, Decimal(0))).quantize(CENT),
        }
        if months:
            record["Periods"] = [
                {"Key": str(n), "Value": format(amount.quantize(CENT), "f")}
                for n, amount in enumerate(periods, start=1)
            ]
        if dimensions:
            record["Dimension"] = dict(dimensions[0])
        records.append(record | {"AccountNo": account})
    return records


def _year_of(moment: dt.datetime, month: int) -> int:
    """The calendar year the fiscal year holding ``moment`` starts in."""
    return moment.year if moment.month >= month else moment.year - 1
