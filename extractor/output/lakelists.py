"""The lists in the lake: each publish makes a table (a fleet member's: its identity's part of
it) what its run fetched, in one commit that carries the run like every other
(``extractor.run_id``, ``extractor.watermark``, ``extractor.identity``).

How the fetched records go in is the spec's (:class:`~extractor.output.parquet.Keep`):

- a reference list replaces the table: small (tens to thousands of records) and answered
  whole, replacing it is both the simplest and the exact way to keep it current; a type the
  service dropped is gone after the next sync, which an upsert would never notice;
- a list per parent rows of which only some were asked again (the open fiscal years)
  replaces the records of those parent rows and keeps the others;
- a table kept by its changes (customers, products) takes the fetched records by key and
  keeps the rest; with every key the service lists (``present``), the kept ones it no longer
  lists are marked ``_deleted_at`` (and one listed again is live again).

A full refresh asked by a reset (:mod:`.lakereset`) replaces the part whatever the spec.
A table whose records would not change gets no commit at all, so a sync that finds nothing
new leaves the table's version, and its watermark, where they were. The part is rewritten
whole with delta-rs's own ``write_deltalake`` (``mode="overwrite"``; a fleet member's with a
predicate on its ``identity_id``), keeping columns another writer added (``schema_mode=
"merge"``; the records kept keep their values in them). The runs of a fleet's identities
replace their own parts at once: a commit refused because another identity's commit came in
between is made again on the table as it now is.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from typing import Any, Final, Literal, cast

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, QueryBuilder, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from extractor.arrow import empty
from extractor.errors import OutputError, first_line
from extractor.output.lakechanges import conformed, with_theirs
from extractor.output.lakefiles import IDENTITY, Scope, arrow_table, stamp
from extractor.output.lakemarks import commit, full_refresh
from extractor.output.lease import ensure_held
from extractor.output.parquet import Keep, RunInfo
from extractor.output.staging import TIMESTAMP, TableWriter
from extractor.output.targets import Target

#: Commits tried again while other identities of a fleet replace their parts of the table.
ATTEMPTS: Final = 30


#: The columns every run rewrites: two parts that differ only in them hold the same records.
RUN_COLUMNS: Final = frozenset({"_run_id", "_extracted_at"})


def keep_list(
    target: Target, scope: Scope, writer: TableWriter, run: RunInfo, keep: Keep | None = None
) -> int:
    """The staged records of ``writer`` into its table (``scope``'s part of it) as ``keep``
    says (replaced, by default); the records written, 0 when nothing changed (no commit)."""
    keep = keep or Keep(())
    pieces = list(writer.tables())
    fetched = pa.concat_tables(pieces) if pieces else empty(writer.schema)
    fetched = stamp(fetched.combine_chunks(), run, deletable=keep.upsert)
    partition_by, mine = None, None
    if scope.identity is not None:
        identities = pa.array([scope.identity] * fetched.num_rows, pa.string())
        fetched = fetched.append_column(IDENTITY, identities)
        partition_by, mine = [IDENTITY], f"{IDENTITY} = '{scope.identity}'"
    uri, options = target.table_uri(writer.name), target.storage_options()
    for attempt in range(1, ATTEMPTS + 1):
        ensure_held(target)  # a run that lost an s3:// target's lock commits nothing
        table = _table(uri, options)
        records, written = fetched, fetched.num_rows
        if table is not None:
            _check_layout(writer.name, table, scope)
            refresh = full_refresh(table, scope)  # asked by a reset: replaced, whatever keep
            schema = with_theirs(fetched.schema, pa.schema(cast(Any, table.schema().to_arrow())))
            current = _current(table, scope, schema)
            kept = Keep(keep.key) if refresh else keep
            records, written = _kept(current, conformed(fetched, schema), kept, run)
            if not refresh and _same(current, records, keep.key):
                return 0
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
            return written
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


def held_parents(
    target: Target, scope: Scope, name: str, held_by: tuple[str, str]
) -> tuple[str, ...]:
    """The parent values (ISO text for a time) whose records ``scope``'s part of the table
    ``name`` holds as fetched while the parent was settled (``held_by``: the columns of the
    value and of that flag); none before the table's first commit."""
    table = _table(target.table_uri(name), target.storage_options())
    if table is None:
        return ()
    value, settled = held_by
    sql = f'SELECT DISTINCT "{value}" AS v FROM t WHERE {scope.where()} AND "{settled}"'
    try:
        found = arrow_table(QueryBuilder().register("t", table).execute(sql))
    except DeltaError as exc:
        raise OutputError(f"cannot read the Delta table {name}: {first_line(exc)}") from None
    plain = (v.isoformat() if isinstance(v, dt.date) else v for v in found.column("v").to_pylist())
    return tuple(sorted(v for v in plain if v is not None))


def _current(table: DeltaTable, scope: Scope, schema: pa.Schema) -> pa.Table:
    """The records of ``scope``'s part of ``table``, in ``schema``."""
    try:
        found = (
            QueryBuilder().register("t", table).execute(f"SELECT * FROM t WHERE {scope.where()}")
        )
        return conformed(arrow_table(found), schema)  # from DataFusion's types
    except DeltaError as exc:
        raise OutputError(f"cannot read the Delta table: {first_line(exc)}") from None


def _kept(current: pa.Table, fetched: pa.Table, keep: Keep, run: RunInfo) -> tuple[pa.Table, int]:
    """The part as it becomes: ``fetched`` and what ``keep`` keeps of ``current``; and the
    records written (fetched, and newly marked deleted)."""
    if keep.upsert:
        key = keep.key[0]
        fetched = _not_older(current, fetched, key)
        kept = current.filter(pc.invert(pc.is_in(current.column(key), fetched.column(key))))
        marked = 0
        if keep.present is not None:
            present = pa.array(keep.present, current.schema.field(key).type)
            gone = pc.and_(
                pc.invert(pc.is_in(kept.column(key), present)),
                pc.is_null(kept.column("_deleted_at")),
            )
            marked = pc.sum(gone.cast(pa.int64())).as_py() or 0
            stamp_ = pa.scalar(run.as_of, TIMESTAMP)
            deleted = pc.if_else(gone, stamp_, kept.column("_deleted_at"))
            kept = kept.set_column(
                kept.schema.get_field_index("_deleted_at"), "_deleted_at", deleted
            )
        return pa.concat_tables([kept, fetched]), fetched.num_rows + marked
    if keep.column is not None:
        column = current.column(keep.column)
        parents = pa.array([_value(p, column.type) for p in keep.parents], column.type)
        kept = current.filter(pc.invert(pc.is_in(column, parents)))
        return pa.concat_tables([kept, fetched]), fetched.num_rows
    return fetched, fetched.num_rows


#: The column that tells a record's version: an answer older than the stored record (a
#: lagging replica's) never replaces it.
VERSION: Final = "DateChanged"


def _not_older(current: pa.Table, fetched: pa.Table, key: str) -> pa.Table:
    """``fetched`` less the records older (by :data:`VERSION`) than the stored ones."""
    if VERSION not in current.schema.names or VERSION not in fetched.schema.names:
        return fetched
    asked = pc.is_in(current.column(key), fetched.column(key))
    stored = current.filter(asked)
    when = dict(
        zip(stored.column(key).to_pylist(), stored.column(VERSION).to_pylist(), strict=True)
    )
    older = [
        number
        for number, changed in zip(
            fetched.column(key).to_pylist(), fetched.column(VERSION).to_pylist(), strict=True
        )
        if changed is not None and when.get(number) is not None and when[number] > changed
    ]
    if not older:
        return fetched
    return fetched.filter(
        pc.invert(pc.is_in(fetched.column(key), pa.array(older, fetched.schema.field(key).type)))
    )


def _value(plain: Any, kind: pa.DataType) -> Any:
    """A parent value as journaled (a time as ISO text) in the column's type."""
    if pa.types.is_timestamp(kind) and isinstance(plain, str):
        return dt.datetime.fromisoformat(plain)
    return plain


def _same(current: pa.Table, records: pa.Table, key: tuple[str, ...]) -> bool:
    """Whether the part holds these records already (the run's own columns aside), in
    whatever order the service answered them."""
    if current.num_rows != records.num_rows:
        return False
    names = [name for name in current.schema.names if name not in RUN_COLUMNS]
    before, after = current.select(names), records.select(names)
    if before.num_rows > 1:  # by the key, then by every plain column (a key may repeat)
        plain = [f.name for f in before.schema if not pa.types.is_nested(f.type)]
        by = [*(name for name in key if name in plain), *(n for n in plain if n not in key)]
        order: list[tuple[str, Literal["ascending", "descending"]]] = [(n, "ascending") for n in by]
        before, after = before.sort_by(order), after.sort_by(order)
    return bool(before.equals(after))


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
