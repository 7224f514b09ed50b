"""``extractor properties``: what ``--invoice-properties`` and ``--row-properties`` accept."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import orjson

from extractor import schema

if TYPE_CHECKING:  # Arrow is imported when the command runs: ``--help`` loads none of it
    import pyarrow as pa


def _wsdl_type(ftype: schema.FieldType) -> str:
    if isinstance(ftype, schema.Scalar):
        return ftype.type_name or ftype.xsd
    if isinstance(ftype, schema.ListOf):
        return f"list of {_wsdl_type(ftype.item)}"
    return ftype.name


def _brief(arrow_type: pa.DataType) -> str:
    """A Parquet type in a few words: a struct by its fields' names, a dictionary as such."""
    import pyarrow as pa

    if pa.types.is_struct(arrow_type):
        return "struct<" + ", ".join(field.name for field in arrow_type) + ">"
    if pa.types.is_list(arrow_type):
        return f"list<{_brief(arrow_type.value_type)}>"
    if pa.types.is_dictionary(arrow_type):
        return f"{arrow_type.value_type} (dictionary)"
    return str(arrow_type)


@click.command("properties")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per property.")
def list_properties(as_json: bool) -> None:
    """List the InvoiceOrder and InvoiceRow properties (from the WSDL), with their WSDL and
    Parquet types: the names --invoice-properties and --row-properties accept."""
    from extractor import arrow
    from extractor.records.orders import REQUIRED

    for struct, flag in (
        (schema.invoice_order(), "--invoice-properties"),
        (schema.invoice_row(), "--row-properties"),
    ):
        if not as_json:
            click.echo(f"{struct.name} ({flag}):")
        for field in struct.fields:
            parquet_type = arrow.schema_for([field]).field(0).type
            parquet = str(parquet_type)
            always = struct.name == "InvoiceOrder" and field.name in REQUIRED
            if as_json:
                row = {
                    "struct": struct.name, "flag": flag, "name": field.name,
                    "wsdl_type": _wsdl_type(field.type), "parquet_type": parquet,
                    "always_fetched": always,
                }  # fmt: skip
                click.echo(orjson.dumps(row).decode())
            else:
                note = "  (always fetched)" if always else ""
                brief = _brief(parquet_type)
                click.echo(f"  {field.name:<28} {_wsdl_type(field.type):<24} {brief}{note}")
