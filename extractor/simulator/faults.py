"""How the simulator misbehaves: injected faults, a rate-limit budget with quarantine, poison ids.

Everything is deterministic from a seed: the n-th data request (GetOrderSyncList,
GetInvoices) draws its fate from ``random.Random(seed)``, so a run that sends its requests
in the same order meets the same faults. Login is never faulted: the live service's login is
throttled, not flaky, and a chaos run should prove the data path, not the login retries.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

#: Every way a data request can fail, as the live ASMX service does.
KINDS: Final = (
    "http500",  # HTTP 500 with a plain-text body, no SOAP fault
    "reset",  # the connection is dropped in the middle of the body
    "truncate",  # HTTP 200, complete HTTP message, but the XML stops
    "timeout-fault",  # soap:Fault "Server was unable to process request. ---> Timeout expired"
    "slow",  # the answer takes longer than the client waits
    "throttle",  # HTTP 429 with Retry-After
)
TIMEOUT_FAULT: Final = (
    "Server was unable to process request. ---> Timeout expired.  The timeout period elapsed "
    "prior to completion of the operation or the server is not responding."
)
POISON_FAULT: Final = (
    "Server was unable to process request. ---> Object reference not set to an instance of "
    "an object."
)
HOSTILE_BODY: Final = b"""<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY xxe SYSTEM "file:///etc/passwd">
  <!ENTITY net SYSTEM "http://127.0.0.1:9/steal">
]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>
<GetInvoicesResponse xmlns="http://24sevenOffice.com/webservices"><GetInvoicesResult>
<InvoiceOrder><OrderId>1</OrderId><InvoiceTitle>&lol3;&xxe;&net;</InvoiceTitle></InvoiceOrder>
</GetInvoicesResult></GetInvoicesResponse></soap:Body></soap:Envelope>"""


@dataclass(frozen=True)
class FaultConfig:
    """Which faults, how often; all off by default."""

    rate: float = 0.0  # share of data requests that fail, spread evenly over ``kinds``
    kinds: tuple[str, ...] = KINDS
    seed: int = 7
    slow_seconds: float = 5.0  # how long a "slow" answer stalls before it is sent
    retry_after: int = 1  # seconds, in the Retry-After header of a 429
    poison_ids: frozenset[int] = frozenset()
    hostile: bool = False  # answer every data request with a DOCTYPE full of entities
    budget: int = 0  # requests per window before a quarantine; 0: no limit, no headers
    window: float = 3600.0  # seconds
    quarantine: float = 60.0  # seconds

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown fault kind {unknown[0]!r}; known: {', '.join(KINDS)}")
        if not 0 <= self.rate <= 1:
            raise ValueError(f"fault rate {self.rate} is outside 0..1")


NO_FAULTS: Final = FaultConfig()


class FaultPlan:
    """Draws each data request's fate, deterministically from the seed."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._random = random.Random(config.seed)

    def draw(self) -> str | None:
        """The fault for the next data request, or None."""
        if self.config.rate == 0 or self._random.random() >= self.config.rate:
            return None
        return self._random.choice(self.config.kinds)

    def poisoned(self, order_ids: list[int]) -> bool:
        return not self.config.poison_ids.isdisjoint(order_ids)


class Budget:
    """The live rate limit: ``budget`` requests per window, then a quarantine refusing all."""

    def __init__(self, config: FaultConfig, clock: Callable[[], float] = time.time) -> None:
        self.limit, self.window, self.length = config.budget, config.window, config.quarantine
        self._clock = clock
        self._window_start = clock()
        self._used = 0
        self.windows: list[int] = []  # requests admitted in each budget window that ended
        self.quarantined_until = 0.0
        self.arrived_in_quarantine = 0  # requests that came while a quarantine was on

    def start_quarantine(self, seconds: float) -> None:
        """As if another client of the same account had just exceeded the limit."""
        self.quarantined_until = self._clock() + seconds

    def admit(self) -> tuple[str | None, dict[str, str]]:
        """Count one request: the quarantine fault text (None when admitted), and the headers."""
        now = self._clock()
        if now >= self._window_start + self.window:
            if self._used:
                self.windows.append(min(self._used, self.limit) if self.limit else self._used)
            self._window_start, self._used = now, 0
        self._used += 1
        if now < self.quarantined_until:
            self.arrived_in_quarantine += 1
            return self._blocked(), self.headers()
        if self.limit and self._used > self.limit:
            self.quarantined_until = now + self.length
            return self._blocked(), self.headers()
        return None, self.headers()

    def headers(self) -> dict[str, str]:
        if not self.limit:
            return {}
        reset = dt.datetime.fromtimestamp(self._window_start + self.window, dt.UTC)
        return {
            "APILimitRemaining": str(max(self.limit - self._used, 0)),
            "APILimitReset": reset.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }

    def _blocked(self) -> str:
        ends = dt.datetime.fromtimestamp(self.quarantined_until, dt.UTC)
        return (
            f"Limit exceeded by {max(self._used - self.limit, 1)}. Request is blocked. "
            f"Quarantine ends at {ends.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"
        )

    @property
    def in_quarantine(self) -> bool:
        return self._clock() < self.quarantined_until
