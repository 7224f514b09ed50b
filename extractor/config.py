"""Configuration values: frozen, with ``DEFAULT_*`` constants. Secrets only from the environment."""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from extractor import redact
from extractor.errors import CredentialsMissing, InvalidOption, UsageError
from extractor.soap import Soap

DEFAULT_BASE_URL: Final = "https://api.24sevenoffice.com"
MAX_BATCH: Final = 1000
#: One parser process per core: parsing is what the CPU spends its time on.
DEFAULT_PARSE_WORKERS: Final = min(os.cpu_count() or 1, 8)
_GUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


@dataclass(frozen=True)
class Credentials:
    """The Login credential; ``repr`` never shows the password."""

    application_id: str
    username: str
    password: str = field(repr=False)
    identity_id: str | None = None

    def __post_init__(self) -> None:
        redact.register(self.password)  # masked in every sink from now on

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        """From ``TFSO_APPLICATION_ID``, ``TFSO_USERNAME``, ``TFSO_PASSWORD`` and
        ``TFSO_IDENTITY_ID``, or the variables a ``--config`` file named instead
        (:func:`read_credentials_from`)."""
        env = os.environ if env is None else env
        names = {field: _VARIABLES.get(field, default) for field, default in CREDENTIAL_VARIABLES}
        needed = [names[field] for field in ("application_id", "username", "password")]
        missing = [name for name in needed if not env.get(name)]
        if missing:
            raise CredentialsMissing(
                f"missing credentials: set {', '.join(missing)} in the environment"
            )
        creds = cls(
            env[names["application_id"]].strip(),
            env[names["username"]].strip(),
            env[names["password"]],
            env.get(names["identity_id"], "").strip() or None,
        )
        for name, value in (
            (names["application_id"], creds.application_id),
            (names["identity_id"], creds.identity_id),
        ):
            if value is not None and not _GUID.fullmatch(value):
                raise UsageError(
                    f"{name} is not a guid (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
                )
        return creds


#: Each credential's field and the variable it is read from unless a config file names another.
CREDENTIAL_VARIABLES: Final = (
    ("application_id", "TFSO_APPLICATION_ID"),
    ("username", "TFSO_USERNAME"),
    ("password", "TFSO_PASSWORD"),
    ("identity_id", "TFSO_IDENTITY_ID"),
)
_VARIABLES: dict[str, str] = {}


def read_credentials_from(variables: Mapping[str, str]) -> None:
    """Read each credential field of ``variables`` from the variable it names (a config
    file's ``[credentials]``); the others from their ``TFSO_*`` variable."""
    _VARIABLES.clear()
    _VARIABLES.update(variables)


def password_variable() -> str:
    """The variable the password is read from."""
    return _VARIABLES.get("password", "TFSO_PASSWORD")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with full jitter, bounded in attempts."""

    attempts: int = 6
    initial: float = 0.5
    maximum: float = 30.0
    fault_attempts: int = 2  # a RequestFault usually repeats: retry it once, then split

    def single(self) -> RetryPolicy:
        """One attempt: for the halves of a batch that failed after its retries."""
        return RetryPolicy(1, self.initial, self.maximum, 1)


DEFAULT_RETRY: Final = RetryPolicy()
LOGIN_RETRY: Final = RetryPolicy(attempts=3, initial=0.2, maximum=2.0, fault_attempts=3)


#: The longest pause the service may ask for (Retry-After, its budget reset, a quarantine's
#: end) that a run waits out; the live service's quarantines last minutes, up to an hour.
DEFAULT_MAX_PAUSE: Final = 3600.0


@dataclass(frozen=True)
class Timeouts:
    connect: float = 15.0
    attempt: float = 300.0  # a whole request, response body included
    max_pause: float = DEFAULT_MAX_PAUSE  # beyond it the run stops, resumable

    def __post_init__(self) -> None:
        for name in ("connect", "attempt", "max_pause"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                flag = "{timeout}" if name != "max_pause" else "{max_pause}"
                raise InvalidOption(f"{flag} {value} must be a finite number of seconds, >= 0")


DEFAULT_TIMEOUTS: Final = Timeouts()


#: Requests in flight: "auto" adapts them to the service (:mod:`extractor.service.concurrency`)
#: from ``START_CONCURRENCY`` within 1..``MAX_CONCURRENCY``; a number keeps them fixed.
DEFAULT_CONCURRENCY: Final = "auto"
START_CONCURRENCY: Final = 8
MAX_CONCURRENCY: Final = 64
DEFAULT_SOAP_VERSION: Final = Soap.V1_1
#: The live service's documented budget; 0 turns the client-side limit off (simulators).
DEFAULT_MAX_REQUESTS_PER_HOUR: Final = 7200


def check_base_url(base_url: str) -> None:
    """Refuse a base URL that is not ``http(s)://host[:port][/path]``."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidOption(
            f"{{base_url}} {base_url!r} must be http:// or https:// and a host "
            f"(e.g. {DEFAULT_BASE_URL})"
        )


