"""Every code block of the README and ``docs/`` runs, as written, against the simulator.

A page is followed as a user would: its blocks in order, in one working directory, the
credentials exported once (the ``export TFSO_...=...`` lines are the environment here). What
a block needs from the world is given to it the same way each time, and said here:

- the service: ``EXTRACTOR_BASE_URL`` (and ``EXTRACTOR_MAX_REQUESTS_PER_HOUR=0``) point every
  command at a simulator; the Python API's functions get the same as keyword arguments; a
  fleet runs on one Dask worker process and responses are parsed in the run's own process
  (``EXTRACTOR_WORKERS=1``, ``EXTRACTOR_PARSE_WORKERS=0``: the machine is shared; parser
  processes are tried in ``test_api.py`` and the end-to-end tests);
- an object store: an ``s3://bucket/prefix`` is the folder ``s3/bucket/prefix`` (the object
  store itself is tried in ``test_object_store.py``), and ``--endpoint-url`` is dropped;
- placeholders: ``GUID1``, ``9f1c...`` and the like name the simulator's identities, ``...``
  in a crontab is the environment, ``http://127.0.0.1:8080`` (``simulate --port 8080``) is
  the simulator, an absolute path (``/work``) one under the working directory;
- a scheduler: cron's five fields, systemd's ``ExecStart=`` and a CronJob's ``args`` are the
  command they run; Airflow, Dagster and pendulum are fakes that call the task (none is
  installed here), so what is tried is the extractor's part: its calls and their results;
- DuckDB's ``delta_scan`` is a view over ``deltalake`` (the delta extension is downloaded on
  first use, and these machines have no network).

A command that cannot run here is named in :data:`NOT_RUN` with the reason; nothing else is
skipped. A block of text (the module map, a folder tree, figures) has no language and no
``$`` prompt; a transcript (``$ command`` then its output) is run and its output compared.
"""

from __future__ import annotations

import asyncio
import configparser
import functools
import os
import re
import shlex
import sys
import time
import types
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from extractor.simulator.server import Simulator
from tests.helpers import credentials_env, unstamped

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Commands not run here, by a piece of their text, and why.
NOT_RUN = {
    "make demo": "`make demo` is what a user runs first; CI runs `make test` itself",
    "make test": "this test is part of it",
    "pip install .": "test_install.py installs the package into a fresh environment",
    "pipx install .": "test_install.py installs the package into a fresh environment",
    "extractor simulate": "serves until Ctrl-C: the simulator these commands run against",
    "extractor demo": "starts its own simulator and backfills 50,000 orders: `make demo`",
    "--scheduler tcp://": "needs a Dask cluster; test_fleet_cluster.py runs one",
    "verify lake/ --identity": "needs a fleet's Delta lake; test_picture.py verifies one",
}
#: What a page's blocks find in their working directory before the first runs.
GIVEN = {
    "commands.md": {"fixes.csv": "OrderId,InvoiceTitle\n{order_id},Corrected title\n"},
}

SERVICE_SETTINGS = ("base_url", "max_requests_per_hour")
CRON = re.compile(r"^([\d*/,-]+\s+){5}")
S3 = re.compile(r"s3://([\w.-]+)/?")
PLACEHOLDERS = re.compile(r"^(GUID\d|[0-9a-f]{4}\.\.\.|7304c6d3-e183-4db5-86fe-227198dfc4a8)$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    text: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def transcript(self) -> bool:
        return self.text.startswith("$ ")


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    found = re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)
    return [Block(page, text[: m.start()].count("\n") + 1, m.group(1), m.group(2)) for m in found]


def command_lines(block: Block) -> Iterator[str]:
    """The block's commands: continuation lines joined, comments and prompts gone."""
    text = block.text.replace("\\\n", " ")
    if block.language == "ini":
        parsed = configparser.ConfigParser(strict=False, inline_comment_prefixes=("#",))
        parsed.read_string(text)
        yield parsed["Service"]["ExecStart"]
        return
    for line in text.splitlines():
        if block.transcript and not line.startswith("$ "):
            continue
        line = CRON.sub("", line.removeprefix("$ ").strip())
        if line and not line.startswith("#"):
            yield line


def argv(line: str, env: dict[str, str], identities: list[str]) -> list[str] | None:
    """``line`` as the extractor's arguments (None: not an extractor command), what it sets
    in ``env``."""
    words = shlex.split(line, comments=True)
    while words and ("=" in words[0] or words[0] == "..."):
        name, _, value = words.pop(0).partition("=")
        if value and value != "...":
            env[name] = value
    if not words or Path(words[0]).name != "extractor":
        return None
    args: list[str] = []
    skip = False
    for word in words[1:]:
        if skip:
            skip = False
        elif word in {">>", "2>>", ">", "2>"} or word == "--endpoint-url":
            skip = True
        elif word == "|":
            break
        elif not word.startswith(("2>&1", ">/dev/null")):
            args.append(_place(word, identities))
    return args


