"""Running a fleet: one Dask task per identity, one progress line, one summary.

:func:`run_fleet` sets up what the runs share on the scheduler (:mod:`.coordinator`: the
budget and the board), submits each identity's run (:func:`~.members.run_member`), and while
they run shows one line for
the fleet: identities done, running and failed, records a second, requests an hour. When
all have ended it writes the fleet's summary, ``_runs/fleet-<run_id>.json`` with each
identity's outcome and run summary, and the ``identities`` table (:mod:`.roster`). One
identity failing is its own outcome; the fleet's status is ``partial`` then, and a rerun
does what is unfinished: each identity's run resumes, or finds its job done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from extractor.clock import SYSTEM, Clock, new_run_id
from extractor.engine.history import prune
from extractor.engine.summary import write_summary
from extractor.fleet import roster
from extractor.fleet.coordinator import Board, FleetLink
from extractor.fleet.layout import FLEET_PREFIX
from extractor.fleet.members import Member, outcome, run_member
from extractor.log import Log, claim_run
from extractor.output.targets import Target

#: Seconds between progress events when not on a terminal (on one: redrawn twice a second).
LOG_EVERY: Final = 10.0


@dataclass(frozen=True)
class Fleet:
    """The identities' runs of one command, and where the fleet keeps its records."""

    command: str
    members: Sequence[Member]
    work: Path  # the fleet's work root: its summaries, and each identity's run
    target: Target  # the output: its ``identities`` table
    fleet_requests_per_hour: int = 0  # 0: no shared budget
    delta: bool = False  # the output is Delta tables (and so is its identities table)


def run_fleet(
    fleet: Fleet,
    client: Any,
    *,
    log: Log | IO[str] | None = None,
    clock: Clock = SYSTEM,
    interval: float | None = None,
) -> dict[str, Any]:
    """Run every member on the cluster of ``client``; the fleet's summary."""
    run_id = FLEET_PREFIX + new_run_id(clock)
    claim_run(run_id)
    said = Log.to(log).bind(run_id=run_id, command=fleet.command)
    every = interval if interval is not None else (0.5 if said.live else LOG_EVERY)
    link = FleetLink(run_id, fleet.fleet_requests_per_hour)
    board = Board(link, client)
    try:
        return _run(fleet, client, link, board, said, every, clock)
    finally:
        board.close()


def _run(
    fleet: Fleet,
    client: Any,
    link: FleetLink,
    board: Board,
    log: Log,
    every: float,
    clock: Clock,
) -> dict[str, Any]:
    from distributed import wait

    started, started_at = clock.monotonic(), clock.now()
    futures = [
        client.submit(
            run_member,
            member,
            link,
            key=f"{fleet.command}-{member.identity.id}",
            pure=False,
        )
        for member in fleet.members
    ]
    log.info(
        "fleet_plan", f"fleet {link.run_id}: {fleet.command} of {len(futures)} identities",
        identities=len(futures),
    )  # fmt: skip
    ended: dict[int, dict[str, Any]] = {}

    def look() -> None:
        for index, future in enumerate(futures):
            if index not in ended and future.done():
                ended[index] = _outcome(future, fleet.members[index])
                _said_ended(log, ended[index])

    while True:
        try:
            wait(futures, timeout=every)  # type: ignore[no-untyped-call]
            break
        except TimeoutError:
            look()
            runs = _read(board)
            line = fleet_line(len(futures), ended.values(), runs, clock.monotonic() - started)
            log.status(line, identities=len(futures), ended=len(ended))
    look()
    log.clear()
    outcomes = [ended[index] for index in range(len(futures))]
    summary: dict[str, Any] = {
        "run_id": link.run_id,
        "command": fleet.command,
        "status": "complete" if all(o["status"] == "complete" for o in outcomes) else "partial",
        "started_at": started_at.isoformat(),
        "finished_at": clock.now().isoformat(),
        "seconds": round(clock.monotonic() - started, 3),
        "identities": outcomes,
    }
    if fleet.fleet_requests_per_hour:
        summary["fleet_budget"] = {
            "requests_per_hour": fleet.fleet_requests_per_hour,
            "granted": board.granted(),
        }
    rows = roster.rows_of(outcomes, fleet.command, clock.now())
    roster.record(fleet.target, fleet.work, rows, delta=fleet.delta)
    summary["summary_file"] = str(write_summary(summary, fleet.work))
    prune(fleet.work)  # the fleet's own summaries: the last ones kept (its members' by their runs)
    statuses = [entry["status"] for entry in outcomes]
    log.info(
        "finished",
        f"fleet {link.run_id} {summary['status']}: {statuses.count('complete')} complete, "
        f"{statuses.count('partial')} partial, {statuses.count('failed')} failed "
        f"in {summary['seconds']:,.1f} s",
        status=summary["status"], identities=len(outcomes),
        complete=statuses.count("complete"), partial=statuses.count("partial"),
        failed=statuses.count("failed"), seconds=summary["seconds"],
    )  # fmt: skip
    return summary


