"""OrderIds held compactly: a run may plan millions, so they live in ``array('q')`` (8 bytes
an id) rather than lists of Python ints (about 36), and set operations run in Arrow, imported
by the operations that use it: reading a journal (``status``) sets no ids against others."""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    import pyarrow as pa

    Ids: TypeAlias = array[int]  # array("q") of OrderIds
else:
    Ids = array


def ids_of(values: Iterable[int]) -> Ids:
    return array("q", values)


def as_arrow(ids: Ids) -> pa.Array[Any]:
    """An int64 Arrow view of ``ids`` (no copy)."""
    import pyarrow as pa

    return pa.Array.from_buffers(pa.int64(), len(ids), [None, pa.py_buffer(ids)])


def from_arrow(values: pa.Array[Any]) -> Ids:
    import pyarrow as pa

    values = values.cast(pa.int64())
    if values.null_count:
        values = values.drop_null()
    out = array("q")
    data = values.buffers()[1]
    if data is not None:
        start = values.offset * 8
        out.frombytes(memoryview(data)[start : start + len(values) * 8])
    return out


def unique(ids: Ids) -> Ids:
    """Each id once, in the order it first appears (a service may repeat one); ``ids``
    itself when none repeats. By a stable
    sort, not a hash table: a few bytes an id (Arrow's hashing took over 100)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = as_arrow(ids)
    if len(values) < 2:
        return ids
    order = pc.sort_indices(values)  # stable: the first of equal ids comes first
    ordered = pc.take(values, order)
    repeated = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
    if not pc.any(repeated).as_py():
        return ids  # the common case: nothing repeated, no copy
    later = pc.filter(order.slice(1), repeated)  # positions of second and later copies
    keep = pc.invert(pc.is_in(pa.array(range(len(values)), pa.uint64()), value_set=later))
    return from_arrow(pc.filter(values, keep))


def without(ids: Ids, done: Ids) -> Ids:
    """``ids`` less those in ``done``, in their order."""
    if not done or not ids:
        return ids  # nothing to take away: the same ids (neither is changed in place)
    import pyarrow.compute as pc

    keep = pc.invert(pc.is_in(as_arrow(ids), value_set=as_arrow(done)))
    return from_arrow(pc.filter(as_arrow(ids), keep))


def among(ids: Ids, kept: Ids) -> Ids:
    """``ids`` that are also in ``kept``, in their order."""
    if not ids or not kept:
        return ids_of(())
    import pyarrow.compute as pc

    keep = pc.is_in(as_arrow(ids), value_set=as_arrow(kept))
    return from_arrow(pc.filter(as_arrow(ids), keep))
