"""``extractor simulate`` and ``extractor demo``: the built-in simulator."""

from __future__ import annotations

import os
from pathlib import Path

import click

from extractor.cli.common import names
from extractor.errors import UsageError
from extractor.signals import Interrupted, run_until_signalled
from extractor.simulator.budget import WINDOW_KINDS, WindowKind
from extractor.simulator.config import SimulatorConfig
from extractor.simulator.faults import KINDS, FaultConfig
from extractor.simulator.render import XML_DIALECTS, XmlDialect
from extractor.simulator.tenant import CHURN_SHAPES, ID_SHAPES, ChurnShape, IdShape


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--orders", default=50_000, show_default=True, type=click.IntRange(0, 10_000_000))
@click.option("--seed", default=7, show_default=True, type=int)
@click.option(
    "--latency",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds per request.",
)
@click.option(
    "--latency-per-1000",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds per 1000 invoices.",
)
@click.option(
    "--session-ttl-calls",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Expire sessions after N calls (0: never).",
)
@click.option(
    "--fault-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of data requests that fail.",
)
@click.option(
    "--fault-kinds",
    default=",".join(KINDS),
    show_default=True,
    help="Comma-separated kinds the failures are spread over.",
)
@click.option(
    "--slow-seconds",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Stall of a 'slow' fault.",
)
@click.option("--poison-ids", help="Comma-separated OrderIds that make any GetInvoices fail.")
@click.option("--hostile", is_flag=True, help="Answer data requests with a DOCTYPE of entities.")
@click.option(
    "--rate-budget",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Requests per window before a quarantine (0: no limit, no headers).",
)
@click.option("--rate-window", default=3600.0, show_default=True, type=click.FloatRange(1))
@click.option("--quarantine-seconds", default=60.0, show_default=True, type=click.FloatRange(0))
@click.option(
    "--rate-window-kind",
    type=click.Choice(WINDOW_KINDS),
    default="restart",
    show_default=True,
    help="A budget window starts at the first request after the last one ended (restart), "
    "on the clock (clock), back to back from the first request (fixed), or is the last "
    "--rate-window seconds (sliding).",
)
@click.option(
    "--rate-reset-whole-seconds",
    is_flag=True,
    help="APILimitReset in whole seconds (its fraction cut), as some services send it.",
)
@click.option(
    "--slow-past",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="A fragile service: past N requests in it at once, answers slow down in proportion "
    "(--latency times requests in it / N); 0: never.",
)
@click.option(
    "--fail-past",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Past N requests in it at once, the service answers HTTP 503 at once; 0: never.",
)
@click.option(
    "--ids",
    type=click.Choice(ID_SHAPES),
    default="scattered",
    show_default=True,
    help="OrderIds: imported history and two live series, or one series in date order.",
)
@click.option(
    "--xml",
    type=click.Choice(XML_DIALECTS),
    default="wcf",
    show_default=True,
    help="As a proxy sends it (BOM, CRLF, indented, a: prefixes), or compact ASMX.",
)
@click.option(
    "--churn",
    type=click.Choice(CHURN_SHAPES),
    default="accounting",
    show_default=True,
    help="What POST /_churn changes: mostly recent orders, or any order alike.",
)
@click.option(
    "--identities",
    default=1,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Client companies the demo user reaches (GetIdentities), each its own tenant.",
)
@click.option(
    "--blocked-identity",
    "blocked_identities",
    multiple=True,
    type=click.IntRange(1),
    help="Number (1-based) of an identity whose login is refused as blocked (repeatable).",
)
@click.option(
    "--disabled-identity",
    "disabled_identities",
    multiple=True,
    type=click.IntRange(1),
    help="Number of an identity GetIdentities marks IsDisabled (repeatable).",
)
def simulate(
    host: str,
    port: int,
    orders: int,
    seed: int,
    latency: float,
    latency_per_1000: float,
    session_ttl_calls: int,
    fault_rate: float,
    fault_kinds: str,
    slow_seconds: float,
    poison_ids: str | None,
    hostile: bool,
    rate_budget: int,
    rate_window: float,
    quarantine_seconds: float,
    rate_window_kind: WindowKind,
    rate_reset_whole_seconds: bool,
    slow_past: int,
    fail_past: int,
    ids: IdShape,
    xml: XmlDialect,
    churn: ChurnShape,
    identities: int,
    blocked_identities: tuple[int, ...],
    disabled_identities: tuple[int, ...],
) -> None:
    """Serve the built-in 24SevenOffice simulator until interrupted."""
    from extractor.cli.demo import serve

    try:
        poison = frozenset(int(i) for i in names(poison_ids))
        faults = FaultConfig(
            rate=fault_rate,
            kinds=names(fault_kinds),
            seed=seed,
            slow_seconds=slow_seconds,
            poison_ids=poison,
            hostile=hostile,
            budget=rate_budget,
            window=rate_window,
            quarantine=quarantine_seconds,
            window_kind=rate_window_kind,
            whole_second_reset=rate_reset_whole_seconds,
            slow_past=slow_past,
            fail_past=fail_past,
        )
    except ValueError as exc:
        raise UsageError(f"simulate: {exc}") from None
    beyond = [n for n in (*blocked_identities, *disabled_identities) if n > identities]
    if beyond:
        raise UsageError(
            f"simulate: identity {beyond[0]} is beyond --identities {identities}; "
            f"number them 1..{identities}"
        )
    config = SimulatorConfig(
        orders=orders, seed=seed, host=host, port=port, latency=latency,
        latency_per_1000=latency_per_1000, session_ttl_calls=session_ttl_calls, faults=faults,
        ids=ids, xml=xml, churn=churn, identities=identities,
        blocked_identities=blocked_identities, disabled_identities=disabled_identities,
    )  # fmt: skip
    try:
        run_until_signalled(serve(config))
    except Interrupted:
        click.echo("simulator stopped")  # how a simulator is meant to end


@click.command()
@click.option("--out", default="demo-output", show_default=True, type=click.Path(path_type=Path))
@click.option(
    "--orders", default=50_000, show_default=True, type=click.IntRange(1, 10_000_000),
    help="Orders of the simulated company (of each, with --identities).",
)  # fmt: skip
@click.option(
    "--identities", default=1, show_default=True, type=click.IntRange(1, 64),
    help="Client companies; more than one are backfilled at once as a fleet on Dask.",
)  # fmt: skip
@click.option(
    "--workers", default=os.cpu_count() or 1, show_default="the cores",
    type=click.IntRange(1, 64), help="Dask workers of a fleet's demo.",
)  # fmt: skip
def demo(out: Path, orders: int, identities: int, workers: int) -> None:
    """Backfill the built-in simulator's orders into ./demo-output and show the result
    (with --identities N: N client companies at once, as a fleet)."""
    from extractor.cli.demo import prepare_demo_dir, run_demo

    prepare_demo_dir(out)
    run_demo(out, orders, identities, min(workers, identities))
