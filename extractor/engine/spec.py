"""An API operation as the engine runs it: a small declarative :class:`Spec`.

A spec says what the WSDL and the lake need to know, and nothing of how a run goes: the
operation (its service path and SOAPAction come from the WSDL), the request's fixed fields,
the record type (a complex type of the WSDL's type table, so the table's columns and types
are the WSDL's), the table, its key and partition, the fetch strategy, and how ``sync`` keeps
the table current. The engine supplies the rest: planning, workers and their splitting,
journal and resume, staging, publishing, locks, summaries.

The three strategies the API needs:

- :attr:`Strategy.WHOLE_LIST`: one call returns the whole list (the reference lists:
  ``GetTransactionTypes``, ``GetAccountList``, ...); a run of several lists fetches each once;
- :attr:`Strategy.ID_BATCHES`: a listing of ids, then the records in batches of ids
  (``GetOrderSyncList`` → ``GetInvoices``), a failing batch halved down to the id;
- :attr:`Strategy.DATE_WINDOWS`: date windows, a failing window halved down to a day
  (``GetTransactions``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from extractor import arrow, schema, soap


class Strategy(enum.StrEnum):
    WHOLE_LIST = "whole list"
    ID_BATCHES = "id batches"
    DATE_WINDOWS = "date windows"


class Keeping(enum.StrEnum):
    """How ``sync`` keeps a table current."""

    REPLACE = "replace"  # each sync's list replaces the table (its identity's part of it)
    UPSERT = "upsert"  # merged by key, the latest DateChanged kept
    RECONCILE = "upsert, deletions marked"  # as UPSERT; keys the service no longer lists marked


@dataclass(frozen=True)
class Spec:
    """One API operation as a table (see the module)."""

    table: str
    operation: soap.Operation
    record: str  # the WSDL complex type of one record
    key: tuple[str, ...]
    strategy: Strategy
    keeping: Keeping
    partition: str | None = None  # the hive partition column (None: the table is one folder)
    request: Mapping[str, Any] = field(default_factory=dict)  # the request's fixed fields
    listing: soap.Operation | None = None  # ID_BATCHES: the operation that lists the ids

    @property
    def struct(self) -> schema.Struct:
        """The record's type, from the WSDL's type table."""
        return self.operation.service.type(self.record)

    @property
    def tag(self) -> str:
        """The qualified element name each record arrives as."""
        return f"{{{self.operation.service.namespace}}}{self.record}"

    @property
    def schema(self) -> pa.Schema:
        """The table's columns: the record's fields, typed as the WSDL says."""
        return arrow.schema_for(self.struct.fields)

    def check(self) -> None:
        """Refuse a spec the WSDL does not back (a programming error, said plainly)."""
        service = self.operation.service
        if self.operation.name not in service.actions:
            raise ValueError(f"{self.table}: {self.operation.name} is not in {self.operation.wsdl}")
        if self.record not in service.types:
            raise ValueError(f"{self.table}: {self.record} is not a type of {self.operation.wsdl}")
        missing = [name for name in self.key if name not in self.struct.names]
        if missing:
            raise ValueError(f"{self.table}: its key {missing} is not in {self.record}")
        if (self.listing is not None) != (self.strategy is Strategy.ID_BATCHES):
            raise ValueError(f"{self.table}: a listing goes with {Strategy.ID_BATCHES} only")
