"""The error tree as types: what splits a batch, and errors that cross process boundaries."""

from __future__ import annotations

import inspect
import pickle

import pytest

from extractor import errors
from extractor.errors import ExtractorError, Quarantined, ServerError, SplitsBatch

EVERY_ERROR = [
    cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, ExtractorError)
]


@pytest.mark.parametrize("cls", [c for c in EVERY_ERROR if c not in (ServerError, Quarantined)])
def test_every_error_crosses_to_a_parser_process_and_back_as_itself(cls: type) -> None:
    back = pickle.loads(pickle.dumps(cls("what went wrong")))
    assert type(back) is cls and str(back) == "what went wrong"


def test_errors_with_fields_keep_them_across_processes() -> None:
    server = pickle.loads(pickle.dumps(ServerError(503, "Service Unavailable")))
    assert (type(server), server.status, str(server)) == (
        ServerError, 503, "HTTP 503: Service Unavailable"
    )  # fmt: skip
    quarantined = pickle.loads(pickle.dumps(Quarantined("Limit exceeded", 1_800_000_000.5)))
    assert (str(quarantined), quarantined.until) == ("Limit exceeded", 1_800_000_000.5)


def test_what_splits_a_batch_is_a_type() -> None:
    splits = {cls.__name__ for cls in EVERY_ERROR if issubclass(cls, SplitsBatch)}
    assert {"DataError", "ResponseTooLarge", "TransientError", "RequestTimeout"} <= splits
    for fatal in ("HostileXml", "OutputError", "ServiceFailing", "UsageError", "Redirected"):
        assert fatal not in splits


def test_a_message_names_settings_by_field_and_the_cli_by_flag() -> None:
    from extractor.cli.main import flag
    from extractor.errors import InvalidOption

    error = InvalidOption("{date_to} 2024-01-01 is before {date_from} 2024-02-01")
    assert str(error) == "date_to 2024-01-01 is before date_from 2024-02-01"
    assert error.naming(flag) == "--to 2024-01-01 is before --from 2024-02-01"
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is InvalidOption and again.naming(flag) == error.naming(flag)
    assert flag("max_requests_per_hour") == "--max-requests-per-hour"
    assert flag("input") == "--input"  # update-invoices' --input, a click name of its own


def test_permanent_failures_are_caught_as_permanent() -> None:
    """``except Permanent`` (the docs' Airflow task) catches each of them, and nothing else."""
    from extractor import errors

    for kind in (errors.AuthenticationFailed, errors.IdentityRefused, errors.NotAService,
                 errors.NoSuchBucket):  # fmt: skip
        with pytest.raises(errors.Permanent):
            raise kind("refused")
    assert not issubclass(errors.ServiceUnreachable, errors.Permanent)
    assert not issubclass(errors.OutputError, errors.Permanent)
