"""Streaming response parser, sans I/O: feed bytes as they arrive, take finished records out.

Each finished record element (an ``InvoiceOrder``, an ``int`` of a sync list) is read and
cleared at once, so memory holds the records read so far, not the body. A record is read
into *raw values*, all text:

- a scalar is its text (``""`` for an empty element, ``None`` for absent or ``xsi:nil``);
- a struct is a tuple of raw values in WSDL field order, or ``None``;
- a repeated type is a list of item raw values, or ``None``.

Records of a complex type are collected as the columns of one raw StructArray
(:class:`Columns`): when the compiled builders of ``extractor._speedups`` are built, straight
from libxml2's SAX events, no node made (:class:`PartStream`); else by :class:`StructReader`
from lxml's tree. Either hands out a :data:`RawPart` that :func:`extractor.arrow.raw_array`
makes the array of. A field that appears twice in one record is a DataError rather than a
silent choice.

No pyarrow here, so that parser processes need not import it (a third of their memory):
typing (sentinels, decimals, timestamps) happens column-wise in :mod:`extractor.arrow`, in
the process that stages.
A DOCTYPE is refused as soon as libxml2 reports it, never expanded (:mod:`extractor.untrusted`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final, Protocol, cast

from lxml import etree

from extractor import schema
from extractor.errors import DataError, ExtractorError, HostileXml, MalformedResponse
from extractor.soap import fault_error
from extractor.untrusted import refuse_doctype, refuse_unless_soap, safe_parser, syntax_error

NIL_ATTR: Final = "{http://www.w3.org/2001/XMLSchema-instance}nil"

Raw = Any
Reader = Callable[[etree._Element], Raw]
#: What a collector hands out: the compiled builders' buffers, nested
#: (``("s", length, nulls, validity, offsets, data)`` for text, ``("t", length, nulls,
#: validity, [fields])`` for a struct, ``("l", length, nulls, validity, offsets, items)`` for
#: a list; validity None when nothing is null), or ``("r", [record, ...])`` from the
#: pure-Python readers. Plain tuples of bytes: a part pickles between processes as is.
RawPart = tuple[Any, ...]


def _scalar(child: etree._Element) -> str | None:
    if len(child):
        raise _holds_element(child)
    text = child.text
    if text is None:
        return None if child.get(NIL_ATTR) == "true" else ""
    return text


def _holds_element(value: etree._Element) -> ExtractorError:
    """A value is text: an element inside it is a DataError, an entity reference hostile
    (both readers say the same)."""
    inner = value[0]
    if isinstance(inner, etree._Entity):
        return HostileXml(f"an entity reference ({inner.text}) in a value; refused")
    field, name = etree.QName(value).localname, etree.QName(inner).localname
    return DataError(f"{field} holds an element (<{name}>) where a value belongs")


class Sink(Protocol):
    """Where a response body goes while it arrives (a :class:`RecordStream`); defined here, not
    with the transport, so that parser processes need not import aiohttp."""

    bytes_fed: int

    def feed(self, chunk: bytes) -> None: ...

    async def room(self) -> None:
        """Wait until the sink can take more (backpressure); raise if it already failed."""

    async def finish(self) -> None:
        """The body is complete: raise if it was not a whole document, or was a fault."""

    def abort(self) -> None:
        """The attempt failed; forget what was fed."""


class StructReader:
    """Reads one complex-type element into a tuple of raw values in WSDL order."""

    __slots__ = ("_complex", "_names", "_scalars", "_type_name", "_width")

    def __init__(self, struct: schema.Struct, namespace: str) -> None:
        self._width = len(struct.fields)
        self._type_name = struct.name
        self._names = struct.names
        self._scalars: dict[str, int] = {}
        self._complex: dict[str, tuple[int, Reader]] = {}
        for pos, f in enumerate(struct.fields):
            tag = f"{{{namespace}}}{f.name}"
            read = compile_reader(f.type, namespace)
            if read is None:
                self._scalars[tag] = pos
            else:
                self._complex[tag] = (pos, read)

    def __call__(self, elem: etree._Element) -> tuple[Raw, ...] | None:
        # the hot loop of the pure-Python parser: one pass over the children, few calls
        values: list[Raw] = [None] * self._width
        scalars, complex_ = self._scalars, self._complex
        seen = 0  # a bit per field
        for child in elem:
            tag = child.tag
            pos = scalars.get(tag)
            if pos is not None:
                text = child.text
                values[pos] = text if text is not None and not len(child) else _scalar(child)
            else:
                entry = complex_.get(tag)
                if entry is None:
                    continue  # a field newer than the shipped WSDL
                pos = entry[0]
                values[pos] = entry[1](child)
            if seen >> pos & 1:
                raise DataError(f"{self._type_name}.{self._names[pos]} appears twice in one record")
            seen |= 1 << pos
        if not seen and elem.get(NIL_ATTR) == "true":
            return None
        return tuple(values)


class ListReader:
    """Reads an ``ArrayOfX`` element into a list of item raw values."""

    __slots__ = ("_item", "_tag")

    def __init__(self, ftype: schema.ListOf, namespace: str) -> None:
        self._tag = f"{{{namespace}}}{ftype.item_tag}"
        self._item: Reader = compile_reader(ftype.item, namespace) or _scalar

    def __call__(self, elem: etree._Element) -> list[Raw] | None:
        if len(elem) == 0 and elem.get(NIL_ATTR) == "true":
            return None
        tag, item = self._tag, self._item
        return [item(child) for child in elem if child.tag == tag]


def _load_speedups() -> tuple[Any, str]:
    """The compiled readers, when built for the lxml installed now and not switched off; else
    None and why not."""
    if os.environ.get(PURE_PYTHON):
        return None, f"switched off by {PURE_PYTHON}"
    try:
        from extractor import _speedups
    except ImportError:
        return None, "not installed (was extractor installed without a C compiler?)"
    if etree.__version__ != _speedups.BUILT_WITH_LXML:
        return None, (
            f"built for lxml {_speedups.BUILT_WITH_LXML}, but lxml {etree.__version__} is "
            "installed: reinstall extractor"
        )
    if not _speedups.READS_EVENTS:
        return None, f"unusable: lxml {etree.__version__} does not export libxml2's push parser"
    return _speedups, ""


#: Set, the pure-Python parser is used even where the compiled readers are built.
PURE_PYTHON: Final = "EXTRACTOR_PURE_PYTHON"
SPEEDUPS, _WHY_NOT = _load_speedups()
_NOTED: list[bool] = []  # the slow parser was noted (once a process)


def parser_in_use() -> str:
    """Which parser this process uses, and why the compiled readers are not it when not."""
    if SPEEDUPS is not None:
        return f"compiled readers (Cython, lxml {etree.__version__})"
    return f"pure Python (the compiled readers are {_WHY_NOT})"


def slow_parser_note() -> str | None:
    """What the first run of a process says when it parses with the pure-Python parser
    though nobody asked for it (:data:`PURE_PYTHON`); None otherwise, and after that."""
    if SPEEDUPS is not None or os.environ.get(PURE_PYTHON) or _NOTED:
        return None
    _NOTED.append(True)
    return (
        f"parsing with the pure-Python parser, 2-3x slower: the compiled readers are {_WHY_NOT} "
        "(see README.md, Install for real use)"
    )


#: The most bytes handed to libxml2 at once (a larger chunk is fed in pieces).
FEED_LIMIT: Final = 1024 * 1024

#: Records a collector holds before they are typed: the compiled builders hold their text's
#: bytes, Python records about ten times as much.
COLLECT_EVERY: Final = 1000 if SPEEDUPS is not None else 250


class Columns(Protocol):
    """Collects records as the columns of one raw StructArray: :class:`RecordColumns` from
    lxml's tree, or the compiled ``StructColumn`` from SAX events."""

    def __len__(self) -> int: ...

    def finish(self) -> RawPart:
        """Everything added so far (for :func:`extractor.arrow.raw_array`); starts over."""
        ...


