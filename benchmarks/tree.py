"""What a command costs as a process tree: wall time, CPU-seconds, peak RSS.

CPU is ``RUSAGE_CHILDREN`` before and after the command is waited for: user and system time
of the process and of every descendant it waited for itself (the extractor's parser
processes). Peak RSS is the sum over the live tree, sampled every ``SAMPLE`` seconds (shared
libraries are counted once per process, as ``ps`` would).
"""

from __future__ import annotations

import contextlib
import resource
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import psutil

SAMPLE: Final = 0.05


@dataclass(frozen=True)
class Cost:
    """One command's cost: its exit code, wall seconds, CPU-seconds of the tree, peak RSS."""

    returncode: int
    wall: float
    user: float
    sys: float
    peak_rss_mb: float

    @property
    def cpu(self) -> float:
        return self.user + self.sys


def measured(
    argv: Sequence[str],
    env: Mapping[str, str],
    stdout: Path | None = None,
    stderr: Path | None = None,
) -> Cost:
    """Run ``argv`` to its end (stdout, stderr into those files or dropped) and measure it.

    Nothing else of ours may be reaped meanwhile (RUSAGE_CHILDREN would count it): the
    simulator, also our child, lives on until after the measurement."""
    with _sink(stdout) as out, _sink(stderr) as err:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=dict(env))
        try:
            peak = _watch(process)
        except BaseException:  # Ctrl-C, or the sampling failed: the command does not outlive us
            process.kill()
            process.wait()
            raise
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Cost(
        process.returncode,
        wall,
        after.ru_utime - before.ru_utime,
        after.ru_stime - before.ru_stime,
        peak / 1e6,
    )


def _watch(process: subprocess.Popen[bytes]) -> int:
    """The peak of the tree's summed RSS until ``process`` ends (it is then reaped)."""
    peak = 0
    watched = psutil.Process(process.pid)
    while process.poll() is None:
        with contextlib.suppress(psutil.Error):
            tree = [watched, *watched.children(recursive=True)]
            peak = max(peak, sum(_rss(p) for p in tree))
        time.sleep(SAMPLE)
    return peak


def _rss(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except psutil.Error:  # ended between listing and sampling
        return 0


@contextlib.contextmanager
def _sink(path: Path | None) -> Iterator[IO[bytes] | int]:
    if path is None:
        yield subprocess.DEVNULL
        return
    with path.open("wb") as file:
        yield file
