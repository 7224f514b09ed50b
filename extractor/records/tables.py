"""A body whose records become one typed table once it is complete (a ledger window, a whole
list): the records are collected raw while the body arrives and typed at the end, by the WSDL's
type of a record."""

from __future__ import annotations

import functools

import pyarrow as pa

from extractor import arrow, schema
from extractor.parser import PartStream

#: A record type's raw (untyped) Arrow type, worked out once per type.
_raw_type = functools.cache(arrow.raw_type)


class TableSink(PartStream):
    """A body's ``record_tag`` elements (of ``struct``) as one typed table, ``table``, once
    the body is complete."""

    def __init__(self, record_tag: str, struct: schema.Struct, namespace: str) -> None:
        super().__init__(record_tag, struct, namespace, every=2**62)  # one part: never reached
        self.struct = struct
        self.table: pa.Table | None = None

    def complete(self) -> None:
        super().complete()
        (part,) = self.parts or [("r", [])]
        raw = arrow.raw_array(part, _raw_type(self.struct))
        self.table = arrow.table(self.struct.fields, raw)
