"""The client companies one login reaches: identities, each with its own books.

An accounting bureau's user reaches many client companies; each is an *identity*
(``GetIdentities``) and a session works on one of them (``Login`` with
``credential.IdentityId``, or ``SetIdentityById``). In the simulator each identity is a
:class:`Company`: its own tenant (orders, ledger), its own rate budget and its own answers.
Identity 1 is the default (a login without an IdentityId) and keeps the configured seed, so
a one-identity simulator is the single tenant it always was. Others get seeds of their own:
their OrderIds overlap identity 1's, as real companies' do, with other values.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from extractor import schema
from extractor.simulator import customers, products
from extractor.simulator.budget import Budget
from extractor.simulator.faults import FaultConfig
from extractor.simulator.ledger import Ledger
from extractor.simulator.register import Register
from extractor.simulator.render import Renderer, XmlDialect
from extractor.simulator.tenant import IdShape, Tenant

BLOCKED: Final = "The provided IdentityId is blocked"
NOT_ON_IDENTITY: Final = "Client is not authenticated on this identity"
#: How far apart the identities' tenant seeds are.
SEED_STEP: Final = 7919
FIRST_CLIENT_ID: Final = 100_001


def identity_guid(seed: int, number: int) -> str:
    """Identity ``number``'s Id: stable for a seed, unlike any other."""
    digest = hashlib.md5(f"identity:{seed}:{number}".encode()).digest()
    return str(uuid.UUID(bytes=digest, version=4))


@dataclass
class Company:
    """One identity: a client company's tenant, budget and counters, and its books beside its
    orders (ledger, customers, products), each built on first use."""

    number: int  # 1-based; 1 is the user's default identity
    identity_id: str
    client_id: int
    name: str
    tenant: Tenant
    renderer: Renderer
    budget: Budget
    seed: int
    blocked: bool = False  # Login and SetIdentityById refuse it
    disabled: bool = False  # GetIdentities says IsDisabled
    stats: Counter[str] = field(default_factory=Counter)
    clock: Callable[[], float] = time.time  # the service's own time
    _ledger: Ledger | None = None
    _customers: Register | None = None
    _products: Register | None = None

    @property
    def ledger(self) -> Ledger:
        """The company's general ledger, built on first use."""
        if self._ledger is None:
            self._ledger = Ledger(self.tenant, self.seed)
        return self._ledger

    @property
    def customers(self) -> Register:
        """The company's customers (:mod:`~extractor.simulator.customers`)."""
        if self._customers is None:
            self._customers = customers.register(self.seed, self.tenant)
        return self._customers

    @property
    def products(self) -> Register:
        """The company's products (:mod:`~extractor.simulator.products`); their suppliers are
        some of its customers that orders name (never deleted)."""
        if self._products is None:
            suppliers = sorted(self.customers.referenced)[::97]
            self._products = products.register(self.seed, self.tenant, suppliers)
        return self._products

    def now(self) -> dt.datetime:
        """The service's current time, as it stamps it (UTC, no offset)."""
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).replace(tzinfo=None)

    def as_identity(self, current: bool) -> dict[str, Any]:
        """This company as an ``Identity`` of GetIdentities."""
        return {
            "Id": self.identity_id,
            "User": {"ContactId": 1000 + self.number, "Name": "Demo User"},
            "Client": {"Id": self.client_id, "Name": self.name},
            "IsCurrent": current,
            "IsDefault": self.number == 1,
            "IsProtected": False,
            "Servers": [],
            "IsDisabled": self.disabled,
        }


@dataclass(frozen=True)
class Books:
    """What :func:`companies` needs of the simulator's configuration."""

    orders: int
    seed: int
    ids: IdShape
    xml: XmlDialect
    faults: FaultConfig
    identities: int = 1
    blocked: tuple[int, ...] = ()
    disabled: tuple[int, ...] = ()


def companies(
    books: Books, clock: Callable[[], float], first: Tenant | None = None
) -> list[Company]:
    """Every identity of the simulated user; ``first`` is identity 1's tenant if given."""
    made = []
    for number in range(1, books.identities + 1):
        seed = books.seed + SEED_STEP * (number - 1)
        tenant = first if number == 1 and first is not None else None
        tenant = tenant or Tenant(books.orders, seed, books.ids)
        made.append(
            Company(
                number=number,
                identity_id=identity_guid(books.seed, number),
                client_id=FIRST_CLIENT_ID + number - 1,
                name=f"Client Company {number} AS",
                tenant=tenant,
                renderer=Renderer(tenant, books.xml),
                budget=Budget.of(books.faults, clock),
                seed=seed,
                clock=clock,
                blocked=number in books.blocked,
                disabled=number in books.disabled,
            )
        )
    return made


def identity_type() -> schema.Struct:
    """``Identity`` as the authentication service's WSDL defines it."""
    return schema.service("authService").type("Identity")
