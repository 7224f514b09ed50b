"""A tenant's orders as the XML GetInvoices sends, with the pooled parts rendered once."""

from __future__ import annotations

from typing import Any

from extractor import schema, soap
from extractor.simulator.tenant import Tenant, restrict


class Renderer:
    """Renders orders of one tenant; templates and rows are cached by what they share."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self._order_type = schema.invoice_order()
        self._row_type = schema.invoice_row()
        self._row_cache: dict[tuple[int, tuple[str, ...]], str] = {}
        self._templates: dict[int, dict[str, str]] = {}

    def check(
        self, props: tuple[str, ...], row_props: tuple[str, ...], fault: type[Exception]
    ) -> None:
        """Raise ``fault`` as the service does for a property name it does not know."""
        for struct, names in ((self._order_type, props), (self._row_type, row_props)):
            unknown = sorted(set(names) - set(struct.names))
            if unknown:
                raise fault(
                    "Server was unable to process request. ---> "
                    f"Invalid property name: {unknown[0]}"
                )

    def value(self, name: str, value: dict[str, Any]) -> str:
        """An ``InvoiceOrder`` of the given fields (UpdateInvoices' answers)."""
        return soap.encode_value(name, self._order_type, value)

    def order(
        self, order_id: int, props: tuple[str, ...] = (), row_props: tuple[str, ...] = ()
    ) -> str:
        """One ``InvoiceOrder`` element exactly as GetInvoices sends it."""
        template, own = self.tenant.parts(order_id)
        cached = self._template_parts(template)
        wanted = set(props)
        out = []
        for f in self._order_type.fields:
            if wanted and f.name not in wanted:
                continue
            if f.name == "InvoiceRows" and "InvoiceRows" in own:
                rows = "".join(self._row(n, row_props) for n in own["InvoiceRows"])
                out.append(f"<InvoiceRows>{rows}</InvoiceRows>")
            elif f.name in own:
                out.append(soap.encode_value(f.name, f.type, own[f.name]))
            elif f.name in cached:
                out.append(cached[f.name])
        return f"<InvoiceOrder>{''.join(out)}</InvoiceOrder>"

    def _template_parts(self, template: int) -> dict[str, str]:
        parts = self._templates.get(template)
        if parts is None:
            pooled = self.tenant.order_pool[template]
            parts = self._templates[template] = {
                f.name: soap.encode_value(f.name, f.type, pooled[f.name])
                for f in self._order_type.fields
                if f.name in pooled and f.name != "InvoiceRows"
            }
        return parts

    def _row(self, number: int, row_props: tuple[str, ...]) -> str:
        key = (number, row_props)
        cached = self._row_cache.get(key)
        if cached is None:
            row = restrict(self.tenant.row_pool[number], row_props)
            cached = self._row_cache[key] = soap.encode_value("InvoiceRow", self._row_type, row)
        return cached
