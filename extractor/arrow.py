"""Raw text arrays to typed Arrow columns, a whole column at a time.

The parser collects records as a *raw* array: the nesting of the WSDL type with each scalar
as its text (:func:`raw_type`), and typing walks that nesting once. The fast path casts text
columns with Arrow kernels; a column the kernels refuse (an offset on a timestamp, seven
fractional digits, whitespace around a number) goes through the per-value fallback, which
either converts it exactly or raises DataError naming the field.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import itertools
import re
import struct
from array import array as array_of
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final, cast

import pyarrow as pa
import pyarrow.compute as pc

from extractor import schema
from extractor.errors import DataError

_DATETIME: Final = re.compile(
    r"\s*(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?\s*"
)
_INT_RANGES: Final = {
    "int": (-(2**31), 2**31 - 1),
    "short": (-(2**15), 2**15 - 1),
    "long": (-(2**63), 2**63 - 1),
    "unsignedByte": (0, 255),
}


def schema_for(fields: Sequence[schema.Field]) -> pa.Schema:
    return pa.schema([pa.field(f.name, f.type.arrow) for f in fields])


def raw_type(ftype: schema.FieldType) -> pa.DataType:
    """The shape of ``ftype`` with every scalar as its text: what the parser collects."""
    if isinstance(ftype, schema.Scalar):
        return pa.string()
    if isinstance(ftype, schema.Struct):
        return pa.struct([pa.field(f.name, raw_type(f.type)) for f in ftype.fields])
    return pa.list_(raw_type(ftype.item))


def raw_array(part: tuple[Any, ...], raw_type: pa.DataType) -> pa.StructArray:
    """The raw StructArray of a collector's part (:data:`extractor.parser.RawPart`) of
    ``raw_type``; the compiled builders' buffers are taken as they are, without a copy."""
    if part[0] == "r":  # (pa.array imports pandas: not for a body without records)
        records = part[1]
        built = pa.array(records, raw_type) if records else pa.nulls(0, cast(Any, raw_type))
        return cast(pa.StructArray, built)
    return cast(pa.StructArray, _from_buffers(part, raw_type))


def _from_buffers(part: tuple[Any, ...], raw_type: pa.DataType) -> pa.Array[Any]:
    kind, length, nulls, validity = part[:4]
    bitmap = None if validity is None else pa.py_buffer(validity)
    if kind == "s":
        buffers = [bitmap, pa.py_buffer(part[4]), pa.py_buffer(part[5])]
        return pa.Array.from_buffers(raw_type, length, buffers, nulls)
    if kind == "t":
        children = [
            _from_buffers(child, raw_type.field(pos).type) for pos, child in enumerate(part[4])
        ]
        return pa.Array.from_buffers(raw_type, length, [bitmap], nulls, children=children)
    values = _from_buffers(part[5], cast("pa.ListType[Any]", raw_type).value_type)
    buffers = [bitmap, pa.py_buffer(part[4])]
    return pa.Array.from_buffers(raw_type, length, buffers, nulls, children=[values])


def column(ftype: schema.FieldType, raw: pa.Array[Any], name: str) -> pa.Array[Any]:
    """The typed Arrow array for the raw (text) array of one field."""
    if isinstance(ftype, schema.Scalar):
        return scalar_column(ftype, raw, name)
    if isinstance(ftype, schema.Struct):
        return _struct_column(ftype, cast(pa.StructArray, raw), name)
    return _list_column(ftype, cast("pa.ListArray[Any]", raw), name)


def _struct_column(struct: schema.Struct, raw: pa.StructArray, name: str) -> pa.Array[Any]:
    children = [
        column(f.type, values, f"{name}.{f.name}")
        for f, values in zip(struct.fields, raw.flatten(), strict=True)
    ]
    fields = [pa.field(f.name, f.type.arrow) for f in struct.fields]
    return pa.StructArray.from_arrays(children, fields=fields, mask=_nulls(raw))


def _list_column(ftype: schema.ListOf, raw: pa.ListArray[Any], name: str) -> pa.Array[Any]:
    values = column(ftype.item, raw.values, f"{name}[]")
    array = pa.ListArray.from_arrays(raw.offsets, values, mask=_nulls(raw))
    return array.cast(ftype.arrow)


def _nulls(raw: pa.Array[Any]) -> pa.Array[Any] | None:
    return raw.is_null() if raw.null_count else None