def _said_ended(log: Log, entry: dict[str, Any]) -> None:
    """One identity's run has ended: say how."""
    said = log.bind(identity_id=entry["identity_id"])
    run = entry["summary"] or {}
    name = entry["client_name"] or entry["identity_id"]
    if entry["status"] == "failed":
        said.warning("identity_failed", f"identity {name}: failed: {entry['error']}")
        return
    said.info(
        "identity_finished", f"identity {name}: {entry['status']} (run {roster.run_id(run)})",
        status=entry["status"], identity_run_id=roster.run_id(run),
    )  # fmt: skip


def _read(board: Board) -> dict[str, dict[str, Any]]:
    """The board's latest counters; what it had when the scheduler does not answer."""
    with contextlib.suppress(OSError, TimeoutError):
        return board.read()
    return board.latest


def _outcome(future: Any, member: Member) -> dict[str, Any]:
    """A finished task's outcome; a task that raised (a defect, or its workers kept dying)
    is that identity's failure, not the fleet's."""
    from distributed import KilledWorker

    try:
        result: dict[str, Any] = future.result()
    except KilledWorker:
        return outcome(
            member, "failed",
            error="the workers running it died, again and again; run the same command to resume",
        )  # fmt: skip
    except Exception as exc:  # one identity's defect must not lose the others'
        return outcome(member, "failed", error=f"internal error: {type(exc).__name__}: {exc}")
    return result


def fleet_line(
    members: int,
    ended: Iterable[dict[str, Any]],
    board: dict[str, dict[str, Any]],
    seconds: float,
) -> str:
    """The fleet's progress: identities by state, records a second, requests an hour."""
    statuses = [entry["status"] for entry in ended]
    failed = statuses.count("failed")
    done = len(statuses) - failed
    runs = board.values()
    records = sum(run["records"] for run in runs)
    requests = sum(run["requests"] for run in runs)
    what = next((run["what"] for run in runs), "records")
    elapsed = max(seconds, 1e-9)
    paused = sum(1 for run in runs if run.get("paused_until"))
    return (
        f"identities {done}/{members} done, {members - done - failed} running, "
        f"{failed} failed  {records:,} {what} ({records / elapsed:,.0f}/s)  "
        f"{requests * 3600 / elapsed:,.0f} requests/h" + (f"  {paused} paused" if paused else "")
    )


def render_fleet(summary: dict[str, Any]) -> str:
    """What the fleet did, for people: a line an identity, then the totals."""
    lines = [f"fleet {summary['run_id']}: {summary['status']}"]
    totals = {"complete": 0, "partial": 0, "failed": 0}
    for entry in summary["identities"]:
        status = entry["status"]
        totals[status] = totals.get(status, 0) + 1
        run = entry["summary"] or {}
        count = roster.records(run, summary["command"])
        what = {"invoices": "invoices", "transactions": "ledger lines", "tables": "items"}.get(
            summary["command"], "records"
        )
        counted = "" if count is None else f"  {count:,} {what}"
        detail = entry["error"] or f"run {roster.run_id(run)}{counted}"
        lines.append(f"  {entry['identity_id']}  {entry['client_name'] or '-'}: {status}  {detail}")
    lines.append(
        f"  identities    {len(summary['identities'])}: "
        + ", ".join(f"{count} {status}" for status, count in totals.items() if count)
    )
    lines.append(f"  time          {summary['seconds']:,.1f} s")
    lines.append(f"  summary       {summary['summary_file']}")
    return "\n".join(lines)
