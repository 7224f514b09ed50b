"""The failures reports of a run, under ``OUT/_failures/``:

- ``<run_id>.jsonl``: one line per OrderId that failed alone after its retries, with the
  error (few: each costs its batch's bisection);
- ``<run_id>.not-returned.parquet``: the ids GetInvoices did not return, compactly (a listing
  may hold millions the service never returns): ``OrderId`` (int64, sorted within each
  outcome) and ``outcome``: ``not returned`` (the next run asks again), ``not returned twice``
  (settled: not asked for again until listed anew), ``no longer listed`` (settled: gone).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from extractor import redact
from extractor.errors import OutputError
from extractor.ids import Ids, as_arrow
from extractor.jobs.listing import OrderRun

FAILURES_DIR: Final = "_failures"
NOT_RETURNED: Final = "not returned"
MISSING_TWICE: Final = "not returned twice"
GONE: Final = "no longer listed"
#: Lines written at once: a run may leave many ids.
_SLICE: Final = 10_000
#: Ids of each error named in a summary; every one is in the failures report.
SUMMARY_SAMPLE: Final = 20
IN_SUMMARY: Final = {
    NOT_RETURNED: "not returned by GetInvoices",
    MISSING_TWICE: "not returned by GetInvoices twice (settled: not asked for again)",
}


def brief_failures(state: OrderRun) -> list[dict[str, Any]]:
    """A run's failures for its summary: each error of ids with how many ids it stopped and
    the first few (the failures reports hold them all). Ids the service no longer lists are
    settled, not failures."""
    failing = state.still_failed
    by_error: dict[str, list[int]] = {}
    for failure in state.failures:
        ids = [order_id for order_id in failure["ids"] if order_id in failing]
        by_error.setdefault(failure["error"], []).extend(ids)
    groups = [(error, len(ids), ids[:SUMMARY_SAMPLE]) for error, ids in by_error.items() if ids]
    for outcome, missing in (
        (NOT_RETURNED, state.not_returned),
        (MISSING_TWICE, state.missing_twice),
    ):
        if missing:
            groups.append((IN_SUMMARY[outcome], len(missing), list(missing[:SUMMARY_SAMPLE])))
    return [{"error": error, "count": count, "ids": ids} for error, count, ids in groups]


def write_failures(out: Path, state: OrderRun) -> str | None:
    """The JSON Lines report of the ids that failed alone, or None when none did. Each error
    is encoded once for all the ids it stopped."""
    failing = state.still_failed
    groups = [
        ([order_id for order_id in failure["ids"] if order_id in failing], failure["error"])
        for failure in state.failures
    ]
    if not any(ids for ids, _ in groups):
        return None
    path = out / FAILURES_DIR / f"{state.state.run_id}.jsonl"
    with _written(path) as temporary, temporary.open("wb") as report:
        for ids, error in groups:
            tail = b',"error":' + redact.mask_bytes(orjson.dumps(error)) + b"}\n"
            for at in range(0, len(ids), _SLICE):
                lines = (b'{"OrderId":%d%s' % (i, tail) for i in ids[at : at + _SLICE])
                report.write(b"".join(lines))
    return str(path)


def write_not_returned(out: Path, state: OrderRun) -> str | None:
    """The Parquet report of the ids GetInvoices did not return and what became of them, or
    None when there are none."""
    outcomes = {
        NOT_RETURNED: state.not_returned,
        MISSING_TWICE: state.missing_twice,
        GONE: state.gone,
    }
    if not any(outcomes.values()):
        return None
    path = out / FAILURES_DIR / f"{state.state.run_id}.not-returned.parquet"
    dictionary: Any = ["outcome"]  # pyarrow takes column names here; its stubs say bool
    with _written(path) as temporary:
        pq.write_table(
            _outcomes_table(outcomes), temporary, compression="zstd", use_dictionary=dictionary,
            column_encoding={"OrderId": "DELTA_BINARY_PACKED"},
        )  # fmt: skip
    return str(path)


def _outcomes_table(outcomes: dict[str, Ids]) -> pa.Table:
    """Ids sorted within each outcome (delta-encoded: a few bits an id), the outcome a
    dictionary column (run-length encoded)."""
    ids, codes = [], []
    for code, found in enumerate(outcomes.values()):
        values = as_arrow(found)
        ids.append(pc.take(values, pc.sort_indices(values)))
        codes.append(pa.repeat(pa.scalar(code, pa.int8()), len(values)))
    outcome = pa.DictionaryArray.from_arrays(pa.concat_arrays(codes), pa.array(list(outcomes)))
    return pa.table({"OrderId": pa.concat_arrays(ids), "outcome": outcome})


@contextmanager
def _written(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path``, renamed into place once written."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield temporary
        temporary.rename(path)
    except (OSError, pa.ArrowException) as exc:
        temporary.unlink(missing_ok=True)
        reason = getattr(exc, "strerror", None) or exc
        raise OutputError(f"cannot write {path}: {reason}") from None
