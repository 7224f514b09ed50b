# cython: language_level=3, boundscheck=False, wraparound=False
"""Column builders: the raw columns of :mod:`extractor.parser` without a Python object per
value, read straight from libxml2's SAX events (:class:`SaxReader`, what a
:class:`~extractor.parser.PartStream` runs): no node is made for a record.

Each record is appended field by field to Arrow-layout buffers (UTF-8 bytes, int32
offsets, validity bits) grown in C; ``finish`` hands them out as a *raw part*
(:data:`extractor.parser.RawPart`: nested tuples of bytes), which
:func:`extractor.arrow.raw_array` turns into the raw StructArray whose leaves are strings,
the same array the pure-Python collector's records give. No pyarrow here: parser processes
never import it (a third of their memory), and a part pickles to the run's process as is.

Optional: built by ``make install`` when a C compiler and Cython are at hand; the parser
falls back to the pure-Python collector otherwise, and the tests hold every path to the same
output. Nothing links against libxml2: its functions are those of the libxml2 inside the
loaded lxml, found with ``dlsym`` in ``lxml.etree``'s own library, and its structures are
read through the headers lxml ships (the version this module was built with is checked).
"""

from libc.stdint cimport INT32_MAX, int32_t, uint8_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcmp, memcpy, memset, strcmp
from lxml.includes cimport tree
from posix.dlfcn cimport RTLD_NOW, dlopen, dlsym

import lxml.etree

from extractor import schema
from extractor.errors import DataError, HostileXml, MalformedResponse

cdef extern from "<dlfcn.h>":
    const int RTLD_NOLOAD

cdef extern from "lxml-version.h":
    const char* LXML_VERSION_STRING

#: The lxml whose libxml2 headers (structures, constants) this module was compiled against.
BUILT_WITH_LXML = LXML_VERSION_STRING.decode()

cdef const char* XSI = b"http://www.w3.org/2001/XMLSchema-instance"

ctypedef unsigned char xmlChar


cdef struct Buffer:
    char* data
    Py_ssize_t size
    Py_ssize_t capacity


cdef int _reserve(Buffer* buf, Py_ssize_t extra) except -1:
    cdef Py_ssize_t capacity
    cdef char* grown
    if buf.size + extra <= buf.capacity:
        return 0
    capacity = max(2 * buf.capacity, buf.size + extra, 4096)
    grown = <char*>realloc(buf.data, capacity)
    if grown is NULL:
        raise MemoryError()
    buf.data, buf.capacity = grown, capacity
    return 0


cdef inline int _append(Buffer* buf, const char* data, Py_ssize_t size) except -1:
    _reserve(buf, size)
    memcpy(buf.data + buf.size, data, size)
    buf.size += size
    return 0


cdef inline int _append_offset(Buffer* buf, Py_ssize_t offset) except -1:
    cdef int32_t value
    if offset > INT32_MAX:
        raise DataError("a response chunk holds more than 2 GiB of text in one field")
    value = <int32_t>offset
    return _append(buf, <const char*>&value, sizeof(int32_t))


cdef bytes _take(Buffer* buf):
    """The buffer's bytes; the builder starts over, its memory handed back (a part is most
    often a whole body's: kept, it would sit beside its copy until the body is done)."""
    out = buf.data[: buf.size] if buf.size else b""
    free(buf.data)
    buf.data, buf.size, buf.capacity = NULL, 0, 0
    return out


