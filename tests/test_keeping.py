"""How the lists go into the lake (issue 26), tried on a local Delta table without a service:
replaced, replaced for the parent rows fetched, merged by key with deletions marked, and no
commit at all when nothing changed; the table choice; the balances' derived columns; and
which of ``verify``'s assumptions an answer breaks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from extractor.errors import InvalidOption
from extractor.jobs.verify import Check, _judged
from extractor.operations import ACCOUNT_BALANCES, LISTS, PRODUCTS, TABLES, choose, chosen_lists
from extractor.output.lakefiles import Scope, lake_schema
from extractor.output.lakelists import held_parents, keep_list
from extractor.output.parquet import Keep, RunInfo
from extractor.output.targets import Target
from tests.truth import read_delta

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


class Staged:
    """A staged list as keep_list reads it: its records, in one piece."""

    def __init__(self, name: str, schema: pa.Schema, records: list[dict[str, Any]]) -> None:
        self.name, self.schema, self.records = name, schema, records

    def tables(self) -> Iterator[pa.Table]:
        yield pa.Table.from_pylist(self.records, self.schema)


def product(number: int, name: str = "Vare") -> dict[str, Any]:
    return {"Id": number, "Name": f"{name} {number}", "Price": Decimal("10.50")}


def products(records: list[dict[str, Any]]) -> Staged:
    return Staged("products", PRODUCTS.schema, records)


def run(number: int) -> RunInfo:
    return RunInfo(f"r-{number}", T0 + dt.timedelta(hours=number))


def version(target: Target, name: str) -> int:
    return DeltaTable(target.table_uri(name)).version()


@pytest.mark.parametrize("identity", [None, "aaaa"])
def test_an_upsert_keeps_the_rest_marks_the_vanished_and_commits_nothing_unchanged(
    tmp_path: Path, identity: str | None
) -> None:
    target, scope = Target(str(tmp_path), local=tmp_path), Scope(identity)
    upsert = Keep(("Id",), upsert=True)
    assert keep_list(target, scope, products([product(i) for i in (1, 2, 3)]), run(1), upsert) == 3  # type: ignore[arg-type]
    first = version(target, "products")
    # nothing changed: no commit, the version and the watermark stay
    assert keep_list(target, scope, products([product(2)]), run(2), upsert) == 0  # type: ignore[arg-type]
    assert version(target, "products") == first
    # one renamed, one added; the others kept as they were
    changed = [product(2, "Endret"), product(4)]
    assert keep_list(target, scope, products(changed), run(3), upsert) == 2  # type: ignore[arg-type]
    rows = {row["Id"]: row for row in read_delta(target, "products")}
    assert sorted(rows) == [1, 2, 3, 4] and rows[2]["Name"] == "Endret 2"
    assert rows[1]["_run_id"] == "r-1" and rows[2]["_run_id"] == "r-3"
    # reconcile: 3 is no longer listed, 1 is; 3 is marked, not removed
    gone = Keep(("Id",), upsert=True, present=(1, 2, 4))
    assert keep_list(target, scope, products([]), run(4), gone) == 1  # type: ignore[arg-type]
    rows = {row["Id"]: row for row in read_delta(target, "products")}
    assert rows[3]["_deleted_at"] == run(4).as_of and rows[1]["_deleted_at"] is None
    # marked once: the same reconcile again changes nothing
    assert keep_list(target, scope, products([]), run(5), gone) == 0  # type: ignore[arg-type]
    # listed again: live again
    assert keep_list(target, scope, products([product(3)]), run(6), upsert) == 1  # type: ignore[arg-type]
    rows = {row["Id"]: row for row in read_delta(target, "products")}
    assert rows[3]["_deleted_at"] is None
    if identity is not None:
        assert {row["identity_id"] for row in rows.values()} == {identity}


def test_an_answer_older_than_the_stored_record_never_replaces_it(tmp_path: Path) -> None:
    # found by attack: a lagging replica's older customer or product overwrote the newer one
    target = Target(str(tmp_path), local=tmp_path)
    upsert = Keep(("Id",), upsert=True)
    new, old = dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    stored = [product(1, "Ny") | {"DateChanged": new}, product(2) | {"DateChanged": old}]
    keep_list(target, Scope(), products(stored), run(1), upsert)  # type: ignore[arg-type]
    answered = [
        product(1, "Gammel") | {"DateChanged": old},
        product(2, "Endret") | {"DateChanged": new},
    ]
    assert keep_list(target, Scope(), products(answered), run(2), upsert) == 1  # type: ignore[arg-type]
    rows = {row["Id"]: row for row in read_delta(target, "products")}
    assert rows[1]["Name"] == "Ny 1" and rows[2]["Name"] == "Endret 2"


def test_a_column_another_writer_added_is_kept_on_the_records_kept(tmp_path: Path) -> None:
    from deltalake import write_deltalake

    target = Target(str(tmp_path), local=tmp_path)
    upsert = Keep(("Id",), upsert=True)
    keep_list(target, Scope(), products([product(1), product(2)]), run(1), upsert)  # type: ignore[arg-type]
    table = pa.table(DeltaTable(target.table_uri("products")).to_pyarrow_dataset().to_table())
    table = table.append_column("category", pa.array(["a", "b"]))
    write_deltalake(target.table_uri("products"), table, mode="overwrite", schema_mode="merge")
    keep_list(target, Scope(), products([product(2, "Endret")]), run(2), upsert)  # type: ignore[arg-type]
    rows = {row["Id"]: row for row in read_delta(target, "products")}
    assert rows[1]["category"] == "a" and rows[2]["category"] is None


def balance(start: dt.datetime, account: int, locked: bool) -> dict[str, Any]:
    return {
        "AccountNo": account, "IncomingBalance": Decimal(0), "TotalBalance": Decimal(5),
        "FiscalYearStart": start, "FiscalYearLocked": locked,
    }  # fmt: skip


def test_balances_of_the_years_asked_again_replace_theirs_only(tmp_path: Path) -> None:
    target, scope = Target(str(tmp_path), local=tmp_path), Scope()
    # as staged, in the lake's types (pyarrow cannot cast an enum of nulls made by from_pylist)
    schema = lake_schema(ACCOUNT_BALANCES.schema, deletable=False)
    schema = pa.schema([f for f in schema if not f.name.startswith("_")])
    y2024, y2025 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    first = [balance(y2024, 1500, True), balance(y2024, 3000, True), balance(y2025, 1500, False)]
    keep_list(target, scope, Staged("account_balances", schema, first), run(1))  # type: ignore[arg-type]
    assert held_parents(
        target, scope, "account_balances", ("FiscalYearStart", "FiscalYearLocked")
    ) == (y2024.isoformat(),)
    again = [balance(y2025, 1500, False), balance(y2025, 1920, False)]
    only_2025 = Keep(ACCOUNT_BALANCES.key, column="FiscalYearStart", parents=(y2025.isoformat(),))
    keep_list(target, scope, Staged("account_balances", schema, again), run(2), only_2025)  # type: ignore[arg-type]
    rows = sorted(
        (r["FiscalYearStart"].year, r["AccountNo"]) for r in read_delta(target, "account_balances")
    )
    assert rows == [(2024, 1500), (2024, 3000), (2025, 1500), (2025, 1920)]


def test_the_tables_chosen_bring_the_lists_they_are_fetched_per_row_of() -> None:
    assert choose() == TABLES
    assert choose("dimension_values,accounts") == ("accounts", "dimensions", "dimension_values")
    assert choose("invoice_rows") == ("invoices",)
    assert "transactions" not in choose(skip="transactions")
    with pytest.raises(InvalidOption, match=r"'acounts' is not a table; choose from invoices, "):
        choose("acounts")
    with pytest.raises(InvalidOption, match="account_balances is fetched per row of fiscal_years"):
        choose(skip="fiscal_years")
    with pytest.raises(InvalidOption, match="leaves no table"):
        choose("accounts", "accounts")
    # the lists in their order, a parent before its rows' list, whatever order they are named
    # in (found by the benchmark: `tables` took them from a set, and refused half its runs)
    assert chosen_lists() == LISTS
    named = chosen_lists("account_balances,dimension_values,accounts")
    assert [spec.table for spec in named] == [
        "accounts",
        "fiscal_years",
        "dimensions",
        "dimension_values",
        "account_balances",
    ]
    assert [spec.table for spec in chosen_lists(skip="products")] == [
        spec.table for spec in LISTS if spec.table != "products"
    ]


def test_the_balances_periods_are_typed_by_month_from_the_year_s_start() -> None:
    assert ACCOUNT_BALANCES.derived is not None
    raw = ACCOUNT_BALANCES.struct
    record = {
        "AccountNo": 1500, "IncomingBalance": Decimal(1),
        "Periods": [{"Key": "1", "Value": "10.50"}, {"Key": "7", "Value": "-2"},
                    {"Key": "Jan", "Value": "1"}, {"Key": "2", "Value": "1e400"}],
    }  # fmt: skip
    from extractor import arrow

    table = pa.Table.from_pylist([record], arrow.schema_for(raw.fields))
    year = {"StartingDate": dt.datetime(2024, 7, 1, tzinfo=dt.UTC), "IsLocked": True}
    (row,) = ACCOUNT_BALANCES.derived.add(table, year).to_pylist()
    assert row["FiscalYearStart"] == year["StartingDate"] and row["FiscalYearLocked"] is True
    assert row["PeriodAmounts"] == [
        {"Month": dt.date(2024, 7, 1), "Amount": Decimal("10.5")},
        {"Month": dt.date(2025, 1, 1), "Amount": Decimal(-2)},
        {"Month": None, "Amount": Decimal(1)},
        {"Month": dt.date(2024, 8, 1), "Amount": None},
    ]


def _balance_row(
    start: dt.date, ib: str, amounts: list[str], keys: list[str] | None = None
) -> dict[str, Any]:
    months = [
        dt.date(start.year + (start.month - 1 + n) // 12, (start.month - 1 + n) % 12 + 1, 1)
        for n in range(12)
    ]
    periods = [{"Month": m, "Amount": Decimal(a)} for m, a in zip(months, amounts, strict=True)]
    if keys is not None:
        periods[0]["Month"] = None
    total = Decimal(ib) + sum((Decimal(a) for a in amounts), Decimal(0))
    raw = [
        {"Key": k, "Value": a}
        for k, a in zip(keys or [str(n + 1) for n in range(12)], amounts, strict=False)
    ]
    start_time = dt.datetime(start.year, start.month, 1, tzinfo=dt.UTC)
    return {
        "start": start_time,
        "a": 1500,
        "ib": Decimal(ib),
        "total": total,
        "periods": periods,
        "raw": raw,
    }


def test_verify_says_which_assumption_an_answer_breaks() -> None:
    start = dt.date(2024, 1, 1)
    ledger = {(1500, dt.date(2023, 12, 1)): Decimal(7)} | {
        (1500, dt.date(2024, m, 1)): Decimal(m) for m in range(1, 13)
    }
    first = dt.datetime(2023, 12, 3, tzinfo=dt.UTC)
    ours = [str(m) for m in range(1, 13)]
    agreed = _judged(Check("balances", ""), [_balance_row(start, "7", ours)], ledger, first)
    assert agreed.holds and not agreed.note
    # a lost line: the year's total differs too: the ledger is wrong, said as such
    lost = dict(ledger) | {(1500, dt.date(2024, 3, 1)): Decimal(1)}
    wrong = _judged(Check("balances", ""), [_balance_row(start, "7", ours)], lost, first)
    assert wrong.mismatches == 1 and wrong.named == [
        "2024-01 account 1500: 2024-03 lake 1 service 3"
    ]
    assert "assumption" not in wrong.note
    # the periods numbered from 0: every month off by one, the year's total the same
    shifted = ours[1:] + ours[:1]
    numbered = _judged(Check("balances", ""), [_balance_row(start, "7", shifted)], ledger, first)
    assert numbered.mismatches == 1 and "every year's total agrees" in numbered.note
    # a Key that is no month number
    keys = ["Jan"] + [str(n) for n in range(2, 13)]
    named = _judged(Check("balances", ""), [_balance_row(start, "7", ours, keys)], ledger, first)
    assert named.mismatches == 0 and "period Keys are not the month numbers" in named.note
    # only the incoming balance differs, and the lake's ledger starts late
    late = _judged(Check("balances", ""), [_balance_row(start, "9", ours)], ledger, first)
    assert late.mismatches == 1 and "need every line from the books' beginning" in late.note
