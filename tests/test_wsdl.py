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
