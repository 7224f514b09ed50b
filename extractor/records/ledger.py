"""GetTransactions bodies to one typed table of ledger lines, while they arrive."""

from __future__ import annotations

from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from extractor import arrow, schema
from extractor.parser import PartStream

NAMESPACE: Final = schema.service("transactionService").namespace
TRANSACTION_TAG: Final = f"{{{NAMESPACE}}}Transaction"
#: The hive partition of the ``transactions`` table: the line's month.
PARTITION: Final = "date_month"


def transaction_type() -> schema.Struct:
    return schema.service("transactionService").type("Transaction")


_RAW_TYPE: Final = arrow.raw_type(transaction_type())


class LedgerSink(PartStream):
    """A GetTransactions body to one typed table once it is complete."""

    def __init__(self) -> None:
        super().__init__(TRANSACTION_TAG, transaction_type(), NAMESPACE, every=2**62)
        self.table: pa.Table | None = None

    def complete(self) -> None:
        super().complete()
        (part,) = self.parts or [("r", [])]  # one part: ``every`` is never reached
        raw = arrow.raw_array(part, _RAW_TYPE)
        self.table = arrow.table(transaction_type().fields, raw)


def month_of(table: pa.Table) -> pa.Array[Any]:
    """Each line's partition: its Date's ``YYYY-MM``."""
    return pc.strftime(table.column("Date").combine_chunks(), format="%Y-%m")
