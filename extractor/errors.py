"""Every error the extractor raises, rooted at :class:`ExtractorError`.

::

    ExtractorError
    ├── SplitsBatch                a batch still failing with it is fetched again in halves
    ├── UsageError                 bad input from the user (flags, env, paths); exit 2
    │   ├── InvalidOption          a setting of a job, named by its field (the CLI: its flag)
    │   ├── CredentialsMissing
    │   ├── OutputLocked           another run holds the output's lock
    │   └── CorruptJournal         a journal damaged other than by a torn last line
    ├── Permanent                  running again will not mend it; exit 4 (a mixin of those
    │                              marked Permanent below, so ``except Permanent`` works)
    ├── FatalError                 stops the run; never retried
    │   ├── AuthenticationFailed   Login refused, or refused again after one re-login
    │   ├── IdentityRefused        the identity asked for is blocked or not the user's
    │   ├── ServiceUnreachable     Login found no service answering (an outage); exit 1
    │   ├── NotAService            --base-url answers, but not as a 24SevenOffice SOAP service
    │   ├── InvalidRequest         a SOAP fault that says the request itself is wrong
    │   ├── HostileXml             DTD or entity declarations in a response
    │   ├── DataError              a value that does not fit its WSDL type      (SplitsBatch)
    │   ├── ResponseTooLarge       a body above the size limit                  (SplitsBatch)
    │   ├── OutputError            the dataset cannot be written (disk full, permissions)
    │   │   ├── LeaseLost          another run took over an s3:// target's lock: stop writing
    │   │   └── NoSuchBucket       the s3:// target's bucket does not exist        (Permanent)
    │   ├── Redirected             a 3xx answer: requests never follow redirects
    │   ├── StillQuarantined       the service kept refusing after several quarantines
    │   ├── PauseTooLong           the service asked for a pause beyond --max-pause
    │   └── ServiceFailing         every request fails, across batches: not one bad record
    └── TransientError             retried with back-off                        (SplitsBatch)
        ├── TransportError         connection refused/reset, DNS, TLS (also ConnectionError)
        │   └── RequestTimeout     no complete answer in time (also TimeoutError)
        ├── ServerError            HTTP 5xx without a usable SOAP fault, or 429
        ├── ServerFault            a SOAP fault saying the service is busy (timeouts, deadlocks)
        ├── RequestFault           any other fault from the service's code: retried once only,
        │                          since it usually repeats for the same request (a poison id)
        ├── Quarantined            "Limit exceeded ... Quarantine ends at T": all wait until T
        ├── MalformedResponse      truncated or non-XML body, including HTTP 200 bodies that stop
        └── SessionExpired         "Session is not authenticated": re-login, then retry

Retryable errors are told apart by type (``TransientError``), never by matching strings at
the call site; aiohttp and lxml exceptions are translated in ``service/transport.py`` and
``parser.py`` only. A unit of work (a batch of ids, a date window) that still fails with a
:class:`SplitsBatch` after its retries is fetched again in halves, down to what cannot be
halved (``jobs/runner.py``); every other FatalError stops the run. Every error pickles with
its fields, so parser processes send them back as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable

#: A setting named in a message: ``{batch_size}``.
_SETTING = re.compile(r"\{([a-z][a-z0-9_]*)\}")


class ExtractorError(Exception):
    """Root of every error raised by the extractor.

    A message names the settings it is about by their field, in braces: ``"{batch_size} 0 is
    outside 1..1000"``. ``str()`` says the field (``batch_size 0 is ...``); the CLI says the flag
    the user typed (``--batch-size 0 is ...``), so that the library never speaks in flags.
    """

    def __str__(self) -> str:
        return self.naming(lambda field: field)

    def naming(self, name: Callable[[str], str]) -> str:
        """The message with every setting it names called ``name(field)``."""
        return _SETTING.sub(lambda match: name(match[1]), super().__str__())


class SplitsBatch(ExtractorError):
    """Marks the errors a batch may fail with because of what is in it (one bad record, its
    size), so that its halves are fetched apart; the others stop the run or are retried."""


class UsageError(ExtractorError):
    """The user asked for something that cannot be done as asked."""


class InvalidOption(UsageError):
    """A setting given to a job or to the service cannot be used as given."""


class CredentialsMissing(UsageError):
    """A required TFSO_* environment variable is not set."""


class OutputLocked(UsageError):
    """Another run is writing the same output; one writer per output."""


class CorruptJournal(UsageError):
    """A run's journal holds a line that is not an event of the shape it should have."""