def scalar_column(scalar: schema.Scalar, text: pa.Array[Any], name: str) -> pa.Array[Any]:
    if scalar.xsd in ("string", "anyType"):
        return text
    if scalar.xsd == "enum":
        return text.dictionary_encode()
    try:
        return _kernel_typed(scalar, text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _fallback(scalar, _blanked(scalar, text).to_pylist(), name)


def _blanked(scalar: schema.Scalar, text: pa.Array[Any]) -> pa.Array[Any]:
    """``text`` with "" and the type's "not set" sentinel as nulls."""
    # kernels get pa.scalar arguments: a Python literal makes pyarrow try to import pandas
    blank = pc.equal(text, string_scalar(""))
    if scalar.sentinel is not None:
        blank = pc.or_(blank, pc.equal(text, string_scalar(scalar.sentinel)))
    if pc.any(blank).as_py():
        text = pc.if_else(blank, pa.nulls(1, pa.string())[0], text)
    return text


def _kernel_typed(scalar: schema.Scalar, text: pa.Array[Any]) -> pa.Array[Any]:
    """The typed array by Arrow's kernels alone; ArrowInvalid (or NotImplemented) when they
    refuse a value, which only the per-value fallback can judge."""
    text = _blanked(scalar, text)
    if scalar.xsd == "guid":
        return text
    return _cast(text, scalar.xsd)


@functools.cache
def string_scalar(text: str) -> Any:
    """``text`` as a string scalar. Building one from a Python value imports pandas (0.1-0.8 s,
    33 MB of the process), and so does ``pa.array`` of a list: pyarrow asks pandas whether the
    value is one of its own. Built from its buffers instead (:func:`strings`)."""
    return strings([text])[0]


def strings(values: Sequence[str]) -> pa.Array[Any]:
    """``values`` as a string array, built from its buffers (no pandas, see
    :func:`string_scalar`)."""
    encoded = [value.encode() for value in values]
    ends = itertools.accumulate((len(value) for value in encoded), initial=0)
    offsets = pa.py_buffer(array_of("i", ends))
    data = pa.py_buffer(b"".join(encoded))
    return pa.Array.from_buffers(pa.string(), len(encoded), [None, offsets, data])


def timestamp_scalar(when: dt.datetime) -> Any:
    """An aware ``when`` as a ``timestamp[us, tz=UTC]`` scalar (no pandas, see
    :func:`string_scalar`)."""
    micros = (when - _EPOCH) // dt.timedelta(microseconds=1)
    data = pa.py_buffer(struct.pack("<q", micros))
    utc = pa.timestamp("us", tz="UTC")
    return pa.Array.from_buffers(utc, 1, [None, data])[0]


def booleans(values: Sequence[bool | None]) -> pa.Array[Any]:
    """``values`` as a boolean array, built from its bitmaps (no pandas, see
    :func:`string_scalar`)."""
    size = (len(values) + 7) // 8
    bits, valid = bytearray(size), bytearray(size)
    nulls = 0
    for at, value in enumerate(values):
        if value is None:
            nulls += 1
            continue
        valid[at >> 3] |= 1 << (at & 7)
        if value:
            bits[at >> 3] |= 1 << (at & 7)
    validity = pa.py_buffer(valid) if nulls else None
    return pa.Array.from_buffers(pa.bool_(), len(values), [validity, pa.py_buffer(bits)], nulls)


def moment(value: Any) -> dt.datetime | None:
    """A timestamp scalar as an aware time (UTC when the type has no zone); ``as_py`` of a
    zoned one imports pandas (see :func:`string_scalar`)."""
    if not value.is_valid:
        return None
    count = value.cast(pa.int64()).as_py()
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[value.type.unit]
    return _EPOCH + dt.timedelta(microseconds=count * 1_000_000 // per_second)


def cast_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table.cast(schema)``, casting only the columns whose type differs: pyarrow casts a
    column already of the type too, a kernel call each (a millisecond a table of 60 columns,
    paid per Delta file)."""
    if table.schema.equals(schema, check_metadata=True):
        return table
    if table.schema.names != schema.names:
        raise ValueError(f"cannot cast the columns {table.schema.names} to {schema.names}")
    columns = []
    for column, field in zip(table.columns, schema, strict=True):
        if not field.nullable and column.null_count:
            raise ValueError(f"Casting field {field.name!r} with null values to non-nullable")
        columns.append(column if column.type.equals(field.type) else column.cast(field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def empty(schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` without records (``schema.empty_table()`` imports pandas, see
    :func:`string_scalar`)."""
    return pa.Table.from_batches([], schema)


@functools.cache
def true_scalar() -> Any:
    """A boolean ``True`` scalar (no pandas, see :func:`string_scalar`)."""
    return pa.Array.from_buffers(pa.bool_(), 1, [None, pa.py_buffer(b"\x01")])[0]


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _cast(text: pa.Array[Any], xsd: str) -> pa.Array[Any]:
    if xsd == "dateTime":
        return text.cast(pa.timestamp("us")).cast(schema.Scalar("dateTime").arrow)
    if xsd == "base64Binary":
        raise pa.ArrowNotImplementedError("base64 goes through the fallback")
    return text.cast(schema.Scalar(xsd).arrow)


def _fallback(scalar: schema.Scalar, values: list[str | None], name: str) -> pa.Array[Any]:
    convert = _CONVERTERS[scalar.xsd]
    out: list[Any] = []
    for value in values:
        try:
            out.append(None if value is None else convert(value))
        except (ValueError, ArithmeticError):
            raise DataError(f"{name}: {value!r} is not a valid {scalar.xsd}") from None
    return pa.array(out, scalar.arrow)


def _to_int(kind: str) -> Any:
    low, high = _INT_RANGES[kind]

    def convert(value: str) -> int:
        number = int(value.strip())
        if not low <= number <= high:
            raise ValueError(value)
        return number

    return convert


def _to_decimal(value: str) -> Decimal:
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        raise ValueError(value) from None
    if not number.is_finite() or number != number.quantize(Decimal("1e-10")):
        raise ValueError(value)  # more than 10 fractional digits would be rounded
    return number


def _to_datetime(value: str) -> dt.datetime:
    match = _DATETIME.fullmatch(value)
    if match is None:
        raise ValueError(value)
    stamp, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))  # .NET ticks: the 7th digit is dropped
    parsed = dt.datetime.fromisoformat(stamp).replace(microsecond=micros)
    offset = dt.timedelta(0)
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        offset = sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return (parsed - offset).replace(tzinfo=dt.UTC)


