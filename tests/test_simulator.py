"""The simulator's contract, through the extractor's own transport and session."""

from __future__ import annotations

import datetime as dt
import io
import random

import aiohttp
import orjson
import pytest

from extractor import soap
from extractor.engine.stats import RunStats
from extractor.engine.summary import RunSummary, Status, render
from extractor.errors import InvalidRequest, SessionExpired
from extractor.parser import RecordStream
from extractor.records.orders import OrderSink, Selection
from extractor.service.session import Session
from extractor.service.transport import Transport
from extractor.simulator.server import Simulator
from extractor.simulator.tenant import Churn, Tenant
from tests.conftest import CREDS

HAS_SESSION_RESULT = "{http://24sevenOffice.com/webservices}HasSessionResult"


async def test_more_than_1000_ids_is_a_fault(simulator: Simulator) -> None:
    transport = Transport(simulator.url, soap.SOAP11)
    session = Session(transport, CREDS)
    try:
        await session.login()
        with pytest.raises(InvalidRequest, match="Maximum 1000 OrderIds"):
            ids = list(range(1, 1002))
            await session.call(
                soap.GET_INVOICES, Selection().params(ids), lambda: OrderSink(Selection(), ids)
            )
    finally:
        await transport.close()


@pytest.mark.parametrize("version", [soap.SOAP11, soap.SOAP12])
async def test_has_session_and_expiry(simulator: Simulator, version: soap.SoapVersion) -> None:
    transport = Transport(simulator.url, version)
    session = Session(transport, CREDS)

    async def has_session(session_id: str | None) -> bool:
        stream = RecordStream(HAS_SESSION_RESULT, lambda elem: elem.text == "true")
        await transport.call(soap.HAS_SESSION, {}, stream, session_id)
        return bool(stream.records[0])

    try:
        await session.login()
        session_id = session._session_id
        assert await has_session(session_id) is True
        assert await has_session("not-a-session") is False
        simulator.expire_sessions()
        assert await has_session(session_id) is False
        with pytest.raises(SessionExpired):
            await transport.call(
                soap.GET_ORDER_SYNC_LIST, {"syncParams": {}}, OrderSink(Selection(), []), session_id
            )
    finally:
        await transport.close()


async def test_a_wrong_soap_action_is_refused(simulator: Simulator) -> None:
    body = soap.SOAP11.envelope(soap.LOGIN.body({"credential": {"ApplicationId": "x"}}))
    headers = {"Content-Type": soap.SOAP11.content_type, "SOAPAction": '"urn:wrong"'}
    async with (
        aiohttp.ClientSession() as http,
        http.post(simulator.url + soap.AUTH_PATH, data=body, headers=headers) as response,
    ):
        text = await response.text()
    assert response.status == 500
    assert soap.read_fault(text.encode()) == (
        "Server did not recognize the value of HTTP Header SOAPAction: urn:wrong."
    )


def test_progress_line_and_summary() -> None:
    stats = RunStats("run-1", total=10_000, done=2_500, fetched=2_400, retries=3)
    stats.started -= 2.0  # two seconds in
    line = stats.line()
    assert line.startswith("2,500/10,000 ids  1,2") and "retries 3" in line and "ETA 6s" in line
    summary = stats.summary(Status.COMPLETE, __import__("pathlib").Path("out"))
    assert summary.run_id == "run-1" and summary.fetched == 2_400
    assert 1100 < summary.per_second < 1300
    document = summary.as_json()  # the keys schedulers read, named after what is counted
    assert document["invoices"] == 2_400 and document["ids_total"] == 10_000
    assert document["invoices_per_second"] == summary.per_second
    assert RunSummary.from_json(orjson.loads(orjson.dumps(document))) == summary
    text = render(summary)
    assert "run run-1: complete" in text and "invoices      2,400 (of 10,000 ids listed)" in text
    assert io.StringIO(text).read().count("\n") < 20  # one screen


def test_a_deleted_order_id_is_never_given_again() -> None:
    """Found by a fleet's test: deleting the newest order and then adding one gave the new
    order the deleted one's id; real services never reuse an OrderId."""
    tenant = Tenant(orders=120, seed=7)
    newest = tenant.ids[-1]
    when = dt.datetime(2026, 1, 1)
    report = tenant.churn(random.Random(4), Churn(changed=0, deleted=120, added=3), when)
    assert newest in report.deleted
    assert report.added == [newest + 1, newest + 2, newest + 3]
    again = tenant.churn(random.Random(5), Churn(changed=0, deleted=3, added=1), when)
    assert again.added == [newest + 4]
