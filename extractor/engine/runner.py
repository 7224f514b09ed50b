"""One runner for every job that writes a dataset: ``run(job)``.

It owns what the jobs share: the job's :class:`~extractor.engine.destination.Destination`
(checked, fingerprinted, locked, published to), the finished-job check, the journal (a run
that stops for any reason, SIGKILL included, continues from it when the same command runs
again), the connection (:func:`~extractor.service.session.connected`) and live progress,
the workers and their bisection (:mod:`extractor.engine.workers`), the check that every
journaled unit is on disk before anything is published, publishing, and the typed summary
(:mod:`extractor.engine.summary`). A job says only what is its own: how it plans its units,
which are still to do after a resume, how it fetches one, what it publishes (:class:`Job`
and :class:`Work`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Final, Protocol, TypeVar

from extractor import memory
from extractor.clock import SYSTEM, Clock, new_run_id
from extractor.config import Credentials, ServiceConfig
from extractor.engine.destination import Destination
from extractor.engine.history import (
    failed_record,
    finished_job,
    latest_run,
    partial_run,
    prune,
    write_failed,
)
from extractor.engine.journal import Journal, unfinished
from extractor.engine.progress import Progress
from extractor.engine.state import RunState
from extractor.engine.stats import RunStats
from extractor.engine.summary import (
    FAILED,
    INTERRUPTED,
    RunSummary,
    attach,
    finished,
    version,
    write_summary,
)
from extractor.engine.workers import Fetcher, Run, Unit, work_through
from extractor.errors import OutputError
from extractor.log import Log, claim_run
from extractor.output.lease import stopped_if_lost
from extractor.output.staging import TableWriter
from extractor.parser import slow_parser_note
from extractor.service.health import Health
from extractor.service.limiter import Gate, RateLimiter
from extractor.service.session import Session, connected
from extractor.service.transport import Wire

U = TypeVar("U", bound=Unit)
#: Rounds of fetching again units whose staged files vanished, before the run gives up.
MAX_REFETCH_ROUNDS: Final = 3


class Work(Fetcher[U], Protocol):
    """One run of a job: its staged tables and where its responses are parsed."""

    @property
    def writers(self) -> Sequence[TableWriter]: ...

    async def __aenter__(self) -> object: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def plan(self, run: Run, previous: RunState | None) -> dict[str, Any]:
        """The plan event: what the run will fetch (the listing, the windows), and what
        ``previous``, the finished partial run it follows, could not fetch."""
        ...

    def remaining(self, state: RunState, prefix: str) -> list[U]:
        """The planned units not yet staged nor failed; new keys start with ``prefix``."""
        ...

    def planned(self, state: RunState, remaining: Sequence[U]) -> str:
        """One line saying what the run will fetch."""
        ...

    async def settled(self) -> None:
        """Every fetched unit is staged and journaled."""
        ...

    async def publish(self, run: Run, state: RunState) -> dict[str, int]: ...

    def tidy(self) -> None:
        """Remove the run's staging, once published."""
        ...

    def summary(self, state: RunState, stats: RunStats) -> RunSummary: ...


class Job(Protocol[U]):
    """What a command asked for, as the runner needs it."""

    @property
    def command(self) -> str: ...

    @property
    def destination(self) -> Destination:
        """Where the run writes: the runner checks, locks and publishes to it."""
        ...

    @property
    def tables(self) -> Sequence[str]:
        """The tables the job publishes."""
        ...

    @property
    def service(self) -> ServiceConfig: ...

    @property
    def sync(self) -> bool:
        """Part of a sync, which runs again whatever ran before."""
        ...

    def check(self) -> None:
        """Refuse what cannot be done as asked, before any request."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """What decides which records a run fetches: the same fingerprint, the same run."""
        ...

    def retrying(self, previous: RunState) -> str:
        """The line that says what a finished partial run left, fetched again now."""
        ...

    def start(self, journal: Journal, stats: RunStats) -> Work[U]:
        """The run's work, with its journal."""
        ...


async def run(
    job: Job[U],
    credentials: Credentials,
    *,
    log: Log | IO[str] | None = None,
    clock: Clock = SYSTEM,
    wire: Wire | None = None,
    gate: Gate | None = None,
    watch: Callable[[RunStats, RateLimiter], None] | None = None,
    session: Session | None = None,
) -> RunSummary:
    """Run (or resume) ``job``; its summary, also written to ``OUT/_runs/<run_id>.json``.
    It reports to ``log`` (the process's log; a stream: text on it), tells time and waits
    by ``clock``, and reaches the service over ``wire`` (HTTP to the job's base URL). In a
    fleet, its requests also draw on the fleet's budget (``gate``), and ``watch`` is handed
    the run's counters and rate limiter as the run starts, to report them. A ``session``
    given (a sync's, for all its parts) is used as it is, logged in once, and left open."""
    job.check()
    job.destination.check()
    given = _Surroundings(Log.to(log).bind(command=job.command), clock, wire, gate, watch, session)
    # a run that loses an s3:// target's lease stops at once
    with job.destination.locked(job.command), stopped_if_lost():
        return await _locked(job, credentials, given)