cdef class Column:
    """One field's values being built: validity bits, and what the subclass adds."""

    cdef Buffer validity
    cdef Py_ssize_t length
    cdef Py_ssize_t null_count
    cdef bint nil  # the element being read says xsi:nil="true"

    def __dealloc__(self):
        free(self.validity.data)

    cdef int _slot(self, bint valid) except -1:
        cdef Py_ssize_t byte = self.length >> 3
        if byte >= self.validity.size:
            _reserve(&self.validity, 1)
            self.validity.data[byte] = 0
            self.validity.size += 1
        if valid:
            self.validity.data[byte] |= <char>(1 << (self.length & 7))
        else:
            self.null_count += 1
        self.length += 1
        return 0

    cdef int append_null(self) except -1:
        raise NotImplementedError

    cdef object _finish(self):
        raise NotImplementedError

    # the SAX events (:class:`SaxReader`): the column's element begins, a child element of
    # it begins (the child's column, None when no column reads it), text, the element ends
    cdef int sax_start(self, const xmlChar* local, int count, const xmlChar** attributes) except -1:
        raise NotImplementedError

    cdef object sax_child(self, const xmlChar* local, const xmlChar* uri, int count, const xmlChar** attributes):
        raise NotImplementedError

    cdef int sax_text(self, const char* text, int size) except -1:
        return 0

    cdef int sax_end(self) except -1:
        raise NotImplementedError

    cdef object _start_over(self):
        """The validity bitmap as an Arrow buffer and (length, null count); the builder resets."""
        length, nulls = self.length, self.null_count
        bitmap = _take(&self.validity) if nulls else None
        self.validity.size = 0
        self.length = self.null_count = 0
        return bitmap, length, nulls

    def __len__(self):
        return self.length

    def finish(self):
        """Everything added so far as one raw part; the builder starts over."""
        return self._finish()


cdef class TextColumn(Column):
    """A scalar field: the element's text and CDATA as UTF-8, "" when empty, null when nil."""

    cdef Buffer offsets
    cdef Buffer data
    cdef const xmlChar* open_name  # the element being read
    cdef bint has_text

    def __cinit__(self):
        _append_offset(&self.offsets, 0)

    def __dealloc__(self):
        free(self.offsets.data)
        free(self.data.data)

    cdef int append_null(self) except -1:
        _append_offset(&self.offsets, self.data.size)
        return self._slot(False)

    cdef int sax_start(self, const xmlChar* local, int count, const xmlChar** attributes) except -1:
        self.open_name, self.has_text = local, False
        self.nil = count and _nil_in(attributes, count)
        return 0

    cdef object sax_child(self, const xmlChar* local, const xmlChar* uri, int count, const xmlChar** attributes):
        raise DataError(
            f"{(<bytes>self.open_name).decode()} holds an element (<{(<bytes>local).decode()}>) "
            "where a value belongs"
        )

    cdef int sax_text(self, const char* text, int size) except -1:
        _append(&self.data, text, size)
        self.has_text = True
        return 0

    cdef int sax_end(self) except -1:
        if not self.has_text and self.nil:
            return self.append_null()
        _append_offset(&self.offsets, self.data.size)
        return self._slot(True)

    cdef object _finish(self):
        bitmap, length, nulls = self._start_over()
        offsets, data = _take(&self.offsets), _take(&self.data)
        _append_offset(&self.offsets, 0)
        return ("s", length, nulls, bitmap, offsets, data)