@dataclass(frozen=True)
class ServiceConfig:
    """How every command talks to the service: where, how many requests at once, how fast."""

    base_url: str = DEFAULT_BASE_URL
    concurrency: int | Literal["auto"] = DEFAULT_CONCURRENCY
    soap_version: Soap = DEFAULT_SOAP_VERSION
    max_requests_per_hour: int = DEFAULT_MAX_REQUESTS_PER_HOUR
    retry: RetryPolicy = DEFAULT_RETRY
    timeouts: Timeouts = DEFAULT_TIMEOUTS
    insecure: bool = False  # skip TLS certificate verification

    def __post_init__(self) -> None:
        check_base_url(self.base_url)
        if self.concurrency != "auto" and not (
            isinstance(self.concurrency, int) and 1 <= self.concurrency <= MAX_CONCURRENCY
        ):
            raise InvalidOption(
                f"{{concurrency}} {self.concurrency!r} is neither auto nor a number "
                f"1..{MAX_CONCURRENCY}"
            )
        if self.max_requests_per_hour < 0:
            raise InvalidOption("{max_requests_per_hour} must be 0 (no limit) or more")
        try:
            Soap(self.soap_version)
        except ValueError:
            raise InvalidOption(
                f"{{soap_version}} {self.soap_version!r} is neither {' nor '.join(Soap)}"
            ) from None

    @property
    def most_in_flight(self) -> int:
        """The most requests in flight: the fixed concurrency, or the adaptive one's ceiling."""
        return MAX_CONCURRENCY if self.concurrency == "auto" else self.concurrency

    @property
    def first_in_flight(self) -> int:
        """Requests in flight at the start: the fixed concurrency, or where the adaptive starts."""
        return START_CONCURRENCY if self.concurrency == "auto" else self.concurrency


def service_config(
    *,
    base_url: str = DEFAULT_BASE_URL,
    concurrency: int | Literal["auto"] = DEFAULT_CONCURRENCY,
    soap_version: str = DEFAULT_SOAP_VERSION.value,
    max_requests_per_hour: int = DEFAULT_MAX_REQUESTS_PER_HOUR,
    timeout: float = DEFAULT_TIMEOUTS.attempt,
    max_pause: float = DEFAULT_MAX_PAUSE,
    insecure: bool = False,
) -> ServiceConfig:
    """The service settings every command takes, by their flags' names (``--timeout`` is a
    whole attempt's seconds; the connect timeout follows it down)."""
    try:
        version = Soap(soap_version)
    except ValueError:
        raise InvalidOption(
            f"{{soap_version}} {soap_version!r} is neither {' nor '.join(Soap)}"
        ) from None
    if not isinstance(timeout, int | float) or not math.isfinite(timeout):
        raise InvalidOption(f"{{timeout}} {timeout} must be a finite number of seconds")
    if timeout < 0.1:
        raise InvalidOption(f"{{timeout}} {timeout} must be at least 0.1 seconds")
    timeouts = Timeouts(
        connect=min(DEFAULT_TIMEOUTS.connect, timeout), attempt=timeout, max_pause=max_pause
    )
    return ServiceConfig(
        base_url=base_url, concurrency=concurrency, soap_version=version,
        max_requests_per_hour=max_requests_per_hour, timeouts=timeouts, insecure=insecure,
    )  # fmt: skip


DEFAULT_SERVICE: Final = ServiceConfig()
#: Updates are small requests that the service applies one order at a time: fewer at once.
DEFAULT_UPDATE_SERVICE: Final = ServiceConfig(concurrency=4)
#: The most minutes a sync's overlap may reach back before its watermark.
MAX_OVERLAP_MINUTES: Final = 10 * 366 * 24 * 60  # ten years
#: Where a first sync's ledger begins unless ``--since`` says.
DEFAULT_SINCE: Final = dt.date(2000, 1, 1)
