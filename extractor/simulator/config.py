"""What the simulated service holds and how it behaves, and the demo's credentials."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from extractor.simulator.faults import NO_FAULTS, FaultConfig
from extractor.simulator.render import XmlDialect
from extractor.simulator.tenant import ChurnShape, IdShape

DEMO_APPLICATION_ID: Final = "6f1d7a3e-0c55-4d5b-9a54-7f0e2b1c9d01"
DEMO_USERNAME: Final = "demo@example.no"
DEMO_PASSWORD: Final = "simulator-demo"


@dataclass(frozen=True)
class SimulatorConfig:
    """What the simulated service holds and how it behaves.

    The default looks like a real tenant behind a proxy: scattered ids (imported history and
    two live series, :class:`~extractor.simulator.tenant.Tenant`), the ``"wcf"`` XML dialect
    (:mod:`~extractor.simulator.render`) and accounting-shaped churn. :data:`CLUSTERED` is the
    tidy tenant every earlier figure was measured on.
    """

    orders: int = 50_000
    seed: int = 7
    application_id: str = DEMO_APPLICATION_ID
    username: str = DEMO_USERNAME
    password: str = field(default=DEMO_PASSWORD, repr=False)
    latency: float = 0.0
    latency_per_1000: float = 0.0
    session_ttl_calls: int = 0
    max_ids: int = 1000
    host: str = "127.0.0.1"
    port: int = 0
    faults: FaultConfig = NO_FAULTS
    ids: IdShape = "scattered"
    xml: XmlDialect = "wcf"
    churn: ChurnShape = "accounting"
    #: Client companies the user reaches (:mod:`~extractor.simulator.identities`); the
    #: numbers (1-based) of those that are blocked, and of those GetIdentities calls disabled.
    identities: int = 1
    blocked_identities: tuple[int, ...] = ()
    disabled_identities: tuple[int, ...] = ()
    #: Seconds the service's clock runs ahead of the true time (negative: behind): its
    #: DateChanged stamps, its ledger's changes and the ``Date`` header of every reply.
    clock_offset: float = 0.0
    #: How many customers a page of GetCompanySyncList holds (its ItemsPerPage).
    companies_per_page: int = 1000
    #: A lagging read replica (:mod:`~extractor.simulator.replica`): the share of the orders
    #: it knows an earlier version of that GetInvoices answers in that version while it lags.
    stale_replica: float = 0.0

    def __post_init__(self) -> None:
        if self.companies_per_page < 1:
            raise ValueError(f"companies_per_page {self.companies_per_page} is below 1")


DEFAULT_SIMULATOR: Final = SimulatorConfig()
#: Ids in date order, compact XML, churn at random over the history.
CLUSTERED: Final = {"ids": "clustered", "xml": "compact", "churn": "uniform"}
