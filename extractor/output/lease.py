"""The lock of an ``s3://`` target: an object beside the data (:mod:`.lockobject`), held
under a lease.

A run creates ``<target>/_extractor.lock`` only if it is absent (a conditional put,
``If-None-Match: *``); the object says who holds it and until when (``expires``, seconds since
the epoch). Its holder renews the lease every :attr:`LeaseConfig.renew_every` seconds from a
thread of its own, each time replacing the object only if it is still the one it wrote
(``If-Match`` on its ETag). A run that finds the object with a lease that ended more than
:attr:`LeaseConfig.grace` seconds ago takes it over, replacing it only if it is still that stale
object (``If-Match`` on the stale ETag), so of two successors one wins and the other is refused.

A holder that finds its object replaced or gone, or could not renew it in time, has lost the
lease: it stops writing (:class:`~extractor.errors.LeaseLost`, before any upload or commit,
and its run is cancelled at once) and never deletes the object, which is now another run's.
It stops :attr:`LeaseConfig.margin` seconds before its lease ends by its own clock, and a
successor waits ``grace`` seconds past it by its clock: clocks may differ by up to their sum.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from extractor.clock import SYSTEM, Clock
from extractor.errors import LeaseLost, OutputError, OutputLocked
from extractor.output.lock import describe, holder_of_this_process
from extractor.output.lockobject import (
    Found,
    lease_state,
    lock_client,
    lock_key,
    put_lock,
    read_lock,
    remove_lock,
)

if TYPE_CHECKING:
    from extractor.output.targets import Target

DEFAULT_LEASE_SECONDS: Final = 60.0
DEFAULT_RENEW_EVERY: Final = 15.0
DEFAULT_MARGIN: Final = 10.0
DEFAULT_GRACE: Final = 10.0
#: Tries at creating a lock object that keeps vanishing between the put and the read.
ACQUIRE_ROUNDS: Final = 3


@dataclass(frozen=True)
class LeaseConfig:
    """How long a lease lasts, how often it is renewed, and the safety margins (seconds)."""

    seconds: float = DEFAULT_LEASE_SECONDS
    renew_every: float = DEFAULT_RENEW_EVERY
    margin: float = DEFAULT_MARGIN
    grace: float = DEFAULT_GRACE


DEFAULT_LEASE: Final = LeaseConfig()


class ObjectLock:
    """The lock object of an ``s3://`` target, held (see the module's docstring)."""

    def __init__(
        self, target: Target, holder: dict[str, Any], etag: str, clock: Clock, config: LeaseConfig
    ) -> None:
        self.target, self.holder, self.etag = target, holder, etag
        self.clock, self.config = clock, config
        self.lost: str | None = None  # why, once the lease is lost
        self._client = lock_client(target)
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._on_lost: list[Callable[[], None]] = []
        self._renewer: threading.Thread | None = None

    @classmethod
    def take(
        cls,
        target: Target,
        command: str,
        *,
        clock: Clock = SYSTEM,
        config: LeaseConfig = DEFAULT_LEASE,
        renew: bool = True,
    ) -> ObjectLock:
        """The lock of ``target``: created, or taken over from a holder whose lease ended;
        OutputLocked naming a live holder. ``renew``: from a thread, until released."""
        holder = holder_of_this_process(command) | {"token": secrets.token_hex(8)}
        lock = cls(target, holder, "", clock, config)
        lock._acquire()
        _HELD[target.uri] = lock
        if renew:
            lock._renewer = threading.Thread(target=lock._renewing, name="lease", daemon=True)
            lock._renewer.start()
        return lock

    @property
    def uri(self) -> str:
        return f"s3://{self.target.bucket}/{lock_key(self.target)}"

    @property
    def expires(self) -> float:
        return float(self.holder["expires"])

    def _extended(self) -> dict[str, Any]:
        """The holder with a lease from now on."""
        return self.holder | {"expires": round(self.clock.time() + self.config.seconds, 3)}

    def _put(self, holder: dict[str, Any], **condition: str) -> bool:
        """Write ``holder`` if ``condition`` holds; whether it did (then it is ours)."""
        etag = put_lock(self._client, self.target, orjson.dumps(holder), **condition)
        if etag is not None:
            self.holder, self.etag = holder, etag
        return etag is not None

    def _acquire(self) -> None:
        """Create the object, or take it over (OutputLocked if it is held)."""
        for _ in range(ACQUIRE_ROUNDS):
            if self._put(self._extended(), IfNoneMatch="*"):
                return
            found = read_lock(self.target)
            if found is not None:
                self.take_over(found)
                return
        raise self._refused(None)  # it keeps coming and going: someone else is at it

    def take_over(self, found: Found) -> None:
        """Replace ``found`` if its lease ended and it is still there (OutputLocked if not)."""
        if found.holder.get("token") == self.holder["token"]:
            self.holder, self.etag = found.holder, found.etag  # our create, retried once landed
            return
        if not found.expired(self.clock.time(), self.config.grace):
            raise self._refused(found)
        if not self._put(self._extended(), IfMatch=found.etag):
            raise self._refused(read_lock(self.target))  # another successor was first

    def _refused(self, found: Found | None) -> OutputLocked:
        holder = found.holder if found is not None else None
        if holder is not None and "expires" not in holder:  # an older extractor's: no lease
            after = f"if that run is gone (killed), break its lock with: aws s3 rm {self.uri}"
        else:
            after = (
                f"if that run is gone (killed), a run started {self.config.grace:g} s after its "
                "lease ended takes over"
            )
        return OutputLocked(
            f"{self.target.uri} is in use by {describe(holder)}{lease_state(holder, self.clock)}"
            f"; one run writes an output at a time: wait for it to end; {after}"
        )

    def renew(self) -> None:
        """Renew the lease once (the renewal thread's step); a lease found replaced, removed,
        or not renewed in time is lost."""
        if self.lost is not None:
            return
        attempt = self._extended()
        try:
            if self._put(attempt, IfMatch=self.etag):
                return
            found = read_lock(self.target)
        except OutputError as exc:  # the store did not answer: again at the next renewal
            if self.clock.time() >= self.expires - self.config.margin:
                self._lose(f"it could not be renewed in time ({exc})")
            return
        if found is not None and found.holder == attempt:
            self.holder, self.etag = attempt, found.etag  # a retried put whose first landed
        else:
            self._lose(f"it was taken over by {_who(found)}")

    def _lose(self, why: str) -> None:
        with self._guard:
            self.lost = why
            waiting, self._on_lost = self._on_lost, []
        for notify in waiting:
            with contextlib.suppress(RuntimeError):  # its event loop has ended
                notify()

    def check(self) -> None:
        """LeaseLost unless the lease is held, with at least the margin left."""
        if self.lost is None and self.clock.time() >= self.expires - self.config.margin:
            self._lose("it ran out before it could be renewed")
        if self.lost is not None:
            raise LeaseLost(
                f"lost the lock of {self.target.uri}: {self.lost}; this run stopped writing. "
                "Run the same command again once the other run has ended"
            )

    def on_lost(self, notify: Callable[[], None]) -> Callable[[], None]:
        """Call ``notify`` (from the renewal thread) once the lease is lost; the function
        that cancels this."""
        with self._guard:
            if self.lost is None:
                self._on_lost.append(notify)
                return lambda: self._forget(notify)
        notify()
        return lambda: None

    def _forget(self, notify: Callable[[], None]) -> None:
        with self._guard, contextlib.suppress(ValueError):
            self._on_lost.remove(notify)

    def _renewing(self) -> None:
        while not self._stop.wait(self.config.renew_every) and self.lost is None:
            self.renew()

    def release(self) -> None:
        """Stop renewing and remove the object, if it is still ours."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if _HELD.get(self.target.uri) is self:
            del _HELD[self.target.uri]
        if self.lost is None:
            with contextlib.suppress(Exception):  # a lock left behind expires with its lease
                remove_lock(self._client, self.target, self.etag, self.holder["token"])

    def __enter__(self) -> ObjectLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


#: The leases this process holds, by target URI: what writes check first.
_HELD: dict[str, ObjectLock] = {}
#: The lease of the target the current run writes (set by the target's lock).
CURRENT: contextvars.ContextVar[ObjectLock | None] = contextvars.ContextVar("lease", default=None)


def held_lease(target: Target) -> ObjectLock | None:
    """The lock object of ``target`` this process holds, if any."""
    return _HELD.get(target.uri)


def ensure_held(target: Target) -> None:
    """Before a write to ``target``: LeaseLost if this process held its lease and lost it."""
    lock = held_lease(target)
    if lock is not None:
        lock.check()


@contextlib.contextmanager
def stopped_if_lost() -> Iterator[None]:
    """Around a run's coroutine: the moment the current lease is lost, the run is cancelled
    and ends with LeaseLost instead."""
    lock = CURRENT.get()
    task = asyncio.current_task() if lock is not None else None
    if lock is None or task is None:
        yield
        return
    loop = asyncio.get_running_loop()
    forget = lock.on_lost(lambda: _call_soon(loop, task.cancel))
    try:
        yield
    except asyncio.CancelledError:
        if lock.lost is None:
            raise
        task.uncancel()
        lock.check()
    finally:
        forget()


def _call_soon(loop: asyncio.AbstractEventLoop, action: Callable[[], object]) -> None:
    loop.call_soon_threadsafe(action)


def _who(found: Found | None) -> str:
    return "nobody (the lock was removed)" if found is None else describe(found.holder)
