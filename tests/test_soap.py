"""Envelopes and faults as bytes, for every operation the extractor sends."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from lxml import etree

from extractor import soap
from extractor.config import ServiceConfig
from extractor.errors import (
    InvalidOption,
    InvalidRequest,
    MalformedResponse,
    ServerError,
    ServerFault,
    SessionExpired,
)
from extractor.records.orders import Selection, sync_params

WS = "http://24sevenOffice.com/webservices"


def parse(envelope: bytes) -> etree._Element:
    return etree.fromstring(envelope)


def test_login_envelope_soap11() -> None:
    body = soap.LOGIN.body(
        {"credential": {"ApplicationId": "a-b", "Username": "u@x.no", "Password": "p<&>\r"}}
    )
    envelope = soap.SOAP11.envelope(body)
    assert envelope.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    root = parse(envelope)
    assert root.tag == "{http://schemas.xmlsoap.org/soap/envelope/}Envelope"
    credential = root.find(f".//{{{WS}}}credential")
    assert credential is not None
    # WSDL order: ApplicationId, IdentityId, Password, Username
    assert [etree.QName(e).localname for e in credential] == [
        "ApplicationId",
        "Password",
        "Username",
    ]
    assert credential.findtext(f"{{{WS}}}Password") == "p<&>\r"
    assert b"p&lt;&amp;&gt;&#13;" in envelope


def test_headers_carry_the_exact_action() -> None:
    assert soap.SOAP11.headers(soap.GET_INVOICES.action) == {
        "Content-Type": "text/xml; charset=utf-8",
        "SOAPAction": '"http://24sevenOffice.com/webservices/GetInvoices"',
    }
    assert soap.SOAP12.headers(soap.LOGIN.action) == {
        "Content-Type": 'application/soap+xml; charset=utf-8; action="http://24sevenOffice.com/webservices/Login"'
    }
    assert (
        soap.GET_ORDER_SYNC_LIST.action == "http://24sevenOffice.com/webservices/GetOrderSyncList"
    )
    assert soap.HAS_SESSION.action == "http://24sevenOffice.com/webservices/HasSession"
    assert soap.UPDATE_INVOICES.action == "http://24sevenOffice.com/webservices/UpdateInvoices"


def test_a_soap_version_is_named_by_its_number() -> None:
    assert soap.SOAP_VERSIONS[soap.Soap("1.2")] is soap.SOAP12
    assert soap.SOAP12.name == "1.2" and str(soap.Soap.V1_1) == "1.1"
    with pytest.raises(InvalidOption, match=r"'1\.3' is neither 1\.1 nor 1\.2"):
        ServiceConfig(soap_version="1.3")  # type: ignore[arg-type]


def test_sync_list_envelope_soap12() -> None:
    envelope = soap.SOAP12.envelope(
        soap.GET_ORDER_SYNC_LIST.body(sync_params(dt.datetime(2024, 2, 29, 13, 5), None))
    )
    root = parse(envelope)
    assert root.tag == "{http://www.w3.org/2003/05/soap-envelope}Envelope"
    params = root.find(f".//{{{WS}}}syncParams")
    assert params is not None
    assert params.findtext(f"{{{WS}}}ChangedAfter") == "2024-02-29T13:05:00"
    assert params.findtext(f"{{{WS}}}RegisteredAfter") == "0001-01-01T00:00:00"


def test_get_invoices_envelope_names_every_property() -> None:
    selection = Selection.checked((), ())
    root = parse(soap.SOAP11.envelope(soap.GET_INVOICES.body(selection.params([5, 7, 9]))))
    assert [e.text for e in root.iterfind(f".//{{{WS}}}OrderIds/{{{WS}}}int")] == ["5", "7", "9"]
    props = [e.text for e in root.iterfind(f".//{{{WS}}}invoiceReturnProperties/{{{WS}}}string")]
    assert len(props) == 55 and props[0] == "OrderId" and "InvoiceRows" in props
    rows = [e.text for e in root.iterfind(f".//{{{WS}}}rowReturnProperties/{{{WS}}}string")]
    assert rows[:3] == ["ProductId", "RowId", "VatRate"] and len(rows) == 26


def test_selection_adds_key_and_partition_fields() -> None:
    selection = Selection.checked(("InvoiceTitle",), ())
    assert selection.invoice_properties == (
        "OrderId", "DateOrdered", "APIException", "InvoiceTitle",
    )  # fmt: skip
    assert not selection.wants_rows
    assert selection.params([1])["rowReturnProperties"] == []


def test_update_invoices_envelope() -> None:
    body = soap.UPDATE_INVOICES.body(
        {
            "invoices": [
                {"OrderId": 12, "InvoiceTitle": "Ny tittel æøå & co", "ReferenceNumber": "R-1"}
            ]
        }
    )
    root = parse(soap.SOAP11.envelope(body))
    order = root.find(f".//{{{WS}}}invoices/{{{WS}}}InvoiceOrder")
    assert order is not None
    assert [etree.QName(e).localname for e in order] == [
        "OrderId",
        "InvoiceTitle",
        "ReferenceNumber",
    ]
    assert order.findtext(f"{{{WS}}}InvoiceTitle") == "Ny tittel æøå & co"


@pytest.mark.parametrize(
    ("xsd", "value", "text"),
    [
        ("decimal", Decimal("1E+3"), "1000"),
        ("decimal", Decimal("-0.0001"), "-0.0001"),
        ("dateTime", dt.datetime(2020, 1, 31, 13, 45, 0, 120), "2020-01-31T13:45:00.000120"),
        (
            "dateTime",
            dt.datetime(2020, 1, 31, 14, 45, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            "2020-01-31T13:45:00",
        ),
        ("boolean", False, "false"),
        ("string", "  a\r\nb  ", "  a&#13;\nb  "),
    ],
)
def test_format_scalar(xsd: str, value: object, text: str) -> None:
    assert soap.format_scalar(xsd, value) == text


@pytest.mark.parametrize("version", [soap.SOAP11, soap.SOAP12])
def test_faults_are_read_and_classified(version: soap.SoapVersion) -> None:
    def error(message: str) -> object:
        return soap.fault_error(soap.fault_body(version, message), 500)

    assert isinstance(error("Session is not authenticated"), SessionExpired)
    assert isinstance(
        error("Server was unable to process request. ---> Timeout expired."), ServerFault
    )
    assert isinstance(
        error("Server was unable to process request. ---> Maximum 1000 OrderIds"), InvalidRequest
    )
    assert str(error("a & <b>")) == "a & <b>"


def test_non_soap_error_bodies() -> None:
    assert isinstance(soap.fault_error(b"<html>Service Unavailable</html>", 503), ServerError)
    assert isinstance(soap.fault_error(b"", 502), ServerError)
    assert isinstance(soap.fault_error(b"not xml", 200), MalformedResponse)