cdef class StructColumn(Column):
    """A complex type: one child column per WSDL field, matched by element name."""

    cdef list children
    cdef list names  # keeps the bytes behind ``tags`` alive
    cdef const char** tags
    cdef char* seen
    cdef Py_ssize_t width
    cdef bytes namespace
    cdef str type_name
    cdef bint matched  # a field was met: a nil struct holding one is not null
    cdef Py_ssize_t next_pos

    def __init__(self, struct, str namespace):
        self.namespace = namespace.encode()
        self.type_name = struct.name
        self.width = len(struct.fields)
        self.children = [column_for(f.type, namespace) for f in struct.fields]
        self.names = [f.name.encode() for f in struct.fields]
        self.tags = <const char**>realloc(NULL, self.width * sizeof(char*))
        self.seen = <char*>realloc(NULL, self.width)
        if self.tags is NULL or self.seen is NULL:
            raise MemoryError()
        for pos in range(self.width):
            self.tags[pos] = <const char*>(<bytes>self.names[pos])

    def __dealloc__(self):
        free(self.tags)
        free(self.seen)

    cdef Py_ssize_t _find(self, const char* name, Py_ssize_t start):
        """The field named ``name``: children mostly come in WSDL order, so look ahead first."""
        cdef Py_ssize_t pos
        for pos in range(start, self.width):
            if strcmp(name, self.tags[pos]) == 0:
                return pos
        for pos in range(0, start):
            if strcmp(name, self.tags[pos]) == 0:
                return pos
        return -1

    cdef int append_null(self) except -1:
        cdef Py_ssize_t pos
        for pos in range(self.width):
            (<Column>self.children[pos]).append_null()
        return self._slot(False)

    cdef int sax_start(self, const xmlChar* local, int count, const xmlChar** attributes) except -1:
        memset(self.seen, 0, self.width)
        self.matched, self.next_pos = False, 0
        self.nil = count and _nil_in(attributes, count)
        return 0

    cdef object sax_child(self, const xmlChar* local, const xmlChar* uri, int count, const xmlChar** attributes):
        cdef Py_ssize_t pos
        cdef Column child
        if not _same(uri, self.namespace):
            return None
        pos = self._find(<const char*>local, self.next_pos)
        if pos < 0:
            return None  # a field newer than the shipped WSDL
        if self.seen[pos]:
            raise DataError(f"{self.type_name}.{self.names[pos].decode()} appears twice in one record")
        self.seen[pos] = 1
        self.matched, self.next_pos = True, pos + 1
        child = <Column>self.children[pos]
        child.sax_start(local, count, attributes)
        return child

    cdef int sax_end(self) except -1:
        cdef Py_ssize_t pos
        if not self.matched and self.nil:
            return self.append_null()
        for pos in range(self.width):
            if not self.seen[pos]:
                (<Column>self.children[pos]).append_null()
        return self._slot(True)

    cdef object _finish(self):
        bitmap, length, nulls = self._start_over()
        children = [(<Column>child)._finish() for child in self.children]
        return ("t", length, nulls, bitmap, children)


cdef class ListColumn(Column):
    """An ``ArrayOfX``: offsets into one item column; null when nil and holding no element."""

    cdef Buffer offsets
    cdef Column item
    cdef bytes item_tag
    cdef bytes namespace
    cdef Py_ssize_t items
    cdef bint any_child  # an element was met: a nil list holding one is not null

    def __init__(self, ftype, str namespace):
        self.namespace = namespace.encode()
        self.item_tag = ftype.item_tag.encode()
        self.item = column_for(ftype.item, namespace)
        _append_offset(&self.offsets, 0)

    def __dealloc__(self):
        free(self.offsets.data)

    cdef int append_null(self) except -1:
        _append_offset(&self.offsets, self.items)
        return self._slot(False)

    cdef int sax_start(self, const xmlChar* local, int count, const xmlChar** attributes) except -1:
        self.any_child = False
        self.nil = count and _nil_in(attributes, count)
        return 0

    cdef object sax_child(self, const xmlChar* local, const xmlChar* uri, int count, const xmlChar** attributes):
        self.any_child = True
        if not _same(uri, self.namespace) or strcmp(<const char*>local, <const char*>self.item_tag):
            return None
        self.item.sax_start(local, count, attributes)
        self.items += 1
        return self.item

    cdef int sax_end(self) except -1:
        if not self.any_child and self.nil:
            return self.append_null()
        _append_offset(&self.offsets, self.items)
        return self._slot(True)

    cdef object _finish(self):
        bitmap, length, nulls = self._start_over()
        offsets = _take(&self.offsets)
        self.items = 0
        _append_offset(&self.offsets, 0)
        values = self.item._finish()
        return ("l", length, nulls, bitmap, offsets, values)


cdef Column column_for(ftype, str namespace):
    if isinstance(ftype, schema.Struct):
        return StructColumn(ftype, namespace)
    if isinstance(ftype, schema.ListOf):
        return ListColumn(ftype, namespace)
    return TextColumn()


# --- reading records straight from libxml2's SAX events -----------------------------------
#
# A PartStream's body is parsed by a push parser of the libxml2 inside lxml, whose default
# SAX2 handlers build the document as usual *outside* the records: the envelope, the body,
# a fault, a DTD. Inside a record, the handlers below append each value to the columns
# above instead, and no node is made: the tree, and lxml's events over it, were two thirds
# of a parser process. The document left (the records cut out) goes to lxml whole at the
# end, so that a DOCTYPE, a root that is not an envelope and a fault are judged by the same
# code as the tree parser's.

from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_New, PyCapsule_SetContext

from extractor import untrusted

