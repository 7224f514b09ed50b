"""The part of a Delta table a run owns (:class:`Scope`), in a module without Arrow:
``extractor status`` reads a lake's commits with deltalake alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from extractor.output.lakefiles import Layout

#: The partition column of a fleet's tables: whose records a file holds.
IDENTITY: Final = "identity_id"
#: A staged partition key for records without a partition value (hive's name for it).
NULL_PARTITION: Final = "__HIVE_DEFAULT_PARTITION__"


@dataclass(frozen=True)
class Scope:
    """The part of a table a run owns: all of it, or one identity's partitions of a fleet's
    table (``identity``, a guid: safe in a path and in SQL)."""

    identity: str | None = None

    def columns(self, layout: Layout) -> list[str]:
        """The table's partition columns."""
        return [IDENTITY, layout.partition] if self.identity else [layout.partition]

    def values(self, layout: Layout, partition: str) -> dict[str, str | None]:
        """The partition values of a file of (staged) ``partition``."""
        values: dict[str, str | None] = {}
        if self.identity:
            values[IDENTITY] = self.identity
        values[layout.partition] = partition_value(partition)
        return values

    def folder(self, layout: Layout, partition: str) -> str:
        folder = f"{layout.partition}={partition}"
        return f"{IDENTITY}={self.identity}/{folder}" if self.identity else folder

    def where(self) -> str:
        """The SQL condition that keeps the scope's records (the whole table: none)."""
        return f"\"{IDENTITY}\" = '{self.identity}'" if self.identity else "TRUE"


#: The whole table: a run of one identity, in the layout of one.
WHOLE: Final = Scope()


def partition_value(key: str) -> str | None:
    """A staged partition key as Delta's partition value (None for the null partition)."""
    return None if key == NULL_PARTITION else key
