"""The reference lists a simulated company answers whole (one call, the whole list).

:data:`LISTS` maps each operation to its service path, its record type in the WSDL and the
company's list; :class:`~extractor.simulator.service.SimulatedService` serves every entry
the same way, so a new list is an entry here and the function that makes its records.
Each company's lists follow from its seed: the types its ledger posts under, and a varying
number of its own, some titled in Norwegian, some untitled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

Records = list[dict[str, Any]]


@dataclass(frozen=True)
class WholeList:
    """One operation that answers a whole list."""

    path: str
    record: str  # the WSDL type of an item (and the item's element name)
    records: Callable[[int], Records]  # the company's list, from its seed


LISTS: Final[dict[str, WholeList]] = {}
