"""One identity's run, as a Dask task: what runs in a worker.

A member is a whole run of one identity (:func:`extractor.engine.runner.run`): its own session
(Login with its IdentityId, once, reused), rate limiter, journal and resume, under
``_identities/<guid>/``. The task runs it on an event loop of its own in the worker's
thread, parsing there too: each worker process is a core's worth of parsing. What the run
would print goes to its ``run.log``; the fleet's progress comes from the counters it puts on
the fleet's board every second (:mod:`.coordinator`).

A member never raises for what the service or the output did (an identity blocked, refused,
or a run stopped): it returns its outcome, ``failed`` with the error's line, and the others
go on. A task the worker died under is run again by the scheduler, and resumes from the
journal.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Final

from extractor import redact
from extractor.clock import SYSTEM
from extractor.config import Credentials
from extractor.engine.lists import ListJob
from extractor.engine.runner import Job, run
from extractor.engine.stats import RunStats
from extractor.errors import ExtractorError
from extractor.fleet.budget import FleetGate
from extractor.fleet.coordinator import Channel, FleetLink
from extractor.jobs.invoices import InvoiceJob
from extractor.jobs.ledger import TransactionJob
from extractor.jobs.sync import SyncJob, run_sync
from extractor.log import Format, Log
from extractor.service.identities import Identity
from extractor.service.limiter import RateLimiter

#: Seconds between a run's reports to the coordinator.
REPORT_EVERY: Final = 1.0
LOG_FILE: Final = "run.log"


@dataclass(frozen=True)
class Member:
    """One identity's run in a fleet: its job (``out`` under ``_identities/<guid>/``) and
    its credentials (with its IdentityId)."""

    identity: Identity
    job: InvoiceJob | TransactionJob | ListJob | SyncJob
    credentials: Credentials
    log_format: Format = "text"  # of its log file, ``LOG_FILE`` under its folder


def run_member(member: Member, link: FleetLink | None) -> dict[str, Any]:
    """The task: run ``member`` to its end; its outcome (:func:`outcome`). ``link``: the
    fleet's shared state (None: a run on its own, in tests)."""
    # a pickled Credentials is rebuilt without __post_init__: mask its password here too
    redact.register(member.credentials.password)
    channel = Channel(link) if link is not None else None  # here, in the task's thread
    return asyncio.run(_run(member, channel))


async def _run(member: Member, channel: Channel | None) -> dict[str, Any]:
    identity = member.identity.id
    watched: list[tuple[RunStats, RateLimiter]] = []
    shared = channel is not None and channel.link.per_hour > 0
    gate = FleetGate(channel.lease, channel.pause, SYSTEM) if channel and shared else None
    reporter = (
        asyncio.create_task(_report(channel, identity, watched)) if channel is not None else None
    )
    try:
        member.job.out.mkdir(parents=True, exist_ok=True)
        with (member.job.out / LOG_FILE).open("a", encoding="utf-8") as file:
            log = Log(file, member.log_format, context={"identity_id": identity})
            summary = await _run_job(member, log, gate, watched)
    except ExtractorError as exc:
        return outcome(member, "failed", error=exc.naming(_flag))
    except OSError as exc:
        return outcome(member, "failed", error=f"cannot write {member.job.out}: {exc}")
    finally:
        if reporter is not None:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
    return outcome(member, str(summary["status"]), summary=summary)


async def _run_job(
    member: Member,
    log: Log,
    gate: FleetGate | None,
    watched: list[tuple[RunStats, RateLimiter]],
) -> dict[str, Any]:
    def watch(stats: RunStats, limiter: RateLimiter) -> None:
        watched.append((stats, limiter))

    # the summary as JSON: what a member's task answers the fleet, on another process
    if isinstance(member.job, SyncJob):
        synced = await run_sync(member.job, member.credentials, log=log, gate=gate, watch=watch)
        return synced.as_json()
    job: Job[Any] = member.job
    return (await run(job, member.credentials, log=log, gate=gate, watch=watch)).as_json()


def outcome(
    member: Member, status: str, *, summary: dict[str, Any] | None = None, error: str = ""
) -> dict[str, Any]:
    """What a member's task returns: the identity, its status, its run's summary (None when
    it failed before it could run), and the error's line."""
    identity = member.identity
    return {
        "identity_id": identity.id,
        "client_id": identity.client_id,
        "client_name": identity.client_name,
        "status": status,
        "error": redact.mask(error.replace("\n", " ")),
        "summary": summary,
    }


async def _report(
    channel: Channel, identity: str, watched: list[tuple[RunStats, RateLimiter]]
) -> None:
    """Every second, the run's counters on the fleet's board."""
    while True:
        await asyncio.sleep(REPORT_EVERY)
        if watched:
            stats, limiter = watched[-1]
            with contextlib.suppress(OSError, TimeoutError):  # a report missed, not the run
                await asyncio.to_thread(channel.report, identity, counters(stats, limiter))


def counters(stats: RunStats, limiter: RateLimiter) -> dict[str, Any]:
    return {
        "done": stats.done,
        "total": stats.total,
        "records": stats.fetched,
        "what": stats.records,
        "requests": limiter.sent,
        "paused_until": limiter.paused_until,
    }


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")
