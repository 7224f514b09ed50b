"""Object stores under load (issue 24, item 6): S3 answering 503 SlowDown in bursts and
stalling answers past the client's timeout, through a faulty proxy in front of moto. A run
retries them with back-off and ends complete, equal to the truth."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pyarrow.dataset as ds
import pytest
from botocore.retries.standard import ExponentialBackoff

from extractor.clock import ManualClock
from extractor.engine import runner
from extractor.engine.destination import Destination
from extractor.jobs.invoices import InvoiceJob
from extractor.output.parquet import ParquetOutput
from extractor.output.store import StoreConfig
from extractor.output.targets import Target
from tests.conftest import CREDS, job_of, read_records
from tests.helpers import sync
from tests.s3 import Fault, FaultyS3, moto_with_env
from tests.truth import assert_lake_equals_truth, assert_records_match

BUCKET = "faulty-lake"
#: Timeouts short enough that a stall of STALL seconds is given up on and retried.
QUICK = StoreConfig(connect_timeout=1.0, read_timeout=0.3, first_backoff=0.01, max_backoff=0.2)
STALL = 1.0
DATA, LOG = r"\.parquet$", r"/_delta_log/|/_extractor\.lock$"


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_with_env(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture(autouse=True)
def quick_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's back-off after a SlowDown starts at 1 s (what S3 asks for); here at 10 ms,
    so that the retries, not their pauses, are what is tested."""
    scales = {"throttling_base_scale": 0.01, "non_throttling_base_scale": 0.01}
    monkeypatch.setattr(ExponentialBackoff, "_DEFAULT_BACKOFF_CONFIG", scales)


def keys(endpoint: str, prefix: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=endpoint)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", ())]


async def test_plain_parquet_publish_rides_out_slowdowns_and_stalls(
    start_simulator: Any, moto: str, tmp_path: Path
) -> None:
    simulator = await start_simulator(orders=150)
    # every upload and the lock: a request failing 3 times running, and stalls
    faults = (Fault(every=30, burst=3), Fault(every=60, stall=STALL))
    with FaultyS3(moto, *faults) as proxy:
        where = Destination.of(f"s3://{BUCKET}/plain", "parquet", tmp_path, proxy.url, "x")
        work, output = where.work, where.output
        assert isinstance(output, ParquetOutput)
        output = replace(output, target=replace(output.target, store=QUICK))
        job = job_of(
            InvoiceJob, out=work, output=output, root=where.root, base_url=simulator.url,
            max_requests_per_hour=0, batch_size=100, parse_workers=0,
        )  # fmt: skip
        summary = (await runner.run(job, CREDS, log=io.StringIO(), clock=ManualClock())).as_json()
        served = proxy.served()
    assert summary["status"] == "complete"
    assert served["slow_down"] >= 3 * 3 and served["stall"] >= 3, served
    stored = [key for key in keys(moto, "plain/") if not key.endswith("/")]
    assert stored and all(key.endswith(".parquet") for key in stored)
    filesystem = Target.parse(f"s3://{BUCKET}/plain", moto).filesystem()
    tables = {
        name: read_records(
            ds.dataset(f"{BUCKET}/plain/{name}", filesystem=filesystem, partitioning="hive")
        )
        for name in ("invoices", "invoice_rows")
    }  # fmt: skip
    assert_records_match(simulator.tenant, tables["invoices"], tables["invoice_rows"])


async def test_a_delta_sync_rides_out_slowdowns_and_stalls(
    start_simulator: Any, moto: str, tmp_path: Path
) -> None:
    simulator = await start_simulator(orders=150)
    faults = (
        Fault(every=10, burst=3, paths=LOG),  # delta-rs's log and the lock: bursts
        Fault(every=12, stall=STALL, methods=("GET", "HEAD"), paths=LOG),  # its reads: stalls
        Fault(every=1000, burst=3, paths=DATA),  # one burst on the data files (pyarrow)
        Fault(every=1000, stall=STALL, methods=("PUT",), paths=DATA),  # pyarrow waits it out
    )
    with FaultyS3(moto, *faults) as proxy:
        target = replace(Target.parse(f"s3://{BUCKET}/delta", proxy.url), store=QUICK)
        summary = await sync(simulator, target, work_dir=tmp_path, ledger=False)
        served = proxy.served()
    assert summary["status"] == "complete"
    assert served["slow_down"] >= 3 * 3 and served["stall"] >= 2, served
    assert_lake_equals_truth(simulator, Target.parse(target.uri, moto), set(), ledger=False)
