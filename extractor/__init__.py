"""extractor: a bulk extractor for the 24SevenOffice SOAP API.

The Python API (:mod:`extractor.api`), what the CLI itself runs::

    import extractor

    summary = extractor.sync("lake/")            # credentials from TFSO_* in the environment
    extractor.tables("picture/", tables="accounts,customers")
    extractor.verify("lake/").holds

Every function, and the error tree it raises (``extractor.errors``), is loaded on first use:
``import extractor`` itself costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from extractor.api import (
        UpdateOutcome,
        identities,
        invoices,
        sync,
        tables,
        transactions,
        update_invoices,
        verify,
    )
    from extractor.config import Credentials, ServiceConfig
    from extractor.fleet.launch import FleetSummary
    from extractor.signals import Interrupted

__all__ = [
    "Credentials", "FleetSummary", "Interrupted", "ServiceConfig", "UpdateOutcome", "errors",
    "identities", "invoices", "sync", "tables", "transactions", "update_invoices", "verify",
]  # fmt: skip
#: Where each name is, loaded on first use: the API's functions, and what they take and give
_FROM: dict[str, str] = dict.fromkeys(__all__, "extractor.api") | {
    "Credentials": "extractor.config",
    "ServiceConfig": "extractor.config",
    "FleetSummary": "extractor.fleet.launch",
    "Interrupted": "extractor.signals",
    "errors": "extractor.errors",
}


def __getattr__(name: str) -> Any:
    where = _FROM.get(name)
    if where is None:
        raise AttributeError(f"module 'extractor' has no attribute {name!r}")
    module = importlib.import_module(where)
    return module if name == "errors" else getattr(module, name)