class RecordColumns:
    """The pure-Python :class:`Columns`: each finished record element (``add``) read by
    :class:`StructReader`, for Arrow's converter. The compiled ``StructColumn`` builds the
    same array without the records."""

    def __init__(self, struct: schema.Struct, namespace: str) -> None:
        self._read = StructReader(struct, namespace)
        self._records: list[tuple[Raw, ...] | None] = []

    def add(self, elem: etree._Element) -> None:
        self._records.append(self._read(elem))

    def __len__(self) -> int:
        return len(self._records)

    def finish(self) -> RawPart:
        records, self._records = self._records, []
        return ("r", records)


def compile_reader(ftype: schema.FieldType, namespace: str) -> Reader | None:
    """A reader for a complex type; None for scalars, which the struct reader inlines."""
    if isinstance(ftype, schema.Struct):
        return StructReader(ftype, namespace)
    if isinstance(ftype, schema.ListOf):
        return ListReader(ftype, namespace)
    return None


class RecordStream:
    """Feed a SOAP response in chunks; finished ``record_tag`` elements land in ``records``."""

    def __init__(self, record_tag: str, read: Reader) -> None:
        self._read = read
        self._parser = safe_parser(events=("end",), tag=record_tag)
        self._judged = False  # the document's DOCTYPE, checked at its first record
        self.records: list[Raw] = []
        self.bytes_fed = 0

    def feed(self, chunk: bytes) -> None:
        if not self.bytes_fed:
            etree.clear_error_log()  # a new document: see syntax_error
        self.bytes_fed += len(chunk)
        try:
            # in pieces: libxml2 refuses to hold over 10 MB of input at once (without HUGE)
            for at in range(0, len(chunk), FEED_LIMIT):
                self._parser.feed(chunk[at : at + FEED_LIMIT])
        except etree.XMLSyntaxError as exc:
            raise syntax_error(exc, "response is not well-formed XML") from None
        self._drain()

    async def room(self) -> None:
        """Parsed as fed: always room for more."""

    def close(self) -> etree._Element:
        """End of body: the (emptied) document root, or MalformedResponse if it stopped short
        or is not a SOAP envelope."""
        try:
            root = self._parser.close()
        except etree.XMLSyntaxError as exc:
            raise syntax_error(exc, "response ended before the XML document was complete") from None
        self._drain()
        refuse_unless_soap(root)
        return root

    def complete(self) -> None:
        """The body is complete: MalformedResponse if it stopped short, a fault error if one."""
        raise_for_fault(self.close())

    async def finish(self) -> None:
        self.complete()

    def abort(self) -> None:
        self.records = []

    def _drain(self) -> None:
        read, records = self._read, self.records
        for _, event_elem in self._parser.read_events():
            elem = cast(etree._Element, event_elem)
            if not self._judged:
                refuse_doctype(elem.getroottree().getroot())
                self._judged = True
            record = read(elem)
            if record is not None:
                records.append(record)
            elem.clear()
            parent = elem.getparent()
            if parent is not None:
                while elem.getprevious() is not None:
                    del parent[0]


