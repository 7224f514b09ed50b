"""A change to one partition of a Delta table, as the files it rewrites (:mod:`.lakefiles`).

A change names the keys whose stored records go (``drop``), the records to add, and
optionally an edit of the records it keeps (marking them deleted). Only the files whose key
ranges hold a dropped or edited key are read and rewritten; each added record goes into the
file whose range is the nearest below its key (the partition's first file for keys below
them all), so ranges stay disjoint and new records join an existing file rather than
scattering small ones. A rewritten file that outgrows :attr:`Layout.max_records` is cut in
two. Memory: one file and the records added to it.

A :class:`Plan` is what a publish changes in a table group: which staged keys are new or
changed (:func:`stored_plan` finds, with one narrow scan of the table, where each is stored
and whether the table already holds it), and in which partitions their stored records go.
Only a record at least as new as the stored one replaces it: a staged record whose
``DateChanged`` is older (a lagging replica answered) is kept out, and named ``stale``.

The files keep every column of the table, the ones another writer added too: a file read
back, and the records added to it, are made the table's schema (:func:`conformed`), a
column a record does not have being null.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, QueryBuilder
from deltalake.exceptions import DeltaError
from deltalake.transaction import AddAction, RemoveAction

from extractor.arrow import cast_table, string_scalar
from extractor.errors import OutputError, first_line
from extractor.output.lakefiles import (
    LAYOUTS,
    WHOLE,
    DataFile,
    Layout,
    Scope,
    TableFiles,
    covering,
)
from extractor.output.staging import NULL_PARTITION, latest

Edit = Callable[[pa.Table], pa.Table]


@dataclass
class Change:
    """What happens to one partition: ``drop`` keys go, ``add`` records come, ``edit`` is
    applied to the stored records of the ``edited`` keys."""

    drop: pa.Array[Any] = field(default_factory=lambda: pa.nulls(0))
    add: pa.Table | None = None
    edited: pa.Array[Any] = field(default_factory=lambda: pa.nulls(0))
    edit: Edit | None = None


def apply(
    files: TableFiles, stored: Sequence[DataFile], partition: str, change: Change,
    schema: pa.Schema,
) -> tuple[list[RemoveAction], list[AddAction]]:  # fmt: skip
    """The actions that make ``partition`` (its files ``stored``) reflect ``change``."""
    kind = files.layout.key_type
    touched = _holding(stored, pa.concat_arrays([change.drop.cast(kind), change.edited.cast(kind)]))
    add = None if change.add is None else conformed(change.add, schema)
    added = _placed(stored, files.layout.key, add)
    touched |= set(added) - {-1}
    removes: list[RemoveAction] = []
    adds: list[AddAction] = []
    for position in sorted(touched):
        file = stored[position]
        kept = _kept(conformed(files.read(file), schema), files.layout.key, change)
        extra = added.get(position)
        records = kept if extra is None else pa.concat_tables([kept, extra])
        removes.append(files.removed(file))
        if records.num_rows:
            adds += files.write(partition, records)
    if -1 in added:  # a partition without files yet
        adds += files.write(partition, added[-1])
    return removes, adds


def conformed(records: pa.Table, schema: pa.Schema) -> pa.Table:
    """``records`` with ``schema``'s columns, in its order and types: a column it lacks is
    null (another writer's, on a record of ours; ours, on a file of an older table)."""
    try:
        if records.schema.names == schema.names:
            return cast_table(records, schema)
        rows, names = records.num_rows, set(records.schema.names)
        columns = [
            records.column(f.name).cast(f.type) if f.name in names else pa.nulls(rows, f.type)
            for f in schema
        ]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise OutputError(
            f"a file of the Delta table does not hold the table's columns as it says: {exc}"
        ) from None
    return pa.Table.from_arrays(columns, schema=schema)


def with_theirs(ours: pa.Schema, table: pa.Schema) -> pa.Schema:
    """``ours`` and then the columns of the ``table``'s schema that the extractor does not
    write (another writer's)."""
    for theirs in table:
        if ours.get_field_index(theirs.name) < 0:
            ours = ours.append(theirs)
    return ours


def _holding(stored: Sequence[DataFile], keys: pa.Array[Any]) -> set[int]:
    return {position for position, held in enumerate(covering(stored, keys)) if held}


def _placed(stored: Sequence[DataFile], key: str, add: pa.Table | None) -> dict[int, pa.Table]:
    """The records to add, by the position of the file each goes into (-1: no file)."""
    if add is None or not add.num_rows:
        return {}
    if not stored:
        return {-1: add}
    lows = [file.low for file in stored]
    keys = add.column(key).to_pylist()
    if None in lows:  # a file of unknown range is rewritten anyway: the records go there
        positions = [lows.index(None)] * len(keys)
    else:
        positions = [max(bisect.bisect_right(lows, k) - 1, 0) for k in keys]
    chosen = pa.array(positions, pa.int64())
    return {
        position: add.filter(pc.equal(chosen, pa.scalar(position)))
        for position in sorted(set(positions))
    }


def _kept(records: pa.Table, key: str, change: Change) -> pa.Table:
    column = records.column(key)
    if len(change.drop):
        records = records.filter(pc.invert(pc.is_in(column, change.drop.cast(column.type))))
    if change.edit is not None and len(change.edited):
        marked = pc.is_in(records.column(key), change.edited.cast(column.type))
        records = pa.concat_tables(
            [records.filter(pc.invert(marked)), change.edit(records.filter(marked))]
        )
    return records


@dataclass(frozen=True)
class Plan:
    """What a publish changes in a table group: the ``changed`` keys' staged records are
    written (those of a key staged in several partitions, only in its ``newest``), and in
    each partition the stored records of the keys in ``drops`` go. The ``stale`` keys' staged
    records are older than the stored ones, and not written."""

    changed: int
    newest: pa.Table | None = None  # (_key, _partition); None: every staged record
    drops: dict[str, pa.Array[Any]] = field(default_factory=dict)
    stale: pa.Array[Any] = field(default_factory=lambda: pa.nulls(0))

    @classmethod
    def everything(cls, staged: pa.Table, key: str, version: str | None = None) -> Plan:
        """Every staged record into empty tables: one per key, the latest ``version``."""
        if version is None or not _repeats(staged.column(key)):
            return cls(staged.num_rows)
        newest = keyed(latest(staged, key, version), key).select(["_key", "_partition"])
        return cls(newest.num_rows, newest)

    def kept(self, records: pa.Table, partition: str, key: str) -> pa.Table:
        """The staged ``records`` of ``partition`` this plan writes."""
        if self.newest is None:
            return records
        here = self.newest.filter(
            pc.equal(self.newest.column("_partition"), string_scalar(partition))
        )
        wanted = here.column("_key").combine_chunks().cast(records.schema.field(key).type)
        return records.filter(pc.is_in(records.column(key), wanted))


LAYOUTS_BY_KEY: Final = {layout.key: layout.key_type for layout in LAYOUTS.values()}


def keyed(staged: pa.Table, key: str) -> pa.Table:
    """``staged`` with its key as ``_key``, in the type keys are compared in."""
    index = staged.schema.get_field_index(key)
    return staged.set_column(index, "_key", staged.column(key).cast(LAYOUTS_BY_KEY[key]))


def _repeats(keys: pa.ChunkedArray[Any]) -> bool:
    """Whether a key is staged twice: the highest dense rank is the number of distinct keys.
    Counting them in a hash table (``count_distinct``) held 69 MB for 600,000 ledger Ids,
    the peak of a first sync's whole run; ranking them, 9 MB."""
    return bool(len(keys)) and pc.max(pc.rank(keys, tiebreaker="dense")).as_py() < len(keys)


def stored_plan(table: DeltaTable, layout: Layout, staged: pa.Table, scope: Scope = WHOLE) -> Plan:
    """The records of ``staged`` (key, DateChanged, _partition) that ``table`` (its part
    ``scope``) does not hold already (same key and DateChanged, live) nor holds newer
    (``stale``), and where their stored records are."""
    newest = keyed(latest(staged, layout.key, "DateChanged"), layout.key)
    keys = newest.column("_key").combine_chunks()
    stored = stored_keys(table, layout, lambda column: pc.is_in(column, keys), scope)
    unchanged, stale = _held(stored, newest)
    newest = newest.filter(pc.invert(pc.is_in(keys, pa.concat_arrays([unchanged, stale]))))
    moved = stored.filter(pc.is_in(stored.column("_key"), newest.column("_key").combine_chunks()))
    drops = pa.concat_tables(
        [newest.select(["_key", "_partition"]), moved.select(["_key", "_partition"])]
    )
    placed = newest.select(["_key", "_partition"])
    return Plan(newest.num_rows, placed, by_partition(drops), stale)


def _held(stored: pa.Table, newest: pa.Table) -> tuple[pa.Array[Any], pa.Array[Any]]:
    """The staged keys whose stored record is the same (key and DateChanged, live), and those
    whose stored record is newer (a DateChanged later than the staged one)."""
    same = stored.join(newest.select(["_key", "DateChanged"]), "_key", join_type="inner")
    equal = pc.fill_null(pc.equal(same["_v"], same["DateChanged"]), pa.scalar(False))
    older = pc.fill_null(pc.less(same["DateChanged"], same["_v"]), pa.scalar(False))
    unchanged = same.filter(pc.and_(same.column("live"), cast(Any, equal))).column("_key")
    stale = same.filter(cast(Any, older)).column("_key")
    kind = stored.schema.field("_key").type
    return unchanged.combine_chunks().cast(kind), pc.unique(stale.combine_chunks()).cast(kind)


def stored_keys(
    table: DeltaTable,
    layout: Layout,
    wanted: Callable[[pa.Array[Any]], pa.Array[Any]],
    scope: Scope = WHOLE,
) -> pa.Table:
    """The ``wanted`` stored keys (``_key``) of ``scope``, read a batch at a time: their
    partition (``_partition``, as staged), DateChanged (``_v``) and whether they are live."""
    live = "_deleted_at IS NULL" if "_deleted_at" in _names(table) else "TRUE"
    sql = (
        f'SELECT "{layout.key}" AS _key, "{layout.partition}" AS _partition, '
        f'"DateChanged" AS _v, {live} AS live FROM t WHERE {scope.where()}'
    )
    types: dict[str, pa.DataType] = {
        "_key": layout.key_type,
        "_partition": pa.string(),
        "_v": pa.timestamp("us", tz="UTC"),
        "live": pa.bool_(),
    }
    schema = pa.schema(types)
    parts = []
    try:
        for batch in QueryBuilder().register("t", table).execute(sql):
            part = pa.record_batch(batch).cast(schema)  # from DataFusion's types (string_view)
            parts.append(part.filter(wanted(part.column("_key"))))
    except DeltaError as exc:
        raise OutputError(f"cannot read the Delta table: {first_line(exc)}") from None
    found = pa.Table.from_batches(parts, schema)
    partitions: Any = pc.fill_null(found.column("_partition"), pa.scalar(NULL_PARTITION))
    return found.set_column(1, "_partition", partitions)


def by_partition(keyed: pa.Table) -> dict[str, pa.Array[Any]]:
    """``_key`` by ``_partition``, each partition's unique."""
    grouped = keyed.group_by("_partition").aggregate([("_key", "distinct")])
    names: list[Any] = grouped.column("_partition").to_pylist()
    lists: Any = grouped.column("_key_distinct").combine_chunks()
    return {name: lists[index].values for index, name in enumerate(names)}


def _names(table: DeltaTable) -> set[str]:
    return {field.name for field in table.schema().fields}