@dataclass(frozen=True)
class _Surroundings:
    log: Log
    clock: Clock
    wire: Wire | None
    gate: Gate | None = None
    watch: Callable[[RunStats, RateLimiter], None] | None = None
    session: Session | None = None

    @contextlib.asynccontextmanager
    async def connected(
        self, service: ServiceConfig, credentials: Credentials
    ) -> AsyncIterator[Session]:
        """The given session, or one of the run's own (closed when it ends)."""
        if self.session is not None:
            yield self.session
            return
        async with connected(
            service, credentials, clock=self.clock, wire=self.wire, gate=self.gate, login=False
        ) as session:
            yield session


async def _locked(job: Job[U], credentials: Credentials, given: _Surroundings) -> RunSummary:
    log, destination = given.log, job.destination
    out = destination.work
    fingerprint = fingerprint_of(job)
    # a sync lists what changed and adds what its last run could not fetch; a backfill that
    # finished partial fetches again exactly what it could not fetch
    datasets = destination.datasets(job.tables)
    done = latest_run(out) if job.sync else finished_job(out, fingerprint, datasets)
    previous = partial_run(out, done) if unfinished(out) is None else None
    if done is not None and previous is None and not job.sync:
        log.bind(run_id=done["run_id"]).info(
            "already_finished",
            f"run {done['run_id']} already finished this job ({done['status']}); nothing to do",
            status=done["status"],
        )
        found = RunSummary.from_json(done)
        found.already_finished = True
        return found
    _make(out)
    journal = Journal.open(out, new_run_id(given.clock), fingerprint)
    claim_run(journal.state.run_id)
    given = replace(given, log=log.bind(run_id=journal.state.run_id))
    note = slow_parser_note()
    if note is not None:
        given.log.warning("slow_parser", note)
    if previous is not None:
        given.log.info("retrying", job.retrying(previous), retried_from=previous.run_id)
    try:
        summary = await _journaled(job, credentials, journal, given, previous)
    except (Exception, asyncio.CancelledError) as exc:
        _record_failure(job, journal.state, exc, credentials, given.clock)
        raise
    finally:
        journal.close()  # a run stopped before its plan leaves nothing to resume: discarded
    journal.finish()
    prune(out)
    return summary


def _record_failure(
    job: Job[Any], state: RunState, error: BaseException, credentials: Credentials, clock: Clock
) -> None:
    """Write the record of a run that stopped on ``error`` (``_runs/<run_id>.json``, outcome
    ``failed`` or ``interrupted``), and hand it to whoever shows it (``--json``) on the error."""
    outcome = INTERRUPTED if isinstance(error, asyncio.CancelledError) else FAILED
    record = failed_record(
        state.run_id, error, outcome,
        {
            "job": state.fingerprint, "output": job.destination.target.uri,
            "format": job.destination.format, "failed_at": clock.now().isoformat(),
            "base_url": job.service.base_url, "identity_id": credentials.identity_id,
            "extractor_version": version(),
            "resumable": state.plan is not None,  # else its journal is discarded
        },
    )  # fmt: skip
    path = write_failed(record, job.destination.work)
    attach(error, record | {"summary_file": None if path is None else str(path)})


def fingerprint_of(job: Job[Any]) -> dict[str, Any]:
    """What decides which records a run of ``job`` fetches, and where they go: what its
    journal starts with, and what a finished run's summary is matched on."""
    return job.fingerprint() | job.destination.fingerprint()


