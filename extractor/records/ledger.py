"""GetTransactions bodies to one typed table of ledger lines, while they arrive."""

from __future__ import annotations

from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from extractor import arrow, schema
from extractor.parser import RecordStream, struct_columns

NAMESPACE: Final = schema.service("transactionService").namespace
TRANSACTION_TAG: Final = f"{{{NAMESPACE}}}Transaction"
#: The hive partition of the ``transactions`` table: the line's month.
PARTITION: Final = "date_month"


def transaction_type() -> schema.Struct:
    return schema.service("transactionService").type("Transaction")


_RAW_TYPE: Final = arrow.raw_type(transaction_type())


class LedgerSink(RecordStream):
    """A GetTransactions body to one typed table while it arrives."""

    def __init__(self) -> None:
        self._columns = struct_columns(transaction_type(), NAMESPACE, _RAW_TYPE)
        super().__init__(TRANSACTION_TAG, self._columns.add)
        self.table: pa.Table | None = None

    def complete(self) -> None:
        super().complete()
        raw = self._columns.finish()
        self.table = arrow.table(transaction_type().fields, raw)

    def abort(self) -> None:
        super().abort()
        self._columns.finish()


def month_of(table: pa.Table) -> pa.Array[Any]:
    """Each line's partition: its Date's ``YYYY-MM``."""
    return pc.strftime(table.column("Date").combine_chunks(), format="%Y-%m")