cdef extern from "libxml/xmlerror.h":
    ctypedef struct xmlError:
        int code
        char* message
        int level
        int line
        int int2
    const int XML_ERR_ERROR

ctypedef void (*StartNs)(void*, const xmlChar*, const xmlChar*, const xmlChar*, int,
                         const xmlChar**, int, int, const xmlChar**) noexcept
ctypedef void (*EndNs)(void*, const xmlChar*, const xmlChar*, const xmlChar*) noexcept
ctypedef void (*Characters)(void*, const xmlChar*, int) noexcept
ctypedef void (*Reference)(void*, const xmlChar*) noexcept
ctypedef void (*Comment)(void*, const xmlChar*) noexcept
ctypedef void (*Instruction)(void*, const xmlChar*, const xmlChar*) noexcept
ctypedef void (*StructuredError)(void*, const xmlError*) noexcept

cdef extern from "libxml/parser.h":
    ctypedef struct SaxHandler "xmlSAXHandler":
        StartNs startElementNs
        EndNs endElementNs
        Characters characters
        Characters ignorableWhitespace
        Characters cdataBlock
        Reference reference
        Comment comment
        Instruction processingInstruction
        StructuredError serror

    ctypedef struct ParserCtxt "xmlParserCtxt":
        tree.xmlDoc* myDoc
        tree.xmlNode* node  # the element open outside the records (SAX2's), NULL before the root
        int nameNr  # the elements open, records' included
        void* _private
        int wellFormed
        SaxHandler* sax

    const int XML_PARSE_NONET
    const int XML_PARSE_NOCDATA
    const int XML_PARSE_COMPACT
    const int XML_PARSE_BIG_LINES

ctypedef ParserCtxt* (*CreatePush)(void*, void*, const char*, int, const char*) noexcept
ctypedef int (*ParseChunk)(ParserCtxt*, const char*, int, int) noexcept
ctypedef int (*UseOptions)(ParserCtxt*, int) noexcept
ctypedef void (*FreeCtxt)(ParserCtxt*) noexcept
ctypedef void (*FreeDoc)(tree.xmlDoc*) noexcept
ctypedef void (*StopParser)(ParserCtxt*) noexcept


cdef struct Libxml2:
    CreatePush create_push
    ParseChunk parse_chunk
    UseOptions use_options
    FreeCtxt free_ctxt
    FreeDoc free_doc
    StopParser stop


cdef Libxml2 _xml


cdef bint _load_libxml2():
    """The push parser's functions from the libxml2 inside the loaded lxml."""
    handle = dlopen(lxml.etree.__file__.encode(), RTLD_NOW | RTLD_NOLOAD)
    if handle is NULL:
        return False
    _xml.create_push = <CreatePush>dlsym(handle, b"xmlCreatePushParserCtxt")
    _xml.parse_chunk = <ParseChunk>dlsym(handle, b"xmlParseChunk")
    _xml.use_options = <UseOptions>dlsym(handle, b"xmlCtxtUseOptions")
    _xml.free_ctxt = <FreeCtxt>dlsym(handle, b"xmlFreeParserCtxt")
    _xml.free_doc = <FreeDoc>dlsym(handle, b"xmlFreeDoc")
    _xml.stop = <StopParser>dlsym(handle, b"xmlStopParser")
    return (
        _xml.create_push is not NULL and _xml.parse_chunk is not NULL
        and _xml.use_options is not NULL and _xml.free_ctxt is not NULL
        and _xml.free_doc is not NULL and _xml.stop is not NULL
    )


#: Whether records can be read from SAX events (else from lxml's tree, as before).
READS_EVENTS = _load_libxml2()

#: lxml's options for its parsers, without entity substitution (``safe_parser``).
cdef int _OPTIONS = XML_PARSE_NONET | XML_PARSE_NOCDATA | XML_PARSE_COMPACT | XML_PARSE_BIG_LINES
cdef int _MAX_DEPTH = 64
#: libxml2's depth limit without XML_PARSE_HUGE, which its tree builder enforces (nodePush):
#: inside a record no node is built, so the reader enforces it there.
cdef int _MAX_DOCUMENT_DEPTH = 256
#: libxml2's text length limit without XML_PARSE_HUGE, enforced by its tree builder as well.
cdef Py_ssize_t _MAX_TEXT_LENGTH = 10_000_000
cdef Py_ssize_t _MAX_ERRORS = 100
#: The most handed to libxml2 at once: a chunk is fed in pieces of this, whatever its size.
cdef Py_ssize_t _FEED_LIMIT = 1024 * 1024


