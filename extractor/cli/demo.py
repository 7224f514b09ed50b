"""``extractor simulate`` and ``extractor demo``: the simulator as a product feature."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
from pathlib import Path
from typing import Final

import click

from extractor.config import DEFAULT_PARSE_WORKERS, Credentials, ServiceConfig
from extractor.engine.destination import Destination
from extractor.engine.runner import run
from extractor.engine.summary import render
from extractor.errors import UsageError
from extractor.jobs.invoices import InvoiceJob
from extractor.output.lock import LOCK_FILE
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


async def serve(config: SimulatorConfig) -> None:
    """Serve ``config`` (with the credentials it accepts, :func:`_accepted_credentials`)."""
    creds = _accepted_credentials()
    config = dataclasses.replace(
        config,
        application_id=creds.application_id,
        username=creds.username,
        password=creds.password,
    )
    host, port, orders, seed = config.host, config.port, config.orders, config.seed
    simulator = Simulator(config)
    try:
        await simulator.start()
    except OSError as exc:
        await simulator.stop()
        raise UsageError(
            f"simulate: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "choose another --port (0 picks a free one)"
        ) from None
    try:
        click.echo(
            f"simulator: {orders:,} orders (seed {seed}; ids {config.ids}, xml {config.xml}, "
            f"churn {config.churn}) at {simulator.url}"
        )
        if config.identities > 1:
            click.echo(f"  {config.identities} identities (client companies):")
            for company in simulator.companies:
                marks = ["blocked"] * company.blocked + ["disabled"] * company.disabled
                note = f" ({', '.join(marks)})" if marks else ""
                click.echo(f"    {company.number}: {company.identity_id} {company.name}{note}")
        if creds.password == DEMO_PASSWORD:
            click.echo(
                f"  export TFSO_APPLICATION_ID={DEMO_APPLICATION_ID} TFSO_USERNAME={DEMO_USERNAME} "
                f"TFSO_PASSWORD={DEMO_PASSWORD}"
            )
        else:
            click.echo("  accepting the TFSO_* credentials of this environment")
        # a simulator has no budget to spare the client's pacing for: off
        flags = f"--base-url {simulator.url} --max-requests-per-hour 0"
        click.echo(f"  extractor invoices {flags} --out DIR")
        click.echo(f"  extractor sync {flags} --out LAKE && extractor verify LAKE {flags}")
        click.echo("Ctrl-C stops it.")
        await asyncio.Event().wait()
    finally:
        await simulator.stop()


#: Written into a directory the demo made, so that a later demo may clear what it wrote there.
DEMO_MARKER: Final = "_extractor_demo"
#: What a demo writes: the only entries a later demo removes.
DEMO_ENTRIES: Final = (
    "invoices", "invoice_rows", "_runs", "_failures", "_journal", "_staging", LOCK_FILE,
    "_identities", "identities",
)  # fmt: skip


def prepare_demo_dir(out: Path) -> None:
    """A new or empty ``out`` becomes the demo's; a previous demo's output is cleared (only
    what a demo writes, nothing else); any other non-empty directory is refused."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a new or empty directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / DEMO_MARKER).is_file():
            raise UsageError(
                f"--out {out} is not empty and is not a demo's output; the demo writes only "
                "into a new or empty directory (it never deletes what it did not create)"
            )
        for name in DEMO_ENTRIES:
            entry = out / name
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.exists():
                entry.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / DEMO_MARKER).write_text("written by 'extractor demo': a later demo may clear it\n")
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror or exc}") from None


async def run_demo(out: Path, orders: int) -> None:
    creds = Credentials(DEMO_APPLICATION_ID, DEMO_USERNAME, DEMO_PASSWORD)
    async with Simulator(SimulatorConfig(orders=orders)) as simulator:
        click.echo(
            f"demo: simulator with {orders:,} orders at {simulator.url}; backfilling into {out}/"
        )
        # a local simulator has no budget to protect
        service = ServiceConfig(base_url=simulator.url, max_requests_per_hour=0)
        job = InvoiceJob(Destination(out), service=service, parse_workers=DEFAULT_PARSE_WORKERS)
        summary = await run(job, creds)
    click.echo(render(summary))
    errors = summary.counts.get("api_exceptions", 0)
    if errors:  # the line a first reader asks about
        click.echo(
            f"\napi errors: {errors:,} orders came with an APIException inside the service's HTTP\n"
            "200 (the live service does so for an order it cannot read; the simulator for about\n"
            "1 in 100). They are in invoices/ all the same, their APIException column saying\n"
            "what the service said: nothing failed."
        )
    _how_to_read(out)


async def run_fleet_demo(out: Path, orders: int, identities: int, workers: int) -> None:
    """The demo of a fleet: ``identities`` client companies of ``orders`` orders each,
    backfilled at once on an embedded Dask cluster, under ``identity_id=`` partitions."""
    from extractor.fleet.cluster import cluster
    from extractor.fleet.layout import member_dir
    from extractor.fleet.members import Member
    from extractor.fleet.run import Fleet, render_fleet, run_fleet
    from extractor.output.targets import Target
    from extractor.service.identities import listed_identities

    creds = Credentials(DEMO_APPLICATION_ID, DEMO_USERNAME, DEMO_PASSWORD)
    config = SimulatorConfig(orders=orders, identities=identities)
    async with Simulator(config) as simulator:
        click.echo(
            f"demo: simulator with {identities} client companies of {orders:,} orders each at "
            f"{simulator.url}; backfilling them at once on {workers} Dask workers into {out}/"
        )
        service = ServiceConfig(base_url=simulator.url, max_requests_per_hour=0)
        listed = await listed_identities(service, creds)
        fleet_root = Destination(out)
        members = [
            Member(
                identity,
                InvoiceJob(fleet_root.member(member_dir(out, identity.id), identity.id), service),
                dataclasses.replace(creds, identity_id=identity.id),
            )
            for identity in listed
        ]
        fleet = Fleet("invoices", members, out, Target(str(out), local=out))

        def on_the_cluster() -> dict[str, object]:
            with cluster(None, workers) as client:
                return run_fleet(fleet, client)

        # the fleet waits on a thread: the simulator answers on this event loop meanwhile
        summary = await asyncio.to_thread(on_the_cluster)
    click.echo(render_fleet(summary))
    _how_to_read(out)


def _how_to_read(out: Path) -> None:
    click.echo(
        "\nRead it with pyarrow:\n"
        "  import pyarrow.dataset as ds\n"
        f"  ds.dataset('{out}/invoices', partitioning='hive').to_table().num_rows\n"
        "or DuckDB:\n"
        f"  SELECT order_month, count(*) FROM read_parquet('{out}/invoices/**/*.parquet', "
        "hive_partitioning=true) GROUP BY 1 ORDER BY 1;"
    )