async def _journaled(
    job: Job[U],
    credentials: Credentials,
    journal: Journal,
    given: _Surroundings,
    previous: RunState | None,
) -> RunSummary:
    state = journal.state
    stats = RunStats(state.run_id, clock=given.clock)
    work = job.start(journal, stats)
    stats.starts, stats.carried = state.starts, stats.fetched  # what earlier invocations did
    service = job.service
    async with given.connected(service, credentials) as session:
        sent, logins = session.requests, session.logins  # a shared session's, before this run
        limiter = session.transport.limiter
        quarantines = limiter.quarantines
        progress = Progress(stats, given.log, limiter=limiter)
        if given.watch is not None:
            given.watch(stats, limiter)
        try:
            if state.starts > 1:
                removed = sum(writer.prune(set(state.staged)) for writer in work.writers)
                progress.say(
                    "resuming",
                    f"resuming run {state.run_id}: {len(state.staged)} batches on disk, "
                    f"{removed} unfinished files removed",
                    batches_on_disk=len(state.staged),
                    files_removed=removed,
                )
            if not session.logged_in:
                await session.login()
                logins += 1  # the first login is no re-login
            health = Health.for_workers(service.first_in_flight)
            connected_run = Run(service, session, stats, given.clock, health, given.log)
            if not state.published:
                await _fetch_and_publish(work, connected_run, journal, progress, previous)
            stats.requests, stats.relogins = session.requests - sent, session.logins - logins
            stats.quarantines = limiter.quarantines - quarantines
            skew = session.service_time.offset
            stats.clock_skew_seconds = None if skew is None else round(skew, 1)
        finally:
            await progress.stop()
    work.tidy()
    summary = work.summary(journal.state, stats)
    summary.output, summary.format = job.destination.target.uri, job.destination.format
    summary.base_url, summary.identity_id = service.base_url, credentials.identity_id
    summary.extractor_version = version()
    write_summary(summary.as_json(), job.destination.work)
    line, counts = finished(summary)
    given.log.info("finished", line, **counts)
    return summary


async def _fetch_and_publish(
    work: Work[U], run: Run, journal: Journal, progress: Progress, previous: RunState | None
) -> None:
    state, stats = journal.state, run.stats
    prefix = f"{state.starts:02d}"

    async def fetch(units: list[U]) -> None:
        await work_through(run, work, units)
        await work.settled()

    async def refetch(round_: int) -> None:
        await fetch(work.remaining(state, f"{prefix}r{round_}"))

    async with work:
        if state.plan is None:
            journal.append(await work.plan(run, previous))
        remaining = work.remaining(state, prefix)
        progress.say(
            "plan", work.planned(state, remaining), units=stats.units, total=stats.total,
            to_fetch=sum(unit.size for unit in remaining),
        )  # fmt: skip
        stats.done_before = stats.done  # the ETA: this invocation's pace on what is left
        progress.start()
        started = run.clock.monotonic()
        await fetch(remaining)
        await until_all_staged(journal, work.writers, refetch, progress.lost)
        stats.fetch_seconds = round(run.clock.monotonic() - started, 3)
    memory.trim()  # what the fetch freed, before publishing needs memory of its own
    started = run.clock.monotonic()
    progress.publishing(len(state.staged))
    stats.written = await work.publish(run, state)
    stats.files = stats.written.get("files", 0)
    journal.append({"event": "published", "written": stats.written})
    stats.publish_seconds = round(run.clock.monotonic() - started, 3)


async def until_all_staged(
    journal: Journal,
    writers: Sequence[TableWriter],
    refetch: Callable[[int], Awaitable[None]],
    say: Callable[[int], None],
) -> None:
    """Before anything is published: every unit the journal lists must be on disk with the
    records it journaled; a missing or short one is fetched again (``refetch(round)``), never
    published short. Then only the journal's units are published."""
    for round_ in range(1, MAX_REFETCH_ROUNDS + 2):
        lost = forget_lost(journal, writers)
        if not lost:
            break
        if round_ > MAX_REFETCH_ROUNDS:
            raise OutputError(
                f"{len(lost)} staged batches vanished from {writers[0].staging.parent} again "
                f"after {MAX_REFETCH_ROUNDS} rounds of fetching them; is something else "
                "deleting files there? Run the same command again to resume"
            )
        say(len(lost))
        await refetch(round_)
    for writer in writers:
        writer.keep = set(journal.state.staged)


def _make(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {{out}} {out}: {exc.strerror or exc}") from None


def lost_batches(state: RunState, writers: Sequence[TableWriter]) -> list[str]:
    """The journal's staged batches whose files are missing or short on disk."""
    lost: set[str] = set()
    for writer in writers:
        on_disk = writer.staged_rows()
        for key, staged in state.staged.items():
            if on_disk.get(key, 0) != staged["counts"].get(writer.counted_as, 0):
                lost.add(key)
    return sorted(lost)


def forget_lost(journal: Journal, writers: Sequence[TableWriter]) -> list[str]:
    """Journal the staged batches found missing or short, so they are fetched again, and
    remove what is left of their files; their keys."""
    lost = lost_batches(journal.state, writers)
    if lost:
        journal.append({"event": "lost", "keys": lost})
        for writer in writers:
            writer.discard(set(lost))
    return lost