cdef bint _nil_in(const xmlChar** attributes, int count):
    """Whether SAX2's attributes (5 pointers each) hold xsi:nil="true"."""
    cdef int i
    cdef const xmlChar* uri
    for i in range(count):
        uri = attributes[5 * i + 2]
        if (
            uri is not NULL
            and strcmp(<const char*>attributes[5 * i], b"nil") == 0
            and strcmp(<const char*>uri, XSI) == 0
        ):
            return (
                attributes[5 * i + 4] - attributes[5 * i + 3] == 4
                and memcmp(attributes[5 * i + 3], b"true", 4) == 0
            )
    return False


cdef inline bint _same(const xmlChar* uri, const char* namespace):
    return uri is not NULL and strcmp(<const char*>uri, namespace) == 0


cdef void _doc_destructor(object capsule) noexcept:
    """Frees a document lxml did not take (when it takes one, it clears this)."""
    cdef void* doc = PyCapsule_GetPointer(capsule, b"libxml2:xmlDoc")
    if doc is not NULL:
        _xml.free_doc(<tree.xmlDoc*>doc)


cdef class SaxReader:
    """Feeds a body to a push parser whose records (``record_tag``) go into ``columns``, a
    :class:`StructColumn`, straight from SAX events.

    ``feed`` raises what a record holds wrongly (as the tree's builders do) and libxml2's
    errors (through :func:`extractor.untrusted.parse_failure`); it returns True when the
    first record comes after a DOCTYPE, which the caller judges (``document``) before any
    record is read. ``close`` ends the body and hands out the document, records cut out.
    """

    cdef ParserCtxt* ctxt
    cdef StructColumn columns
    cdef bytes namespace
    cdef bytes local
    cdef StartNs start_default
    cdef EndNs end_default
    cdef Characters characters_default
    cdef Reference reference_default
    cdef void** stack  # the open columns of the record being read
    cdef int depth
    cdef int skipped  # depth inside an element that no column reads
    cdef Py_ssize_t text_run  # bytes of text since the last tag inside a record
    cdef bint judged  # the DOCTYPE was looked for (at the first record)
    cdef tree.xmlNode* records_parent  # the element the last record was read in
    cdef bint doctype  # the first record came after a DOCTYPE: stopped for the caller
    cdef object failure  # what a handler raised
    cdef Py_ssize_t every  # records a part holds
    cdef list parts  # parts cut at a record's end, not yet taken
    cdef list errors  # libxml2's errors: (code, message, line, column)
    cdef bint erred  # one of them an error, not a warning: lxml refuses the document then

    def __cinit__(self):
        self.stack = <void**>realloc(NULL, _MAX_DEPTH * sizeof(void*))
        if self.stack is NULL:
            raise MemoryError()

    def __init__(self, StructColumn columns, str record_tag, Py_ssize_t every):
        if not READS_EVENTS:
            raise RuntimeError("lxml's libxml2 does not export its push parser")
        namespace, _, local = record_tag[1:].partition("}")
        self.columns, self.namespace, self.local = columns, namespace.encode(), local.encode()
        self.every, self.parts = every, []
        self.errors = []
        self.ctxt = _xml.create_push(NULL, NULL, NULL, 0, NULL)
        if self.ctxt is NULL:
            raise MemoryError()
        _xml.use_options(self.ctxt, _OPTIONS)
        cdef SaxHandler* sax = self.ctxt.sax
        self.start_default, self.end_default = sax.startElementNs, sax.endElementNs
        self.characters_default, self.reference_default = sax.characters, sax.reference
        sax.startElementNs, sax.endElementNs = _start, _end
        sax.characters = sax.ignorableWhitespace = _characters
        sax.cdataBlock = NULL  # CDATA as text (XML_PARSE_NOCDATA)
        sax.reference = _reference
        sax.comment = NULL  # comments and processing instructions dropped, as lxml's
        sax.processingInstruction = NULL  # safe_parser drops them: the text around joins
        sax.serror = _error
        self.ctxt._private = <void*>self

    def __dealloc__(self):
        self._free()
        free(self.stack)

    cdef void _free(self):
        if self.ctxt is not NULL:
            if self.ctxt.myDoc is not NULL:
                _xml.free_doc(self.ctxt.myDoc)
                self.ctxt.myDoc = NULL
            _xml.free_ctxt(self.ctxt)
            self.ctxt = NULL

    def feed(self, bytes chunk):
        self._parse(chunk, len(chunk), 0, "response is not well-formed XML")
        return self.doctype

    def take_parts(self):
        """The parts of ``every`` records cut since the last call, each at a record's end
        (a chunk ends anywhere: a part taken then would hold half a record's fields)."""
        parts, self.parts = self.parts, []
        return parts

    def close(self):
        """The body is complete: the document (an lxml element tree), records cut out."""
        self._parse(b"", 0, 1, "response ended before the XML document was complete")
        return self.document()

    def document(self):
        """The document so far, as lxml's (the parser is done with it)."""
        if self.ctxt is NULL or self.ctxt.myDoc is NULL:
            raise MalformedResponse("response is not well-formed XML: no document")
        doc, self.ctxt.myDoc = self.ctxt.myDoc, NULL
        capsule = PyCapsule_New(<void*>doc, b"libxml2:xmlDoc", _doc_destructor)
        PyCapsule_SetContext(capsule, <void*><const char*>b"destructor:xmlFreeDoc")
        tree_ = lxml.etree.adopt_external_document(capsule)
        self._free()
        return tree_.getroot()

    cdef int _parse(self, const char* data, Py_ssize_t size, int terminate, str when) except -1:
        if self.ctxt is NULL:
            raise MalformedResponse(f"{when}: the body went on after it ended")
        cdef int code = 0
        cdef Py_ssize_t done = 0, piece
        while True:  # libxml2 refuses to hold over 10 MB of input at once (without HUGE)
            piece = min(size - done, _FEED_LIMIT)
            code = _xml.parse_chunk(
                self.ctxt, data + done, <int>piece, terminate if done + piece == size else 0
            )
            done += piece
            if code or done == size or self.failure is not None or self.doctype:
                break
        if self.failure is not None:
            failure, self.failure = self.failure, None
            self._free()
            raise failure
        if self.doctype:
            return 0
        if code or not self.ctxt.wellFormed or self.erred:
            self._free()
            raise untrusted.parse_failure(self.errors or [(code, "unknown error", 0, 0)], when)
        return 0

    cdef void _fail(self, exc):
        self.failure = exc
        _xml.stop(self.ctxt)

    cdef int _start(
        self, const xmlChar* local, const xmlChar* uri, int count, const xmlChar** attributes
    ) except -1:
        cdef Column top
        self.text_run = 0
        if self.ctxt.nameNr >= _MAX_DOCUMENT_DEPTH:
            raise HostileXml(
                "response refused without expanding it: Excessive depth in document: "
                f"{_MAX_DOCUMENT_DEPTH}, use XML_PARSE_HUGE option"
            )
        if self.skipped:
            self.skipped += 1
            return 0
        if self.depth == 0:  # outside the records: the record itself begins here
            if not self.judged:
                self.judged = True
                if self.ctxt.myDoc is not NULL and self.ctxt.myDoc.intSubset is not NULL:
                    self.doctype = True
                    _xml.stop(self.ctxt)
                    return 0
            self.records_parent = self.ctxt.node
            self.columns.sax_start(local, count, attributes)
            self.stack[0] = <void*>self.columns
            self.depth = 1
            return 0
        top = <Column>self.stack[self.depth - 1]
        child = top.sax_child(local, uri, count, attributes)
        if child is None:
            self.skipped = 1
        elif self.depth == _MAX_DEPTH:
            raise DataError(f"a record nests deeper than {_MAX_DEPTH} elements")
        else:
            self.stack[self.depth] = <void*>child
            self.depth += 1
        return 0

    cdef int _end(self) except -1:
        self.text_run = 0
        if self.skipped:
            self.skipped -= 1
            return 0
        self.depth -= 1
        (<Column>self.stack[self.depth]).sax_end()
        if self.depth == 0 and self.columns.length >= self.every:
            self.parts.append(self.columns._finish())
        return 0