class FatalError(ExtractorError):
    """An error that retrying will not fix."""


class Permanent(ExtractorError):
    """Marks a failure that running again will not mend, whenever it is run: the credentials,
    the identity, the URL. A scheduler should not spend its retries on it (the CLI exits
    with its own status, 4). An exception, so that ``except Permanent`` catches them."""


class AuthenticationFailed(FatalError, Permanent):
    """The service refused the credentials."""


class IdentityRefused(FatalError, Permanent):
    """The service refused to work on the identity asked for (blocked, or unknown)."""


class ServiceUnreachable(FatalError):
    """The service could not be reached or did not answer Login, after its retries."""


class NotAService(FatalError, Permanent):
    """The URL answers, but not as the 24SevenOffice SOAP service (an HTML page, a 404)."""


class InvalidRequest(FatalError):
    """The service says the request itself is invalid."""


class HostileXml(FatalError):
    """A response declared a DTD or entities; it is refused, never expanded."""


class DataError(FatalError, SplitsBatch):
    """A value in a response does not fit the WSDL type of its field."""


class ListingUnsound(SplitsBatch):
    """The service's answers to a list do not add up (a listing without end, ids listed but
    not answered): the list is reported failed, its table left as it was."""


class OutputError(FatalError):
    """The output directory cannot be written."""


class NoSuchBucket(OutputError, Permanent):
    """The object store says the target's bucket does not exist: a person must create it or
    correct ``--out``."""


class LeaseLost(OutputError):
    """The lease on an object-store target's lock was lost (taken over by another run after
    it lapsed, or removed): this run must not write there any more."""


class Redirected(FatalError):
    """The service answered with a redirect; no request follows one (credentials stay put)."""


class ResponseTooLarge(FatalError, SplitsBatch):
    """A response body passed the size limit; it was aborted."""


class StillQuarantined(FatalError):
    """The service kept the client in quarantine beyond what a run waits for."""


class PauseTooLong(FatalError):
    """The service asked every request to wait longer than the run is allowed to pause."""


class ServiceFailing(FatalError):
    """Requests fail across batches, or at every split: the service, not a record, is broken."""


class TransientError(SplitsBatch):
    """An error worth retrying after a pause."""


class ParserDied(TransientError):
    """A parser process died with the body it was parsing: the batch is fetched again, on a
    parser started in its place (and split once its retries are spent, so that a body that
    kills its parser every time is isolated). Not counted against the service's health."""


class TransportError(TransientError, ConnectionError):
    """The connection failed before a complete response arrived."""


class RequestTimeout(TransportError, TimeoutError):
    """No complete response within the per-attempt timeout."""


class ServerError(TransientError):
    """HTTP 5xx (or 429) without a SOAP fault that explains it."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail

    def __reduce__(self) -> tuple[type[ServerError], tuple[int, str]]:
        return type(self), (self.status, self.detail)


class ServerFault(TransientError):
    """A SOAP fault that a later attempt may not repeat."""


class RequestFault(TransientError):
    """A SOAP fault from the service's own code, likely to repeat for the same request."""


class Quarantined(TransientError):
    """The rate limit was exceeded; the service refuses everything until ``until``."""

    def __init__(self, message: str, until: float | None) -> None:
        super().__init__(message)
        self.until = until  # wall-clock seconds; None when the fault names no end

    def __reduce__(self) -> tuple[type[Quarantined], tuple[str, float | None]]:
        return type(self), (self.args[0], self.until)


class MalformedResponse(TransientError):
    """The body is not the complete XML document the operation returns."""


class SessionExpired(TransientError):
    """The session cookie is no longer valid; log in again and retry."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (a library's may run to pages), at most 300
    characters."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
