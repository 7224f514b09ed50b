"""``extractor check`` (issue 14): one cheap call of each kind, one line a step, exit 0/1."""

from __future__ import annotations

from typing import Any

from extractor.simulator.faults import FaultConfig
from extractor.simulator.server import Simulator
from tests.helpers import DEMO_ENV, closed_port
from tests.hostile import HostileServer, answer


async def test_check_passes_against_the_simulator(start_simulator: Any, cli_beside: Any) -> None:
    simulator: Simulator = await start_simulator(
        orders=200, identities=2, faults=FaultConfig(budget=500)
    )
    code, out, err = await cli_beside("check", "--base-url", simulator.url, env=DEMO_ENV)
    assert (code, err) == (0, ""), out
    lines = out.splitlines()
    assert [line.split(":")[0].split()[-1] for line in lines[1:-1]] == [
        "Login", "HasSession", "GetIdentities", "GetOrderSyncList", "GetInvoices",
        "GetTransactions", "budget",
    ]  # fmt: skip
    assert all(line.startswith("  ok ") for line in lines[1:-1])
    first = simulator.tenant.ids[0]
    assert f"order {first}: 1 invoice" in out
    assert "2 identities (0 disabled)" in out and "requests left until" in out
    assert lines[-1] == "check passed: 7 calls"
    assert simulator.stats["GetInvoices"] == 1 and simulator.stats["GetTransactions"] == 1
    assert DEMO_ENV["TFSO_PASSWORD"] not in out


async def test_check_fails_in_one_line_at_the_first_step_that_fails(
    start_simulator: Any, cli_beside: Any
) -> None:
    simulator: Simulator = await start_simulator(orders=50)
    wrong = DEMO_ENV | {"TFSO_PASSWORD": "not-the-password"}
    closed = f"http://127.0.0.1:{closed_port()}"
    async with HostileServer(simulator.url) as server:
        server.on(
            "Login", answer(200, b"<html><body>Welcome</body></html>", content_type="text/html")
        )
        for url, env, expected, status in (
            (simulator.url, wrong, "login refused", 4),  # running again will not mend these
            (closed, DEMO_ENV, "cannot reach", 1),
            (server.url, DEMO_ENV, "Login", 4),
        ):
            code, out, err = await cli_beside("check", "--base-url", url, env=env)
            assert code == status and err == "", (url, out, err)
            failing = [line for line in out.splitlines() if line.startswith("  FAIL")]
            assert len(failing) == 1 and out.splitlines()[-1] == failing[0]
            assert failing[0].startswith("  FAIL  Login: ") and expected in failing[0]
            assert "not-the-password" not in out
