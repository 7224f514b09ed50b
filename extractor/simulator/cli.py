"""``extractor simulate`` and ``extractor demo``: the simulator as a product feature."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import click

from extractor.config import DEFAULT_PARSE_WORKERS, Credentials, InvoiceJob
from extractor.pipeline import run_invoices
from extractor.progress import render_summary
from extractor.simulator.faults import NO_FAULTS, FaultConfig
from extractor.simulator.server import (
    DEMO_APPLICATION_ID,
    DEMO_PASSWORD,
    DEMO_USERNAME,
    Simulator,
    SimulatorConfig,
)


def _accepted_credentials() -> Credentials:
    """The simulator accepts TFSO_* from the environment, or its own demo credentials."""
    if all(
        os.environ.get(name) for name in ("TFSO_APPLICATION_ID", "TFSO_USERNAME", "TFSO_PASSWORD")
    ):
        return Credentials.from_env()
    return Credentials(DEMO_APPLICATION_ID, DEMO_USERNAME, DEMO_PASSWORD)


async def serve(
    host: str,
    port: int,
    orders: int,
    seed: int,
    latency: float,
    latency_per_1000: float,
    ttl: int,
    faults: FaultConfig = NO_FAULTS,
) -> None:
    creds = _accepted_credentials()
    config = SimulatorConfig(
        orders=orders, seed=seed, host=host, port=port, latency=latency,
        latency_per_1000=latency_per_1000, session_ttl_calls=ttl, faults=faults,
        application_id=creds.application_id, username=creds.username, password=creds.password,
    )  # fmt: skip
    async with Simulator(config) as simulator:
        click.echo(f"simulator: {orders:,} orders (seed {seed}) at {simulator.url}")
        if creds.password == DEMO_PASSWORD:
            click.echo(
                f"  export TFSO_APPLICATION_ID={DEMO_APPLICATION_ID} TFSO_USERNAME={DEMO_USERNAME} "
                f"TFSO_PASSWORD={DEMO_PASSWORD}"
            )
        else:
            click.echo("  accepting the TFSO_* credentials of this environment")
        click.echo(f"  extractor invoices --base-url {simulator.url} --out DIR")
        click.echo("Ctrl-C stops it.")
        await asyncio.Event().wait()


async def run_demo(out: Path, orders: int) -> None:
    creds = Credentials(DEMO_APPLICATION_ID, DEMO_USERNAME, DEMO_PASSWORD)
    async with Simulator(SimulatorConfig(orders=orders)) as simulator:
        click.echo(
            f"demo: simulator with {orders:,} orders at {simulator.url}; backfilling into {out}/"
        )
        job = InvoiceJob(
            out=out,
            base_url=simulator.url,
            parse_workers=DEFAULT_PARSE_WORKERS,
            max_requests_per_hour=0,  # a local simulator has no budget to protect
        )
        summary = await run_invoices(job, creds)
    click.echo(render_summary(summary))
    click.echo(
        "\nRead it with pyarrow:\n"
        "  import pyarrow.dataset as ds\n"
        f"  ds.dataset('{out}/invoices', partitioning='hive').to_table().num_rows\n"
        "or DuckDB:\n"
        f"  SELECT order_month, count(*) FROM read_parquet('{out}/invoices/**/*.parquet', "
        "hive_partitioning=true) GROUP BY 1 ORDER BY 1;"
    )
