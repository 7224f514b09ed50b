"""The API operations the extractor brings into the lake, each a :class:`Spec`.

Adding an operation is adding its spec here (and the simulator's data for it): the engine
(:mod:`extractor.engine`) plans, fetches, stages, journals, publishes and syncs it. A whole
list is fetched by ``extractor lists`` and kept by ``sync``, replaced each time.
"""

from __future__ import annotations

from typing import Final

from extractor import soap
from extractor.engine.spec import Keeping, Spec, Strategy

#: ``GetOrderSyncList`` → ``GetInvoices``: run by :mod:`extractor.jobs.invoices`, its rows
#: (``invoice_rows``) beside it.
INVOICES: Final = Spec(
    "invoices", soap.GET_INVOICES, "InvoiceOrder", ("OrderId",), Strategy.ID_BATCHES,
    Keeping.RECONCILE, partition="order_month", listing=soap.GET_ORDER_SYNC_LIST,
)  # fmt: skip
#: ``GetTransactions`` by date windows: run by :mod:`extractor.jobs.ledger`.
TRANSACTIONS: Final = Spec(
    "transactions", soap.GET_TRANSACTIONS, "Transaction", ("Id",), Strategy.DATE_WINDOWS,
    Keeping.UPSERT, partition="date_month",
)  # fmt: skip
TRANSACTION_TYPES: Final = Spec(
    "transaction_types",
    soap.Operation("transactionService", soap.TRANSACTION_PATH, "GetTransactionTypes"),
    "TransactionType", ("Id",), Strategy.WHOLE_LIST, Keeping.REPLACE,
)  # fmt: skip

SPECS: Final = {spec.table: spec for spec in (INVOICES, TRANSACTIONS, TRANSACTION_TYPES)}
#: The whole lists, in the order a run fetches them.
WHOLE_LISTS: Final = tuple(spec for spec in SPECS.values() if spec.strategy is Strategy.WHOLE_LIST)
