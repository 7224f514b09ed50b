"""How the extractor talks to an object store: retries with back-off and timeouts, one
setting (:class:`StoreConfig`) handed to each of the three clients that reach S3.

- boto3 (uploads of plain Parquet, the lock object): botocore's ``standard`` retry mode, which
  retries throttling (``SlowDown``, 429), 5xx, connection errors and read timeouts with
  exponential back-off and jitter (capped at 20 s), and its connect and read timeouts.
- pyarrow's ``S3FileSystem`` (Delta data files, reads): the AWS SDK's standard retry strategy
  with as many attempts, and its connect and request timeouts. The AWS SDK applies the request
  timeout on Windows and macOS only: on Linux a stalled answer is waited for, while a dropped
  connection, a 5xx or a ``SlowDown`` is retried.
- delta-rs (object_store; Delta commits and reads): ``max_retries``, ``retry_timeout`` and the
  ``backoff_config.*`` keys, and the per-request ``timeout`` and ``connect_timeout``.
  object_store retries every 5xx and ``SlowDown`` (the store refused the request), and a
  timeout only where sending again is safe: not a commit's conditional put, which may have
  landed. A commit stalled past ``timeout`` so stops the run (exit 1); the next run finds the
  commit there or not and carries on, exactly once.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Final

DEFAULT_ATTEMPTS: Final = 10
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_READ_TIMEOUT: Final = 60.0
#: How long object_store goes on retrying one request.
DEFAULT_RETRY_BUDGET: Final = 300.0
#: object_store's back-off: the first pause, its growth factor, its ceiling.
DEFAULT_FIRST_BACKOFF: Final = 0.1
DEFAULT_MAX_BACKOFF: Final = 20.0


@dataclass(frozen=True)
class StoreConfig:
    """Retries and timeouts for every request to an object store (seconds)."""

    attempts: int = DEFAULT_ATTEMPTS
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    retry_budget: float = DEFAULT_RETRY_BUDGET
    first_backoff: float = DEFAULT_FIRST_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF

    def boto_config(self) -> Any:
        """botocore's Config: standard retries, with the timeouts."""
        from botocore.config import Config  # only object-store targets need botocore

        return Config(
            retries={"mode": "standard", "max_attempts": self.attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
        )

    def arrow_options(self) -> dict[str, Any]:
        """Keyword arguments of pyarrow's S3FileSystem."""
        import pyarrow.fs as pafs

        return {
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=self.attempts),
            "connect_timeout": self.connect_timeout,
            "request_timeout": self.read_timeout,
        }

    def delta_options(self) -> dict[str, str]:
        """delta-rs storage options (object_store's client and retry keys)."""
        return {
            "timeout": _duration(self.read_timeout),
            "connect_timeout": _duration(self.connect_timeout),
            "max_retries": str(self.attempts - 1),
            "retry_timeout": _duration(self.retry_budget),
            "backoff_config.init_backoff": _duration(self.first_backoff),
            "backoff_config.max_backoff": _duration(self.max_backoff),
            "backoff_config.base": "2",
        }


DEFAULT_STORE: Final = StoreConfig()


def _duration(seconds: float) -> str:
    """object_store's duration strings (humantime): whole milliseconds."""
    return f"{max(1, round(seconds * 1000))}ms"


def s3_client(endpoint_url: str | None, region: str, config: StoreConfig) -> Any:
    """A boto3 S3 client with ``config``'s retries and timeouts; one per process and
    setting (clients are thread-safe, and costly to make)."""
    # a new client when the credentials in the environment change, or in a forked process
    seen = tuple(os.environ.get(name) for name in _CREDENTIALS)
    return _client(endpoint_url, region, config, seen, os.getpid())


#: The environment variables a client takes its credentials from.
_CREDENTIALS: Final = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                       "AWS_PROFILE")  # fmt: skip


@functools.cache
def _client(
    endpoint_url: str | None,
    region: str,
    config: StoreConfig,
    seen: tuple[str | None, ...],
    pid: int,
) -> Any:
    import boto3

    session = boto3.session.Session()  # its own: boto3's default session is not thread-safe
    return session.client(
        "s3", endpoint_url=endpoint_url, region_name=region, config=config.boto_config()
    )
