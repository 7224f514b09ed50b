"""A deterministic simulated client company: its orders, as sent on the wire and as truth.

Nothing is stored per order but its id and two dates: an order's fields are regenerated from
``(seed, OrderId)`` whenever they are needed, so a tenant of millions costs megabytes.
"""

from __future__ import annotations

import datetime as dt
import functools
import heapq
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from extractor import schema
from extractor.simulator import values
from extractor.soap import NIL

FIRST_DAY: Final = dt.datetime(2015, 1, 1)
LAST_DAY: Final = dt.datetime(2025, 9, 30)
#: Fields a sparse order still has; everything else is absent.
SPARSE_FIELDS: Final = frozenset({"OrderId", "CustomerId", "OrderStatus", "DateChanged"})
#: Rows are drawn from a pool of this many, so a tenant renders fast enough to feed benchmarks.
ROW_POOL: Final = 4096
#: Orders share their other fields with one of this many templates, for the same reason.
ORDER_POOL: Final = 2048

Wire = dict[str, Any]
IdShape = Literal["clustered", "scattered"]
ID_SHAPES: Final = ("clustered", "scattered")
ChurnShape = Literal["accounting", "uniform"]
CHURN_SHAPES: Final = ("accounting", "uniform")
#: When a scattered tenant moved in and imported its history.
MOVED_IN: Final = dt.datetime(2024, 1, 8)
#: Where the imported series and the two live series of a scattered tenant start.
IMPORTED_FROM: Final = 100_001
LIVE_SERIES: Final = (20_000_001, 40_000_001)
#: In accounting-shaped churn, the share of changes and deletions on recent orders.
RECENT_SHARE: Final = 0.85
#: Recent orders: the newest this share of the tenant (or as many as the churn needs).
RECENT_POOL: Final = 0.03
Numbered = list[tuple[int, dt.datetime, dt.datetime]]


@dataclass(frozen=True)
class OrderTruth:
    """One order as a correct extractor writes it: the order record and its rows."""

    order: dict[str, Any]
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class Churn:
    """How many orders a round of churn changes, deletes and adds."""

    changed: int = 0
    deleted: int = 0
    added: int = 0


@dataclass(frozen=True)
class ChurnReport:
    """The OrderIds a round of churn changed, deleted and added."""

    changed: list[int]
    deleted: list[int]
    added: list[int]


