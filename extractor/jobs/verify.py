"""``extractor verify``: proof that a lake is complete, against the service and against itself.

Each check is one line (what was checked, how many mismatches, the first few named):

1. ``invoices``: the OrderIds not marked deleted are exactly ``GetOrderSyncList``'s full
   list, each once;
2. ``vouchers``: every voucher (``TransactionNo``) of the ledger sums to zero, so a lost line
   shows as an unbalanced voucher;
3. ``balances``: for every fiscal year and account of ``account_balances``, the lake's lines
   summed by month equal the service's periods, and the lines before the year its incoming
   balance. The service does not document how ``GetAggregated`` numbers its periods; our
   reading: ``IncomingBalance`` is the sum of the account's lines dated before ``startDate``,
   period Key ``n`` the n-th month from ``startDate``, ``TotalBalance`` IncomingBalance plus
   the periods. When an answer disagrees with that reading (a Key that is no month number, a
   total that is not the sum, periods that differ while every year's total agrees), the
   check says which assumption failed instead of calling the ledger wrong;
4. ``customers`` and ``products``: the ids not marked deleted are exactly the service's;
5. ``references``: every ``AccountNo``, ``CustomerId``, ``ProductId`` and
   ``TransactionTypeId`` the facts use exists in its table.

A check whose tables the lake does not hold is skipped, and says so. Reading the lake costs
no request; the service is asked for the three id lists only (a listing of the orders, the
customers' pages, and the products' ids), each once.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import pyarrow as pa

from extractor.clock import SYSTEM, Clock
from extractor.config import Credentials, ServiceConfig
from extractor.errors import InvalidOption, OutputError, first_line
from extractor.output.targets import Target
from extractor.service.limiter import Gate
from extractor.service.transport import Wire

#: Mismatches named in a check's line (all of them count).
NAMED: Final = 5


@dataclass
class Check:
    """One check's outcome."""

    name: str
    what: str  # what was compared, in a few words
    checked: int = 0
    mismatches: int = 0
    named: list[str] = field(default_factory=list)  # the first mismatches, said
    note: str = ""  # an assumption that failed, or why the check was skipped
    skipped: bool = False

    def mismatch(self, said: str) -> None:
        self.mismatches += 1
        if len(self.named) < NAMED:
            self.named.append(said)

    @property
    def holds(self) -> bool:
        return self.skipped or not self.mismatches

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.name, "what": self.what, "checked": self.checked,
            "mismatches": self.mismatches, "first": self.named, "note": self.note or None,
            "skipped": self.skipped,
        }  # fmt: skip


@dataclass
class Verification:
    """Every check of one lake."""

    output: str
    checks: list[Check] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return all(check.holds for check in self.checks)

    def as_json(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "status": "complete" if self.holds else "mismatch",
            "checks": [check.as_json() for check in self.checks],
        }


def render(verification: Verification) -> str:
    """One line a check, for people."""
    lines = [f"verify of {verification.output}: {'complete' if verification.holds else 'MISMATCH'}"]
    for check in verification.checks:
        if check.skipped:
            said = f"skipped: {check.note}"
        else:
            found = "ok" if not check.mismatches else f"{check.mismatches:,} mismatched"
            said = f"{check.checked:,} {check.what}: {found}"
            if check.named:
                more = ", ..." if check.mismatches > len(check.named) else ""
                said += f" ({'; '.join(check.named)}{more})"
            if check.note:
                said += f"; {check.note}"
        lines.append(f"  {check.name:<31} {said}")
    return "\n".join(lines)


async def verify(
    target: Target,
    credentials: Credentials,
    service: ServiceConfig,
    *,
    identity: str | None = None,
    clock: Clock = SYSTEM,
    wire: Wire | None = None,
    gate: Gate | None = None,
) -> Verification:
    """Check the lake under ``target`` (a fleet's: ``identity``'s part) against the service
    and itself (see the module)."""
    from extractor.engine.stats import RunStats
    from extractor.engine.workers import Run
    from extractor.service.health import Health
    from extractor.service.session import connected

    lake = _Lake(target, identity)
    lake.check()
    result = Verification(target.uri)
    async with connected(service, credentials, clock=clock, wire=wire, gate=gate) as session:
        run = Run(service, session, RunStats("verify", clock=clock), clock, Health.for_workers(1))
        result.checks.append(await _invoices(lake, run))
        result.checks.append(_vouchers(lake))
        result.checks.append(_balances(lake))
        result.checks.append(await _customers(lake, run))
        result.checks.append(await _products(lake, run))
    result.checks += _references(lake)
    return result


