"""The failures report of a run: ``OUT/_failures/<run_id>.jsonl``, one line per OrderId it
could not fetch (failed alone, or not returned by GetInvoices), with the error."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import orjson

from extractor import redact
from extractor.errors import OutputError
from extractor.runs.state import RunState

FAILURES_DIR: Final = "_failures"
#: Lines written at once: a run may leave millions of ids.
_SLICE: Final = 10_000


def write_failures(out: Path, state: RunState) -> str | None:
    """The report's path, or None when the run fetched every id. Streamed; each error is
    encoded once for all the ids it stopped."""
    groups = [(failure["ids"], failure["error"]) for failure in state.failures if "ids" in failure]
    groups.append((state.missing, "not returned by GetInvoices"))
    if not any(len(ids) for ids, _ in groups):
        return None
    path = out / FAILURES_DIR / f"{state.run_id}.jsonl"
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("wb") as report:
            for ids, error in groups:
                tail = b',"error":' + redact.mask_bytes(orjson.dumps(error)) + b"}\n"
                for at in range(0, len(ids), _SLICE):
                    report.write(
                        b"".join(b'{"OrderId":%d%s' % (i, tail) for i in ids[at : at + _SLICE])
                    )
        temporary.rename(path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return str(path)
