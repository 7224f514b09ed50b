"""The Python API (issue 27): ``import extractor`` gives a function a command, against the
simulator; typed summaries returned, typed errors raised, nothing printed, no exit."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import extractor
from extractor.config import Credentials, ServiceConfig
from extractor.engine.summary import RunSummary, SyncSummary
from extractor.errors import AuthenticationFailed, InvalidOption, UsageError
from extractor.jobs.verify import Verification
from extractor.output.lock import LOCK_FILE, current_holder
from extractor.simulator.server import DEMO_APPLICATION_ID, DEMO_PASSWORD, DEMO_USERNAME
from tests.helpers import credentials_env
from tests.truth import assert_ledger_equals, assert_matches_truth, read_table

CREDS = Credentials(DEMO_APPLICATION_ID, DEMO_USERNAME, DEMO_PASSWORD)


def service(simulator: Any) -> dict[str, Any]:
    """The service keyword arguments, named as the flags."""
    return {"base_url": simulator.url, "max_requests_per_hour": 0}


def test_import_extractor_loads_nothing_heavy_until_a_function_is_used() -> None:
    code = (
        "import sys, extractor; heavy = {'pyarrow', 'deltalake', 'aiohttp'} & set(sys.modules);"
        "print(sorted(heavy)); extractor.sync; print('extractor.api' in sys.modules)"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.split("\n")[:2] == ["[]", "True"]
    assert extractor.errors.UsageError is UsageError and "sync" in extractor.__all__


async def test_each_function_runs_its_command_silently_and_returns_its_summary(
    start_simulator: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    simulator = await start_simulator(orders=60, seed=3)
    given = service(simulator) | {"credentials": CREDS}
    capsys.readouterr()

    # from a worker thread, as a web app or a task runner calls it, with a parser process
    # (which took Ctrl-C's handler, only the main thread's to set, and failed)
    found = await asyncio.to_thread(
        extractor.invoices, tmp_path / "inv", parse_workers=1, batch_size=25, **given
    )
    assert isinstance(found, RunSummary) and found.complete and found.fetched == 60
    assert_matches_truth(simulator, tmp_path / "inv")
    # provenance: where the records came from, whose they are, what wrote them
    assert (found.base_url, found.identity_id) == (simulator.url, None)
    assert found.extractor_version and found.extractor_version[0].isdigit()
    assert RunSummary.from_json(found.as_json()) == found

    first = simulator.ledger.lines[0].date.date().replace(day=1)  # a month with lines
    last = (first + dt.timedelta(days=31)).replace(day=1) - dt.timedelta(days=1)
    ledger = await asyncio.to_thread(
        extractor.transactions, tmp_path / "gl", date_from=first, date_to=last, **given
    )
    assert isinstance(ledger, RunSummary) and ledger.complete and ledger.fetched > 0
    params = {"DateStart": f"{first}T00:00:00", "DateEnd": f"{last}T23:59:59"}
    assert_ledger_equals(simulator, tmp_path / "gl", params)

    picture = await asyncio.to_thread(
        extractor.tables, tmp_path / "pic", tables=["accounts", "dimension_values"], **given
    )
    assert picture.lists is not None
    assert list(picture.lists) == ["accounts", "dimensions", "dimension_values"]
    accounts = {row["AccountId"] for row in read_table(tmp_path / "pic", "accounts")}
    assert accounts == {key[0] for key in simulator.table_truth("accounts")}

    lake = tmp_path / "lake"
    synced = await asyncio.to_thread(
        extractor.sync, lake, tables="invoices,accounts", parse_workers=0, **given
    )
    assert isinstance(synced, SyncSummary) and synced.complete
    assert set(synced.parts) == {"invoices", "lists"}
    checked = await asyncio.to_thread(extractor.verify, lake, **given)
    assert isinstance(checked, Verification) and checked.holds
    held = {check.name for check in checked.checks if not check.skipped}
    assert {"invoices", "transactions.AccountNo"} - held == {"transactions.AccountNo"}
    assert "invoices" in held  # the checks of the tables it holds; the others skipped

    orders = sorted(simulator.tenant.ids)[:2]
    updates = tmp_path / "fixes.csv"
    updates.write_text(
        "OrderId,InvoiceTitle\n" + "".join(f"{order},Rettet {order}\n" for order in orders)
    )
    outcome = await asyncio.to_thread(extractor.update_invoices, updates, **given)
    assert isinstance(outcome, extractor.UpdateOutcome)
    assert [row["OrderId"] for row in outcome.outcomes] == orders
    assert outcome.report.exists()
    out, err = capsys.readouterr()
    assert out == "" and err == "", "the API prints nothing unless given a log"


async def test_errors_are_raised_as_the_error_tree_before_any_request(
    start_simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator = await start_simulator(orders=10, seed=3)
    given = service(simulator)
    for name in ("TFSO_APPLICATION_ID", "TFSO_USERNAME", "TFSO_PASSWORD", "TFSO_IDENTITY_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UsageError, match="missing credentials"):
        await asyncio.to_thread(extractor.tables, tmp_path / "a", **given)
    wrong = Credentials(DEMO_APPLICATION_ID, DEMO_USERNAME, "not the password")
    with pytest.raises(AuthenticationFailed, match="login refused") as refused:
        await asyncio.to_thread(extractor.tables, tmp_path / "b", credentials=wrong, **given)
    assert isinstance(refused.value, extractor.errors.Permanent)  # a scheduler does not retry
    with pytest.raises(InvalidOption, match="concurrency"):
        extractor.sync(tmp_path / "c", concurrency=0, credentials=CREDS, **given)
    with pytest.raises(UsageError, match="'acounts' is not a table"):
        extractor.tables(tmp_path / "d", tables="acounts", credentials=CREDS, **given)
    with pytest.raises(UsageError, match="invoices have their own commands"):
        extractor.tables(tmp_path / "e", tables="invoices,accounts", credentials=CREDS, **given)
    when = dt.datetime(2024, 1, 1)
    with pytest.raises(InvalidOption, match="changed_after or registered_after, not both"):
        await asyncio.to_thread(
            extractor.invoices, tmp_path / "h", changed_after=when, registered_after=when,
            credentials=CREDS, **given,
        )  # fmt: skip
    with pytest.raises(TypeError):
        extractor.invoices(tmp_path / "f", no_such_flag=1, credentials=CREDS)
    assert simulator.stats["requests"] == 1, "only the refused login reached the service"
    with pytest.raises(UsageError, match="run their own event loop"):
        extractor.invoices(tmp_path / "g", credentials=CREDS, **given)  # inside this test's loop


async def test_one_identity_is_looked_up_and_run_alone_and_several_as_a_fleet(
    start_simulator: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    simulator = await start_simulator(orders=10, seed=3, identities=2)
    first, second = (company.identity_id for company in simulator.companies)
    config = ServiceConfig(base_url=simulator.url, max_requests_per_hour=0)
    given = {"service": config, "credentials": CREDS, "tables": "currencies"}
    capsys.readouterr()
    listed = await asyncio.to_thread(extractor.identities, service=config, credentials=CREDS)
    assert [identity.id for identity in listed] == [first, second]

    alone = await asyncio.to_thread(extractor.tables, tmp_path / "one", identity=first, **given)
    assert isinstance(alone, RunSummary) and alone.complete and alone.identity_id == first
    assert alone.summary_file == tmp_path / "one" / "_runs" / f"{alone.run_id}.json"
    assert alone.summary_file.is_file()

    fleet = await asyncio.to_thread(
        extractor.tables, tmp_path / "all", identity="all", workers=1, **given
    )
    assert isinstance(fleet, extractor.FleetSummary) and fleet.complete
    assert sorted(entry["identity_id"] for entry in fleet.identities) == sorted([first, second])
    assert fleet.as_json()["command"] == "tables" and Path(fleet.summary_file).is_file()
    assert capsys.readouterr() == ("", ""), "a fleet prints nothing unless given a log"


async def test_what_a_fleet_or_a_call_cannot_do_is_refused_before_any_request(
    start_simulator: Any, tmp_path: Path
) -> None:
    simulator = await start_simulator(orders=10, seed=3)
    config = ServiceConfig(base_url=simulator.url, max_requests_per_hour=0)
    given = {"service": config, "credentials": CREDS}
    with pytest.raises(UsageError, match="exclude_identity leaves identities out of identity all"):
        extractor.tables(tmp_path / "a", exclude_identity=[str(uuid.uuid4())], **given)
    with pytest.raises(UsageError, match="cannot all reach the local path"):
        extractor.tables(tmp_path / "b", identity="all", scheduler="tcp://10.0.0.1:8786", **given)
    with pytest.raises(TypeError, match="service= or its settings"):
        extractor.tables(tmp_path / "c", base_url=simulator.url, **given)
    with pytest.raises(TypeError, match="'workres'"):
        extractor.sync(tmp_path / "d", workres=2, **given)  # type: ignore[call-arg]
    updates = tmp_path / "fixes.csv"
    updates.write_text("OrderId,InvoiceTitle\n1,Rettet\n2,Rettet\n")
    dry = extractor.update_invoices(updates, dry_run=True, **given)
    assert [update["OrderId"] for update in dry.updates] == [1, 2]
    assert dry.outcomes == [] and not dry.report.exists()
    assert simulator.stats["requests"] == 0


def test_handle_signals_stops_a_run_cleanly_and_raises_interrupted(tmp_path: Path) -> None:
    """SIGTERM during a run (here: a service that never answers) cancels it; the output's
    lock is released and the call raises Interrupted, as the CLI does (exit 143)."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("only the main thread receives signals")
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    silent.settimeout(60)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    held: list[socket.socket] = []

    def stop_once_it_asks() -> None:
        """SIGTERM when the run's first request connects: its handlers are in place by then
        (a signal sent after a fixed sleep could come first, on a loaded machine)."""
        with contextlib.suppress(OSError):
            held.append(silent.accept()[0])
            os.kill(os.getpid(), signal.SIGTERM)

    timer = threading.Thread(target=stop_once_it_asks, daemon=True)
    timer.start()
    try:
        with pytest.raises(extractor.Interrupted) as stopped:
            extractor.tables(
                tmp_path / "out", tables="currencies", credentials=CREDS, base_url=url,
                max_requests_per_hour=0, timeout=30, handle_signals=True,
            )  # fmt: skip
    finally:
        silent.close()
        for connection in held:
            connection.close()
    assert stopped.value.signum == signal.SIGTERM
    assert current_holder(tmp_path / "out") is None, "the output's lock was released"
    assert (tmp_path / "out" / LOCK_FILE).read_bytes() == b"", "its holder wiped on release"


async def test_a_script_without_a_main_guard_runs_once(
    start_simulator: Any, tmp_path: Path
) -> None:
    """A parser process does not import the caller's script: without an ``if __name__ ==
    "__main__":`` guard it ran again in every parser, which died there, and the run hung."""
    simulator = await start_simulator(orders=60)
    script = tmp_path / "nightly.py"
    script.write_text(
        "import extractor\n"
        "print('start', flush=True)\n"
        f"done = extractor.invoices({str(tmp_path / 'out')!r}, parse_workers=1,"
        f" base_url={simulator.url!r}, max_requests_per_hour=0)\n"
        "print(done.fetched)\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, **credentials_env()},
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), 120)
    finally:
        if process.returncode is None:  # hung: it and its parsers go with the test
            process.kill()
            await process.wait()
    assert (process.returncode, out.decode().split()) == (0, ["start", "60"]), err.decode()