class Tenant:
    """``orders`` orders with ids, registration and change times spread over ten years.

    ``ids`` says how OrderIds relate to dates: ``"clustered"``, one series that follows
    DateOrdered (a batch of consecutive ids falls into a month or two); ``"scattered"``, as
    a company that moved in on :data:`MOVED_IN` has it: its history imported in an order
    unrelated to dates (every batch of it spans years, and it was all changed at the import),
    then two live series (say, two departments) numbering their own orders.
    """

    def __init__(self, orders: int = 50_000, seed: int = 7, ids: IdShape = "scattered") -> None:
        if ids not in ID_SHAPES:
            raise ValueError(f"ids {ids!r} is not one of {', '.join(ID_SHAPES)}")
        self.seed = seed
        rng = random.Random(seed)
        span = (LAST_DAY - FIRST_DAY).total_seconds()
        offsets = sorted(rng.random() * span for _ in range(orders))
        self.ids: list[int] = []
        self.registered: dict[int, dt.datetime] = {}
        self.changed: dict[int, dt.datetime] = {}
        dates = [FIRST_DAY + dt.timedelta(seconds=int(offset)) for offset in offsets]
        numbered = _clustered(rng, dates) if ids == "clustered" else _scattered(rng, dates)
        for order_id, registered, changed in sorted(numbered):
            self.ids.append(order_id)
            self.registered[order_id], self.changed[order_id] = registered, changed
        #: The highest OrderId ever given: a deleted order's id is never given again.
        self.issued = max(self.ids, default=0)
        self._order = schema.invoice_order()
        self._row = schema.invoice_row()
        self.row_pool, self.order_pool = pools(seed)
        self.edits: dict[int, Wire] = {}  # what UpdateInvoices changed, by order
        #: Ids GetOrderSyncList lists (with their DateChanged) and GetInvoices never returns:
        #: an archive the service lists but cannot read, a replica behind its listing.
        self.phantoms: dict[int, dt.datetime] = {}

    def update(self, order_id: int, values: Wire, when: dt.datetime) -> str | None:
        """Apply an UpdateInvoices change; the reason it is refused, or None when applied."""
        if order_id not in self.registered:
            return f"InvoiceOrder {order_id} does not exist"
        if self.wire(order_id).get("OrderStatus") != "Invoiced":
            return f"InvoiceOrder {order_id} is not invoiced; only invoiced orders can be updated"
        self.edits.setdefault(order_id, {}).update(values)
        self.changed[order_id] = when  # a later incremental run sees the change
        return None

    def churn(
        self,
        rng: random.Random,
        changes: Churn,
        when: dt.datetime,
        shape: ChurnShape = "accounting",
    ) -> ChurnReport:
        """Change, delete and add orders as a busy company does between two syncs.

        ``"uniform"`` picks the orders at random over the whole history (the worst case for a
        sync). ``"accounting"`` is what bookkeeping does: :data:`RECENT_SHARE` of the changes
        and deletions fall on recent orders (not yet invoiced, being paid, drafts thrown
        away), the rest is a thin tail over old invoices. A recent change gets a new status,
        totals and title, and rows removed and added; an old invoice only a new title or
        reference. Every change and new order has ``DateChanged`` ``when``; deleted orders
        vanish from GetOrderSyncList and GetInvoices.
        """
        if shape not in CHURN_SHAPES:
            raise ValueError(f"churn {shape!r} is not one of {', '.join(CHURN_SHAPES)}")
        reworked, retitled, deleted = self._pick(rng, changes, shape)
        for order_id in reworked:
            self._rework(rng, order_id)
        for order_id in retitled:
            self.edits.setdefault(order_id, {}).update(
                {rng.choice(("InvoiceTitle", "ReferenceNumber")): values.text(rng, "InvoiceTitle")}
            )
        changed = sorted(reworked + retitled)
        for order_id in changed:
            self.changed[order_id] = when
        self.delete(deleted)
        added = list(range(self.issued + 1, self.issued + 1 + changes.added))
        self.issued += changes.added
        for order_id in added:
            self.ids.append(order_id)
            self.registered[order_id] = self.changed[order_id] = when
        return ChurnReport(changed, sorted(deleted), added)

    def delete(self, order_ids: Iterable[int]) -> list[int]:
        """Delete these orders (those it has): gone from GetOrderSyncList and GetInvoices;
        the ids deleted."""
        gone = [order_id for order_id in order_ids if order_id in self.registered]
        for order_id in gone:
            del self.registered[order_id], self.changed[order_id]
            self.edits.pop(order_id, None)
        if gone:
            dropped = set(gone)
            self.ids = [order_id for order_id in self.ids if order_id not in dropped]
        return gone

    def _pick(
        self, rng: random.Random, changes: Churn, shape: ChurnShape
    ) -> tuple[list[int], list[int], list[int]]:
        """The orders to rework, to retitle and to delete, none of them twice."""
        wanted = min(changes.changed + changes.deleted, len(self.ids))
        if shape == "uniform":
            picked = rng.sample(self.ids, wanted)
            return picked[: changes.changed], [], picked[changes.changed :]
        fresh_changed = round(changes.changed * RECENT_SHARE)
        fresh_count = min(wanted, fresh_changed + round(changes.deleted * RECENT_SHARE))
        pool = max(int(len(self.ids) * RECENT_POOL), fresh_count)
        recent = heapq.nlargest(pool, self.ids, key=self.registered.__getitem__)
        fresh = rng.sample(recent, fresh_count)
        taken = set(fresh)
        rest = [order_id for order_id in self.ids if order_id not in taken]
        old = rng.sample(rest, min(len(rest), wanted - fresh_count))
        old_changed = changes.changed - fresh_changed
        return fresh[:fresh_changed], old[:old_changed], fresh[fresh_changed:] + old[old_changed:]

    def _rework(self, rng: random.Random, order_id: int) -> None:
        """A new status, totals and title, and rows removed and added."""
        status = next(f for f in self._order.fields if f.name == "OrderStatus").type
        assert isinstance(status, schema.Scalar)
        rows = list(self.wire(order_id).get("InvoiceRows") or ())
        for _ in range(min(len(rows), rng.randint(0, 2))):
            rows.pop(rng.randrange(len(rows)))
        rows += [rng.randrange(ROW_POOL) for _ in range(rng.randint(0, 3))]
        total = values.decimal(rng, "OrderTotalIncVat")
        self.edits.setdefault(order_id, {}).update(
            OrderStatus=values.enum(rng, status),
            InvoiceTitle=values.text(rng, "InvoiceTitle"),
            OrderTotalIncVat=total,
            OrderTotalVat=(total / 5).quantize(total),
            InvoiceRows=rows,
        )

    def sync_list(
        self, changed_after: dt.datetime | None, registered_after: dt.datetime | None
    ) -> list[int]:
        """The ids GetOrderSyncList returns for these filters (None: no filter), phantoms
        included."""
        listed = [
            order_id
            for order_id in self.ids
            if (changed_after is None or self.changed[order_id] > changed_after)
            and (registered_after is None or self.registered[order_id] > registered_after)
        ]
        return listed + [
            order_id
            for order_id, changed in self.phantoms.items()
            if all(after is None or changed > after for after in (changed_after, registered_after))
        ]

    def wire(self, order_id: int) -> Wire:
        """The order as the service sends it: values, ``NIL``, sentinels, absences.

        ``InvoiceRows`` holds indexes into :attr:`row_pool`.
        """
        template, own = self.parts(order_id)
        return {**self.order_pool[template], **own}

    def parts(self, order_id: int) -> tuple[int, Wire]:
        """The order's template (an index into :attr:`order_pool`) and its own fields."""
        rng = random.Random(self.seed * 1_000_003 + order_id)
        template = rng.randrange(ORDER_POOL)
        own: Wire = {"OrderId": order_id, "DateChanged": self.changed[order_id]}
        pooled = self.order_pool[template]
        if isinstance(pooled.get("DateOrdered"), dt.datetime):
            own["DateOrdered"] = self.registered[order_id]
        if "InvoiceRows" in pooled:
            rows = self._rows(rng)
            if rows is not None:
                own["InvoiceRows"] = rows
        own.update(self.edits.get(order_id, ()))
        return template, own

    def _rows(self, rng: random.Random) -> list[int] | None:
        """Indexes into ``row_pool`` (None: the InvoiceRows element is absent)."""
        roll = rng.random()
        if roll < 0.03:
            return None
        count = 0 if roll < 0.10 else rng.randint(40, 250) if roll > 0.985 else rng.randint(1, 6)
        return [rng.randrange(ROW_POOL) for _ in range(count)]

    def truth(
        self,
        order_id: int,
        invoice_properties: Sequence[str] = (),
        row_properties: Sequence[str] = (),
    ) -> OrderTruth:
        """What a correct extractor writes for this order and property selection: its
        template's and rows' typed values (made once per seed, :func:`_typed_template`,
        :func:`_typed_row`) and its own fields over them."""
        template, own = self.parts(order_id)
        props, row_props = tuple(invoice_properties), tuple(row_properties)
        order = dict(_typed_template(self.seed, template, props))
        for name, value in own.items():
            if name in order:
                order[name] = values.truth(_order_types()[name], value)
        rows: list[dict[str, Any]] = []
        wants_rows = not props or "InvoiceRows" in props
        pooled = own.get("InvoiceRows", self.order_pool[template].get("InvoiceRows"))
        pooled = pooled or () if wants_rows else ()
        for index, number in enumerate(pooled):
            typed = _typed_row(self.seed, number, row_props)
            rows.append({"OrderId": order_id, "_row_index": index, **typed})
        return OrderTruth(order, rows)

    def ground_truth(
        self,
        ids: Iterable[int] | None = None,
        invoice_properties: Sequence[str] = (),
        row_properties: Sequence[str] = (),
    ) -> dict[int, OrderTruth]:
        """Typed truth for ``ids`` (default every order), without going through XML."""
        return {
            order_id: self.truth(order_id, invoice_properties, row_properties)
            for order_id in (self.ids if ids is None else ids)
        }


