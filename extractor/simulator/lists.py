"""The reference lists a simulated company answers whole (one call, the whole list).

:data:`LISTS` maps each operation to its service path, its record type in the WSDL and the
company's list; :class:`~extractor.simulator.service.SimulatedService` serves every entry
the same way, so a new list is an entry here and the function that makes its records.
Each company's lists follow from its seed: the types its ledger posts under, and a varying
number of its own, some titled in Norwegian, some untitled.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from extractor import soap

Records = list[dict[str, Any]]

#: The transaction types every company has: those its ledger posts under (1, 2 and 5:
#: :mod:`extractor.simulator.ledger`) and the usual others.
STANDARD_TYPES: Final = (
    (1, "Utgående faktura", True),
    (2, "Innbetaling", True),
    (3, "Inngående faktura", True),
    (4, "Utbetaling", True),
    (5, "Tap på fordring", True),
    (6, "Kassesalg", True),
    (7, "Bilag & korreksjon <manuell>", False),
    (8, "Åpningsbalanse", False),
)
_OWN_TITLES: Final = (
    "Lønn", "Avskrivning", "Periodisering", "Prosjektbilag", "Valutajustering", "Reiseregning",
)  # fmt: skip


def transaction_types(seed: int) -> Records:
    """A company's ``TransactionType`` list: the standard types, then 0 to 9 of its own
    (Id from 100, ``No`` its number), a few without a title."""
    rng = random.Random(f"transaction-types:{seed}")
    types: Records = [
        {"Id": number, "No": number, "Title": title, "Turnover": turnover}
        for number, title, turnover in STANDARD_TYPES
    ]
    for offset in range(rng.randint(0, 9)):
        number = 100 + offset
        entry: dict[str, Any] = {
            "Id": number,
            "No": rng.randint(20, 999),
            "Turnover": rng.random() < 0.5,
        }
        if rng.random() > 0.15:  # else no Title element: minOccurs 0
            entry["Title"] = f"{rng.choice(_OWN_TITLES)} {offset + 1}"
        types.append(entry)
    rng.shuffle(types)  # the service answers in no particular order
    return types


@dataclass(frozen=True)
class WholeList:
    """One operation that answers a whole list."""

    path: str
    record: str  # the WSDL type of an item (and the item's element name)
    records: Callable[[int], Records]  # the company's list, from its seed


LISTS: Final = {
    "GetTransactionTypes": WholeList(soap.TRANSACTION_PATH, "TransactionType", transaction_types),
}
