"""The accounting picture's cost (issue 26): ``extractor tables`` end to end, a sync of the
lists and a sync that finds nothing new, against a simulator process of two sizes; and how
keeping a table by its changes grows with the table (a Delta part of 10,000 and of 100,000
products, 10 of them changed, then none).

Run alone: ``.venv/bin/python -m benchmarks.lists`` (``make bench`` runs it too).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from benchmarks.run import run_cli, simulator_process
from extractor.operations import LISTS, PRODUCTS
from extractor.output.lakefiles import Scope, lake_schema
from extractor.output.lakelists import keep_list
from extractor.output.parquet import Keep, RunInfo
from extractor.output.targets import Target

TABLES = ",".join(spec.table for spec in LISTS)


def bench_tables(work: Path, orders: int) -> dict[str, object]:
    """``tables`` into Parquet, then two syncs of the lists: wall time, peak RSS of the
    process tree, and the requests each sent (from the simulator's own counters)."""
    with simulator_process("--orders", str(orders)) as url:
        requests = _requests(url)
        out = work / f"tables-{orders}"
        tables_s, tables_rss = run_cli("tables", "--out", str(out), "--base-url", url)
        tables_requests = _requests(url) - requests
        lake = work / f"lists-lake-{orders}"
        first_s, first_rss = run_cli(
            "sync", "--out", str(lake), "--tables", TABLES, "--base-url", url
        )
        first_requests = _requests(url) - requests - tables_requests
        again_s, _ = run_cli("sync", "--out", str(lake), "--tables", TABLES, "--base-url", url)
        again_requests = _requests(url) - requests - tables_requests - first_requests
    summary = orjson.loads(max((out / "_runs").glob("*.json")).read_bytes())
    return {
        "orders": orders,
        "items": summary["items"],
        "tables_s": round(tables_s, 2),
        "tables_requests": tables_requests,
        "tables_rss_mb": round(tables_rss, 1),
        "first_sync_s": round(first_s, 2),
        "first_sync_requests": first_requests,
        "first_sync_rss_mb": round(first_rss, 1),
        "nothing_new_sync_s": round(again_s, 2),
        "nothing_new_requests": again_requests,
    }


def _requests(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_stats") as answer:
        return int(orjson.loads(answer.read()).get("requests", 0))


def bench_keeping(size: int) -> dict[str, object]:
    """A Delta part of ``size`` products: the first write, 10 changed, then none changed."""
    schema = pa.schema(
        [f for f in lake_schema(PRODUCTS.schema, False) if not f.name.startswith("_")]
    )
    keep = Keep(("Id",), upsert=True)
    with tempfile.TemporaryDirectory() as folder:
        target = Target(folder, local=Path(folder))
        timings = {}
        for step, records in (
            ("first_s", range(size)),
            ("ten_changed_s", range(10)),
            ("unchanged_s", range(10)),
        ):
            name = "Endret" if step != "first_s" else "Vare"
            staged = _Staged(schema, [_product(number, name) for number in records])
            started = time.perf_counter()
            keep_list(target, Scope(), staged, RunInfo(step, dt.datetime.now(dt.UTC)), keep)  # type: ignore[arg-type]
            timings[step] = round(time.perf_counter() - started, 3)
    return {"products": size, **timings}


class _Staged:
    name = "products"

    def __init__(self, schema: pa.Schema, records: list[dict[str, Any]]) -> None:
        self.schema, self.records = schema, records

    def tables(self) -> Iterator[pa.Table]:
        yield pa.Table.from_pylist(self.records, self.schema)


def _product(number: int, name: str) -> dict[str, Any]:
    return {
        "Id": number, "Name": f"{name} {number}", "No": f"P-{number:07d}",
        "Price": Decimal("149.90"), "Description": "Blåbærsyltetøy, 12 glass à 400 g",
        "DateChanged": dt.datetime(2025, 3, 1, tzinfo=dt.UTC),
    }  # fmt: skip


def bench_lists(work: Path) -> dict[str, object]:
    small, large = bench_tables(work, 5_000), bench_tables(work, 50_000)
    keep_small, keep_large = bench_keeping(10_000), bench_keeping(100_000)
    return {
        "tables": [small, large],
        "keeping": [keep_small, keep_large],
        "growth_10x_products_ten_changed": round(
            float(keep_large["ten_changed_s"]) / float(keep_small["ten_changed_s"]),
            1,  # type: ignore[arg-type]
        ),
    }


def main() -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"machine: {machine}")
    with tempfile.TemporaryDirectory() as folder:
        found = bench_lists(Path(folder))
    for run in found.pop("tables"):  # type: ignore[attr-defined]
        print(f"lists:   {run}")
    for run in found.pop("keeping"):  # type: ignore[attr-defined]
        print(f"keeping: {run}")
    print(f"keeping: {found}")


if __name__ == "__main__":
    main()