class _Lake:
    """The lake's tables, read with SQL (delta-rs' DataFusion), one identity's part."""

    def __init__(self, target: Target, identity: str | None) -> None:
        from extractor.output.lakefiles import Scope

        self.target, self.identity = target, identity
        self.where = Scope(identity).where()

    def check(self) -> None:
        """Refuse, before any request, a folder that holds no table verify reads (nothing
        would be checked, yet all would hold), and a fleet's lake read as one identity's or
        the other way round (the checks would mix identities, or fail on a missing column)."""
        from extractor.output.lakefiles import IDENTITY

        uri = self.target.uri
        found = [table for name in _READ if (table := self._table(name)) is not None]
        if not found:
            raise InvalidOption(
                f"{uri} holds no Delta table: verify checks the lake `extractor sync` keeps "
                "(Parquet from `extractor tables` or the backfill commands is not one)"
            )
        fleet = IDENTITY in found[0].metadata().partition_columns
        if fleet and self.identity is None:
            raise InvalidOption(
                f"{uri} holds a fleet's lake (by {IDENTITY}): give {{identity}} GUID to check "
                "one identity's part"
            )
        if not fleet and self.identity is not None:
            raise InvalidOption(f"{uri} holds one identity's lake: leave out {{identity}}")

    def holds(self, *names: str) -> str | None:
        """None when the lake has every table named; else what is missing, said."""
        missing = [name for name in names if self._table(name) is None]
        if not missing:
            return None
        return f"the lake has no {', '.join(missing)} table (sync it first)"

    def query(self, name: str, select: str, rest: str = "") -> pa.Table:
        """``SELECT <select> FROM <name> WHERE <the identity's part> <rest>``."""
        from deltalake import QueryBuilder
        from deltalake.exceptions import DeltaError

        from extractor.output.lakefiles import arrow_table

        table = self._table(name)
        assert table is not None
        sql = f"SELECT {select} FROM t WHERE {self.where} {rest}"
        try:
            return arrow_table(QueryBuilder().register("t", table).execute(sql))
        except DeltaError as exc:
            raise OutputError(f"cannot read the Delta table {name}: {first_line(exc)}") from None

    def values(self, name: str, column: str, live: bool = False) -> list[Any]:
        """The distinct non-null values of ``column`` (of live records only, if ``live``)."""
        alive = ' AND "_deleted_at" IS NULL' if live else ""
        found = self.query(name, f'DISTINCT "{column}" AS v', f'AND "{column}" IS NOT NULL{alive}')
        return found.column("v").to_pylist()

    def _table(self, name: str) -> Any:
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError, TableNotFoundError

        try:
            return DeltaTable(
                self.target.table_uri(name), storage_options=self.target.storage_options()
            )
        except TableNotFoundError:
            return None
        except (DeltaError, OSError) as exc:
            raise OutputError(f"cannot read the Delta table {name}: {first_line(exc)}") from None


def _compare(
    check: Check, service: Iterable[Any], lake: Iterable[Any], twice: Iterable[Any] = ()
) -> Check:
    """The ids the service lists against the lake's live ones: each side's extras named."""
    listed, held = set(service), set(lake)
    check.checked = len(listed)
    for key in sorted(listed - held):
        check.mismatch(f"missing {key}")
    for key in sorted(held - listed):
        check.mismatch(f"not listed by the service {key}")
    for key in sorted(twice):
        check.mismatch(f"held twice {key}")
    return check


async def _invoices(lake: _Lake, run: Any) -> Check:
    from extractor.jobs.listing import list_ids

    check = Check("invoices", "OrderIds listed by GetOrderSyncList")
    if (missing := lake.holds("invoices")) is not None:
        return _skipped(check, missing)
    counted = lake.query("invoices", '"OrderId" AS id, COUNT(*) AS n', 'GROUP BY "OrderId"')
    twice = [
        i
        for i, n in zip(*(counted.column(c).to_pylist() for c in ("id", "n")), strict=True)
        if n > 1
    ]
    live = lake.values("invoices", "OrderId", live=True)
    listed = await list_ids(run, None, None)
    return _compare(check, list(listed), live, twice)


