"""Where a fleet runs (issue 13): an embedded LocalCluster on 127.0.0.1, or a scheduler."""

from __future__ import annotations

import os

import pytest

from extractor.errors import FatalError, InvalidOption
from extractor.fleet.cluster import cluster, scheduler_address


def _where(_: int) -> tuple[int, str]:
    return os.getpid(), os.environ.get("NO_SUCH_VARIABLE", "")


def test_the_embedded_cluster_runs_tasks_in_worker_processes_on_loopback() -> None:
    with cluster(None, workers=2, per_worker=3) as client:
        info = client.scheduler_info()
        assert len(info["workers"]) == 2
        assert all(address.startswith("tcp://127.0.0.1:") for address in info["workers"])
        assert all(worker["nthreads"] == 3 for worker in info["workers"].values())
        # the scheduler's HTTP server too: on loopback, on a free port (never 0.0.0.0:8787)
        assert client.dashboard_link.startswith("http://127.0.0.1:")
        pids = {pid for pid, _ in client.gather(client.map(_where, range(4), pure=False))}
    assert os.getpid() not in pids


def test_an_unreachable_scheduler_is_one_line() -> None:
    refused = pytest.raises(
        FatalError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"
    )
    with refused, cluster("tcp://127.0.0.1:9", workers=1, connect_timeout="0.2s"):
        pass


def test_the_scheduler_comes_from_the_flag_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert scheduler_address(None) is None
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.0.0.5:8786")
    assert scheduler_address(None) == "tcp://10.0.0.5:8786"
    assert scheduler_address("tcp://127.0.0.1:8786") == "tcp://127.0.0.1:8786"
    with pytest.raises(InvalidOption, match="expected tcp://host:port"):
        scheduler_address("scheduler-host")