cdef inline bint _is_record(SaxReader reader, const xmlChar* local, const xmlChar* uri):
    return (
        _same(uri, reader.namespace)
        and strcmp(<const char*>local, <const char*>reader.local) == 0
    )


cdef void _start(
    void* ctx, const xmlChar* local, const xmlChar* prefix, const xmlChar* uri, int nb_namespaces,
    const xmlChar** namespaces, int nb_attributes, int nb_defaulted, const xmlChar** attributes
) noexcept:
    cdef ParserCtxt* ctxt = <ParserCtxt*>ctx
    cdef SaxReader reader = <SaxReader>ctxt._private
    if reader.failure is not None:
        return
    # the root is never a record: it stays a node, so that lxml judges it (not SOAP)
    if reader.depth == 0 and (ctxt.node is NULL or not _is_record(reader, local, uri)):
        reader.start_default(
            ctx, local, prefix, uri, nb_namespaces, namespaces, nb_attributes, nb_defaulted,
            attributes,
        )
        return
    try:
        reader._start(local, uri, nb_attributes, attributes)
    except BaseException as exc:
        reader._fail(exc)


cdef void _end(void* ctx, const xmlChar* local, const xmlChar* prefix, const xmlChar* uri) noexcept:
    cdef ParserCtxt* ctxt = <ParserCtxt*>ctx
    cdef SaxReader reader = <SaxReader>ctxt._private
    if reader.failure is not None:
        return
    if reader.depth == 0:
        reader.end_default(ctx, local, prefix, uri)
        return
    try:
        reader._end()
    except BaseException as exc:
        reader._fail(exc)