def _vouchers(lake: _Lake) -> Check:
    check = Check("vouchers", "vouchers (TransactionNo) summing to zero")
    if (missing := lake.holds("transactions")) is not None:
        return _skipped(check, missing)
    sums = lake.query(
        "transactions", '"TransactionNo" AS no, SUM("Amount") AS total', 'GROUP BY "TransactionNo"'
    )
    check.checked = sums.num_rows
    for number, total in sorted(
        zip(sums.column("no").to_pylist(), sums.column("total").to_pylist(), strict=True),
        key=lambda pair: (pair[0] is None, pair[0] or 0),
    ):
        if total is not None and total != 0:
            check.mismatch(f"voucher {number} sums to {total.normalize():f}")
    return check


def _balances(lake: _Lake) -> Check:
    check = Check("balances", "balances (fiscal year, account) matching the ledger by month")
    if (missing := lake.holds("transactions", "account_balances")) is not None:
        return _skipped(check, missing)
    sums = lake.query(
        "transactions",
        '"AccountNo" AS a, date_trunc(\'month\', "Date") AS m, SUM("Amount") AS s, '
        'MIN("Date") AS first',
        'AND "Date" IS NOT NULL GROUP BY 1, 2',
    )
    by_month: dict[tuple[int, dt.date], Decimal] = {}
    first_line_date: dt.datetime | None = None
    for account, month, total, first in zip(
        *(sums.column(c).to_pylist() for c in ("a", "m", "s", "first")), strict=True
    ):
        by_month[(account, _month(month))] = total
        first_line_date = first if first_line_date is None else min(first_line_date, first)
    balances = lake.query(
        "account_balances",
        '"FiscalYearStart" AS start, "AccountNo" AS a, "IncomingBalance" AS ib, '
        '"TotalBalance" AS total, "PeriodAmounts" AS periods, "Periods" AS raw',
    ).to_pylist()
    years = []
    if lake.holds("fiscal_years") is None:
        found = lake.query("fiscal_years", '"StartingDate" AS s, "EndingDate" AS e').to_pylist()
        years = [(_month(y["s"]), y["e"].date()) for y in found if y["s"] and y["e"]]
    return _judged(check, balances, by_month, first_line_date, years)


def _judged(
    check: Check,
    balances: Sequence[dict[str, Any]],
    by_month: dict[tuple[int, dt.date], Decimal],
    first: dt.datetime | None,
    years: Sequence[tuple[dt.date, dt.date]] = (),
) -> Check:
    """Each (year, account) of the service against the lake's months, and which of our
    reading's assumptions an answer breaks, if it breaks one; then the lake's months of the
    fiscal ``years`` (first month, last day) that no balance covers."""
    keys_broken: list[str] = []
    totals_broken: list[str] = []
    incoming_only = year_totals_agree = True
    covered: set[tuple[int, dt.date]] = set()
    unread: set[dt.date] = set()  # the years whose periods could not be read
    for balance in sorted(balances, key=lambda b: (b["start"], b["a"] or 0)):
        start, account = balance["start"], balance["a"]
        year = f"{start:%Y-%m} account {account}"
        check.checked += 1
        periods = balance["periods"] or []
        if any(p is None or p["Month"] is None or p["Amount"] is None for p in periods):
            keys = [item["Key"] for item in balance["raw"] or [] if item]
            keys_broken.append(f"{year}: Keys {keys[:3]}")
            unread.add(_month(start))
            continue
        said = [p["Amount"] for p in periods]
        ib, total = balance["ib"], balance["total"]
        if ib is not None and total is not None and ib + sum(said, Decimal(0)) != total:
            totals_broken.append(year)
        months = [p["Month"] for p in periods]
        covered |= {(account, month) for month in months}
        ours = [by_month.get((account, month), Decimal(0)) for month in months]
        before = sum(
            (v for (a, m), v in by_month.items() if a == account and m < _month(start)), Decimal(0)
        )
        wrong = [
            f"{month:%Y-%m} lake {o.normalize():f} service {s.normalize():f}"
            for month, o, s in zip(months, ours, said, strict=True)
            if o != s
        ]
        if wrong:
            incoming_only = False  # a period differs, not only the incoming balance
        if balance["ib"] is not None and before != balance["ib"]:
            wrong.insert(
                0, f"incoming lake {before.normalize():f} service {balance['ib'].normalize():f}"
            )
        if wrong:
            if sum(ours, Decimal(0)) != sum(said, Decimal(0)):
                year_totals_agree = False
            check.mismatch(f"{year}: {wrong[0]}")
    uncovered: dict[tuple[dt.date, int], str] = {}
    for (account, month), total in sorted(by_month.items()):
        years_of = [start for start, end in years if start <= month <= end and start not in unread]
        if years_of and total != 0 and (account, month) not in covered:
            lost = f"no balance from the service, lake {total.normalize():f} in {month:%Y-%m}"
            uncovered.setdefault((years_of[0], account), lost)
    for (start, account), lost in sorted(uncovered.items()):
        check.checked += 1
        check.mismatch(f"{start:%Y-%m} account {account}: {lost}")
        incoming_only = year_totals_agree = False  # the service lacks a year, or an account
    notes = []
    if keys_broken:
        notes.append(
            "assumption failed: period Keys are not the month numbers 1..12 from the year's "
            f"start ({keys_broken[0]}); those years were not compared"
        )
    if totals_broken:
        notes.append(
            "assumption failed: TotalBalance is not IncomingBalance + the periods "
            f"({totals_broken[0]})"
        )
    if check.mismatches and incoming_only and first is not None:
        notes.append(
            f"only incoming balances differ and the lake's ledger begins {first:%Y-%m-%d}: they "
            "need every line from the books' beginning (a first sync with an earlier --since)"
        )
    elif check.mismatches and year_totals_agree:
        notes.append(
            "assumption failed: every year's total agrees, so the service's periods are not "
            "the months from the year's start as we read them (not a ledger error)"
        )
    check.note = "; ".join(notes)
    return check