def restrict(wire: Wire, names: Sequence[str]) -> Wire:
    """The part of ``wire`` a property selection returns (all of it when none are named)."""
    if not names:
        return wire
    return {name: wire[name] for name in names if name in wire}


@functools.lru_cache(maxsize=16)
def pools(seed: int) -> tuple[tuple[Wire, ...], tuple[Wire, ...]]:
    """The rows and order templates every order of a ``seed``'s tenants is built from; made
    once per seed (they cost most of a tenant's making) and never changed: an order's own
    fields and edits live in its tenant."""
    rng = random.Random(seed + 1)
    rows = tuple(_pool_row(rng, number) for number in range(ROW_POOL))
    return rows, tuple(_template(rng) for _ in range(ORDER_POOL))


@functools.lru_cache(maxsize=16_384)
def _typed_template(seed: int, template: int, props: tuple[str, ...]) -> dict[str, Any]:
    """The truth of a ``seed``'s order template for a property selection (never changed:
    :meth:`Tenant.truth` copies it and sets the order's own fields)."""
    pooled = pools(seed)[1][template]
    return {
        f.name: values.truth(f.type, pooled.get(f.name))
        for f in schema.select(schema.invoice_order(), props)
        if f.name != "InvoiceRows"
    }


@functools.lru_cache(maxsize=16_384)
def _typed_row(seed: int, number: int, row_props: tuple[str, ...]) -> dict[str, Any]:
    """The truth of a ``seed``'s pooled row for a property selection (never changed)."""
    row = pools(seed)[0][number]
    fields = schema.select(schema.invoice_row(), row_props)
    return {f.name: values.truth(f.type, row.get(f.name)) for f in fields}


