"""The run's judgement of a failing service, driven attempt by attempt (no service)."""

from __future__ import annotations

import pytest

from extractor.errors import ServerError, ServiceFailing
from extractor.service.health import Health

BOOM = ServerError(500, "Internal Server Error")


def test_one_poisoned_batch_with_a_few_random_faults_is_not_a_dead_service() -> None:
    health = Health.for_workers(8)  # trips after 10 counted failures
    for _ in range(30):  # the poisoned batch fails every retry at every split level
        health.failed("poisoned", BOOM)
    for other in ("b1", "b2", "b3"):  # random faults of three more batches meanwhile
        health.failed(other, BOOM)
        health.failed(other, BOOM)
    assert health.streak == 8


def test_failures_across_enough_batches_stop_the_run_and_a_success_resets() -> None:
    health = Health.for_workers(8)
    for number in range(4):
        health.failed(f"b{number}", BOOM)
    health.succeeded()
    assert health.streak == 0
    with pytest.raises(ServiceFailing, match="10 requests in a row across 5 batches"):
        for number in range(5):
            health.failed(f"b{number}", BOOM)
            health.failed(f"b{number}", BOOM)
