"""The same flows against a real S3 API: moto's server mode, started on loopback."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pyarrow.dataset as ds
import pytest

from extractor.cli.common import EXIT_PERMANENT
from extractor.clock import ManualClock
from extractor.engine import runner
from extractor.engine.destination import Destination
from extractor.errors import UsageError
from extractor.jobs.invoices import InvoiceJob
from extractor.output.targets import Target
from extractor.simulator.tenant import Churn
from tests.conftest import CREDS, job_of, read_records
from tests.helpers import DEMO_ENV, sync, unstamped
from tests.s3 import moto_with_env
from tests.truth import assert_lake_equals_truth

BUCKET = "lake-test"


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """An S3-compatible server on 127.0.0.1 with one bucket, for the whole module (each test
    writes under a prefix of its own); its endpoint URL."""
    with moto_with_env(BUCKET) as endpoint:
        yield endpoint


def keys(endpoint: str, prefix: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=endpoint)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", ())]


async def test_sync_to_s3_equals_truth(start_simulator: Any, s3: str, tmp_path: Path) -> None:
    simulator = await start_simulator(orders=60)
    target = Target.parse(f"s3://{BUCKET}/lake", endpoint_url=s3)
    summary = await sync(simulator, target, work_dir=tmp_path)
    assert summary["status"] == "complete"
    assert_lake_equals_truth(simulator, target, marked=set())
    churned = simulator.churn(Churn(changed=8, deleted=2, added=3))
    summary = await sync(simulator, target, work_dir=tmp_path, reconcile=True)
    assert summary["invoices"]["written"]["invoices"] == 8 + 3
    assert_lake_equals_truth(simulator, target, marked=set(churned.deleted))
    stored = keys(s3, "lake/")
    assert any(key.startswith("lake/invoices/_delta_log/") for key in stored)
    assert not [key for key in stored if key.endswith(".tmp")]


async def test_plain_parquet_backfill_to_s3(start_simulator: Any, s3: str, tmp_path: Path) -> None:
    simulator = await start_simulator(orders=60)
    out = f"s3://{BUCKET}/plain"
    where = Destination.of(out, "parquet", tmp_path, s3, "invoices")
    work, output = where.work, where.output
    job = job_of(
        InvoiceJob,
        out=work,
        output=output,
        root=where.root,
        base_url=simulator.url,
        max_requests_per_hour=0,
        batch_size=20,
    )
    summary = (await runner.run(job, CREDS, log=io.StringIO(), clock=ManualClock())).as_json()
    assert summary["status"] == "complete" and summary["output"] == out
    stored = [key for key in keys(s3, "plain/") if not key.endswith("/")]  # folder markers
    assert stored and all(key.endswith(".parquet") for key in stored), "no temporary key left"
    assert not list(work.rglob("*.parquet")), "the local copies are gone once uploaded"
    assert output is not None
    dataset = ds.dataset(
        f"{BUCKET}/plain/invoices",
        filesystem=output.target.filesystem(),
        format="parquet",
        partitioning="hive",
    )
    truth = simulator.tenant.ground_truth()
    orders = read_records(dataset)
    assert sorted(o["OrderId"] for o in orders) == sorted(truth)
    for order in orders:
        order.pop("order_month")
        assert order == truth[order["OrderId"]].order


@pytest.mark.parametrize(
    ("out", "endpoint", "message"),
    [
        ("ftp://host/x", None, "use a local path or s3://bucket/prefix"),
        ("s3://", None, "expected s3://bucket/prefix"),
        ("s3://bucket/x", "localhost:9000", "expected http(s)://host[:port]"),
        ("local/dir", "http://127.0.0.1:9000", "endpoint_url is for s3:// targets"),
    ],
)
def test_bad_targets_are_refused(out: str, endpoint: str | None, message: str) -> None:
    with pytest.raises(UsageError) as refused:
        Target.parse(out, endpoint)
    assert message in str(refused.value)


async def test_an_s3_target_is_locked_where_it_lives(
    start_simulator: Any, s3: str, tmp_path: Path
) -> None:
    from extractor.errors import OutputLocked
    from extractor.output.lease import ObjectLock

    simulator = await start_simulator(orders=20)
    target = Target.parse(f"s3://{BUCKET}/locked", s3)
    held = ObjectLock.take(target, "sync")  # another machine's run: its own work dir
    with pytest.raises(OutputLocked, match=r"in use by 'extractor sync' .*its lease is live"):
        await sync(simulator, target, work_dir=tmp_path / "here")
    assert simulator.stats["requests"] == 0
    held.release()
    summary = await sync(simulator, target, work_dir=tmp_path / "here", ledger=False)
    assert summary["status"] == "complete"
    assert "locked/_extractor.lock" not in keys(s3, "locked")  # released


async def test_a_bucket_that_does_not_exist_is_a_permanent_failure(
    cli_beside: Any, s3: str, tmp_path: Path
) -> None:
    """Exit 4, not 1: a scheduler's retries would find the bucket missing each time."""
    code, _, err = await cli_beside(
        "invoices", "--out", "s3://no-such-bucket/lake", "--endpoint-url", s3,
        "--work-dir", str(tmp_path), "--base-url", "http://127.0.0.1:9", env=DEMO_ENV,
    )  # fmt: skip
    assert code == EXIT_PERMANENT, err
    assert unstamped(err) == [
        f"extractor: error: s3://no-such-bucket does not exist at {s3}: create the bucket, "
        "or give another output"
    ]
