"""How many requests go at once: a fixed number, or as many as the service answers without
slowing down (``--concurrency auto``).

:class:`Slots` is the transport's door: at most ``limit`` requests on the wire, and half as
many more calls finishing their parse (so memory follows the limit). Adaptive, the limit is
decided once a round (as many answers as the limit: about one latency), in the spirit of TCP
Vegas and Netflix's concurrency-limits. From the answers' latency against the least seen
(the service unloaded), Little's law gives the requests waiting inside the service; then

- **grow** while every slot is busy on the wire (none waits for the budget, someone waits for
  a slot) and nothing waits inside the service: by half in slow start, by one after it;
- **back off** when requests wait inside the service (answers slow down): by the excess;
- **back off** at once by a quarter, at most once a round, on a sign of overload: a 5xx, a
  timeout, a dropped connection (the service answers "timeouts and server errors" when
  overloaded); the first back-off ends slow start;
- **hold** otherwise,

always within ``least`` and ``most``. :func:`decide` is the judgement, as a value.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final, Literal

from extractor.clock import SYSTEM, Clock
from extractor.config import MAX_CONCURRENCY, START_CONCURRENCY, ServiceConfig
from extractor.errors import ServerError, ServerFault, TransportError

Decision = Literal["grow", "hold", "back off"]
#: A fixed number of requests in flight that bounds nothing.
UNBOUNDED: Final = 1 << 30


@dataclass(frozen=True)
class AdaptivePolicy:
    """The bounds and thresholds of an adaptive limit."""

    start: int = START_CONCURRENCY
    least: int = 1
    most: int = MAX_CONCURRENCY
    queue_low: float = 2.0  # requests waiting in the service below which the limit grows
    queue_high: float = 4.0  # above which it backs off (both at least a share of the limit:)
    share_low: float = 0.1
    share_high: float = 0.25
    backoff: float = 0.75  # what a failure leaves of the limit
    drift: float = 0.01  # a round's rise of the unloaded latency (the service may slow for good)

    def low(self, limit: float) -> float:
        """Requests waiting in the service below which ``limit`` may grow."""
        return max(self.queue_low, self.share_low * limit)

    def high(self, limit: float) -> float:
        """Requests waiting in the service above which ``limit`` backs off."""
        return max(self.queue_high, self.share_high * limit)


DEFAULT_ADAPTIVE: Final = AdaptivePolicy()


@dataclass
class Round:
    """What the answers of one round said."""

    answers: int = 0
    saturated: int = 0  # answers that came while every slot was busy on the wire
    latencies: dict[str, list[float]] = field(default_factory=dict)  # by operation

    def busiest(self) -> tuple[str, float] | None:
        """The operation answered most often, and its mean latency."""
        if not self.latencies:
            return None
        name = max(self.latencies, key=lambda op: len(self.latencies[op]))
        return name, statistics.fmean(self.latencies[name])


def queued(limit: float, latency: float, unloaded: float) -> float:
    """Requests waiting in the service, by Little's law: ``limit`` in flight take ``latency``
    where one alone takes ``unloaded``."""
    return limit * max(0.0, 1 - unloaded / latency) if latency > 0 else 0.0


def decide(limit: float, waiting: float, saturated: bool, policy: AdaptivePolicy) -> Decision:
    """A round's judgement, from the requests ``waiting`` in the service (:func:`queued`) and
    whether every slot was busy on the wire."""
    if waiting > policy.high(limit):
        return "back off"
    if saturated and waiting < policy.low(limit):
        return "grow"
    return "hold"


def overloaded(error: BaseException) -> bool:
    """A sign that the service has too much to do: a 5xx (not a 429, a rate limit), a busy
    fault, a timeout or a dropped connection."""
    if isinstance(error, ServerError):
        return error.status >= 500
    return isinstance(error, ServerFault | TransportError)


class _Door:
    """At most ``size()`` inside at once; the size may change at any time."""

    def __init__(self, size: Callable[[], int]) -> None:
        self._size = size
        self.inside = 0
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def enter(self) -> None:
        if self.inside < self._size() and not self._queue:
            self.inside += 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._queue.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.leave()  # let in as it was cancelled: pass the place on
            elif turn in self._queue:
                self._queue.remove(turn)
            raise

    def leave(self) -> None:
        self.inside -= 1
        self.open()

    def open(self) -> None:
        """Let in whoever the size now has room for."""
        while self._queue and self.inside < self._size():
            turn = self._queue.popleft()
            if turn.done():  # its waiter was cancelled
                continue
            self.inside += 1
            turn.set_result(None)


class Flight:
    """One request holding a slot: it goes (:meth:`went`), then is answered or fails."""

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self.sent_at: float | None = None  # on our monotonic clock, once it went
        self._epoch = slots.epoch

    def went(self) -> None:
        """Let through by the rate limits: on the wire from now."""
        self.sent_at = self._slots.clock.monotonic()
        self._slots.waiting_for_budget -= 1

    def answered(self, operation: str, error: BaseException | None = None) -> None:
        """Its answer is in (or it failed with ``error``)."""
        if self.sent_at is None:
            return
        took = self._slots.clock.monotonic() - self.sent_at
        self._slots.answered(operation, took, error, self._epoch)


class Slots:
    """The requests in flight, fixed at ``fixed`` (None: adaptive, by ``policy``): the
    transport takes a :meth:`call` for each call, parse included, and a :meth:`request` for
    its time on the wire, and tells the flight when it went and how it was answered."""

    def __init__(
        self, fixed: int | None, policy: AdaptivePolicy = DEFAULT_ADAPTIVE, clock: Clock = SYSTEM
    ) -> None:
        self.fixed, self.policy, self.clock = fixed, policy, clock
        self.limit = float(fixed or policy.start)
        self.slow_start = fixed is None
        self.epoch = 0  # back-offs so far: a failure of a request sent before one is old news
        self.waiting_for_budget = 0  # slots held by requests the rate limits still hold
        self.decisions: collections.Counter[Decision] = collections.Counter()
        self._round = Round()
        self._unloaded: dict[str, float] = {}  # each operation's least latency (one round's)
        self._requests = _Door(lambda: int(self.limit))
        # a fixed number of workers bounds the calls already; an adaptive limit needs a door
        self._calls = _Door(self._calls_allowed)

    def _calls_allowed(self) -> int:
        if self.fixed is not None:
            return UNBOUNDED
        return int(self.limit) + max(1, int(self.limit) // 2)

    @classmethod
    def for_service(cls, service: ServiceConfig, clock: Clock = SYSTEM) -> Slots:
        """The slots ``service`` asks for: ``auto`` adaptive, a number fixed."""
        fixed = None if service.concurrency == "auto" else service.concurrency
        return cls(fixed, clock=clock)

    @asynccontextmanager
    async def call(self) -> AsyncIterator[None]:
        """A place among the calls in progress, parse included."""
        await self._calls.enter()
        try:
            yield
        finally:
            self._calls.leave()

    @asynccontextmanager
    async def request(self) -> AsyncIterator[Flight]:
        """A slot on the wire, until the answer's body is in."""
        await self._requests.enter()
        self.waiting_for_budget += 1
        flight = Flight(self)
        try:
            yield flight
        finally:
            if flight.sent_at is None:
                self.waiting_for_budget -= 1
            self._requests.leave()

    def answered(
        self, operation: str, took: float, error: BaseException | None, epoch: int
    ) -> None:
        if self.fixed is not None:
            return
        if error is not None:
            if overloaded(error) and epoch == self.epoch:
                self._back_off(max(self.policy.least, self.limit * self.policy.backoff))
            return
        busy = self._requests.waiting > 0 and self.waiting_for_budget == 0
        self._round.answers += 1
        self._round.saturated += busy
        self._round.latencies.setdefault(operation, []).append(took)
        if self._round.answers >= int(self.limit):
            self._judge(self._round)
            self._round = Round()

    def _judge(self, round_: Round) -> None:
        busiest = round_.busiest()
        if busiest is None:
            return
        name, latency = busiest
        before = self._unloaded.get(name, latency) * (1 + self.policy.drift)
        unloaded = self._unloaded[name] = min(before, latency)
        waiting = queued(self.limit, latency, unloaded)
        saturated = round_.saturated * 2 >= round_.answers
        decision = decide(self.limit, waiting, saturated, self.policy)
        if decision == "back off":  # by what waits beyond the threshold, at most by half
            excess = max(1.0, waiting - self.policy.high(self.limit))
            self._back_off(max(self.limit / 2, self.limit - excess))
        elif decision == "grow":
            self._grow()
        else:
            self.decisions["hold"] += 1

    def _grow(self) -> None:
        self.decisions["grow"] += 1
        step = max(1.0, self.limit / 2) if self.slow_start else 1.0
        self.limit = min(float(self.policy.most), self.limit + step)
        self._requests.open()
        self._calls.open()

    def _back_off(self, to: float) -> None:
        self.decisions["back off"] += 1
        self.limit = max(float(self.policy.least), to)
        self.slow_start = False
        self.epoch += 1
        self._round = Round()
