"""The lock object of an ``s3://`` target as stored: read it, write it only if a condition
holds (S3's conditional puts: ``If-None-Match: *`` to create, ``If-Match: <ETag>`` to replace),
and say the state of the lease it holds. The lease itself: :mod:`extractor.output.lease`."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

import orjson

from extractor.clock import SYSTEM, Clock
from extractor.errors import NoSuchBucket, OutputError
from extractor.output.lock import LOCK_FILE

if TYPE_CHECKING:
    from extractor.output.targets import Target

#: A lock object's requests give up sooner than data's: a renewal must end within the lease.
LOCK_ATTEMPTS: Final = 5
LOCK_TIMEOUT: Final = 5.0
#: What a conditional request answers when its condition does not hold: 412; 404 for
#: ``If-Match`` on a missing object; 409 when another conditional write was under way.
CONDITION_FAILED: Final = frozenset(
    {"PreconditionFailed", "412", "NoSuchKey", "404", "ConditionalRequestConflict", "409"}
)


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


def lock_key(target: Target) -> str:
    """The lock object's key in its bucket: ``_extractor.lock``, as a local lock file."""
    return target.key(LOCK_FILE).split("/", 1)[1]


def lock_client(target: Target) -> Any:
    """A client whose requests end well within a lease, retries included."""
    from extractor.output.store import s3_client

    given = target.store
    store = replace(
        given, attempts=LOCK_ATTEMPTS, read_timeout=min(given.read_timeout, LOCK_TIMEOUT),
        connect_timeout=min(given.connect_timeout, LOCK_TIMEOUT),
    )  # fmt: skip
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
        if code(exc) in ("NoSuchKey", "404"):
            return None
        refuse_missing_bucket(exc, target)
        raise OutputError(f"cannot read the lock s3://{target.bucket}/{key}: {exc}") from None
    except BotoCoreError as exc:
        raise OutputError(f"cannot read the lock s3://{target.bucket}/{key}: {exc}") from None
    with contextlib.suppress(orjson.JSONDecodeError):
        value = orjson.loads(text)
        return Found(value if isinstance(value, dict) else {}, found["ETag"])
    return Found({}, found["ETag"])


def refuse_missing_bucket(error: Exception, target: Target) -> None:
    """NoSuchBucket when ``error`` says the target's bucket does not exist: no retry, and no
    later run, will find it."""
    if code(error) == "NoSuchBucket":
        raise NoSuchBucket(
            f"s3://{target.bucket} does not exist at {target.endpoint_url or 'AWS'}: create "
            "the bucket, or give another output"
        ) from None


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
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(sep=" ", timespec="seconds")


def put_lock(client: Any, target: Target, body: bytes, **condition: str) -> str | None:
    """A conditional put: the new ETag, or None when the condition failed (412; a missing
    object for ``IfMatch``)."""
    from botocore.exceptions import BotoCoreError, ClientError

    key = lock_key(target)
    try:
        return str(client.put_object(Bucket=target.bucket, Key=key, Body=body, **condition)["ETag"])
    except ClientError as exc:
        if code(exc) in CONDITION_FAILED:
            return None
        refuse_missing_bucket(exc, target)
        raise OutputError(f"cannot write the lock s3://{target.bucket}/{key}: {exc}") from None
    except BotoCoreError as exc:
        raise OutputError(f"cannot write the lock s3://{target.bucket}/{key}: {exc}") from None


def remove_lock(client: Any, target: Target, etag: str, token: str) -> None:
    """Delete the lock object if it is still the one with ``etag`` (on a store without
    conditional deletes: if it still holds ``token``)."""
    from botocore.exceptions import ClientError

    key = lock_key(target)
    try:
        client.delete_object(Bucket=target.bucket, Key=key, IfMatch=etag)
    except ClientError as exc:
        if code(exc) in CONDITION_FAILED:
            return  # no longer ours
        found = read_lock(target)
        if found is not None and found.holder.get("token") == token:
            client.delete_object(Bucket=target.bucket, Key=key)


def code(exc: Any) -> str:
    """The error code of a botocore ClientError."""
    return str(exc.response.get("Error", {}).get("Code"))
