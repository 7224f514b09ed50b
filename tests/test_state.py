"""An output's state (issue 27): ``status`` kept short, and the resets of a sync's tables:
``reset --watermark TABLE --to T`` and ``reset --full TABLE``. Syncs run on the in-memory wire
and a manual clock the simulator shares; the CLI reads and resets what they wrote."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import orjson
from deltalake import DeltaTable

from extractor.clock import ManualClock, utc_text
from extractor.engine.journal import RUNS_DIR
from extractor.engine.state import replay
from extractor.jobs.sync import SyncJob, run_sync
from extractor.output.lock import OutputLock
from extractor.output.targets import Target
from extractor.simulator.config import SimulatorConfig
from extractor.simulator.memory import MemoryWire
from extractor.simulator.register import MasterChurn
from extractor.simulator.service import SimulatedService
from extractor.simulator.tenant import Churn
from tests.conftest import CREDS, MEMORY_URL, job_of
from tests.helpers import SYNC_SINCE, one_line
from tests.truth import assert_lake_equals_truth, read_delta

#: Noon of a day long after the simulated ledger's last change.
NOON = dt.datetime(2026, 11, 10, 12, tzinfo=dt.UTC)


class Lake:
    """A simulated service on a manual clock, and syncs of its invoices into ``out``."""

    def __init__(self, out: Path, orders: int = 30) -> None:
        self.clock = ManualClock(NOON.timestamp())
        self.service = SimulatedService(SimulatorConfig(orders=orders), clock=self.clock)
        self.out = out
        self.target = Target.parse(str(out))

    async def sync(self, tables: tuple[str, ...] = ("invoices",)) -> dict[str, Any]:
        job = job_of(
            SyncJob, self.target, base_url=MEMORY_URL, since=SYNC_SINCE, max_requests_per_hour=0,
            tables=tables, ledger=False, overlap=dt.timedelta(0),
        )  # fmt: skip
        wire = MemoryWire(self.service)
        summary = await run_sync(job, CREDS, log=io.StringIO(), clock=self.clock, wire=wire)
        return summary.as_json()

    def at(self, seconds: float) -> dt.datetime:
        """The manual clock ``seconds`` after noon."""
        return NOON + dt.timedelta(seconds=seconds)

    def planned(self, summary: dict[str, Any]) -> set[int]:
        """The OrderIds the invoices part of a sync listed (from its journal)."""
        run_id = summary["invoices"]["run_id"]
        journal = self.out / "_work" / "sync-invoices" / RUNS_DIR / f"{run_id}.journal.jsonl"
        plan = replay(journal).plan or {}
        return {int(order_id) for order_id in plan["ids"]}


def _naive(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.UTC).replace(tzinfo=None) if when.tzinfo else when


def _time(text: str) -> dt.datetime:
    assert text.endswith("+00:00") and "T" not in text, text
    return dt.datetime.fromisoformat(text)


def _status(cli: Any, out: Path) -> dict[str, Any]:
    code, text, err = cli("status", str(out), "--json")
    assert (code, err) == (0, ""), err
    report: dict[str, Any] = orjson.loads(text)
    return report


async def test_status_is_short_and_says_the_state_in_utc(cli: Any, tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    first = await lake.sync()
    lake.clock.advance(60)
    lake.service.churn(Churn(changed=4, added=2), seed=1)
    lake.clock.advance(60)
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    second = await lake.sync()
    ended = dt.datetime.now(dt.UTC)
    runs = tmp_path / "_work" / "sync-invoices" / RUNS_DIR
    for number in range(40):  # a long history an older version left unpruned
        old = {"run_id": f"2020{number:04d}", "status": "complete", "finished_at": "2020-01-01",
               "records": "invoices", "units": "ids", "invoices": 1, "job": {}}  # fmt: skip
        (runs / f"2020{number:04d}.json").write_bytes(orjson.dumps(old))
        (runs / f"2020{number:04d}.json").touch()
    (runs / f"{second['invoices']['run_id']}.json").touch()  # the newest written, again
    elsewhere = tmp_path / "notes" / "_runs"  # not a folder runs are kept in: not entered
    elsewhere.mkdir(parents=True)
    (elsewhere / "x.json").write_bytes(b'{"run_id": "x", "status": "complete"}')

    report = _status(cli, tmp_path)
    places = {place["folder"]: place for place in report["places"]}
    assert set(places) == {"_work/sync-invoices"}
    place = places["_work/sync-invoices"]
    assert place["records"] == 42 and len(place["recent"]) == 3
    newest = place["recent"][0]
    assert (newest["run_id"], newest["status"], newest["invoices"]) == (
        second["invoices"]["run_id"], "complete", 6,
    )  # fmt: skip
    assert newest["finished_at"] == "2026-11-10 12:02:00+00:00"
    table = report["tables"]["invoices"]
    # when the run committed, on the wall clock (Delta's commit time)
    assert table["records"] == 32 and started <= _time(table["last_run"]) <= ended
    assert report["tables"]["invoice_rows"]["records"] > 32
    assert report["watermarks"] == {
        "invoices": "2026-11-10 12:02:00+00:00", "invoice_rows": "2026-11-10 12:02:00+00:00",
    }  # fmt: skip
    assert first["watermarks"]["invoices"] == NOON.isoformat()

    code, text, _ = cli("status", str(tmp_path))
    assert code == 0 and "_work/sync-invoices: 42 runs recorded; the last 3:" in text
    assert "watermark invoices: 2026-11-10 12:02:00+00:00" in text
    assert f"{second['invoices']['run_id']}  complete  invoices 6" in text
    assert len(text.splitlines()) <= 12, text
    assert "T12:" not in text and "UTC" not in text, "every time as 2026-11-10 12:02:00+00:00"


async def test_reset_watermark_then_a_sync_reads_exactly_the_changes_since_then(
    cli: Any, tmp_path: Path
) -> None:
    lake = Lake(tmp_path)
    await lake.sync()
    lake.clock.advance(60)
    early = lake.service.churn(Churn(changed=3), seed=1)  # at 12:01
    lake.clock.advance(60)
    later = lake.service.churn(Churn(added=3), seed=2)  # at 12:02
    changed_since = set(later.added)
    lake.clock.advance(60)
    second = await lake.sync()  # at 12:03: all of them
    assert second["invoices"]["ids_total"] == len(changed_since | set(early.changed))
    lake.clock.advance(60)
    assert (await lake.sync())["invoices"]["ids_total"] == 0, "nothing changed since"

    code, text, err = cli("reset", str(tmp_path), "--watermark", "invoices", "--to",
                          lake.at(90).isoformat(), "--yes")  # fmt: skip
    assert (code, err) == (0, ""), err
    # the third sync listed nothing: the watermark stayed where the second left it
    assert "invoices: 2026-11-10 12:03:00+00:00 -> watermark to 2026-11-10 12:01:30+00:00" in text
    assert "invoice_rows: 2026-11-10 12:03:00+00:00" in text
    assert _status(cli, tmp_path)["watermarks"]["invoices"] == "2026-11-10 12:01:30+00:00"
    lake.clock.advance(60)
    again = await lake.sync()
    listed = lake.planned(again)  # what changed at 12:02, not at 12:01
    since = lake.at(90).replace(tzinfo=None)
    expected = {i for i, when in lake.service.tenant.changed.items() if _naive(when) > since}
    assert listed == expected == changed_since
    assert again["invoices"]["ids_total"] == 3 and not listed & set(early.changed)
    assert again["invoices"]["written"]["invoices"] == 0, "the lake held them already"
    assert again["watermarks"]["invoices"] == lake.at(300).isoformat()
    assert_lake_equals_truth(lake.service, lake.target, marked=set(), ledger=False)


async def test_reset_watermark_refuses_what_cannot_be_done(cli: Any, tmp_path: Path) -> None:
    lake = Lake(tmp_path, orders=10)
    await lake.sync()
    out = str(tmp_path)
    refused = {
        "the future": (["--watermark", "invoices", "--to", "2999-01-01"], "is in the future"),
        "forward": (["--watermark", "invoices", "--to", "2026-11-10T13:00:00"],
                    "is not before the watermark of invoice_rows, 2026-11-10 12:00:00+00:00"),
        "no watermark": (["--watermark", "transactions", "--to", "2026-01-01"],
                         "holds no Delta table transactions"),
        "a list": (["--watermark", "currencies", "--to", "2026-01-01"], "keeps no watermark"),
        "unknown": (["--watermark", "bogus", "--to", "2026-01-01"], "'bogus' is not a table"),
        "no --to": (["--watermark", "invoices"], "--watermark TABLE and --to T go together"),
        "not a time": (["--watermark", "invoices", "--to", "June"], "is not a time"),
        "two at once": (["--full", "invoices", "--unfinished"], "give one of"),
        "a full list": (["--full", "currencies"], "fetched whole and replaced at every sync"),
    }  # fmt: skip
    before = DeltaTable(lake.target.table_uri("invoices")).version()
    for name, (args, said) in refused.items():
        code, _, err = cli("reset", out, *args, "--yes")
        assert code == 2 and said in one_line(err), (name, err)
    code, _, err = cli("reset", out, "--watermark", "invoices", "--to", "2026-11-01")  # no --yes
    assert code == 2 and "give --yes" in one_line(err)
    assert DeltaTable(lake.target.table_uri("invoices")).version() == before, "nothing committed"


async def test_a_full_refresh_replaces_the_table_at_the_next_sync(cli: Any, tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    await lake.sync()
    lake.clock.advance(60)
    gone = lake.service.churn(Churn(deleted=2), seed=1).deleted
    lake.clock.advance(60)
    first = lake.service.tenant.ids[0]
    # another writer damaged a record; its DateChanged is as it was, so no merge mends it
    table = DeltaTable(lake.target.table_uri("invoices"))
    table.update(updates={"OrderStatus": "'damaged'"}, predicate=f'"OrderId" = {first}')
    before = read_delta(lake.target, "invoices")

    code, text, err = cli("reset", str(tmp_path), "--full", "invoices", "--yes")
    assert (code, err) == (0, ""), err
    assert "the next sync fetches invoices whole and replaces it" in text
    report = _status(cli, tmp_path)
    assert report["tables"]["invoices"]["full_refresh_pending"] == ["all"]
    assert report["watermarks"]["invoices"] is None
    assert read_delta(lake.target, "invoices") == before, "readable, unchanged, until it lands"

    refreshed = await lake.sync()
    assert refreshed["invoices"]["ids_total"] == 30 - 2  # every order the service has
    assert refreshed["invoices"]["written"]["invoices"] == 28
    assert_lake_equals_truth(lake.service, lake.target, marked=set(), ledger=False)
    stored = {row["OrderId"] for row in read_delta(lake.target, "invoices")}
    assert not stored & set(gone), "replaced: what the service deleted is gone, not marked"
    report = _status(cli, tmp_path)
    assert "full_refresh_pending" not in report["tables"]["invoices"]
    assert report["watermarks"]["invoices"] == utc_text(lake.at(120))
    lake.clock.advance(60)
    assert (await lake.sync())["invoices"]["ids_total"] == 0, "incremental again"


async def test_a_full_refresh_of_a_tenant_with_no_order_left_empties_the_table(
    cli: Any, tmp_path: Path
) -> None:
    lake = Lake(tmp_path, orders=6)
    await lake.sync()
    lake.clock.advance(60)
    lake.service.tenant.delete(list(lake.service.tenant.ids))
    with OutputLock.take(tmp_path, "sync"):  # a sync going: refused, nothing asked
        code, _, err = cli("reset", str(tmp_path), "--full", "invoices", "--yes")
    assert code == 2 and "in use by 'extractor sync'" in one_line(err)
    code, _, err = cli("reset", str(tmp_path), "--full", "invoices", "--yes")
    assert code == 0, err
    refreshed = await lake.sync()
    assert refreshed["invoices"]["ids_total"] == 0
    assert read_delta(lake.target, "invoices") == read_delta(lake.target, "invoice_rows") == []
    assert "full_refresh_pending" not in _status(cli, tmp_path)["tables"]["invoices"]


async def test_resets_of_a_list_kept_by_its_changes(cli: Any, tmp_path: Path) -> None:
    lake = Lake(tmp_path, orders=10)
    tables = ("invoices", "customers")
    await lake.sync(tables)
    lake.clock.advance(60)
    customers = lake.service.company(1).customers
    gone = lake.service.churn_master(customers=MasterChurn(deleted=2), seed=1)["customers"]
    lake.clock.advance(60)
    code, text, err = cli("reset", str(tmp_path), "--watermark", "customers", "--to",
                          lake.at(-60).isoformat(), "--yes")  # fmt: skip
    assert code == 0 and "customers: 2026-11-10 12:00:00+00:00 -> watermark to" in text, err
    assert _status(cli, tmp_path)["watermarks"]["customers"] == "2026-11-10 11:59:00+00:00"
    code, text, err = cli("reset", str(tmp_path), "--full", "customers", "--yes")
    assert code == 0, err
    assert "customers: 2026-11-10 11:59:00+00:00 -> full refresh at the next sync" in text
    await lake.sync(tables)
    stored = {row["Id"] for row in read_delta(lake.target, "customers")}
    assert stored == set(customers.ids) and not stored & set(gone.deleted)
    report = _status(cli, tmp_path)
    assert report["watermarks"]["customers"] == utc_text(lake.at(120))
    assert "full_refresh_pending" not in report["tables"]["customers"]