class PartStream(RecordStream):
    """Feed a response; its ``record_tag`` elements (of ``struct``) are collected as raw
    parts of ``every`` records, each handed to :meth:`collected` (kept in ``parts`` unless
    a subclass takes them). A parser process sends the parts on; typing is the stager's.

    With the compiled readers, the records are read from libxml2's SAX events and never
    become nodes (``_speedups.SaxReader``); the rest of the document is lxml's as before,
    and judged by the same code."""

    def __init__(
        self, record_tag: str, struct: schema.Struct, namespace: str, every: int = COLLECT_EVERY
    ) -> None:
        self._columns: Columns
        if SPEEDUPS is None:  # each record read from lxml's tree
            self._sax = None
            records = RecordColumns(struct, namespace)
            self._columns = records
            super().__init__(record_tag, records.add)
        else:
            self._columns = SPEEDUPS.StructColumn(struct, namespace)
            self._sax = SPEEDUPS.SaxReader(self._columns, record_tag, every)
            self.records, self.bytes_fed = [], 0
        self._every = every
        self.parts: list[RawPart] = []

    def feed(self, chunk: bytes) -> None:
        if self._sax is None:
            super().feed(chunk)
            if len(self._columns) >= self._every:  # the tree hands over whole records
                self.collected(self._columns.finish())
            return
        self.bytes_fed += len(chunk)
        if self._sax.feed(chunk):  # a DOCTYPE before the first record: judged first
            refuse_doctype(self._sax.document())
            raise HostileXml("response declares a DTD; refused without expanding it")
        for part in self._sax.take_parts():  # cut at a record's end, not the chunk's
            self.collected(part)

    def close(self) -> etree._Element:
        if self._sax is None:
            root = super().close()
        else:
            root = self._sax.close()
            refuse_unless_soap(root)
            for part in self._sax.take_parts():
                self.collected(part)
        if len(self._columns):
            self.collected(self._columns.finish())
        return root

    def abort(self) -> None:
        self.records = []
        self._columns.finish()
        self.parts = []

    def collected(self, part: RawPart) -> None:
        self.parts.append(part)


def raise_for_fault(root: etree._Element) -> None:
    """A fault inside an HTTP 200 body is still a fault."""
    fault = root.find("{*}Body/{*}Fault")
    if fault is not None:
        raise fault_error(etree.tostring(root), 200)


def int_reader(elem: etree._Element) -> int:
    try:
        return int(elem.text or "")
    except ValueError:
        raise MalformedResponse(f"expected an integer, got {elem.text!r}") from None
