"""A simulated company's InvoiceService lists: payment methods, delivery methods, templates.

Each follows from the company's seed; a template's ``Customers`` are customers that use it,
drawn from those the company's orders name (so a template never names a deleted customer).
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Sequence
from typing import Any, Final

from extractor.simulator.tenant import FIRST_DAY

Records = list[dict[str, Any]]

_PAYMENT_METHODS: Final = (
    "Bankoverføring", "Kontant", "Kort", "Vipps", "AvtaleGiro", "eFaktura <B2C>",
    "Faktura & inkasso", "Klarna", "Nettbank", "Remittering utland",
)  # fmt: skip
_DELIVERY_METHODS: Final = (
    "Post", "Hentes av kunde", "Bring <Pakke i postkassen>", "PostNord", "E-post", "EHF",
    "Budbil & montering", "Schenker", "Helthjem",
)  # fmt: skip
#: Name, file, language, country.
_TEMPLATES: Final = (
    ("Standard faktura", "faktura_standard.rpt", "NO", "NO"),
    ("Faktura med logo & bankgiro", "faktura_logo.rpt", "NO", "NO"),
    ("Invoice (English)", "invoice_en.rpt", "EN", "GB"),
    ("Faktura Sverige", "faktura_se.rpt", "SE", "SE"),
    ("Purring <1. gang>", "purring_1.rpt", "NO", "NO"),
    ("Kreditnota", "kreditnota.rpt", "NO", "NO"),
    ("Ordrebekreftelse", "ordrebekreftelse.rpt", "NO", "NO"),
    ("Faktura uten priser", "pakkseddel.rpt", "NO", "NO"),
)
_TEMPLATE_SPACE: Final = uuid.UUID("8b7f0d1e-4c2a-4f54-9a0e-3d6c5b2f1a77")


def payment_methods(seed: int) -> Records:
    """``PaymentMethod`` records (Id, Name): the usual ones, some, one now and then unnamed."""
    return _named(random.Random(f"payment-methods:{seed}"), _PAYMENT_METHODS, "Name")


def delivery_methods(seed: int) -> Records:
    """``DeliveryMethod`` records (Id, Description)."""
    return _named(random.Random(f"delivery-methods:{seed}"), _DELIVERY_METHODS, "Description")


def invoice_templates(seed: int, customers: Sequence[int]) -> Records:
    """``TemplateModel`` records: the system's own templates and the company's, one of them
    the default; some used by a few of ``customers`` (the company's, in order)."""
    rng = random.Random(f"invoice-templates:{seed}")
    kept = [entry for index, entry in enumerate(_TEMPLATES) if index < 3 or rng.random() < 0.5]
    default = rng.randrange(len(kept))
    records: Records = []
    for index, (name, file_name, language, country) in enumerate(kept):
        modified = FIRST_DAY + dt.timedelta(seconds=rng.randrange(10 * 365 * 86400))
        record: dict[str, Any] = {
            "FileName": file_name,
            "Name": name,
            "Id": str(uuid.uuid5(_TEMPLATE_SPACE, f"{seed}:{file_name}")),
            "Language": language,
            "Country": country,
            "IsSystemTemplate": index < 2,
            "IsDefault": index == default,
            "Modified": modified.replace(microsecond=rng.randrange(1_000_000)),
        }
        roll = rng.random()
        if roll < 0.6 and customers:  # else no Customers element, or an empty one
            record["Customers"] = sorted(
                rng.sample(customers, min(len(customers), rng.randint(1, 12)))
            )
        elif roll < 0.8:
            record["Customers"] = []
        records.append(record)
    rng.shuffle(records)
    return records


def _named(rng: random.Random, names: Sequence[str], field: str) -> Records:
    """Records of an Id and a name: the first four of ``names`` and some of the others."""
    kept = [name for index, name in enumerate(names) if index < 4 or rng.random() < 0.5]
    records: Records = []
    for method_id, name in zip(rng.sample(range(1, 60), len(kept)), kept, strict=True):
        record: dict[str, Any] = {"Id": method_id}
        if rng.random() > 0.05:
            record[field] = name
        records.append(record)
    rng.shuffle(records)
    return records
