"""Bad input through the real CLI: one clear line, a non-zero exit, no traceback, no secret."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from extractor.simulator.server import DEMO_APPLICATION_ID, DEMO_USERNAME, Simulator
from tests.conftest import CliResult, read_table
from tests.helpers import DEMO_ENV, extractor

SECRET = f"pw-{uuid.uuid4().hex}"


def env_for(password: str = SECRET) -> dict[str, str]:
    return {
        "TFSO_APPLICATION_ID": DEMO_APPLICATION_ID,
        "TFSO_USERNAME": DEMO_USERNAME,
        "TFSO_PASSWORD": password,
    }


def assert_one_clear_line(code: int, out: str, err: str, expected: str, status: int = 2) -> None:
    assert code == status, err
    assert "Traceback" not in out + err
    assert SECRET not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert expected in lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--batch-size", "0"], "--batch-size 0 is outside 1..1000"),
        (["--batch-size", "1001"], "--batch-size 1001 is outside 1..1000"),
        (["--changed-after", "2024-13-45"], "--changed-after: '2024-13-45' is not a date"),
        (["--registered-after", "yesterday"], "--registered-after: 'yesterday' is not a date"),
        (["--invoice-properties", "OrderId,Colour"], "unknown InvoiceOrder property 'Colour'"),
        (["--row-properties", "Price,Flavour"], "unknown InvoiceRow property 'Flavour'"),
        (["--soap-version", "1.3"], "Invalid value for '--soap-version'"),
        (["--concurrency", "zero"], "Invalid value for '--concurrency'"),
    ],
)
def test_bad_flags(
    cli: Callable[..., CliResult], tmp_path: Path, args: list[str], expected: str
) -> None:
    result = cli(
        "invoices",
        "--out",
        str(tmp_path / "o"),
        "--base-url",
        "http://127.0.0.1:1",
        *args,
        env=env_for(),
    )
    assert_one_clear_line(*result, expected)
    assert not (tmp_path / "o").exists()


def test_missing_credentials(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    result = cli("invoices", "--out", str(tmp_path), env={"TFSO_USERNAME": "x"})
    assert_one_clear_line(*result, "set TFSO_APPLICATION_ID, TFSO_PASSWORD in the environment")


def test_malformed_application_id(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    env = {**env_for(), "TFSO_APPLICATION_ID": "not-a-guid"}
    result = cli("invoices", "--out", str(tmp_path), env=env)
    assert_one_clear_line(*result, "TFSO_APPLICATION_ID is not a guid")


def test_output_path_is_a_file(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    result = cli("invoices", "--out", str(target), env=env_for())
    assert_one_clear_line(*result, "is a file")


def test_unreachable_base_url(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    result = cli(
        "invoices", "--out", str(tmp_path), "--base-url", "http://127.0.0.1:1", env=env_for()
    )
    assert_one_clear_line(*result, "cannot reach http://127.0.0.1:1", status=1)  # an outage
    assert not (tmp_path / "_journal").exists()  # nothing began: nothing to resume


async def test_wrong_credentials(simulator: Simulator, cli_beside: Any, tmp_path: Path) -> None:
    result = await cli_beside(
        "invoices", "--out", str(tmp_path / "o"), "--base-url", simulator.url, env=env_for(SECRET)
    )
    assert_one_clear_line(*result, "login refused", status=4)  # permanent: not retried
    assert simulator.stats["Login"] == 1 and simulator.stats["GetOrderSyncList"] == 0


async def test_real_run_prints_no_secret_and_writes_summary(
    start_simulator: object, tmp_path: Path
) -> None:
    from extractor.simulator.server import SimulatorConfig

    simulator = Simulator(SimulatorConfig(orders=300, password=SECRET))
    await simulator.start()
    try:
        code, out, err = await extractor(
            "invoices",
            "--out",
            str(tmp_path),
            "--base-url",
            simulator.url,
            "--batch-size",
            "100",
            env=env_for(),
        )
    finally:
        await simulator.stop()
    assert code == 0, err
    assert "invoices      300 (of 300 ids listed)" in out
    assert SECRET not in out + err
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert len(read_table(tmp_path, "invoices")) == 300
    summaries = list((tmp_path / "_runs").glob("*.json"))
    assert len(summaries) == 1
    import orjson

    summary = orjson.loads(summaries[0].read_bytes())
    assert (
        summary["invoices"] == 300 and summary["status"] == "complete" and summary["requests"] == 4
    )


async def test_a_finished_run_is_not_redone_and_another_job_is_refused(
    start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    from extractor.simulator.server import DEMO_PASSWORD

    simulator = await start_simulator(orders=300)
    env = env_for(DEMO_PASSWORD)
    # in this process (a thread cannot start parser processes): what is refused or skipped
    # is decided before any parsing
    args = ("invoices", "--out", str(tmp_path), "--base-url", simulator.url)
    first = await cli_beside(*args, "--parse-workers", "0", env=env)
    assert first[0] == 0, first[2]
    served = simulator.stats["requests"]
    code, out, err = await cli_beside(*args, "--parse-workers", "0", env=env)
    assert code == 0 and "already finished this job (complete); nothing to do" in err
    assert simulator.stats["requests"] == served  # not even a Login
    # said as nothing done, not the old run's figures again as if it had just worked
    assert out.startswith("nothing to do: run ") and "invoices/s" not in out
    assert len(out.strip().splitlines()) == 1
    code, _, err = await cli_beside(
        *args, "--parse-workers", "0", "--changed-after", "2024-01-01", env=env
    )
    assert code == 2 and "already holds a dataset of another job" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = await cli_beside(*args, "--parse-workers", "0", "--resume", env=env)
    assert code == 2 and "holds no unfinished run" in err


def test_help_lists_every_subcommand(cli: Callable[..., CliResult]) -> None:
    code, out, _ = cli("--help")
    assert code == 0
    for command in ("invoices", "simulate", "demo"):
        assert command in out


async def test_a_partial_run_with_faults_prints_and_writes_no_secret(tmp_path: Path) -> None:
    from extractor.simulator.faults import FaultConfig
    from extractor.simulator.server import SimulatorConfig

    probe = Simulator(SimulatorConfig(orders=200))
    poison = frozenset({probe.tenant.ids[17]})
    # seed 3: its faults are four or more requests apart, so that no batch meets several in
    # a row and waits out the longer, real back-off of a third or fourth attempt
    faults = FaultConfig(rate=0.2, kinds=("http500", "timeout-fault"), poison_ids=poison, seed=3)
    simulator = Simulator(SimulatorConfig(orders=200, password=SECRET, faults=faults))
    await simulator.start()
    try:
        code, out, err = await extractor(
            "invoices", "--out", str(tmp_path), "--base-url", simulator.url,
            "--batch-size", "50", "--max-requests-per-hour", "0", env=env_for(),
        )  # fmt: skip
    finally:
        await simulator.stop()
    assert code == 3, err
    assert simulator.stats["fault:http500"] and simulator.stats["fault:timeout-fault"]
    assert "failed ids 1" in out and "run was partial" in err
    failures = list((tmp_path / "_failures").glob("*.jsonl"))
    assert len(failures) == 1 and str(next(iter(poison))).encode() in failures[0].read_bytes()
    assert SECRET not in out + err
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name.endswith(".journal.jsonl") for path in files)
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sync", "--out", "ftp://host/lake"], "use a local path or s3://bucket/prefix"),
        (["sync", "--out", "{o}", "--since", "long ago"], "--since: 'long ago' is not a day"),
        (["sync", "--out", "{o}", "--overlap", "-1"], "Invalid value for '--overlap'"),
        (
            ["sync", "--out", "s3://bucket/lake", "--endpoint-url", "bucket.example"],
            "expected http(s)://host[:port]",
        ),
        (
            ["invoices", "--out", "{o}", "--format", "delta", "--row-properties", "Price"],
            "--format delta keeps whole records",
        ),
        (["invoices", "--out", "{o}", "--work-dir", "{o}"], "--work-dir is for s3://"),
        (
            ["transactions", "--out", "{o}", "--from", "2024-02-01", "--to", "2024-01-01"],
            "--to 2024-01-01 is before --from 2024-02-01",
        ),
        (
            [
                "transactions",
                "--out",
                "{o}",
                "--from",
                "2024-01-01",
                "--to",
                "2024-01-31",
                "--system-type",
                "Pay-me",
            ],
            "--system-type 'Pay-me' is not a SystemType name",
        ),
        (["invoices", "--out", "{o}", "--resume"], "--resume: --out {o} holds no unfinished run"),
        (
            ["transactions", "--out", "{o}", "--from", "2024-01-01", "--format", "csv"],
            "Invalid value for '--format'",
        ),
    ],
)
def test_bad_lake_flags(
    cli: Callable[..., CliResult], tmp_path: Path, args: list[str], expected: str
) -> None:
    out = str(tmp_path / "o")
    command = [arg.replace("{o}", out) for arg in args]
    result = cli(*command, "--base-url", "http://127.0.0.1:1", env=env_for())
    assert_one_clear_line(*result, expected.replace("{o}", out))
    assert not (tmp_path / "o").exists()


def test_bare_extractor_prints_its_help_with_the_variables_and_exit_statuses(
    cli: Callable[..., CliResult],
) -> None:
    code, out, err = cli()
    assert (code, err) == (0, "")
    assert out.startswith("Usage: extractor")
    said = " ".join(out.split())  # as read, whatever the terminal's width wrapped
    for named in ("TFSO_APPLICATION_ID", "TFSO_PASSWORD", "3 partial", "4 failed for good",
                  "130 Ctrl-C", "143"):  # fmt: skip
        assert named in said


def test_properties_lists_every_wsdl_property_and_each_is_accepted(
    cli: Callable[..., CliResult],
) -> None:
    import orjson

    from extractor import schema
    from extractor.records.orders import Selection

    code, out, err = cli("properties", "--json")
    assert (code, err) == (0, "")
    rows = [orjson.loads(line) for line in out.splitlines()]
    invoice = [r["name"] for r in rows if r["flag"] == "--invoice-properties"]
    row = [r["name"] for r in rows if r["flag"] == "--row-properties"]
    assert invoice == list(schema.invoice_order().names)
    assert row == list(schema.invoice_row().names)
    Selection.checked(invoice, row)  # every name listed is one the commands take
    typed = {r["name"]: r["parquet_type"] for r in rows if r["flag"] == "--invoice-properties"}
    assert typed["DateOrdered"] == "timestamp[us, tz=UTC]" and typed["OrderId"] == "int32"
    assert {r["name"] for r in rows if r["always_fetched"]} == {
        "OrderId",
        "DateOrdered",
        "APIException",
    }
    code, text, _ = cli("properties")
    assert code == 0 and "InvoiceRow (--row-properties):" in text
    assert len(text.splitlines()) == len(rows) + 2


async def test_json_puts_the_summary_on_stdout_for_schedulers(
    start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    import orjson

    simulator = await start_simulator(orders=60)
    code, out, err = await cli_beside(
        "invoices", "--base-url", simulator.url, "--out", str(tmp_path), "--json",
        "--max-requests-per-hour", "0", "--parse-workers", "0", env=DEMO_ENV,
    )  # fmt: skip
    assert code == 0, err
    summary = orjson.loads(out)  # the whole of stdout is one JSON document
    assert (summary["status"], summary["invoices"]) == ("complete", 60)
    saved = orjson.loads((tmp_path / "_runs" / f"{summary['run_id']}.json").read_bytes())
    assert summary == saved


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        (["invoices", "--out", ""], [], "--out is empty"),
        (["sync", "--out", "  "], [], "--out is empty"),
        (["invoices", "--out", "/"], [], "--out / is the root directory"),
        (["transactions", "--out", "/"], ["--from", "2024-01-01", "--to", "2024-01-31"], "root"),
        (["invoices", "--out", "{tmp}/o"], ["--base-url", "127.0.0.1:9"], "must be http://"),
        (["sync", "--out", "{tmp}/o"], ["--base-url", "http://"], "and a host"),
        (["invoices", "--out", "{tmp}/o"], ["--timeout", "inf"], "--timeout inf must be a finite"),
        (["invoices", "--out", "{tmp}/o"], ["--timeout", "nan"], "--timeout nan must be a finite"),
        (["sync", "--out", "{tmp}/o"], ["--max-pause", "nan"], "--max-pause nan must be a finite"),
        (
            ["transactions", "--out", "{tmp}/o"],
            ["--from", "2024-01-01T10:00", "--to", "2024-01-31"],
            "--from: '2024-01-01T10:00' is not a day",
        ),
        (["sync", "--out", "{tmp}/o"], ["--since", "2024-01-01 00:00"], "--since: '2024-01-01"),
    ],
)
def test_bad_targets_and_values_create_nothing(
    cli: Callable[..., CliResult],
    tmp_path: Path,
    command: list[str],
    args: list[str],
    expected: str,
) -> None:
    command = [part.replace("{tmp}", str(tmp_path)) for part in command]
    result = cli(*command, *args, env=env_for())
    assert_one_clear_line(*result, expected)
    assert "Unclosed" not in result[2]
    assert not list(tmp_path.iterdir()), "nothing is created"
    assert not Path("/_extractor.lock").exists()


@pytest.mark.parametrize("command", ["invoices", "sync"])
def test_a_directory_of_other_files_is_refused(
    cli: Callable[..., CliResult], tmp_path: Path, command: str
) -> None:
    for name in ("notes.txt", "thesis.tex", "photos", "zz"):
        (tmp_path / name).touch()
    result = cli(command, "--out", str(tmp_path), "--base-url", "http://127.0.0.1:1", env=env_for())
    assert_one_clear_line(*result, "holds other files (notes.txt, photos, thesis.tex, ...)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "photos", "thesis.tex", "zz"]


@pytest.mark.parametrize("kind", ["device", "fifo", "directory", "huge"])
def test_a_config_that_is_no_file_is_refused_without_reading_it(
    cli: Callable[..., CliResult], tmp_path: Path, kind: str
) -> None:
    path = {"device": Path("/dev/zero"), "fifo": tmp_path / "fifo", "directory": tmp_path}[
        kind
    ] if kind != "huge" else tmp_path / "huge.toml"  # fmt: skip
    if kind == "fifo":
        os.mkfifo(path)  # opening it to read would block until a writer comes
    if kind == "huge":
        path.write_bytes(b"#" * (2 * 1024 * 1024))
    result = cli("--config", str(path), "invoices", "--out", str(tmp_path / "o"), env=env_for())
    expected = "is over 1,048,576 bytes" if kind == "huge" else "is not a regular file"
    assert_one_clear_line(*result, f"--config: {path} {expected}")


def test_status_says_a_damaged_summary_is_damaged(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    runs = tmp_path / "_runs"
    runs.mkdir()
    (runs / "20260101T000000Z-aaaaaa.json").write_bytes(b'{"run_id": "20260101T000000Z-aaaaaa"}')
    (runs / "20260102T000000Z-bbbbbb.json").write_bytes(b'["not", "a", "summary"]')
    (runs / "20260103T000000Z-cccccc.json").write_bytes(
        b'{"run_id": "r3", "status": "complete", "job": {"x": 1}, "records": "invoices", '
        b'"units": "ids", "failed_ids": "many"}'
    )
    code, out, err = cli("status", str(tmp_path))
    assert code == 0, err
    assert "Traceback" not in out + err
    lines = [line.strip() for line in out.splitlines()]
    assert "20260101T000000Z-aaaaaa  damaged" in lines and "r3  damaged" in lines
    assert (
        lines.count("its summary in _runs/ is damaged (missing 'records'); it is left as it is")
        == 1
    )
    code, out, _ = cli("status", str(tmp_path), "--json")
    assert code == 0
    (place,) = orjson.loads(out)["places"]
    assert sorted(run["status"] for run in place["runs"]) == ["damaged", "damaged"]


#: What the engine imports; a command that moves no data imports none of it (issue 28:
#: ``extractor --help`` starts in about 0.1 s instead of 0.6 s, and so do parser processes).
ENGINE = ("pyarrow", "pandas", "aiohttp", "deltalake", "distributed", "boto3", "duckdb")
_IMPORTED_AFTER = """
import sys
from extractor.cli.main import entry
for args in sys.argv[1:]:
    entry(args.split())
    print(args, sorted(name for name in ENGINE if name in sys.modules), file=sys.stderr)
