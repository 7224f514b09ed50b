"""``extractor reset OUT``: what to do instead of ``rm -rf`` or editing a Delta log.

- ``--unfinished``: discard an unfinished run. It removes what the run left and nothing
  else: its journal, its staging, and any Parquet file it had begun to publish under the
  output (named by its run id, so never another run's). The next run starts afresh.
- ``--watermark TABLE --to T``: move a sync's Delta table's watermark back to ``T``, so the
  next sync reads its changes since ``T`` again (:mod:`extractor.output.lakereset`).
- ``--full TABLE``: ask the next sync to fetch the table whole and replace it; the table
  stays as it is, readable, until that sync commits.

Each says what it changes and asks first (``--yes`` for scripts); a run still going (its
lock held) is refused, and the reset holds the output's locks while it works.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from extractor.cli.common import stack, storage_options
from extractor.cli.status import run_folders, written_target
from extractor.errors import UsageError

if TYPE_CHECKING:  # what reads an output is imported when it runs: ``--help`` loads none of it
    from extractor.output.targets import Target


@click.command("reset")
@click.argument("out")
@click.option("--unfinished", "discard", is_flag=True,
              help="Discard the unfinished runs in OUT.")  # fmt: skip
@click.option("--watermark", metavar="TABLE",
              help="Move a Delta table's watermark back (with --to): the next sync reads its "
              "changes since then again.")  # fmt: skip
@click.option("--to", "to", metavar="T",
              help="With --watermark: the time, YYYY-MM-DD or an ISO date-time (UTC unless it "
              "says otherwise).")  # fmt: skip
@click.option("--full", metavar="TABLE",
              help="Make the next sync fetch TABLE whole and replace it (it stays readable "
              "until then).")  # fmt: skip
@click.option("--yes", is_flag=True, help="Do not ask (for scripts).")
@stack(*storage_options)
def reset(
    out: str, discard: bool, watermark: str | None, to: str | None, full: str | None,
    yes: bool, work_dir: Path | None, endpoint_url: str | None,
) -> None:  # fmt: skip
    """Discard OUT's unfinished runs (--unfinished), move a Delta table's watermark back
    (--watermark TABLE --to T), or make the next sync refresh a table whole (--full TABLE)."""
    if [discard, watermark is not None, full is not None].count(True) != 1:
        raise UsageError("give one of --unfinished, --watermark TABLE --to T, --full TABLE")
    if (to is None) != (watermark is None):
        raise UsageError("--watermark TABLE and --to T go together")
    target = written_target(out, endpoint_url)
    if discard:
        _discard(out, target, yes, work_dir)
    else:
        _reset_table(target, watermark or full or "", to, yes, work_dir)


def _reset_table(
    target: Target, name: str, to: str | None, yes: bool, work_dir: Path | None
) -> None:
    """Move ``name``'s watermark back ``to`` (None: a full refresh), having said what changes."""
    from extractor.clock import SYSTEM, new_run_id, utc_text
    from extractor.output.lakereset import RESET_PREFIX, full_reset, watermark_reset
    from extractor.output.lock import target_lock

    now = SYSTEM.now()
    with target_lock(target, work_dir, "reset"):
        if to is None:
            found = full_reset(target, name)
        else:
            found = watermark_reset(target, name, _when(to), now)
        for line in found.lines():
            click.echo(line)
        if not _confirmed(yes, "reset changes the tables' state", "reset?"):
            click.echo("nothing changed")
            return
        found.commit(target, RESET_PREFIX + new_run_id(SYSTEM))
    if to is None:
        click.echo(f"the next sync fetches {name} whole and replaces it")
    else:
        when = utc_text(found.to)
        click.echo(f"the next sync reads the changes to {name} since {when} again")


def _when(text: str) -> dt.datetime:
    """``--to``: a date (midnight) or a date-time; UTC unless it says otherwise."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--to {text!r} is not a time; use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS (UTC)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _confirmed(yes: bool, what: str, question: str) -> bool:
    """Whether to go on: ``--yes``, or the user says so; refused off a terminal."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{what}: give --yes to do it without asking")
    return click.confirm(question)


def _discard(out: str, target: Target, yes: bool, work_dir: Path | None) -> None:
    """Discard the unfinished runs under ``target``'s work root."""
    from extractor.engine.destination import Destination
    from extractor.engine.journal import unfinished
    from extractor.engine.state import replay

    root = target.work_dir(work_dir)
    found = [(folder, journal) for folder in run_folders(root) if (journal := unfinished(folder))]
    if not found:
        click.echo(f"{out}: no unfinished run; nothing to reset")
        return
    plans = [(folder, journal, _leftovers(folder, journal, target)) for folder, journal in found]
    for _, journal, paths in plans:
        click.echo(f"run {replay(journal).run_id}: removing {len(paths)} paths:")
        for path in paths:
            click.echo(f"  {path}")
    if not _confirmed(yes, "reset removes files", "remove them?"):
        click.echo("nothing removed")
        return
    # every run, a sync's parts and a fleet's members too, runs under the work root's lock:
    # taken first, a reset is refused before it removes anything while any run is going
    with Destination(root).locked("reset"):
        for folder, _, paths in plans:
            with (
                contextlib.nullcontext() if folder.resolve() == root.resolve()
                else Destination(folder).locked("reset")
            ):  # fmt: skip
                for path in paths:
                    if path.is_dir():
                        shutil.rmtree(path)
                    else:
                        path.unlink(missing_ok=True)
    from extractor.engine.summary import counting

    click.echo(f"reset {counting(len(plans), 'unfinished run')}; the next run starts afresh")


def _leftovers(folder: Path, journal: Path, target: Target) -> list[Path]:
    """What the unfinished run of ``journal`` left: the journal, its staging, and the files
    it began to publish (local Parquet)."""
    from extractor.engine.state import replay

    run_id = replay(journal).run_id
    paths = [journal]
    staging = folder / "_staging" / run_id
    if staging.is_dir():
        paths.append(staging)
    if target.local is not None:
        for pattern in (f"part-{run_id}.parquet", f".part-{run_id}.parquet.tmp"):
            paths += sorted(target.local.rglob(pattern))
    return paths