async def _customers(lake: _Lake, run: Any) -> Check:
    from extractor.engine.lists import listing
    from extractor.operations import CUSTOMERS

    check = Check("customers", "customers listed by GetCompanySyncList")
    if (missing := lake.holds("customers")) is not None:
        return _skipped(check, missing)
    assert CUSTOMERS.changes is not None
    listed = await listing(run, CUSTOMERS.changes, None, run.service.retry)
    return _compare(check, listed, lake.values("customers", "Id", live=True))


async def _products(lake: _Lake, run: Any) -> Check:
    from extractor.engine.lists import ListSink
    from extractor.operations import PRODUCTS

    check = Check("products", "products listed by GetProducts")
    if (missing := lake.holds("products")) is not None:
        return _skipped(check, missing)
    params = {"returnProperties": ["Id"]}  # the ids only
    answer = await run.call(PRODUCTS.operation, params, lambda: ListSink(PRODUCTS))
    ids = [i for i in answer.table.column("Id").to_pylist() if i is not None]
    return _compare(check, ids, lake.values("products", "Id", live=True))


#: The references the facts make: (fact table, its column, the table, its key column).
REFERENCES: Final = (
    ("transactions", "AccountNo", "accounts", "AccountNo"),
    ("invoices", "CustomerId", "customers", "Id"),
    ("invoice_rows", "ProductId", "products", "Id"),
    ("transactions", "TransactionTypeId", "transaction_types", "Id"),
)


#: Every table a check reads.
_READ: Final = (
    "invoices", "invoice_rows", "transactions", "account_balances", "customers", "products",
    "accounts", "transaction_types",
)  # fmt: skip


def _references(lake: _Lake) -> list[Check]:
    checks = []
    for fact, column, table, key in REFERENCES:
        check = Check(f"{fact}.{column}", f"{column}s found in {table}.{key}")
        if (missing := lake.holds(fact, table)) is not None:
            checks.append(_skipped(check, missing))
            continue
        used = Counter(
            dict(
                zip(
                    *(
                        lake.query(
                            fact,
                            f'"{column}" AS v, COUNT(*) AS n',
                            f'AND "{column}" IS NOT NULL GROUP BY 1',
                        )
                        .column(c)
                        .to_pylist()
                        for c in ("v", "n")
                    ),
                    strict=True,
                )
            )
        )
        known = set(lake.values(table, key))
        check.checked = len(used)
        for value in sorted(set(used) - known):
            check.mismatch(f"{column} {value} ({used[value]:,} records) not in {table}")
        checks.append(check)
    return checks


def _skipped(check: Check, why: str) -> Check:
    check.skipped, check.note = True, why
    return check


def _month(moment: dt.datetime | dt.date) -> dt.date:
    return dt.date(moment.year, moment.month, 1)
