"""A simulated company's dimensions: the types its ledger lines carry, and their values.

Each dimension type has a ``TypeId``: the built-in types a fixed one (:data:`TYPE_IDS`), the
company's own (Type ``UserDefined``: a project dimension, and for some a second) one from 101.
The ledger's lines carry Department (values the company's department ids) and Customer (values
customer ids); their lines' dimensions leave the TypeId unset, as the ledger always sent them.
"""

from __future__ import annotations

import random
from typing import Any, Final

from extractor.simulator.register import Register

Records = list[dict[str, Any]]

#: The TypeId of each built-in dimension type (the simulator's choice: the live service's
#: numbering is not documented).
TYPE_IDS: Final = {"Project": 1, "Department": 2, "Employee": 3, "Product": 4, "Customer": 5}
#: The company's own dimensions: TypeId, name, values (value, name).
OWN: Final = (
    (101, "Prosjekt", (
        ("P-1001", "Nytt lager Ålesund"), ("P-1002", "Kontorbygg <fase 2>"),
        ("P-1003", "ERP-bytte & opplæring"), ("P-1004", "Messe Lillestrøm"),
        ("P-1005", "Nettbutikk"), ("P-1006", None),
    )),
    (102, "Kostnadsbærer", (
        ("KB10", "Drift"), ("KB20", "Salg & marked"), ("KB30", "Utvikling"), ("KB40", "Øvrig"),
    )),
)  # fmt: skip


def dimension_types(seed: int) -> Records:
    """``Dimension`` records of GetUserDefinedDimensions: Department and Customer (those the
    ledger carries), the company's project dimension and, for some, a second of its own."""
    rng = random.Random(f"dimensions:{seed}")
    own = OWN[: rng.randint(1, len(OWN))]
    types: Records = [
        {"Type": "Department", "Name": "Avdeling", "TypeId": TYPE_IDS["Department"]},
        {"Type": "Customer", "Name": "Kunde", "TypeId": TYPE_IDS["Customer"]},
        *({"Type": "UserDefined", "Name": name, "TypeId": type_id} for type_id, name, _ in own),
    ]
    rng.shuffle(types)
    return types


def dimension_values(type_id: int, departments: Records, customers: Register, seed: int) -> Records:
    """``Dimension`` records of GetUserDefinedDimensionValues(``type_id``): every department,
    every customer, or the values of one of the company's own dimensions (none for a type the
    company does not have)."""
    if type_id == TYPE_IDS["Department"]:
        named = [(str(d["Id"]), d.get("Name")) for d in departments]
        kind = "Department"
    elif type_id == TYPE_IDS["Customer"]:
        named = [(str(i), customers.wire(i).get("Name")) for i in customers.ids]
        kind = "Customer"
    else:
        types = {t["TypeId"] for t in dimension_types(seed)}
        own = {number: entries for number, _, entries in OWN if number in types}
        named, kind = list(own.get(type_id, ())), "UserDefined"
    return [
        {"Type": kind, "Value": value, "TypeId": type_id} | ({"Name": name} if name else {})
        for value, name in named
    ]
