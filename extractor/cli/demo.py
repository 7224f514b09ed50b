"""``extractor simulate`` and ``extractor demo``: the simulator as a product feature."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import click

from extractor.config import DEFAULT_PARSE_WORKERS, Credentials
from extractor.errors import UsageError
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


def run_demo(out: Path, orders: int, identities: int = 1, workers: int = 1) -> None:
    """The demo: the simulator's ``orders`` backfilled into ``out`` through the API, as
    ``extractor invoices`` does; with ``identities`` client companies, all at once as a fleet
    on an embedded Dask cluster of ``workers``, under ``identity_id=`` partitions."""
    from extractor import api
    from extractor.cli.common import through_cli
    from extractor.engine.summary import render
    from extractor.fleet.launch import FleetSummary
    from extractor.fleet.run import render_fleet

    config = SimulatorConfig(orders=orders, identities=identities)
    with _serving(config) as simulator:
        if identities == 1:
            click.echo(
                f"demo: simulator with {orders:,} orders at {simulator.url}; backfilling into "
                f"{out}/"
            )
        else:
            click.echo(
                f"demo: simulator with {identities} client companies of {orders:,} orders each "
                f"at {simulator.url}; backfilling them at once on {workers} Dask workers into "
                f"{out}/"
            )
        summary = api.invoices(
            out, parse_workers=DEFAULT_PARSE_WORKERS, identity="all" if identities > 1 else None,
            workers=workers, credentials=Credentials(DEMO_APPLICATION_ID, DEMO_USERNAME,
            DEMO_PASSWORD), base_url=simulator.url,
            max_requests_per_hour=0,  # a local simulator has no budget to protect
            **through_cli(),
        )  # fmt: skip
    if isinstance(summary, FleetSummary):
        click.echo(render_fleet(summary.document))
    else:
        click.echo(render(summary))
        _said_api_errors(summary.counts.get("api_exceptions", 0))
    _how_to_read(out)


def _said_api_errors(errors: int) -> None:
    if errors:  # the line a first reader asks about
        click.echo(
            f"\napi errors: {errors:,} orders came with an APIException inside the service's HTTP\n"
            "200 (the live service does so for an order it cannot read; the simulator for about\n"
            "1 in 100). They are in invoices/ all the same, their APIException column saying\n"
            "what the service said: nothing failed."
        )


@contextlib.contextmanager
def _serving(config: SimulatorConfig) -> Iterator[Simulator]:
    """The simulator on an event loop of its own, in a thread, while the block runs: the
    demo's run has the main thread's (and its signals)."""
    ready = threading.Event()
    held: dict[str, Any] = {}

    async def serve() -> None:
        async with Simulator(config) as simulator:
            held.update(simulator=simulator, loop=asyncio.get_running_loop())
            held["stop"] = asyncio.Event()
            ready.set()
            await held["stop"].wait()

    def in_thread() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # said by the demo's thread
            held["error"] = exc
            ready.set()

    thread = threading.Thread(target=in_thread, name="demo-simulator", daemon=True)
    server_log = logging.getLogger("aiohttp.server")
    server_log.addFilter(_hung_up)
    thread.start()
    ready.wait()
    try:
        if "error" in held:
            raise held["error"]
        yield held["simulator"]
    finally:
        if "loop" in held:
            held["loop"].call_soon_threadsafe(held["stop"].set)
        thread.join()
        server_log.removeFilter(_hung_up)


def _hung_up(record: logging.LogRecord) -> bool:
    """Not a record of an answer the demo's run hung up on (it was stopped): the run is
    over, its simulator's answers with it."""
    error = record.exc_info[1] if record.exc_info else None
    return not isinstance(error, ConnectionError)


def _how_to_read(out: Path) -> None:
    click.echo(
        "\nRead it with pyarrow:\n"
        "  import pyarrow.dataset as ds\n"
        f"  ds.dataset('{out}/invoices', partitioning='hive').to_table().num_rows\n"
        "or DuckDB:\n"
        f"  SELECT order_month, count(*) FROM read_parquet('{out}/invoices/**/*.parquet', "
        "hive_partitioning=true) GROUP BY 1 ORDER BY 1;"
    )
