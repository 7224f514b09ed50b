"""Attacks on the accounting picture (issue 26): the ``tables`` command's own order, a paged
listing that lies about its pages, ids listed but not answered, a key answered twice,
``verify`` of a folder it cannot check, and a fiscal year the service has no balances of."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

from extractor.config import ServiceConfig
from extractor.engine.lists import ListJob
from extractor.errors import InvalidOption, UsageError
from extractor.jobs.verify import Check, _judged, verify
from extractor.operations import CUSTOMERS, LISTS, PRODUCTS
from extractor.output.targets import Target
from extractor.simulator.messages import Reply, Request
from tests.conftest import CREDS, MEMORY_URL, CliResult, InMemory, job_of, read_table
from tests.helpers import DEMO_ENV

Rewrite = Callable[[str, bytes], bytes]


def after_the_first(operation: str, record: str, extra: Callable[[bytes], bytes]) -> Rewrite:
    """A rewrite of ``operation``'s answers: after their first ``record``, ``extra(record)``
    as one more."""
    pattern = re.compile(rf"<(a:)?{record}>.*?</(a:)?{record}>".encode(), flags=re.S)

    def rewrite(asked: str, body: bytes) -> bytes:
        found = pattern.search(body)
        if asked != operation or found is None:
            return body
        return body[: found.end()] + extra(found[0]) + body[found.end() :]

    return rewrite


def rewritten(memory: InMemory, rewrite: Rewrite) -> Counter[str]:
    """Every answer of ``memory``'s service passed through ``rewrite(operation, body)``; the
    requests counted by operation."""
    answer, sent = memory.service.answer, Counter[str]()

    async def rewriting(request: Request) -> Reply:
        reply = await answer(request)
        action = request.headers.get("soapaction", "") + request.headers.get("content-type", "")
        found = re.search(r"webservices/(\w+)", action)
        operation = found[1] if found else ""
        sent[operation] += 1
        assert sent[operation] < 50, f"{operation} asked without end"
        reply.parts = [rewrite(operation, b"".join(reply.parts))]
        return reply

    memory.service.answer = rewriting  # type: ignore[method-assign]
    return sent


async def fetched(memory: InMemory, out: Path, *specs: Any) -> dict[str, Any]:
    job = job_of(ListJob, out=out, specs=specs, base_url=MEMORY_URL, max_requests_per_hour=0)
    return await memory.run(job)


def test_tables_runs_every_list_parents_first(
    cli: Callable[..., CliResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --tables, the lists went in a set's order: dimension_values before dimensions
    failed the run (exit 2) in most processes, depending on the hash seed."""
    from extractor.engine import runner

    given: list[ListJob] = []

    async def caught(job: ListJob, *args: Any, **options: Any) -> None:
        given.append(job)
        raise UsageError("stopped by the test")

    monkeypatch.setattr(runner, "run", caught)
    code, _, err = cli("tables", "--out", str(tmp_path / "out"), env=DEMO_ENV)
    assert code == 2 and "stopped by the test" in err
    assert [spec.table for spec in given[0].specs] == [spec.table for spec in LISTS]


