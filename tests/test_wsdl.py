"""The shipped WSDLs load into the type table, every type of them the product reads."""

from __future__ import annotations

import pyarrow as pa

from extractor import arrow, schema


def test_every_shipped_wsdl_loads_with_its_operations() -> None:
    wanted = {
        "accountService": ("GetAccountList", "GetTaxCodeList", "GetTypeList"),
        "clientService": ("GetDepartmentList", "GetCurrencyList"),
        "companyService": ("GetCompanySyncList", "GetCompanies"),
        "productService": ("GetProducts",),
        "transactionService": ("GetFiscalYears", "GetAggregated", "GetUserDefinedDimensionValues"),
        "invoiceService": ("GetPaymentMethods", "GetDeliveryMethods", "GetInvoiceTemplates"),
    }
    for wsdl, operations in wanted.items():
        service = schema.service(wsdl)
        for name in operations:
            assert name in service.actions, (wsdl, name)
            assert name in service.elements and f"{name}Response" in service.elements


def test_a_type_that_contains_itself_is_cut_where_the_cycle_closes() -> None:
    group = schema.service("companyService").type("Group")  # Group.Children: ArrayOfGroup
    children = dict((f.name, f.type) for f in group.fields)["Children"]
    inner = children.item if isinstance(children, schema.ListOf) else None
    cut = children if inner is None else dict((f.name, f.type) for f in inner.fields)["Children"]  # type: ignore[union-attr]
    assert cut in (
        schema.Scalar("anyType", type_name="Group"),
        schema.Scalar("anyType", type_name="ArrayOfGroup"),
    )
    assert isinstance(group.arrow, pa.StructType)  # finite: a column type can be made


def test_an_element_without_a_type_is_any_and_kept_as_text() -> None:
    page = schema.service("companyService").type("PageOfSyncCompany")
    context = dict((f.name, f.type) for f in page.fields)["Context"]
    assert context == schema.Scalar("anyType")
    assert context.arrow == pa.string()


def test_double_is_float64_with_the_xsd_special_values() -> None:
    product = schema.service("productService").type("Product")
    price = dict((f.name, f.type) for f in product.fields)["CashPriceIncTax"]
    assert price.arrow == pa.float64()
    sent = pa.array(["1.5", "INF", "-INF", " 2e3 ", None, "-1.7976931348623157E+308"])
    typed = arrow.scalar_column(price, sent, "x")  # type: ignore[arg-type]
    # the WSDL's default (Double.MinValue) says "not set", as the other types' sentinels do
    assert typed.to_pylist() == [1.5, float("inf"), float("-inf"), 2000.0, None, None]


def test_the_documentation_a_wsdl_gives_is_kept_with_its_field_and_operation() -> None:
    wsdl = b"""<?xml version="1.0" encoding="utf-8"?>
<wsdl:definitions xmlns:s="http://www.w3.org/2001/XMLSchema"
    xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:tns="urn:t">
  <wsdl:types><s:schema targetNamespace="urn:t"><s:complexType name="Thing"><s:sequence>
    <s:element name="Id" type="s:int"><s:annotation><s:documentation>
      The thing's  number</s:documentation></s:annotation></s:element>
    <s:element name="Name" type="s:string"/>
  </s:sequence></s:complexType>
  <s:element name="GetThingsResponse"><s:complexType><s:sequence>
    <s:element name="Thing" type="tns:Thing"/></s:sequence></s:complexType></s:element>
  </s:schema></wsdl:types>
  <wsdl:portType name="P"><wsdl:operation name="GetThings">
    <wsdl:documentation>Gets every thing</wsdl:documentation></wsdl:operation>
  <wsdl:operation name="Other"/></wsdl:portType>
  <wsdl:service name="ThingService"/>
</wsdl:definitions>"""
    service = schema._parse_wsdl(wsdl)
    assert [(f.name, f.doc) for f in service.type("Thing").fields] == [
        ("Id", "The thing's number"),
        ("Name", ""),
    ]
    assert service.docs == {"GetThings": "Gets every thing"}
    assert service.name == "ThingService"


def test_the_shipped_wsdls_document_operations_but_no_field() -> None:
    invoicing = schema.service("invoiceService")
    assert invoicing.name == "InvoiceService"
    assert invoicing.docs["GetPaymentMethods"] == "Gets all PaymentMethods"
    names = ("accountService", "clientService", "companyService", "invoiceService",
             "productService", "transactionService")  # fmt: skip
    types = [t for name in names for t in schema.service(name).types.values()]
    assert not [f for t in types if isinstance(t, schema.Struct) for f in t.fields if f.doc]