def _place(word: str, identities: list[str]) -> str:
    if word.startswith("/"):  # a path of the machine the page runs on: the CronJob's volume
        return word.lstrip("/")
    if word == "http://127.0.0.1:8080":  # the simulator the page started: `simulate --port 8080`
        return os.environ["EXTRACTOR_BASE_URL"]
    if PLACEHOLDERS.match(word):
        return identities[int(word[-1]) % len(identities) if word[-1].isdigit() else 0]
    return S3.sub(r"s3/\1/", word)


@pytest.fixture
async def page_runner(
    start_simulator: Callable[..., Awaitable[Simulator]],
    cli_beside: Callable[..., Awaitable[tuple[int, str, str]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    page: Path,
) -> Callable[[Path], Awaitable[list[str]]]:
    fleet = "--identity" in page.read_text()  # a second company only for a page that needs it
    simulator = await start_simulator(orders=60, identities=2 if fleet else 1)
    identities = [company.identity_id for company in simulator.companies]
    monkeypatch.chdir(tmp_path)
    env = credentials_env() | {
        "EXTRACTOR_BASE_URL": simulator.url, "EXTRACTOR_MAX_REQUESTS_PER_HOUR": "0",
        "EXTRACTOR_WORKERS": "1",  # a fleet's Dask workers: one process, on a shared machine
        "EXTRACTOR_PARSE_WORKERS": "0",  # parsed in the run's process
    }  # fmt: skip
    env |= {  # the variables commands.md's extractor.toml names for the credentials
        "ACME_TFSO_USER": env["TFSO_USERNAME"], "ACME_TFSO_PASSWORD": env["TFSO_PASSWORD"],
    }  # fmt: skip
    for name, value in env.items():  # the Python blocks' environment too
        monkeypatch.setenv(name, value)
    api_defaults = {"base_url": simulator.url, "max_requests_per_hour": 0, "parse_workers": 0}
    tenant = simulator.company(1).tenant  # an order UpdateInvoices takes: an invoiced one
    order_id = next(
        i for i in sorted(tenant.registered) if tenant.wire(i).get("OrderStatus") == "Invoiced"
    )

    async def run_page(page: Path) -> list[str]:
        ran: list[str] = []
        for name, text in GIVEN.get(page.name, {}).items():
            (tmp_path / name).write_text(text.format(order_id=order_id))
        for block in blocks(page):
            if block.language == "python":
                await asyncio.to_thread(_run_python, block, api_defaults)
                ran.append(f"{block}: python")
            elif block.language == "sql":
                _run_sql(block)
                ran.append(f"{block}: sql")
            elif block.language == "toml":
                (tmp_path / "extractor.toml").write_text(S3.sub(r"s3/\1/", block.text))
            for line in _runnable(block):
                command = line.partition("  #")[0]
                if reason := next((r for cut, r in NOT_RUN.items() if cut in command), None):
                    ran.append(f"{block}: not run, {reason}: {line}")
                    continue
                args = argv(line, env, identities)
                if args is None:
                    continue
                began = time.monotonic()
                code, out, err = await cli_beside(*args, env=env)
                _expect(block, line, code, out, err)
                took = time.monotonic() - began
                ran.append(f"{block}: {shlex.join(args)} -> {code}, {took:.1f} s")
        return ran

    return run_page


def _runnable(block: Block) -> Iterator[str]:
    if block.language in {"sh", "ini"} or block.transcript:
        yield from command_lines(block)
    elif block.language == "toml":
        first = block.text.splitlines()[0]  # "# extractor.toml: the command that reads it"
        yield first.partition(": ")[2]
    elif block.language == "yaml":
        yield from _cronjob_command(block.text)


def _cronjob_command(text: str) -> Iterator[str]:
    import yaml

    job = yaml.safe_load(text)
    for container in job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]:
        yield shlex.join(["extractor", *container["args"]])


def _expect(block: Block, line: str, code: int, out: str, err: str) -> None:
    """The command did what its page says: exit 0, or the error line its transcript shows;
    a transcript's JSON lines have the events and fields shown."""
    shown = [row for row in block.text.splitlines() if row and not row.startswith("$ ")]
    errors = [row for row in shown if row.startswith("extractor: error:")]
    if block.transcript and errors:
        assert code == 2 and unstamped(err) == errors, f"{block} {line}: {err}"
        return
    assert code == 0, f"{block} {line}: exit {code}\n{out}\n{err}"
    if block.transcript and shown and shown[0].startswith("{"):
        said = [orjson.loads(row) for row in err.splitlines() if row.startswith("{")]
        for expected, got in zip(map(orjson.loads, shown), said, strict=False):
            assert (got["event"], sorted(got)) == (expected["event"], sorted(expected)), block


def _run_python(block: Block, defaults: dict[str, Any]) -> None:
    """The block as a script, the extractor's functions given the simulator (and the fakes
    of what schedulers it imports); a function it defines as a task or asset is called."""
    import extractor

    names = ("invoices", "transactions", "tables", "sync", "verify", "update_invoices")
    patched = {
        name: functools.partial(getattr(extractor, name), **_taking(name, defaults))
        for name in names
    }
    fakes = _scheduler_fakes()
    saved = {name: sys.modules.get(name) for name in fakes}
    try:
        sys.modules.update(fakes)
        for name, function in patched.items():
            setattr(extractor, name, function)
        code = compile(S3.sub(r"s3/\1/", block.text), str(block), "exec")
        scope: dict[str, Any] = {"__name__": "__doc_block__"}
        exec(code, scope)  # the page's own code, which is the point
        for result in fakes["dagster"].materialized:
            assert result.metadata["status"] == "complete" and result.metadata["verified"]
    finally:
        for name in names:
            delattr(extractor, name)
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _taking(name: str, defaults: dict[str, Any]) -> dict[str, Any]:
    import inspect

    import extractor

    parameters = inspect.signature(getattr(extractor, name)).parameters
    settings = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return {  # the service's settings go in **settings, by their flags' names
        key: value for key, value in defaults.items()
        if key in parameters or (settings and key in SERVICE_SETTINGS)
    }  # fmt: skip


def _scheduler_fakes() -> dict[str, types.ModuleType]:
    """Airflow, Dagster and pendulum as far as the pages use them: a DAG runs its tasks when
    it is called, an asset runs when it is defined."""

    def passing(*_: Any, **__: Any) -> Callable[[Any], Any]:
        return lambda function: function

    pendulum = types.ModuleType("pendulum")
    pendulum.datetime = lambda *args, **kwargs: args  # type: ignore[attr-defined]
    pendulum.duration = lambda **kwargs: kwargs  # type: ignore[attr-defined]
    decorators = types.ModuleType("airflow.decorators")

    def dag(**_: Any) -> Callable[[Any], Any]:
        return lambda function: function  # calling the DAG runs its tasks in order

    def task(function: Any = None, **_: Any) -> Any:
        return function if callable(function) else (lambda inner: inner)

    decorators.dag, decorators.task = dag, task  # type: ignore[attr-defined]
    exceptions = types.ModuleType("airflow.exceptions")
    exceptions.AirflowFailException = type("AirflowFailException", (Exception,), {})  # type: ignore[attr-defined]
    dagster = types.ModuleType("dagster")
    materialized: list[Any] = []

    def asset(**_: Any) -> Callable[[Any], Any]:
        def define(function: Any) -> Any:
            materialized.append(function(None))
            return function

        return define

    dagster.asset = asset  # type: ignore[attr-defined]
    dagster.RetryPolicy = passing  # type: ignore[attr-defined]
    dagster.AssetExecutionContext = object  # type: ignore[attr-defined]
    dagster.MaterializeResult = types.SimpleNamespace  # type: ignore[attr-defined]
    dagster.materialized = materialized  # type: ignore[attr-defined]
    airflow = types.ModuleType("airflow")
    return {
        "pendulum": pendulum, "airflow": airflow, "airflow.decorators": decorators,
        "airflow.exceptions": exceptions, "dagster": dagster,
    }  # fmt: skip


def _run_sql(block: Block) -> None:
    """The query on DuckDB, each ``delta_scan('path')`` a view of that Delta table."""
    import duckdb
    from deltalake import DeltaTable

    connection = duckdb.connect()
    query = re.sub(r"(?m)^INSTALL delta; LOAD delta;\n", "", block.text)
    for number, path in enumerate(re.findall(r"delta_scan\('([^']+)'\)", query)):
        connection.register(f"delta_{number}", DeltaTable(path).to_pyarrow_dataset())
        query = query.replace(f"delta_scan('{path}')", f"delta_{number}", 1)
    assert connection.sql(query).fetchall(), f"{block}: the query found nothing"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
async def test_every_code_block_of_the_page_runs_as_written(
    page: Path, page_runner: Callable[[Path], Awaitable[list[str]]]
) -> None:
    ran = await page_runner(page)
    print("\n".join(ran))
    languages = {block.language for block in blocks(page)}
    assert not languages - {"", "sh", "python", "sql", "toml", "ini", "yaml"}, languages
    runs = [line for line in ran if "not run" not in line]
    if any(b.language or b.transcript for b in blocks(page)):
        assert runs, f"{page.name}: no block ran"
