"""A read replica that lags behind the service's primary: GetInvoices answered from the past.

Behind a load balancer, a GetInvoices may be answered by a replica that has not yet applied
the last change of an order, after the listing (on the primary) said it changed. While the
replica lags (:attr:`Replica.lagging`), it answers a share of the orders it knows an earlier
version of with that version: the DateChanged and values the order had before its last churn.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from extractor.simulator.tenant import Tenant

Wire = dict[str, Any]
#: An order's version: its DateChanged and its edits (None: none).
Version = tuple[dt.datetime, Wire | None]


@dataclass
class Replica:
    """Earlier versions of churned orders, served while ``lagging``; ``share`` of them (each
    order is in the share or not, by ``seed``)."""

    share: float = 0.0
    seed: int = 0
    lagging: bool = True
    before: dict[int, Version] = field(default_factory=dict)

    def snapshot(self, tenant: Tenant) -> dict[int, Version] | None:
        """Every order's version now, to :meth:`remember` after a churn (None: no replica)."""
        if not self.share:
            return None
        edits = tenant.edits
        return {
            order_id: (changed, dict(edits[order_id]) if order_id in edits else None)
            for order_id, changed in tenant.changed.items()
        }

    def remember(
        self, versions: dict[int, Version] | None, changed: Iterable[int], gone: Iterable[int]
    ) -> None:
        """The versions the ``changed`` orders had before the churn; ``gone`` are forgotten."""
        if versions is None:
            return
        for order_id in changed:
            self.before[order_id] = versions[order_id]
        for order_id in gone:
            self.before.pop(order_id, None)

    def answers(
        self, tenant: Tenant, order_ids: Iterable[int], render: Callable[[int], str]
    ) -> dict[int, bytes]:
        """The orders of ``order_ids`` answered in their earlier version now, each as
        ``render`` renders it then."""
        if not self.lagging:
            return {}
        stale = (order_id for order_id in order_ids if order_id in self.before)
        return {
            order_id: self._rendered(tenant, order_id, render)
            for order_id in stale
            if self._in(order_id)
        }

    def _rendered(self, tenant: Tenant, order_id: int, render: Callable[[int], str]) -> bytes:
        """``render(order_id)`` with the order as it was before its last churn."""
        changed, edits = self.before[order_id]
        now_changed, now_edits = tenant.changed[order_id], tenant.edits.get(order_id)
        tenant.changed[order_id] = changed
        _put(tenant.edits, order_id, edits)
        try:
            return render(order_id).encode()
        finally:
            tenant.changed[order_id] = now_changed
            _put(tenant.edits, order_id, now_edits)

    def _in(self, order_id: int) -> bool:
        digest = hashlib.md5(f"replica:{self.seed}:{order_id}".encode()).digest()
        return int.from_bytes(digest[:4], "big") / 2**32 < self.share


def _put(edits: dict[int, Wire], order_id: int, value: Wire | None) -> None:
    if value is None:
        edits.pop(order_id, None)
    else:
        edits[order_id] = value
