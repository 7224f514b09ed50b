"""``extractor reset OUT --unfinished``: discard an unfinished run, instead of ``rm -rf``.

It removes what the run left and nothing else: its journal, its staging, and any Parquet
file it had begun to publish under the output (named by its run id, so never another run's),
after saying what it removes and asking (``--yes`` for scripts). A run still going (its lock
held) is refused. The next run of the command then starts afresh.
"""

from __future__ import annotations

import contextlib
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
@click.option("--unfinished", "discard", is_flag=True, required=True,
              help="Discard the unfinished runs in OUT (the only reset there is).")  # fmt: skip
@click.option("--yes", is_flag=True, help="Do not ask (for scripts).")
@stack(*storage_options)
def reset(
    out: str, discard: bool, yes: bool, work_dir: Path | None, endpoint_url: str | None
) -> None:
    """Discard OUT's unfinished runs: their journals, staging and half-published files."""
    from extractor.engine.destination import Destination
    from extractor.engine.journal import unfinished
    from extractor.engine.state import replay

    target = written_target(out, endpoint_url)
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
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("reset removes files: give --yes to do it without asking")
        if not click.confirm("remove them?"):
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
