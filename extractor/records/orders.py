"""GetOrderSyncList and GetInvoices: what to ask for, and parsed orders as two Arrow tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final, cast

import numpy
import pyarrow as pa
import pyarrow.compute as pc
from lxml import etree

from extractor import arrow, schema, soap
from extractor.errors import DataError
from extractor.ids import ids_of
from extractor.parser import COLLECT_EVERY, PartStream, RawPart, RecordStream, int_reader

NAMESPACE: Final = "http://24sevenOffice.com/webservices"
ORDER_TAG: Final = f"{{{NAMESPACE}}}InvoiceOrder"
#: Always fetched: the key, the date the partitions are cut by, and the error the service may
#: return an order with (else a selection's run reads "0 api errors" where a full one has some).
REQUIRED: Final = ("OrderId", "DateOrdered", "APIException")
PARTITION: Final = "order_month"
ROW_INDEX: Final = "_row_index"
NOT_SET: Final = soap.Raw("0001-01-01T00:00:00")


def sync_params(
    changed_after: dt.datetime | None, registered_after: dt.datetime | None
) -> dict[str, Any]:
    """GetOrderSyncList parameters; the WSDL requires RegisteredAfter, so it is always sent."""
    return {
        "syncParams": {
            "ChangedAfter": changed_after or NOT_SET,
            "RegisteredAfter": registered_after or NOT_SET,
        }
    }


class IdStream(RecordStream):
    """A GetOrderSyncList body: its ids, compactly (a listing may hold millions)."""

    def __init__(self) -> None:
        self.ids = ids_of(())
        super().__init__(f"{{{NAMESPACE}}}int", self._add)

    def _add(self, elem: etree._Element) -> None:
        self.ids.append(int_reader(elem))

    def abort(self) -> None:
        super().abort()
        self.ids = ids_of(())


def id_stream() -> IdStream:
    return IdStream()


@dataclass(frozen=True)
class Selection:
    """Which InvoiceOrder and InvoiceRow properties a run fetches (all when none are named)."""

    invoice_properties: tuple[str, ...] = ()
    row_properties: tuple[str, ...] = ()

    @classmethod
    def checked(cls, invoice: Sequence[str], rows: Sequence[str]) -> Selection:
        """Validate names against the WSDL before any request; add the required fields."""
        schema.check_properties(schema.invoice_order(), tuple(invoice), "invoice_properties")
        schema.check_properties(schema.invoice_row(), tuple(rows), "row_properties")
        if invoice:
            invoice = [*REQUIRED, *(name for name in invoice if name not in REQUIRED)]
        return cls(tuple(invoice), tuple(rows))

    @cached_property
    def order_fields(self) -> tuple[schema.Field, ...]:
        return tuple(
            f
            for f in schema.select(schema.invoice_order(), self.invoice_properties)
            if f.name != "InvoiceRows"
        )

    @cached_property
    def row_fields(self) -> tuple[schema.Field, ...]:
        return schema.select(schema.invoice_row(), self.row_properties)

    @property
    def wants_rows(self) -> bool:
        return not self.invoice_properties or "InvoiceRows" in self.invoice_properties

    def params(self, order_ids: Sequence[int]) -> dict[str, Any]:
        """GetInvoices parameters; every property is named, as the live service requires."""
        return {
            "searchParams": {"OrderIds": list(order_ids)},
            "invoiceReturnProperties": [
                f.name for f in schema.select(schema.invoice_order(), self.invoice_properties)
            ],
            "rowReturnProperties": [f.name for f in self.row_fields] if self.wants_rows else [],
        }

    @cached_property
    def response_struct(self) -> schema.Struct:
        """The InvoiceOrder fields a response holds, rows narrowed to the row selection."""
        fields = []
        for f in schema.select(_ORDER, self.invoice_properties):
            if f.name == "InvoiceRows":
                if not self.wants_rows:
                    continue
                rows = cast(schema.ListOf, f.type)
                item = schema.Struct(_ROW.name, self.row_fields)
                f = schema.Field(f.name, schema.ListOf(rows.name, rows.item_tag, item), f.nillable)
            fields.append(f)
        return schema.Struct(_ORDER.name, tuple(fields))

    @cached_property
    def raw_type(self) -> pa.DataType:
        return arrow.raw_type(self.response_struct)

    @cached_property
    def order_schema(self) -> pa.Schema:
        return arrow.schema_for(self.order_fields)

    @cached_property
    def row_schema(self) -> pa.Schema:
        key = pa.schema([pa.field("OrderId", pa.int32()), pa.field(ROW_INDEX, pa.int32())])
        return pa.unify_schemas([key, arrow.schema_for(self.row_fields)])


_ORDER: Final = schema.invoice_order()
_ROW: Final = schema.invoice_row()


class Orders:
    """Raw parts of one GetInvoices response to typed batches, a part at a time.

    Only the requested ids are kept, each once; ``missing`` lists the requested ids the
    response did not hold.
    """

    def __init__(self, selection: Selection, order_ids: Sequence[int]) -> None:
        self._selection = selection
        self._wanted = set(order_ids)
        self.batches: list[Batch] = []

    def add(self, part: RawPart) -> None:
        raw = arrow.raw_array(part, self._selection.raw_type)
        kept, wanted = [], self._wanted
        for at, text in enumerate(raw.field("OrderId").to_pylist()):
            order_id = _order_id(text)
            if order_id in wanted:
                wanted.discard(order_id)
                kept.append(at)
        if len(kept) < len(raw):
            raw = raw.take(pa.array(kept, pa.int32()))
        if kept:
            self.batches.append(to_batch(raw, self._selection))

    def combined(self) -> Batch | None:
        """Every part converted so far as one batch (None when no order came back)."""
        if len(self.batches) <= 1:
            return self.batches[0] if self.batches else None
        parts = self.batches
        return Batch(
            pa.concat_tables([p.orders for p in parts]),
            pa.concat_tables([p.rows for p in parts]),
            pa.concat_arrays([p.order_partitions for p in parts]),
            pa.concat_arrays([p.row_partitions for p in parts]),
        )

    def typed(self, parts: Iterable[RawPart]) -> Batch | None:
        """``parts`` (a parser process's, of one response) as one typed batch, on the thread
        that calls it; that thread's freed Arrow pages are handed back (mimalloc keeps them
        per thread otherwise)."""
        for part in parts:
            self.add(part)
        batch = self.combined()
        pa.default_memory_pool().release_unused()
        return batch

    @property
    def missing(self) -> list[int]:
        return sorted(self._wanted)


def order_stream(selection: Selection) -> PartStream:
    """A GetInvoices body's orders as raw parts (what a parser process runs)."""
    return PartStream(ORDER_TAG, selection.response_struct, NAMESPACE)


