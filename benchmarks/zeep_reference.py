"""The reference: the plain zeep script a Python user writes first, against the same simulator.

It logs in with zeep's ``Client`` on the shipped WSDLs (the service address pointed at the
simulator), lists every OrderId with GetOrderSyncList, then asks GetInvoices for them in
batches of 1000, every property named, one request after another, and turns each answer into
plain Python dicts with ``zeep.helpers.serialize_object``. It writes nothing: the reference is
given the benefit of the doubt, so the ratio against it is a floor.

``python -m benchmarks.zeep_reference URL [MAX_ORDERS]`` prints one JSON line.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from importlib import resources

import orjson
import requests
import zeep
from zeep.helpers import serialize_object
from zeep.transports import Transport

from extractor import schema, soap
from extractor.simulator.config import DEMO_APPLICATION_ID, DEMO_PASSWORD, DEMO_USERNAME


def client(wsdl: str, session: requests.Session, url: str) -> zeep.proxy.ServiceProxy:
    path = resources.files("extractor.wsdl") / f"{wsdl}.wsdl"
    # strict=False: the simulator, like some server versions, leaves out elements the WSDL
    # calls required, which strict zeep refuses; lenient is what its users are told to set
    settings = zeep.Settings(strict=False, xml_huge_tree=True)
    made = zeep.Client(str(path), transport=Transport(session=session), settings=settings)
    binding = next(iter(made.wsdl.bindings))  # the SOAP 1.1 binding comes first
    return made.create_service(binding, url)


def main(url: str, limit: int | None = None) -> dict[str, float]:
    session = requests.Session()  # keeps the ASP.NET_SessionId cookie Login sets
    auth = client("authService", session, url + soap.AUTH_PATH)
    credential = {
        "ApplicationId": DEMO_APPLICATION_ID,
        "Username": DEMO_USERNAME,
        "Password": DEMO_PASSWORD,
    }
    started = time.perf_counter()
    auth.Login(credential=credential)
    invoices = client("invoiceService", session, url + soap.INVOICE_PATH)
    everything = {"RegisteredAfter": dt.datetime(1, 1, 1)}  # required; this means "all"
    ids = list(invoices.GetOrderSyncList(syncParams=everything) or ())[:limit]
    properties = {"string": [f.name for f in schema.invoice_order().fields]}
    rows = {"string": [f.name for f in schema.invoice_row().fields]}
    count = 0
    for at in range(0, len(ids), 1000):
        answer = invoices.GetInvoices(
            searchParams={"OrderIds": {"int": ids[at : at + 1000]}},
            invoiceReturnProperties=properties,
            rowReturnProperties=rows,
        )
        count += len(serialize_object(answer or [], dict))
    seconds = time.perf_counter() - started
    rate = round(count / seconds, 1)
    return {"orders": count, "seconds": round(seconds, 2), "invoices_per_s": rate}


if __name__ == "__main__":
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else None
    print(orjson.dumps(main(sys.argv[1], limit)).decode())
