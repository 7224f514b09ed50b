"""What a server nobody here wrote may do, and what the extractor must do about it (issue 10).

Each test puts :class:`tests.hostile.HostileServer` between the client and a simulator and
asserts the dataset against the ground truth, or the exact error.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from extractor import soap
from extractor.config import InvoiceJob
from extractor.errors import Redirected
from extractor.pipeline import run_invoices
from extractor.simulator.server import Simulator
from tests.conftest import CREDS, no_sleep
from tests.hostile import HostileServer, answer


async def backfill(url: str, out: Path, **options: Any) -> dict[str, Any]:
    job = InvoiceJob(
        out=out, base_url=url, **{"max_requests_per_hour": 0, "parse_workers": 0, **options}
    )
    return await run_invoices(job, CREDS, stream=io.StringIO(), sleep=no_sleep)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("operation", ["Login", "GetInvoices"])
async def test_a_redirect_is_never_followed(
    simulator: Simulator, tmp_path: Path, status: int, operation: str
) -> None:
    async with HostileServer(simulator.url) as elsewhere, HostileServer(simulator.url) as server:
        location = {"Location": elsewhere.url + soap.AUTH_PATH}
        server.on(operation, answer(status, headers=location))
        host = elsewhere.url.removeprefix("http://")
        with pytest.raises(Redirected, match=f"HTTP {status}, redirecting to {host}"):
            await backfill(server.url, tmp_path)
        assert sum(elsewhere.seen.values()) == 0  # nothing, the password least of all, went there
