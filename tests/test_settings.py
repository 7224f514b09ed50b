"""Settings in a file and in ``EXTRACTOR_*`` variables (issue 14): a flag beats a variable
beats the file; credentials stay out of the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from extractor.simulator.server import Simulator
from tests.helpers import DEMO_ENV, closed_port, one_line


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "extractor.toml"
    path.write_text(text)
    return path


def checked_url(out: str) -> str:
    """The base URL ``check`` says it checks (its first line)."""
    first = out.splitlines()[0]
    assert first.startswith("check of "), out
    return first.removeprefix("check of ")


async def test_a_flag_beats_a_variable_beats_the_file(
    start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    simulator: Simulator = await start_simulator(orders=40)
    in_file, in_env = f"http://127.0.0.1:{closed_port()}", f"http://127.0.0.1:{closed_port()}"
    path = config(tmp_path, f'base-url = "{in_file}"\n[check]\ntimeout = 5\n')
    env = DEMO_ENV | {"EXTRACTOR_BASE_URL": in_env}
    code, out, _ = await cli_beside(
        "check", "--config", str(path), "--base-url", simulator.url, env=env
    )
    assert (code, checked_url(out)) == (0, simulator.url)
    code, out, _ = await cli_beside("check", "--config", str(path), env=env)
    assert (code, checked_url(out)) == (1, in_env)
    code, out, _ = await cli_beside("check", env=DEMO_ENV | {"EXTRACTOR_CONFIG": str(path)})
    assert (code, checked_url(out)) == (1, in_file)
    # a command's own section beats the top level
    path.write_text(f'base-url = "{in_file}"\n[check]\nbase_url = "{simulator.url}"\n')
    code, out, _ = await cli_beside("check", "--config", str(path), env=DEMO_ENV)
    assert (code, checked_url(out)) == (0, simulator.url)


async def test_the_file_names_the_variables_that_hold_the_credentials(
    start_simulator: Any, cli_beside: Any, tmp_path: Path
) -> None:
    simulator: Simulator = await start_simulator(orders=40)
    path = config(
        tmp_path,
        f'base-url = "{simulator.url}"\n[credentials]\npassword-variable = "ACME_TFSO_PW"\n',
    )
    env = {k: v for k, v in DEMO_ENV.items() if k != "TFSO_PASSWORD"}
    code, out, err = await cli_beside(
        "check", "--config", str(path), env=env | {"ACME_TFSO_PW": DEMO_ENV["TFSO_PASSWORD"]}
    )
    assert code == 0, out + err
    code, _, err = await cli_beside("check", "--config", str(path), env=DEMO_ENV)
    assert code == 2 and "set ACME_TFSO_PW in the environment" in one_line(err)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('password = "simulator-demo"', "credentials do not go in a config file"),
        ('[credentials]\npassword = "simulator-demo"', "only names the variables"),
        ('[credentials]\npassword-variable = "simulator-demo"', "is not the name of an"),
        ('[check]\nTFSO_PASSWORD = "simulator-demo"', "credentials do not go in a config file"),
        ("concurency = 4", "'concurency' is no option of any command"),
        ("[invoices]\nyes = true", "'yes' is no option of invoices"),
        ("[backfill]\nout = 'x'", "[backfill] is no command"),
        ("concurrency = 'many'", "concurrency = 'many': 'many' is not a valid integer"),
        ("timeout = true", "timeout = True: give a value for --timeout"),
        ("[invoices]\ninsecure = 'yes'", "insecure = 'yes': give true or false"),
        ("concurrency = 500", "500 is not in the range"),
        ("concurrency = ", "is not TOML"),
    ],
)
def test_a_bad_file_is_one_line_before_anything_runs(
    cli: Any, tmp_path: Path, text: str, expected: str
) -> None:
    path = config(tmp_path, text + "\n")
    code, out, err = cli("check", "--config", str(path), env=DEMO_ENV)
    line = one_line(err)
    assert code == 2 and out == "" and expected in line and str(path) in line, line
    assert "simulator-demo" not in err


def test_a_missing_file_is_named(cli: Any, tmp_path: Path) -> None:
    code, _, err = cli("properties", "--config", str(tmp_path / "nope.toml"))
    assert code == 2 and "nope.toml does not exist" in one_line(err)


def test_variables_set_every_option_and_are_checked_like_flags(cli: Any, tmp_path: Path) -> None:
    code, _, err = cli(
        "invoices", "--out", str(tmp_path / "o"), env=DEMO_ENV | {"EXTRACTOR_CONCURRENCY": "0"}
    )
    assert code == 2 and "--concurrency" in one_line(err) and "0 is not in the range" in err
    settings = {"EXTRACTOR_OUT": str(tmp_path / "o"), "EXTRACTOR_CHANGED_AFTER": "soon"}
    code, _, err = cli("invoices", env=DEMO_ENV | settings)
    assert code == 2 and "'soon' is not a date" in one_line(err)


def test_the_file_sets_the_log_format_even_for_a_usage_error(cli: Any, tmp_path: Path) -> None:
    import orjson

    path = config(tmp_path, '[invoices]\nlog-format = "json"\n')
    code, _, err = cli("invoices", "--config", str(path), "--concurrency", "0", env=DEMO_ENV)
    said = orjson.loads(one_line(err))
    assert code == 2 and said["event"] == "usage_error" and "--concurrency" in said["message"]
    # also when --config comes before the command
    code, _, err = cli("--config", str(path), "invoices", "--concurrency", "0", env=DEMO_ENV)
    assert code == 2 and orjson.loads(one_line(err))["event"] == "usage_error"
    # a flag still beats it
    code, _, err = cli(
        "invoices", "--config", str(path), "--log-format", "text", "--concurrency", "0",
        env=DEMO_ENV,
    )  # fmt: skip
    assert code == 2 and not one_line(err).startswith("{")


@pytest.mark.parametrize(
    ("args", "env", "json"),
    [
        (["--log-format", "json", "invoices"], {}, True),
        (["--log-format", "json", "invoices", "--log-format", "text"], {}, False),
        (["--log-format", "text", "invoices"], {"EXTRACTOR_LOG_FORMAT": "json"}, False),
        (["invoices"], {"EXTRACTOR_LOG_FORMAT": "json"}, True),
        (["-q", "invoices"], {}, False),
    ],
)
def test_the_log_flags_may_come_before_the_command(
    cli: Any, tmp_path: Path, args: list[str], env: dict[str, str], json: bool
) -> None:
    code, _, err = cli(
        *args, "--out", str(tmp_path / "o"), "--concurrency", "0", env=DEMO_ENV | env
    )
    line = one_line(err)
    assert code == 2 and line.startswith("{") == json and "--concurrency" in line


def test_a_log_flag_before_the_command_beats_a_variable_once_the_command_runs(
    cli: Any, tmp_path: Path
) -> None:
    # the error comes from the command's body, after the log was set from its flags
    code, _, err = cli(
        "--log-format", "json", "invoices", "--out", str(tmp_path / "o"),
        "--changed-after", "soon", env=DEMO_ENV | {"EXTRACTOR_LOG_FORMAT": "text"},
    )  # fmt: skip
    line = one_line(err)
    assert code == 2 and line.startswith("{") and "'soon' is not a date" in line
