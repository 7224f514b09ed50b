"""Retry policy for transient errors: tenacity with full jitter and an injectable sleep."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_random_exponential,
)

from extractor.config import RetryPolicy
from extractor.errors import Quarantined, RequestFault, StillQuarantined, TransientError

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")
#: Quarantines in a row a request sits out before the run gives up (resumable).
MAX_QUARANTINES: Final = 6


def _retryable(exc: BaseException) -> bool:
    # a quarantine is waited out by :func:`patiently`, not spent as an attempt
    return isinstance(exc, TransientError) and not isinstance(exc, Quarantined)


def retrying(
    policy: RetryPolicy,
    sleep: Sleep,
    on_retry: Callable[[BaseException], None] = lambda exc: None,
) -> AsyncRetrying:
    """Retry TransientError up to ``policy.attempts`` times (a RequestFault up to
    ``policy.fault_attempts``); re-raise the last error."""

    def before_sleep(state: RetryCallState) -> None:
        if state.outcome is not None and (exc := state.outcome.exception()) is not None:
            on_retry(exc)

    def stop(state: RetryCallState) -> bool:
        failed = state.outcome.exception() if state.outcome is not None else None
        limit = policy.fault_attempts if isinstance(failed, RequestFault) else policy.attempts
        return state.attempt_number >= limit

    return AsyncRetrying(
        stop=stop,
        wait=wait_random_exponential(multiplier=policy.initial, max=policy.maximum),
        retry=retry_if_exception(_retryable),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )


async def patiently(
    action: Callable[[], Awaitable[T]],
    on_quarantine: Callable[[Quarantined], None] = lambda exc: None,
) -> T:
    """``action`` again after each quarantine; the limiter holds every request until its end."""
    for _ in range(MAX_QUARANTINES):
        try:
            return await action()
        except Quarantined as exc:
            on_quarantine(exc)
    raise StillQuarantined(
        f"the service quarantined this client {MAX_QUARANTINES} times in a row; "
        "run the same command later to resume"
    )


async def persistently(
    action: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    sleep: Sleep,
    on_retry: Callable[[BaseException], None] = lambda exc: None,
) -> T:
    """``action`` with retries on transient errors (:func:`retrying`), sitting out quarantines."""

    async def attempts() -> T:
        async for attempt in retrying(policy, sleep, on_retry):
            with attempt:
                return await action()
        raise AssertionError("unreachable: tenacity re-raises the last error")

    return await patiently(attempts)
