"""The lock of an ``s3://`` target: an object beside the data, held under a lease.

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
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

import orjson

from extractor.clock import SYSTEM, Clock
from extractor.errors import LeaseLost, OutputError, OutputLocked
from extractor.output.lock import describe, holder_of_this_process

if TYPE_CHECKING:
    from extractor.output.targets import Target

LOCK_OBJECT: Final = "_extractor.lock"
DEFAULT_LEASE_SECONDS: Final = 60.0
DEFAULT_RENEW_EVERY: Final = 15.0
DEFAULT_MARGIN: Final = 10.0
DEFAULT_GRACE: Final = 10.0
#: A lock object's requests give up sooner than data's: a renewal must end within the lease.
LOCK_ATTEMPTS: Final = 5
LOCK_READ_TIMEOUT: Final = 5.0


@dataclass(frozen=True)
class LeaseConfig:
    """How long a lease lasts, how often it is renewed, and the safety margins (seconds)."""

    seconds: float = DEFAULT_LEASE_SECONDS
    renew_every: float = DEFAULT_RENEW_EVERY
    margin: float = DEFAULT_MARGIN
    grace: float = DEFAULT_GRACE


DEFAULT_LEASE: Final = LeaseConfig()


@dataclass(frozen=True)
class Found:
    """The lock object as read: who holds it, and its ETag."""

    holder: dict[str, Any]
    etag: str

    def expired(self, now: float, grace: float) -> bool:
        """Its lease ended ``grace`` seconds ago; a lock without a lease (an older
        extractor's) never expires."""
        expires = self.holder.get("expires")
        return isinstance(expires, int | float) and now > expires + grace


class ObjectLock:
    """The lock object of an ``s3://`` target, held (see the module's docstring)."""

    def __init__(
        self, target: Target, holder: dict[str, Any], etag: str, clock: Clock, config: LeaseConfig
    ) -> None:
        self.target, self.holder, self.etag = target, holder, etag
        self.clock, self.config = clock, config
        self.lost: str | None = None  # why, once the lease is lost
        self._client = lock_client(target)
        self._key = lock_key(target)
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
        lock.etag = lock._acquired()
        _HELD[target.uri] = lock
        if renew:
            lock._renewer = threading.Thread(target=lock._renewing, name="lease", daemon=True)
            lock._renewer.start()
        return lock

    @property
    def uri(self) -> str:
        return f"s3://{self.target.bucket}/{self._key}"

    @property
    def expires(self) -> float:
        return float(self.holder["expires"])

    def _body(self) -> bytes:
        self.holder = self.holder | {"expires": round(self.clock.time() + self.config.seconds, 3)}
        return orjson.dumps(self.holder)

    def _acquired(self) -> str:
        """The object created, or taken over: its ETag (OutputLocked if held)."""
        for _ in range(_ACQUIRE_ROUNDS):
            created = _put(self._client, self.target, self._key, self._body(), IfNoneMatch="*")
            if created is not None:
                return created
            found = read_lock(self.target)
            if found is not None:
                return self.taken_over(found)
        raise self._refused(None)  # it keeps coming and going: someone else is at it

    def taken_over(self, found: Found) -> str:
        """Replace ``found`` if its lease ended and it is still there; its new ETag."""
        if found.holder.get("token") == self.holder["token"]:
            return found.etag  # our own create, retried after it landed
        if not found.expired(self.clock.time(), self.config.grace):
            raise self._refused(found)
        body = self._body()
        etag = _put(self._client, self.target, self._key, body, IfMatch=found.etag)
        if etag is None:  # another successor replaced it first
            raise self._refused(read_lock(self.target))
        return etag

    def _refused(self, found: Found | None) -> OutputLocked:
        holder = found.holder if found is not None else None
        if holder is not None and "expires" not in holder:  # an older extractor's: no lease
            after = f"if that run is gone (killed), break its lock with: aws s3 rm {self.uri}"
        else:
            after = "if that run is gone (killed), a run started once its lease ended takes over"
        return OutputLocked(
            f"{self.target.uri} is in use by {describe(holder)}{lease_state(holder, self.clock)}"
            f"; one run writes an output at a time: wait for it to end; {after}"
        )

    def renew(self) -> None:
        """Renew the lease once (the renewal thread's step); a lease found replaced, removed,
        or not renewed in time is lost."""
        if self.lost is not None:
            return
        previous = self.holder
        try:
            etag = _put(self._client, self.target, self._key, self._body(), IfMatch=self.etag)
        except OutputError as exc:
            self.holder = previous
            if self.clock.time() >= self.expires - self.config.margin:
                self._lose(f"it could not be renewed in time ({exc})")
            return
        if etag is not None:
            self.etag = etag
            return
        try:
            found = read_lock(self.target)
        except OutputError:
            self.holder = previous  # told apart at the next renewal
            return
        if found is not None and found.holder == self.holder:
            self.etag = found.etag  # a retried put whose first attempt landed
            return
        self.holder = previous
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
                self._remove()

    def _remove(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client.delete_object(Bucket=self.target.bucket, Key=self._key, IfMatch=self.etag)
        except ClientError as exc:
            if _code(exc) in _CONDITION_FAILED:
                return  # no longer ours
            found = read_lock(self.target)  # a store without conditional deletes
            if found is not None and found.holder.get("token") == self.holder["token"]:
                self._client.delete_object(Bucket=self.target.bucket, Key=self._key)

    def __enter__(self) -> ObjectLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


#: The leases this process holds, by target URI: what writes check first.
_HELD: dict[str, ObjectLock] = {}
#: The lease of the target the current run writes (set by the target's lock).
CURRENT: contextvars.ContextVar[ObjectLock | None] = contextvars.ContextVar("lease", default=None)


def ensure_held(target: Target) -> None:
    """Before a write to ``target``: LeaseLost if this process held its lease and lost it."""
    lock = _HELD.get(target.uri)
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


def lock_key(target: Target) -> str:
    return target.key(LOCK_OBJECT).split("/", 1)[1]


def lock_client(target: Target) -> Any:
    """A client whose requests end well within a lease, retries included."""
    from extractor.output.store import s3_client

    timeout = min(target.store.read_timeout, LOCK_READ_TIMEOUT)
    store = replace(target.store, attempts=LOCK_ATTEMPTS, read_timeout=timeout)
    return s3_client(target.endpoint_url, target.region, store)


def read_lock(target: Target) -> Found | None:
    """The lock object of ``target`` as it is now (None: there is none; a holder that does
    not say who it is: ``{}``); OutputError if the store cannot be read."""
    from botocore.exceptions import BotoCoreError, ClientError

    key = lock_key(target)
    try:
        found = lock_client(target).get_object(Bucket=target.bucket, Key=key)
        text = found["Body"].read()
    except ClientError as exc:
        if _code(exc) in ("NoSuchKey", "404"):
            return None
        raise OutputError(f"cannot read the lock s3://{target.bucket}/{key}: {exc}") from None
    except BotoCoreError as exc:
        raise OutputError(f"cannot read the lock s3://{target.bucket}/{key}: {exc}") from None
    with contextlib.suppress(orjson.JSONDecodeError):
        value = orjson.loads(text)
        return Found(value if isinstance(value, dict) else {}, found["ETag"])
    return Found({}, found["ETag"])


def lease_state(holder: dict[str, Any] | None, clock: Clock = SYSTEM) -> str:
    """``; its lease ...`` for a holder's description ('' when it has no lease)."""
    expires = (holder or {}).get("expires")
    if not isinstance(expires, int | float):
        return ""
    when = _utc(expires)
    if clock.time() <= expires:
        return f"; its lease is live until {when}"
    return f"; its lease ended at {when}"


def _utc(seconds: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _who(found: Found | None) -> str:
    return "nobody (the lock was removed)" if found is None else describe(found.holder)


def _put(client: Any, target: Target, key: str, body: bytes, **condition: str) -> str | None:
    """A conditional put: the new ETag, or None when the condition failed (412; a missing
    object for ``IfMatch``)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return str(client.put_object(Bucket=target.bucket, Key=key, Body=body, **condition)["ETag"])
    except ClientError as exc:
        if _code(exc) in _CONDITION_FAILED:
            return None
        raise OutputError(f"cannot write the lock s3://{target.bucket}/{key}: {exc}") from None
    except BotoCoreError as exc:
        raise OutputError(f"cannot write the lock s3://{target.bucket}/{key}: {exc}") from None


#: What a conditional request answers when its condition does not hold: 412; 404 for
#: ``If-Match`` on a missing object; 409 when another conditional write was under way.
_CONDITION_FAILED: Final = frozenset(
    {"PreconditionFailed", "412", "NoSuchKey", "404", "ConditionalRequestConflict", "409"}
)
#: Tries at creating a lock object that keeps vanishing between the put and the read.
_ACQUIRE_ROUNDS: Final = 3


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code"))
