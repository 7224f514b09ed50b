"""The fleet's scaling (issue 13): 1, 2, 4 and 8 identities backfilled at once on the embedded
Dask cluster, each at the live service's pace (7,200 requests an hour, 2 a second, and 250 ms
of latency a request), against one identity alone, on the same simulator process.

One identity alone is what the service's rate limit allows: at 2 requests a second of 1,000
orders it cannot go faster than 2,000 invoices/s whatever the machine. A fleet multiplies
that by its identities until the cores are busy parsing; ``python -m benchmarks.fleet``
runs just this.
"""

from __future__ import annotations

import os
import platform
import resource
import tempfile
from pathlib import Path

import orjson

from benchmarks.run import run_cli, simulator_process
from extractor.config import DEFAULT_MAX_REQUESTS_PER_HOUR
from extractor.simulator.identities import identity_guid

SEED = 7  # the simulator's default, which its identities' guids come from
PACE = ("--max-requests-per-hour", str(DEFAULT_MAX_REQUESTS_PER_HOUR))  # the live service's


def bench_fleet(
    work: Path,
    orders: int = 6000,
    latency: float = 0.25,
    counts: tuple[int, ...] = (1, 2, 4, 8),
    large: int = 100_000,
) -> dict[str, object]:
    """Each count's wall time (cluster start included), invoices/s and peak RSS of the whole
    process tree; one identity runs alone (no Dask), the others as a fleet."""
    workers = os.cpu_count() or 1
    rows = []
    flags = ("--orders", str(orders), "--latency", str(latency), "--identities", str(max(counts)))
    with simulator_process(*flags) as url:
        for count in counts:
            out = work / f"fleet-{count}"
            chosen = [
                arg for n in range(1, count + 1) for arg in ("--identity", identity_guid(SEED, n))
            ]
            before = _children_cpu()
            wall, peak = run_cli(
                "invoices", "--base-url", url, "--out", str(out), *chosen,
                "--workers", str(workers), *PACE,
            )  # fmt: skip
            cpu = _children_cpu() - before
            rows.append(
                {
                    "identities": count,
                    "invoices": count * orders,
                    "wall_s": round(wall, 2),
                    "fleet_s": _fleet_seconds(out),
                    "invoices_per_s": round(count * orders / wall),
                    "peak_rss_mb": round(peak, 1),
                    "client_cpu_s": round(cpu, 2),
                    "invoices_per_client_cpu_s": round(count * orders / cpu),
                }
            )
    # the reference the per-identity cost is set against: one large tenant's backfill
    with simulator_process("--orders", str(large)) as url:
        before = _children_cpu()
        wall, _ = run_cli("invoices", "--base-url", url, "--out", str(work / "large"))
        cpu = _children_cpu() - before
    reference = {"orders": large, "wall_s": round(wall, 2), "client_cpu_s": round(cpu, 2),
                 "invoices_per_client_cpu_s": round(large / cpu)}  # fmt: skip
    alone = float(rows[0]["invoices_per_s"])  # type: ignore[arg-type]
    for row in rows:
        row["times_alone"] = round(float(row["invoices_per_s"]) / alone, 2)  # type: ignore[arg-type]
    return {
        "orders_per_identity": orders,
        "latency_s": latency,
        "workers": workers,
        "runs": rows,
        "one_large_tenant_unpaced": reference,
    }


def _children_cpu() -> float:
    """CPU seconds of every ended process this one waited for, and theirs (the CLI's whole
    tree: its Dask workers and nannies, its parser processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _fleet_seconds(out: Path) -> float | None:
    """The fleet's own time (from its first task to its last), without the cluster's start."""
    summaries = sorted((out / "_runs").glob("fleet-*.json"))
    if not summaries:
        return None
    return float(orjson.loads(summaries[-1].read_bytes())["seconds"])


def main() -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as folder:
        figures = bench_fleet(Path(folder))
    print(
        f"fleet:   {figures['orders_per_identity']:,} orders an identity, "
        f"{figures['latency_s']} s latency, {DEFAULT_MAX_REQUESTS_PER_HOUR:,} requests/h each, "
        f"{figures['workers']} workers"
    )
    for row in figures["runs"]:  # type: ignore[attr-defined]
        print(f"fleet:   {row}")
    print(f"fleet:   one large tenant, unpaced: {figures['one_large_tenant_unpaced']}")


if __name__ == "__main__":
    main()
