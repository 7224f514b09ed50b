"""An API operation as the engine runs it: a small declarative :class:`Spec`.

A spec says what the WSDL and the lake need to know, and nothing of how a run goes: the
operation (its service path and SOAPAction come from the WSDL), the request's fixed fields,
the record type (a complex type of the WSDL's type table, so the table's columns and types
are the WSDL's), the table, its key and partition, the fetch strategy, and how ``sync`` keeps
the table current. The engine supplies the rest: planning, workers and their splitting,
journal and resume, staging, publishing, locks, summaries.

The strategies the API needs:

- :attr:`Strategy.WHOLE_LIST`: one call returns the whole list (the reference lists:
  ``GetTransactionTypes``, ``GetAccountList``, ...); a run of several lists fetches each once;
- :attr:`Strategy.PER_ROW`: one call per row of another list, the row's value a request
  field (``GetUserDefinedDimensionValues`` per dimension, ``GetAggregated`` per fiscal year);
- :attr:`Strategy.CHANGES`: the records changed since the table's watermark, found by a
  change filter (``GetProducts`` by ``DateChanged``) or by a paged listing of ids then the
  records in batches of ids (``GetCompanySyncList`` → ``GetCompanies``);
- :attr:`Strategy.ID_BATCHES`: a listing of ids, then the records in batches of ids
  (``GetOrderSyncList`` → ``GetInvoices``), a failing batch halved down to the id;
- :attr:`Strategy.DATE_WINDOWS`: date windows, a failing window halved down to a day
  (``GetTransactions``).

The first three run on :mod:`extractor.engine.lists`, the last two on their jobs
(:mod:`extractor.jobs.invoices`, :mod:`extractor.jobs.ledger`).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from extractor import arrow, schema, soap


def merged(*requests: Mapping[str, Any]) -> dict[str, Any]:
    """The requests' fields together, nested ones merged."""
    found: dict[str, Any] = {}
    for request in requests:
        for name, value in request.items():
            if isinstance(value, Mapping) and isinstance(found.get(name), Mapping):
                found[name] = merged(found[name], value)
            else:
                found[name] = value
    return found


class Strategy(enum.StrEnum):
    WHOLE_LIST = "whole list"
    PER_ROW = "once per row of another list"
    CHANGES = "changes since the watermark"
    ID_BATCHES = "id batches"
    DATE_WINDOWS = "date windows"


class Keeping(enum.StrEnum):
    """How ``sync`` keeps a table current."""

    REPLACE = "replace"  # each sync's list replaces the table (its identity's part of it)
    UPSERT = "upsert"  # merged by key, the latest DateChanged kept
    RECONCILE = "upsert, deletions marked"  # as UPSERT; keys the service no longer lists marked


@dataclass(frozen=True)
class PerRow:
    """A :attr:`Strategy.PER_ROW` spec's parent: one call per row of the list ``table``, its
    ``column`` sent as the request field ``param``. A parent row whose ``settled`` column is
    true (a locked fiscal year) is not asked again once the table holds its records as
    fetched while it was settled (the job's ``held``)."""

    table: str
    column: str
    param: str
    settled: str | None = None
    #: The table's columns that hold the parent's ``column`` and whether it was ``settled``
    held_by: tuple[str, str] | None = None


@dataclass(frozen=True)
class Changes:
    """How a :attr:`Strategy.CHANGES` spec finds what changed since a time: the request path
    (element names) its time goes in (``after``); with a ``listing``, that operation is paged
    (``page``: where the page number goes; ``pages`` and ``total``: the answer's page and
    item counts, read until both are passed or a page brings nothing new; its
    ``fixed`` fields sent every time) and lists ``id``, the records fetched by ``ids`` (where
    a batch of at most ``batch`` ids goes). A derived column gets each record's listed item
    (by id) as its given value."""

    after: tuple[str, ...]
    listing: soap.Operation | None = None
    id: str = ""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    page: tuple[str, ...] = ()
    pages: str = "TotalPages"
    total: str = "TotalItems"  # the answer's count of every item listed
    ids: tuple[str, ...] = ()
    batch: int = 1000


#: Columns a spec adds to its record's: their fields, and how a fetched table gets them from
#: what it was fetched by (a :class:`PerRow` spec's parent row; a :class:`Changes` spec's
#: listed items by id).
Derive = Callable[[pa.Table, Any], pa.Table]


@dataclass(frozen=True)
class Derived:
    fields: tuple[pa.Field[Any], ...]
    add: Derive


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
    per: PerRow | None = None  # PER_ROW: the parent list
    changes: Changes | None = None  # CHANGES: how changes are found
    derived: Derived | None = None  # columns added to the record's
    #: Record fields never asked for nor written (a customer's Username and Password)
    left_out: tuple[str, ...] = ()
    #: Where the names of the fields wanted go (``returnProperties``), if the operation asks
    properties: str | None = None

    @functools.cached_property
    def struct(self) -> schema.Struct:
        """The record's type, from the WSDL's type table (less the fields left out)."""
        whole = self.operation.service.type(self.record)
        if not self.left_out:
            return whole
        kept = tuple(f for f in whole.fields if f.name not in self.left_out)
        return schema.Struct(whole.name, kept)

    @property
    def tag(self) -> str:
        """The qualified element name each record arrives as."""
        return f"{{{self.operation.service.namespace}}}{self.record}"

    @property
    def schema(self) -> pa.Schema:
        """The table's columns: the record's fields, typed as the WSDL says, then the
        derived ones."""
        columns = arrow.schema_for(self.struct.fields)
        for extra in self.derived.fields if self.derived is not None else ():
            columns = columns.append(extra)
        return columns

    def params(self, given: Mapping[str, Any] = {}) -> dict[str, Any]:
        """The request: the spec's fixed fields, the properties wanted, and ``given``."""
        params = merged(self.request, given)
        if self.properties is not None:
            params[self.properties] = list(self.struct.names)
        return params

    def check(self) -> None:
        """Refuse a spec the WSDL does not back (a programming error, said plainly)."""
        service = self.operation.service
        if self.operation.name not in service.actions:
            raise ValueError(f"{self.table}: {self.operation.name} is not in {self.operation.wsdl}")
        if self.record not in service.types:
            raise ValueError(f"{self.table}: {self.record} is not a type of {self.operation.wsdl}")
        missing = [name for name in self.key if name not in self.schema.names]
        if missing:
            raise ValueError(f"{self.table}: its key {missing} is not in {self.record}")
        if (self.listing is not None) != (self.strategy is Strategy.ID_BATCHES):
            raise ValueError(f"{self.table}: a listing goes with {Strategy.ID_BATCHES} only")
        if (self.per is not None) != (self.strategy is Strategy.PER_ROW):
            raise ValueError(f"{self.table}: a parent list goes with {Strategy.PER_ROW} only")
        if (self.changes is not None) != (self.strategy is Strategy.CHANGES):
            raise ValueError(f"{self.table}: a change filter goes with {Strategy.CHANGES} only")