class OrderSink(PartStream):
    """A GetInvoices body to typed Arrow while it arrives, ``every`` orders at a time
    (:class:`Orders`): raw columns never hold more than ``every`` orders."""

    def __init__(
        self, selection: Selection, order_ids: Sequence[int], every: int = COLLECT_EVERY
    ) -> None:
        super().__init__(ORDER_TAG, selection.response_struct, NAMESPACE, every)
        self._selection, self._ids = selection, order_ids
        self.orders = Orders(selection, order_ids)

    def collected(self, part: RawPart) -> None:
        self.orders.add(part)

    def abort(self) -> None:
        super().abort()
        self.orders = Orders(self._selection, self._ids)

    @property
    def batches(self) -> list[Batch]:
        return self.orders.batches

    def combined(self) -> Batch | None:
        return self.orders.combined()

    @property
    def missing(self) -> list[int]:
        return self.orders.missing


def _order_id(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        raise DataError(f"InvoiceOrder.OrderId: {text!r} is not a valid int") from None


@dataclass(frozen=True)
class Batch:
    """One response's orders and rows, typed, with the partition of every record."""

    orders: pa.Table
    rows: pa.Table
    order_partitions: pa.Array[Any]
    row_partitions: pa.Array[Any]


def to_batch(raw: pa.StructArray, selection: Selection) -> Batch:
    """Typed tables from a raw InvoiceOrder array (as the parser collects it), no null orders."""
    orders = arrow.table(selection.order_fields, raw)
    months = partition_of(orders.column("DateOrdered"))
    if not selection.wants_rows:
        rows = arrow.empty(selection.row_schema)
        return Batch(orders, rows, months, months[:0])
    lists = raw.field("InvoiceRows")
    items = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists)
    index = _place_in_list(parents)
    if items.null_count:  # a nil InvoiceRow is no row
        valid = items.is_valid()
        items, parents, index = items.filter(valid), parents.filter(valid), index.filter(valid)
    rows = arrow.table(selection.row_fields, cast(pa.StructArray, items))
    rows = rows.add_column(0, "OrderId", orders.column("OrderId").take(parents))
    rows = rows.add_column(1, ROW_INDEX, index)
    return Batch(orders, rows, months, months.take(parents))


def _place_in_list(parents: pa.Array[Any]) -> pa.Array[Any]:
    """Each row's place in its order's list (0, 1, ... per order), from the runs of equal
    ``parents``; in numpy, to and from Arrow as buffers: ``pa.array`` of a Python list (or of
    an ndarray), and ``to_numpy``, import pandas, 0.2-0.6 s of ``extractor check``."""
    count = len(parents)
    values: Any = parents.cast(pa.int64()).buffers()[1]  # parents hold no null
    owner = numpy.frombuffer(values, numpy.int64, count)
    starts = numpy.flatnonzero(numpy.r_[True, owner[1:] != owner[:-1]]) if count else owner
    first = numpy.repeat(starts, numpy.diff(numpy.r_[starts, count]))
    place = (numpy.arange(count) - first).astype(numpy.int32)
    return pa.Array.from_buffers(pa.int32(), count, [None, pa.py_buffer(place.data)])


def partition_of(date_ordered: pa.ChunkedArray[Any]) -> pa.Array[Any]:
    """``YYYY-MM`` of DateOrdered (UTC); null for orders without one."""
    return pc.strftime(date_ordered.combine_chunks(), format="%Y-%m")
