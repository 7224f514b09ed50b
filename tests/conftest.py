from __future__ import annotations

import asyncio
import dataclasses
import io
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.dataset as ds
import pytest

from extractor.clock import SYSTEM, Clock, ManualClock
from extractor.config import Credentials, ServiceConfig
from extractor.engine import runner
from extractor.engine.destination import Destination
from extractor.simulator.memory import MemoryWire
from extractor.simulator.server import (
    DEMO_APPLICATION_ID,
    DEMO_PASSWORD,
    DEMO_USERNAME,
    Simulator,
    SimulatorConfig,
)
from extractor.simulator.service import SimulatedService

CREDS = Credentials(DEMO_APPLICATION_ID, DEMO_USERNAME, DEMO_PASSWORD)
J = TypeVar("J")
_SERVICE_FIELDS = frozenset(field.name for field in dataclasses.fields(ServiceConfig))
_WHERE_FIELDS = frozenset(field.name for field in dataclasses.fields(Destination)) - {"work"}


def job_of(cls: Callable[..., J], *args: Any, **options: Any) -> J:
    """A job of ``cls``, the options that are :class:`ServiceConfig` fields (``base_url``,
    ``concurrency``, ``max_requests_per_hour``, ...) given as its ``service``, and those that
    are :class:`Destination` fields (``out``, ``output``, ``placement``, ``resume``) as its
    destination. A sync keeps the invoices and the ledger only unless ``tables`` says
    otherwise: the lists have tests of their own (test_picture, test_lists), and the sync
    tests that are about the facts need not build the simulator's books to answer them."""
    if cls.__name__ == "SyncJob":
        options.setdefault("tables", FACTS)
    service = {name: options.pop(name) for name in list(options) if name in _SERVICE_FIELDS}
    if args and isinstance(args[0], Path):  # the job's folder, given first
        options["out"], args = args[0], args[1:]
    if "out" in options:
        where = {name: options.pop(name) for name in list(options) if name in _WHERE_FIELDS}
        args = (Destination(options.pop("out"), **where), *args)
    return cls(*args, service=ServiceConfig(**service), **options)


#: The tables a test's sync keeps unless it says otherwise.
FACTS = ("invoices", "transactions")

CliResult = tuple[int, str, str]  # exit status, stdout, stderr


#: The variables a command reads, cleared before each :func:`cli` call but those it is given.
CLEARED = ("TFSO_", "EXTRACTOR_", "ACME_")
KEPT = frozenset({"EXTRACTOR_PURE_PYTHON"})  # which parser the whole suite runs


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., CliResult]:
    """The CLI in this process, as ``extractor ARGS`` with exactly the TFSO_* and EXTRACTOR_*
    variables of ``env``: for what a subprocess is not the point of (bad input, help, refusals)."""
    from extractor.cli.main import entry

    def run(*args: str, env: dict[str, str] | None = None) -> CliResult:
        for name in [name for name in os.environ if name.startswith(CLEARED)]:
            if name not in KEPT:
                monkeypatch.delenv(name)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()  # what came before is not this command's
        code = entry(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def cli_beside(cli: Callable[..., CliResult]) -> Callable[..., Awaitable[CliResult]]:
    """:func:`cli` for an async test: the command runs in a thread, so that a simulator on
    the test's event loop answers it."""

    async def run(*args: str, env: dict[str, str] | None = None) -> CliResult:
        return await asyncio.to_thread(cli, *args, env=env)

    return run


MEMORY_URL = "http://simulator.in-memory"


@dataclass
class InMemory:
    """The simulated service without a socket, on a manual clock it shares with the runs it
    serves: quarantines, budgets and back-off pass in milliseconds."""

    service: SimulatedService
    clock: ManualClock
    stream: io.StringIO = field(default_factory=io.StringIO)

    @property
    def wire(self) -> MemoryWire:
        return MemoryWire(self.service)

    async def run(self, job: Any) -> dict[str, Any]:
        return (
            await runner.run(job, CREDS, log=self.stream, clock=self.clock, wire=self.wire)
        ).as_json()


@pytest.fixture
def in_memory() -> Callable[..., InMemory]:
    """``in_memory(**SimulatorConfig fields)``: a service answering jobs whose base URL is
    :data:`MEMORY_URL`."""

    def make(**options: Any) -> InMemory:
        clock = ManualClock()
        config = SimulatorConfig(**{"orders": 1500, **options})
        return InMemory(SimulatedService(config, clock=clock), clock)

    return make


@pytest.fixture
def creds() -> Credentials:
    return CREDS


@pytest.fixture
async def start_simulator() -> AsyncIterator[Callable[..., Any]]:
    """Start simulators on port 0, on the system clock or ``clock``; every one is stopped when
    the test ends."""
    started: list[Simulator] = []

    async def start(clock: Clock = SYSTEM, **options: Any) -> Simulator:
        simulator = Simulator(SimulatorConfig(**{"orders": 1500, **options}), clock=clock)
        await simulator.start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        await simulator.stop()


@pytest.fixture
async def simulator(start_simulator: Callable[..., Any]) -> AsyncIterator[Simulator]:
    sim = await start_simulator()
    yield sim
    await sim.stop()


def read_table(out: Path, name: str) -> list[dict[str, Any]]:
    """The records of ``out``'s Parquet table ``name`` (see :func:`read_records`)."""
    return read_records(ds.dataset(out / name, format="parquet", partitioning="hive"))


def read_records(dataset: ds.Dataset) -> list[dict[str, Any]]:
    """A Parquet dataset's records, without the run's columns: those are checked here, each
    record's ``_run_id`` the run that named its file, its ``_extracted_at`` one time a run."""
    # one file a month, ten years of months: threads cost more than they gain (-20 % CPU)
    table = dataset.to_table(use_threads=False, columns=[*dataset.schema.names, "__filename"])
    names = table.column("__filename").to_pylist()
    runs = [Path(name).name.removeprefix("part-").removesuffix(".parquet") for name in names]
    assert table.column("_run_id").to_pylist() == runs, "_run_id names the run of its file"
    as_of: dict[str, Any] = {}
    for run_id, extracted in zip(runs, table.column("_extracted_at").to_pylist(), strict=True):
        assert extracted is not None and as_of.setdefault(run_id, extracted) == extracted, run_id
    return table.drop_columns(["__filename", "_run_id", "_extracted_at"]).to_pylist()