"""


def test_help_and_version_import_nothing_of_the_engine() -> None:
    import subprocess
    import sys

    commands = ["--help", "--version", "invoices --help", "sync --help", "check --help"]
    script = f"ENGINE = {ENGINE!r}\n{_IMPORTED_AFTER}"
    found = subprocess.run(
        [sys.executable, "-c", script, *commands], capture_output=True, text=True, check=True
    )
    assert found.stderr.splitlines() == [f"{args} []" for args in commands]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--work-dir", "/"], "--work-dir / is the root directory"),
        (["--work-dir", ""], "Invalid value for '--work-dir': is empty"),
        (["--work-dir", "{tmp}/afile"], "is a file; give a directory"),
        (["--overlap", "nan"], "Invalid value for '--overlap': nan is not a number of minutes"),
        (["--overlap", "inf"], "Invalid value for '--overlap': inf is not a number of minutes"),
        (["--overlap", "1e12"], "is not a number of minutes from 0 to ten years"),
    ],
)
def test_bad_sync_values_create_nothing(
    cli: Callable[..., CliResult], tmp_path: Path, args: list[str], expected: str
) -> None:
    (tmp_path / "afile").write_text("x")
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    out = str(tmp_path / "lake")
    result = cli("sync", "--out", out, "--base-url", "http://127.0.0.1:1", *args, env=env_for())
    assert_one_clear_line(*result, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"], "nothing is created"
    assert not Path("/_work").exists() and not Path("/_extractor.lock").exists()


@pytest.mark.parametrize("command", [["sync"], ["invoices", "--format", "delta"]])
def test_delta_tables_into_a_parquet_dataset_are_refused(
    cli: Callable[..., CliResult], tmp_path: Path, command: list[str]
) -> None:
    part = tmp_path / "invoices" / "order_month=2024-01" / "part-x.parquet"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"PAR1")
    (tmp_path / "_runs").mkdir()
    result = cli(
        *command, "--out", str(tmp_path), "--base-url", "http://127.0.0.1:1", env=env_for()
    )
    assert_one_clear_line(*result, "holds plain Parquet tables (invoices/)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_runs", "invoices"]
    assert [p.name for p in part.parent.iterdir()] == ["part-x.parquet"]


def test_status_counts_an_unfinished_ledger_run_in_windows(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    from extractor.engine.journal import Journal

    journal = Journal.open(tmp_path, "20260101T000000Z-abcdef", {"command": "transactions"})
    windows = [[f"2024-{month:02d}-01", f"2024-{month:02d}-28", None] for month in range(1, 13)]
    journal.append({"event": "plan", "windows": windows, "as_of": "2026-01-01T00:00:00+00:00"})
    journal.close()
    code, out, err = cli("status", str(tmp_path), "--json")
    assert code == 0, err
    (place,) = orjson.loads(out)["places"]
    assert (place["unfinished"]["command"], place["unfinished"]["planned"]) == ("transactions", 12)


def test_a_changed_after_in_the_future_is_warned_of(cli: Any, tmp_path: Path) -> None:
    code, _, err = cli(
        "invoices", "--out", str(tmp_path / "o"), "--changed-after", "2999-01-01",
        "--base-url", "http://127.0.0.1:1", "--timeout", "0.5", env=env_for(),
    )  # fmt: skip
    assert "--changed-after 2999-01-01T00:00:00 is in the future" in err
    assert code != 0  # and then the unreachable service, said as usual


def test_a_fleet_s_settings_are_refused_once_before_any_request(cli: Any, tmp_path: Path) -> None:
    # the job's own checks, shared by the CLI and the API, run before a fleet lists identities
    code, _, err = cli(
        "invoices", "--out", str(tmp_path / "o"), "--identity", "all", "--changed-after",
        "2024-01-01", "--registered-after", "2024-01-01", "--base-url", "http://127.0.0.1:1",
        env=env_for(),
    )  # fmt: skip
    assert code == 2 and "give --changed-after or --registered-after, not both" in err
    assert len(err.strip().splitlines()) == 1