def test_tables_refuses_a_fact_table_among_lists(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    """``--tables invoices,accounts`` fetched the accounts only, the invoices silently left."""
    code, _, err = cli(
        "tables", "--out", str(tmp_path / "out"), "--tables", "invoices,accounts", env=DEMO_ENV
    )
    assert code == 2 and "--tables: invoices have their own commands" in err
    assert not (tmp_path / "out").exists()


def _pages(said: bytes) -> Rewrite:
    def rewrite(operation: str, body: bytes) -> bytes:
        if operation != "GetCompanySyncList":
            return body
        return re.sub(rb"<(a:)?TotalPages>\d+", rb"<\1TotalPages>" + said, body)

    return rewrite


@pytest.mark.parametrize("said", [b"0", b"1000000"])
async def test_a_listing_whose_page_count_lies_is_read_to_its_end_and_no_further(
    in_memory: Callable[..., InMemory], tmp_path: Path, said: bytes
) -> None:
    """TotalPages 0 with items ended the listing after page 1 (a third of the customers,
    "complete"); a huge one asked empty pages without end."""
    memory = in_memory(orders=10)
    sent = rewritten(memory, _pages(said))
    summary = await fetched(memory, tmp_path, CUSTOMERS)
    truth = memory.service.table_truth("customers", 1)
    assert summary["status"] == "complete" and summary["lists"]["customers"] == len(truth)
    pages = -(-len(truth) // 1000)
    assert sent["GetCompanySyncList"] <= pages + 1  # at most one page found empty
    assert sorted(row["Id"] for row in read_table(tmp_path, "customers")) == sorted(
        key[0] for key in truth
    )


async def test_ids_listed_but_not_answered_fail_the_list_not_lost_silently(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    """GetCompanies answering fewer companies than asked: the run said complete, the missing
    ones lost for good once the watermark passed them."""
    memory = in_memory(orders=10)

    def drop_one(operation: str, body: bytes) -> bytes:
        if operation != "GetCompanies":
            return body
        return re.sub(rb"<(a:)?Company>.*?</(a:)?Company>", b"", body, count=1, flags=re.S)

    rewritten(memory, drop_one)
    summary = await fetched(memory, tmp_path, CUSTOMERS)
    assert summary["status"] == "partial"
    [failure] = summary["failures"]
    assert failure["list"] == "customers" and "ids listed were not answered" in failure["error"]


async def test_a_key_answered_twice_is_kept_once(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    memory = in_memory(orders=10)

    rewritten(memory, after_the_first("GetProducts", "Product", lambda record: record))
    summary = await fetched(memory, tmp_path, PRODUCTS)
    ids = Counter(row["Id"] for row in read_table(tmp_path, "products"))
    assert summary["status"] == "complete" and max(ids.values()) == 1
    assert len(ids) == len(memory.service.table_truth("products", 1))


async def test_a_company_answered_but_not_asked_for_is_not_stored(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    """GetCompanies answering an id it was not asked for: it was upserted, its Active empty."""
    memory = in_memory(orders=10)

    def stranger(record: bytes) -> bytes:
        return re.sub(rb"<((?:a:)?Id)>\d+<", rb"<\1>987654321<", record, count=1)

    rewritten(memory, after_the_first("GetCompanies", "Company", stranger))
    summary = await fetched(memory, tmp_path, CUSTOMERS)
    ids = {row["Id"] for row in read_table(tmp_path, "customers")}
    assert summary["status"] == "complete" and 987654321 not in ids
    assert ids == {key[0] for key in memory.service.table_truth("customers", 1)}


async def _verified(memory: InMemory, out: Path, identity: str | None = None) -> None:
    service = ServiceConfig(base_url=MEMORY_URL, max_requests_per_hour=0)
    target = Target(str(out), local=out)
    await verify(target, CREDS, service, identity=identity, clock=memory.clock, wire=memory.wire)


async def test_verify_refuses_a_folder_it_cannot_check_before_any_request(
    in_memory: Callable[..., InMemory], tmp_path: Path
) -> None:
    """An empty folder, or Parquet from ``extractor tables``, was "complete" (exit 0) with
    every check skipped; a fleet's lake without --identity mixed the identities into
    mismatches; --identity on one identity's lake failed on a missing column."""
    memory = in_memory(orders=10)
    sent = rewritten(memory, lambda operation, body: body)
    (tmp_path / "parquet" / "customers").mkdir(parents=True)
    pq.write_table(pa.table({"Id": [1]}), tmp_path / "parquet" / "customers" / "p.parquet")
    for folder in ("empty", "parquet"):
        with pytest.raises(InvalidOption, match="holds no Delta table"):
            await _verified(memory, tmp_path / folder)
    fleet = {"Id": pa.array([1], pa.int32()), "identity_id": ["aaaa"]}
    write_deltalake(tmp_path / "fleet" / "customers", pa.table(fleet), partition_by=["identity_id"])
    with pytest.raises(InvalidOption, match=r"a fleet's lake .* give identity"):
        await _verified(memory, tmp_path / "fleet")
    write_deltalake(tmp_path / "one" / "customers", pa.table({"Id": pa.array([1], pa.int32())}))
    with pytest.raises(InvalidOption, match="one identity's lake: leave out identity"):
        await _verified(memory, tmp_path / "one", identity="aaaa")
    assert not sent


def test_verify_names_a_fiscal_year_the_service_has_no_balances_of() -> None:
    """The lake's lines of a fiscal year without balances (a year lost from account_balances,
    an account the service does not aggregate) were never compared: "ok"."""
    y2024, y2025 = dt.date(2024, 1, 1), dt.date(2025, 1, 1)
    months = [dt.date(2024, m, 1) for m in range(1, 13)]
    balance = {
        "start": dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "a": 1500, "ib": Decimal(0),
        "total": Decimal(12), "periods": [{"Month": m, "Amount": Decimal(1)} for m in months],
        "raw": [{"Key": str(n), "Value": "1"} for n in range(1, 13)],
    }  # fmt: skip
    ledger = {(1500, month): Decimal(1) for month in months}
    ledger[(1500, dt.date(2025, 3, 1))] = Decimal(5)
    ledger[(1500, dt.date(2026, 1, 1))] = Decimal(7)  # no fiscal year: not compared
    years = [(y2024, dt.date(2024, 12, 31)), (y2025, dt.date(2025, 12, 31))]
    first = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    check = _judged(Check("balances", ""), [balance], ledger, first, years)
    assert check.named == ["2025-01 account 1500: no balance from the service, lake 5 in 2025-03"]
    assert "only incoming balances differ" not in check.note
    assert _judged(Check("balances", ""), [balance], ledger, first).holds  # years unknown


def test_verify_identity_all_is_refused_in_words_that_hold(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    """It said "'all' is not a guid ... or 'all'"."""
    code, _, err = cli("verify", str(tmp_path), "--identity", "all", env=DEMO_ENV)
    assert code == 2 and "one identity's part at a time" in err and "or 'all'" not in err
