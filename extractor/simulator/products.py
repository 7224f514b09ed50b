"""A simulated company's products (ProductService): a :class:`~.register.Register` of
``Product`` records, and what GetProducts finds.

Every ProductId the tenant's invoice rows name is a product (named: never deleted); about one
in ten more are products no row names. ``CashPriceIncTax`` is the WSDL's one double: some are
sent with all the digits a float64 carries.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final

from extractor.simulator import values
from extractor.simulator.register import Entry, Register, history, with_unnamed
from extractor.simulator.tenant import FIRST_DAY, LAST_DAY, Tenant
from extractor.soap import NIL

Wire = dict[str, Any]
_GOODS: Final = (
    "Blåbærsyltetøy", "Konsulenttime", "Rørdeler", "Grønnsåpe", "Fiskekaker", "Lisens",
    "Serviceavtale", "Kabel", "Støvsuger", "Kaffe", "Brød", "Skruer", "Frakt", "Årsavgift",
)  # fmt: skip
_SIZES: Final = ("400 g", "senior", "<DN50>", "& montering", "1 l", "10 stk", "", "pr. måned")
#: How long a product counts as new.
_NEW: Final = dt.timedelta(days=180)
_NO_DECIMAL: Final = values.not_set("decimal")


def register(seed: int, tenant: Tenant, suppliers: Sequence[int]) -> Register:
    """The products of the company whose seed and rows these are; ``suppliers`` the customer
    ids a product's SupplierId may name."""
    named = {row.get("ProductId") for row in tenant.row_pool}
    referenced = frozenset(i for i in named if isinstance(i, int))
    rng = random.Random(f"products:{seed}")
    entries = history(rng, with_unnamed(rng, referenced), FIRST_DAY, LAST_DAY)
    make = functools.partial(record, seed, tuple(suppliers))
    return Register(entries, referenced, make, deactivates=False)


def record(seed: int, suppliers: tuple[int, ...], product_id: int, entry: Entry) -> Wire:
    """The ``Product`` record of one product, in this version of it (made once per process:
    never changed, a change is a new version)."""
    return _record(seed, suppliers, product_id, entry.version, entry.registered, entry.changed)


@functools.lru_cache(maxsize=16_384)
def _record(
    seed: int,
    suppliers: tuple[int, ...],
    product_id: int,
    version: int,
    registered: dt.datetime,
    changed: dt.datetime,
) -> Wire:
    rng = random.Random(f"product:{seed}:{product_id}:{version}")
    wire: Wire = {
        "Id": product_id,
        "Name": f"{rng.choice(_GOODS)} {rng.choice(_SIZES)}".strip(),
        "No": f"P-{product_id:05d}" if rng.random() < 0.8 else str(product_id),
        "DateChanged": changed,
        "StatusId": values.or_not_set(rng, 0.8, rng.choice((1, 1, 2)), "int"),
        "CategoryId": values.or_not_set(rng, 0.7, rng.randint(1, 20), "int"),
        "PriceGroupID": values.or_not_set(rng, 0.2, rng.randint(1, 5), "int"),
        "Web": NIL if rng.random() < 0.3 else rng.random() < 0.4,
        "NewOffer": NIL if rng.random() < 0.6 else False,
        "NewProduct": NIL if rng.random() < 0.6 else registered > LAST_DAY - _NEW,
    }
    wire |= _prices(rng)
    if suppliers and rng.random() < 0.4:
        wire["SupplierId"] = rng.choice(suppliers)
    if rng.random() < 0.5:
        wire["EAN1"] = str(rng.randint(10**12, 10**13 - 1))
    if rng.random() < 0.6:
        wire["Description"] = values.text(rng, "Description")
    if rng.random() < 0.1:
        wire["DescriptionLong"] = f"{values.text(rng, 'Note')}\n{values.text(rng, 'Note')}"
    stocked = rng.random() < 0.4
    wire["StockControlled"] = NIL if rng.random() < 0.3 and not stocked else stocked
    return wire | (_stock(rng) if stocked else {})


def _prices(rng: random.Random) -> Wire:
    """Price, tax rate, the price with tax (a double), cost and web price."""
    price = Decimal(rng.randint(500, 2_500_000)) / 100
    rate = Decimal(rng.choice(("25", "25", "15", "12", "0")))
    wire: Wire = {"Price": price, "TaxRate": rate}
    if rng.random() < 0.9:
        wire["CashPriceIncTax"] = _with_tax(rng, price, rate)
    cost = (price * Decimal(rng.randint(30, 80)) / 100).quantize(Decimal("0.01"))
    wire |= {"InPrice": cost, "Cost": cost} if rng.random() < 0.7 else {"Cost": _NO_DECIMAL}
    wire["WebPrice"] = values.or_not_set(rng, 0.3, price, "decimal")
    return wire


def _stock(rng: random.Random) -> Wire:
    """What a product whose stock is kept has."""
    return {
        "Stock": Decimal(rng.randint(-5, 4000)),
        "MinimumStock": Decimal(rng.choice((0, 10, 50))),
        "OrderProposal": Decimal(rng.choice((0, 25, 100))),
        "StockLocation": f"Lager {rng.choice('ABCØ')}-{rng.randint(1, 40)}",
        "Weight": Decimal(rng.randint(1, 50_000)) / 1000,
    }


def _with_tax(rng: random.Random, price: Decimal, rate: Decimal) -> float:
    """The price with tax as a double: to the øre mostly, else every digit a float has."""
    gross = float(price) * (1 + float(rate) / 100)
    return round(gross, 2) if rng.random() < 0.6 else gross * (1 + rng.random() / 1e6)


def search(
    products: Register, changed_from: dt.datetime | None, ids: Sequence[int] | None
) -> list[int]:
    """The ids GetProducts returns: changed at or after ``changed_from`` (None: any), among
    ``ids`` (None: every product; unknown ids are skipped), by id."""
    wanted = products.ids if ids is None else sorted(set(ids) & products.entries.keys())
    return [
        product_id
        for product_id in wanted
        if changed_from is None or products.entries[product_id].changed >= changed_from
    ]