def _to_bool(value: str) -> bool:
    lexical = value.strip()
    if lexical in ("true", "1"):
        return True
    if lexical in ("false", "0"):
        return False
    raise ValueError(value)


_CONVERTERS: Final[dict[str, Any]] = {
    **{kind: _to_int(kind) for kind in _INT_RANGES},
    "decimal": _to_decimal,
    "dateTime": _to_datetime,
    "date": lambda value: dt.date.fromisoformat(value.strip()),
    "boolean": _to_bool,
    "double": lambda value: float(value.strip()),  # XSD's INF, -INF and NaN too
    "base64Binary": lambda value: base64.b64decode(value.strip()),
}


def table(fields: Sequence[schema.Field], raw: pa.StructArray) -> pa.Table:
    """A typed table of ``fields``, taken by name from a raw StructArray of their type.

    The scalar fields of one XSD type are typed together, as one array of all their text
    (:func:`_same_type_columns`): a kernel call costs the same for ten values as for ten
    thousand, and a batch of ten orders has some three hundred of them to make otherwise.
    """
    arrays: dict[int, pa.Array[Any]] = {}
    by_type: dict[str, list[int]] = {}
    for pos, f in enumerate(fields):
        if isinstance(f.type, schema.Scalar) and f.type.xsd not in _AS_IS:
            by_type.setdefault(f.type.xsd, []).append(pos)
        else:
            arrays[pos] = column(f.type, raw.field(f.name), f.name)
    for positions in by_type.values():
        texts = [raw.field(fields[pos].name) for pos in positions]
        names = [fields[pos].name for pos in positions]
        typed = _same_type_columns(cast(schema.Scalar, fields[positions[0]].type), texts, names)
        for pos, array in zip(positions, typed, strict=True):
            arrays[pos] = array
    return pa.Table.from_arrays(
        [arrays[pos] for pos in range(len(fields))], schema=schema_for(fields)
    )


#: Scalars typed alone: their text is the value (string), or a dictionary per column (enum).
_AS_IS: Final = frozenset({"string", "enum", "anyType"})


def _same_type_columns(
    scalar: schema.Scalar, texts: list[pa.Array[Any]], names: list[str]
) -> list[pa.Array[Any]]:
    """The typed arrays of several text columns of one scalar type and one length, typed as
    one array and sliced back; a column the kernels refuse is typed alone, so that its error
    names it."""
    length = len(texts[0])
    if len(texts) == 1 or length == 0:
        return [scalar_column(scalar, text, name) for text, name in zip(texts, names, strict=True)]
    try:
        typed = _kernel_typed(scalar, pa.concat_arrays(texts))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return [scalar_column(scalar, text, name) for text, name in zip(texts, names, strict=True)]
    return [typed.slice(at * length, length) for at in range(len(texts))]