@functools.cache
def _order_types() -> dict[str, schema.FieldType]:
    """The invoice order's fields' types, by name."""
    return {f.name: f.type for f in schema.invoice_order().fields}


def _template(rng: random.Random) -> Wire:
    anchor = FIRST_DAY + dt.timedelta(days=rng.randint(0, 3800))
    sparse = rng.random() < 0.08
    order: Wire = {}
    for field in schema.invoice_order().fields:
        if sparse and field.name not in SPARSE_FIELDS:
            continue
        value = _order_field(rng, field, anchor)
        if value is not None:
            order[field.name] = value
    return order


def _order_field(rng: random.Random, field: schema.Field, anchor: dt.datetime) -> Any:
    name = field.name
    if name in ("OrderId", "DateChanged"):
        return None  # the order's own
    if name == "InvoiceRows":
        return []  # a marker: orders of this template have rows of their own
    if name == "APIException" and rng.random() > 0.01:
        return None
    if name != "DateOrdered" and rng.random() < 0.12:
        return values.blank(rng, field)
    if name == "DateOrdered" and rng.random() < 0.06:
        return values.blank(rng, field)
    return _value(rng, field, anchor)


def _value(rng: random.Random, field: schema.Field, anchor: dt.datetime) -> Any:
    ftype = field.type
    if isinstance(ftype, schema.Struct):
        return _struct(rng, ftype, anchor)
    if isinstance(ftype, schema.ListOf):
        item = schema.Field(ftype.item_tag, ftype.item, nillable=True)
        count = rng.choice((0, 1, 1, 2, 3))
        return [NIL if rng.random() < 0.05 else _value(rng, item, anchor) for _ in range(count)]
    if ftype.xsd == "enum":
        return values.enum(rng, ftype)
    return values.scalar(rng, ftype, field.name, anchor)


def _struct(rng: random.Random, struct: schema.Struct, anchor: dt.datetime) -> Wire:
    out: Wire = {}
    for field in struct.fields:
        value = values.blank(rng, field) if rng.random() < 0.15 else _value(rng, field, anchor)
        if value is not None:
            out[field.name] = value
    return out


def _pool_row(rng: random.Random, number: int) -> Wire:
    anchor = FIRST_DAY + dt.timedelta(days=rng.randint(0, 3800))
    row = _struct(rng, schema.invoice_row(), anchor)
    row["RowId"] = 5_000_000 + number
    row["SequenceNumber"] = rng.randint(1, 40)
    return row


def _later(rng: random.Random, registered: dt.datetime) -> dt.datetime:
    """When an order registered then last changed: within about a year, before the end."""
    return min(registered + dt.timedelta(seconds=rng.randint(0, 400 * 86400)), LAST_DAY)


def _clustered(rng: random.Random, dates: list[dt.datetime]) -> Numbered:
    """One series in date order, with the gaps deleted drafts leave."""
    numbered, next_id = [], 100_001
    for registered in dates:
        numbered.append((next_id, registered, _later(rng, registered)))
        next_id += rng.randint(1, 3)
    return numbered


def _scattered(rng: random.Random, dates: list[dt.datetime]) -> Numbered:
    """History before :data:`MOVED_IN` numbered in shuffled order and changed at the import;
    later orders numbered by one of two live series each."""
    history = [registered for registered in dates if registered < MOVED_IN]
    rng.shuffle(history)
    numbered, next_id = [], IMPORTED_FROM
    for registered in history:
        imported = MOVED_IN + dt.timedelta(seconds=rng.randint(0, 4 * 86400))
        numbered.append((next_id, registered, imported))
        next_id += 1
    series = list(LIVE_SERIES)
    for registered in dates[len(history) :]:
        which = 0 if rng.random() < 0.7 else 1
        numbered.append((series[which], registered, _later(rng, registered)))
        series[which] += rng.randint(1, 3)
    return numbered
