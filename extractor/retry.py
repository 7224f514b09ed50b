"""Retry policy for transient errors: tenacity with full jitter and an injectable sleep."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)

from extractor.config import RetryPolicy
from extractor.errors import RequestFault, TransientError

Sleep = Callable[[float], Awaitable[None]]


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
        retry=retry_if_exception_type(TransientError),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