cdef void _characters(void* ctx, const xmlChar* text, int size) noexcept:
    cdef ParserCtxt* ctxt = <ParserCtxt*>ctx
    cdef SaxReader reader = <SaxReader>ctxt._private
    if reader.failure is not None:
        return
    if reader.depth == 0:
        # the text between records is no one's, and would be one text node growing to the
        # end of the body (libxml2 joins it), past its limit; the tree drops it with them
        if ctxt.node is not reader.records_parent:
            reader.characters_default(ctx, text, size)
        return
    reader.text_run += size  # one text node in the tree (comments dropped, references joined)
    if reader.text_run > _MAX_TEXT_LENGTH:
        reader._fail(HostileXml(
            "response refused without expanding it: Resource limit exceeded: Text node too long,"
            " try XML_PARSE_HUGE"
        ))
    elif not reader.skipped:
        try:
            (<Column>reader.stack[reader.depth - 1]).sax_text(<const char*>text, size)
        except BaseException as exc:
            reader._fail(exc)


cdef void _reference(void* ctx, const xmlChar* name) noexcept:
    cdef ParserCtxt* ctxt = <ParserCtxt*>ctx
    cdef SaxReader reader = <SaxReader>ctxt._private
    if reader.failure is not None:
        return
    if reader.depth == 0:
        if reader.reference_default is not NULL:
            reader.reference_default(ctx, name)
    elif not reader.skipped and isinstance(<Column>reader.stack[reader.depth - 1], TextColumn):
        reader._fail(
            HostileXml(f"an entity reference (&{(<bytes>name).decode()};) in a value; refused")
        )


cdef void _error(void* ctx, const xmlError* error) noexcept:
    cdef ParserCtxt* ctxt = <ParserCtxt*>ctx
    cdef SaxReader reader = <SaxReader>ctxt._private
    if len(reader.errors) >= _MAX_ERRORS:  # the last is the one told: keep it
        reader.errors.pop()
    message = (<bytes>error.message).decode("utf-8", "replace") if error.message else ""
    reader.errors.append((error.code, message.strip(), error.line, error.int2))
    # a namespace error (an undeclared prefix) leaves the document well-formed and the
    # element in no namespace: read on, its value would be dropped as an unknown field
    reader.erred = reader.erred or error.level >= XML_ERR_ERROR
