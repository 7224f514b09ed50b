"""GetTransactions bodies to one typed table of ledger lines, while they arrive."""

from __future__ import annotations

from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from extractor import schema
from extractor.records.tables import TableSink

NAMESPACE: Final = schema.service("transactionService").namespace
TRANSACTION_TAG: Final = f"{{{NAMESPACE}}}Transaction"
#: The hive partition of the ``transactions`` table: the line's month.
PARTITION: Final = "date_month"


def transaction_type() -> schema.Struct:
    return schema.service("transactionService").type("Transaction")


class LedgerSink(TableSink):
    """A GetTransactions body to one typed table once it is complete."""

    def __init__(self) -> None:
        super().__init__(TRANSACTION_TAG, transaction_type(), NAMESPACE)


def month_of(table: pa.Table) -> pa.Array[Any]:
    """Each line's partition: its Date's ``YYYY-MM``."""
    return pc.strftime(table.column("Date").combine_chunks(), format="%Y-%m")
