"""A simulated company's ClientService lists: its departments and its currencies.

Departments 1 to 9 are those the ledger's lines name in their Department dimension; a company
may have a few more that no line names yet. The currencies hold every one the ledger posts in
(NOK, EUR), with the Norwegian convention of quoting some per 100 units (``Unit``).
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any, Final

from extractor.simulator import values

Records = list[dict[str, Any]]

#: The departments the ledger's lines name (``Department`` dimension values "1" to "9").
LEDGER_DEPARTMENTS: Final = range(1, 10)
_DEPARTMENT_NAMES: Final = (
    "Salg Oslo", "Salg Bergen", "Service & support", "Lager <Trondheim>", "Administrasjon",
    "Økonomi", "Produksjon Ålesund", "Marked", "Kundesenter Tromsø", "Forskning og utvikling",
    "Innkjøp", "IT-drift",
)  # fmt: skip
#: Symbol, rate in NOK, per how many units; the first four every company has.
CURRENCIES: Final = (
    ("NOK", "1", 1), ("EUR", "11.4523", 1), ("SEK", "98.71", 100), ("USD", "10.6078", 1),
    ("DKK", "153.52", 100), ("GBP", "13.3921", 1), ("CHF", "12.1350", 1), ("PLN", "2.6712", 1),
    ("JPY", "7.0712", 100), ("ISK", "7.9310", 100),
)  # fmt: skip


def departments(seed: int) -> Records:
    """``Department`` records: Ids 1 to 9 and one to three more, with addresses, phone and
    e-mail where the company keeps them."""
    rng = random.Random(f"departments:{seed}")
    ids = [*LEDGER_DEPARTMENTS, *range(10, 10 + rng.randint(1, 3))]
    records: Records = []
    for department_id, name in zip(ids, _DEPARTMENT_NAMES, strict=False):
        record: dict[str, Any] = {"Id": department_id, "Name": name}
        if rng.random() < 0.8:
            post = values.address(rng, name)
            record["Addresses"] = {"Post": post, "Visit": post} if rng.random() < 0.5 else {
                "Post": post, "Visit": values.address(rng),
            }  # fmt: skip
        if rng.random() < 0.7:
            record["Phone"] = values.phone(rng)
        if rng.random() < 0.1:
            record["Fax"] = values.phone(rng)
        if rng.random() < 0.6:
            record["Email"] = values.email(rng, name)
        records.append(record)
    rng.shuffle(records)
    return records


def currencies(seed: int) -> Records:
    """``Currency`` records: NOK, EUR, SEK, USD and some of the others."""
    rng = random.Random(f"currencies:{seed}")
    kept = [entry for index, entry in enumerate(CURRENCIES) if index < 4 or rng.random() < 0.5]
    records: Records = [
        {"Symbol": symbol, "Id": currency_id, "Rate": Decimal(rate), "Unit": unit}
        for currency_id, (symbol, rate, unit) in enumerate(kept, start=1)
    ]
    rng.shuffle(records)
    return records
