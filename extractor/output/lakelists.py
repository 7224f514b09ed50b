"""Whole lists in the lake: each publish replaces the table (a fleet member's: its identity's
part of it), in one commit that carries the run like every other (``extractor.run_id``,
``extractor.watermark``, ``extractor.identity``).

A reference list is small (tens to thousands of records) and answered whole, so replacing it
is both the simplest and the exact way to keep it current: a type the service dropped is gone
from the table after the next sync, which an upsert would never notice. Written with
delta-rs's own ``write_deltalake`` (``mode="overwrite"``; a fleet member's with a predicate
on its ``identity_id``), keeping columns another writer added (``schema_mode="merge"``). The
runs of a fleet's identities replace their own parts at once: a commit refused because
another identity's commit came in between is made again on the table as it now is.
"""

from __future__ import annotations

import random
import time
from typing import Final

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from extractor.errors import OutputError, first_line
from extractor.output.lakefiles import IDENTITY, Scope, stamp
from extractor.output.lakemarks import commit
from extractor.output.lease import ensure_held
from extractor.output.parquet import RunInfo
from extractor.output.staging import TableWriter
from extractor.output.targets import Target

#: Commits tried again while other identities of a fleet replace their parts of the table.
ATTEMPTS: Final = 30


def replace_list(target: Target, scope: Scope, writer: TableWriter, run: RunInfo) -> int:
    """The staged records of ``writer`` replace its table's (``scope``'s part of it); the
    records written."""
    pieces = list(writer.tables())
    records = pa.concat_tables(pieces) if pieces else writer.schema.empty_table()
    records = stamp(records.combine_chunks(), run, deletable=False)
    partition_by, mine = None, None
    if scope.identity is not None:
        identities = pa.array([scope.identity] * records.num_rows, pa.string())
        records = records.append_column(IDENTITY, identities)
        partition_by, mine = [IDENTITY], f"{IDENTITY} = '{scope.identity}'"
    uri, options = target.table_uri(writer.name), target.storage_options()
    for attempt in range(1, ATTEMPTS + 1):
        ensure_held(target)  # a run that lost an s3:// target's lock commits nothing
        table = _table(uri, options)
        if table is not None:
            _check_layout(writer.name, table, scope)
        commit_properties = commit(run, scope)
        try:
            if mine is not None and table is None:
                # the first member of a fleet creates the table: "error" fails it should
                # another member create it in between (an overwrite would drop that part),
                # and it tries again, replacing its own part
                write_deltalake(
                    uri, records, mode="error", partition_by=partition_by,
                    storage_options=options, commit_properties=commit_properties,
                )  # fmt: skip
            else:
                write_deltalake(
                    uri, records, mode="overwrite", partition_by=partition_by,
                    predicate=mine if table is not None else None, schema_mode="merge",
                    storage_options=options, commit_properties=commit_properties,
                )  # fmt: skip
            return records.num_rows
        except (CommitFailedError, DeltaError) as exc:
            if scope.identity is None or attempt == ATTEMPTS:
                raise OutputError(
                    f"cannot commit to the Delta table {writer.name}: {first_line(exc)}"
                ) from None
            time.sleep(random.uniform(0.0, 0.05 * attempt))  # others are committing
        except OSError as exc:
            raise OutputError(
                f"cannot commit to the Delta table {writer.name}: {first_line(exc)}"
            ) from None
    raise AssertionError("unreachable")


def _table(uri: str, options: dict[str, str]) -> DeltaTable | None:
    try:
        return DeltaTable(uri, storage_options=options)
    except TableNotFoundError:
        return None
    except (DeltaError, OSError) as exc:
        raise OutputError(f"cannot read the Delta table {uri}: {first_line(exc)}") from None


def _check_layout(name: str, table: DeltaTable, scope: Scope) -> None:
    """A fleet's list (partitioned by identity) and one identity's are never mixed: replacing
    one by the other would drop every identity's list, or mix them."""
    fleet = IDENTITY in table.metadata().partition_columns
    if fleet == (scope.identity is not None):
        return
    held = "a fleet's lists (by identity_id)" if fleet else "one identity's list"
    raise OutputError(
        f"the Delta table {name} holds {held}: a fleet and one identity do not share tables; "
        "choose another {out}" + (", or give --identity all" if fleet else "")
    )
