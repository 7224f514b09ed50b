"""How the simulator misbehaves: injected faults, a rate-limit budget with quarantine
(:mod:`~extractor.simulator.budget`), poison ids, and a fragile service that slows down and
then refuses (503) as requests pile up in it.

Everything is deterministic from a seed: the n-th data request (GetOrderSyncList,
GetInvoices) draws its fate from ``random.Random(seed)``, so a run that sends its requests
in the same order meets the same faults. Login is never faulted: the live service's login is
throttled, not flaky, and a chaos run should prove the data path, not the login retries.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from extractor.simulator.budget import WINDOW_KINDS, WindowKind

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
    window_kind: WindowKind = "restart"  # how a budget window runs (:mod:`.budget`)
    whole_second_reset: bool = False  # APILimitReset without its fraction of a second
    #: A fragile service: past ``slow_past`` requests in it at once, each answer takes
    #: ``latency`` times (requests in it / ``slow_past``); past ``fail_past``, HTTP 503 at once.
    slow_past: int = 0  # 0: never slower
    fail_past: int = 0  # 0: never refused

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown fault kind {unknown[0]!r}; known: {', '.join(KINDS)}")
        if not 0 <= self.rate <= 1:
            raise ValueError(f"fault rate {self.rate} is outside 0..1")
        if self.window_kind not in WINDOW_KINDS:
            raise ValueError(
                f"unknown window kind {self.window_kind!r}; known: {', '.join(WINDOW_KINDS)}"
            )


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


class Load:
    """The requests a fragile service is working on (:class:`FaultConfig`'s ``slow_past`` and
    ``fail_past``): how much slower each new one is answered, or that it is refused."""

    def __init__(self, config: FaultConfig) -> None:
        self.slow_past, self.fail_past = config.slow_past, config.fail_past
        self.working = 0  # requests in the service now
        self.most = 0  # the most it ever held at once

    def enter(self) -> float | None:
        """One more request: how many times the usual latency it takes; None: refused (503)."""
        if self.fail_past and self.working >= self.fail_past:
            return None
        self.working += 1
        self.most = max(self.most, self.working)
        return max(1.0, self.working / self.slow_past) if self.slow_past else 1.0

    def leave(self) -> None:
        self.working -= 1
