# cython: language_level=3, boundscheck=False, wraparound=False
"""Column builders over libxml2 nodes: the raw columns of :mod:`extractor.parser` without a
Python object per value.

Each finished record element is appended field by field to Arrow-layout buffers (UTF-8
bytes, int32 offsets, validity bits) grown in C; ``finish`` hands them out as a *raw part*
(:data:`extractor.parser.RawPart`: nested tuples of bytes), which
:func:`extractor.arrow.raw_array` turns into the raw StructArray whose leaves are strings,
the same array the pure-Python collector's records give. No pyarrow here: parser processes
never import it (a third of their memory), and a part pickles to the run's process as is.

Optional: built by ``make install`` when a C compiler and Cython are at hand; the parser
falls back to the pure-Python collector otherwise, and the tests hold both to the same
output. Only node fields are read (through lxml's public C API), no libxml2 function is
called, so nothing links against libxml2 beyond what lxml already loaded.
"""

from libc.stdint cimport INT32_MAX, int32_t, uint8_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memset, strcmp, strlen
from lxml.includes cimport tree
from lxml.includes.etreepublic cimport _Element, import_lxml__etree
from posix.dlfcn cimport RTLD_NOW, dlopen, dlsym

import lxml.etree

from extractor import schema
from extractor.errors import DataError, HostileXml

import_lxml__etree()

cdef extern from "<dlfcn.h>":
    const int RTLD_NOLOAD

cdef extern from "lxml-version.h":
    const char* LXML_VERSION_STRING

#: The lxml whose node layout this module was compiled against.
BUILT_WITH_LXML = LXML_VERSION_STRING.decode()

cdef const char* XSI = b"http://www.w3.org/2001/XMLSchema-instance"

ctypedef void (*FreeNodeList)(tree.xmlNode*)


cdef FreeNodeList _lxml_free_node_list():
    """``xmlFreeNodeList`` of the libxml2 inside the loaded lxml (the one that allocated the
    nodes), or NULL when it does not export it."""
    handle = dlopen(lxml.etree.__file__.encode(), RTLD_NOW | RTLD_NOLOAD)
    if handle is NULL:
        return NULL
    return <FreeNodeList>dlsym(handle, b"xmlFreeNodeList")


cdef FreeNodeList _free_node_list = _lxml_free_node_list()
#: Whether :meth:`StructColumn.add` frees each record's subtree itself.
FREES_SUBTREES = _free_node_list is not NULL


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
    """The buffer's bytes; the builder starts over."""
    out = buf.data[: buf.size] if buf.size else b""
    buf.size = 0
    return out


cdef bint _is_nil(tree.xmlNode* node):
    cdef tree.xmlAttr* attr = node.properties
    while attr is not NULL:
        if (
            strcmp(<const char*>attr.name, b"nil") == 0
            and attr.ns is not NULL
            and strcmp(<const char*>attr.ns.href, XSI) == 0
        ):
            return (
                attr.children is not NULL
                and attr.children.content is not NULL
                and strcmp(<const char*>attr.children.content, b"true") == 0
            )
        attr = attr.next
    return False


cdef inline bint _in(tree.xmlNode* node, const char* namespace):
    return (
        node.type == tree.XML_ELEMENT_NODE
        and node.ns is not NULL
        and strcmp(<const char*>node.ns.href, namespace) == 0
    )


cdef class Column:
    """One field's values being built: validity bits, and what the subclass adds."""

    cdef Buffer validity
    cdef Py_ssize_t length
    cdef Py_ssize_t null_count

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

    cdef int append_node(self, tree.xmlNode* node) except -1:
        raise NotImplementedError

    cdef int append_null(self) except -1:
        raise NotImplementedError

    cdef object _finish(self):
        raise NotImplementedError

    cdef object _start_over(self):
        """The validity bitmap as an Arrow buffer and (length, null count); the builder resets."""
        length, nulls = self.length, self.null_count
        bitmap = _take(&self.validity) if nulls else None
        self.validity.size = 0
        self.length = self.null_count = 0
        return bitmap, length, nulls

    def add(self, _Element elem):
        self.append_node(elem._c_node)

    def __len__(self):
        return self.length

    def finish(self):
        """Everything added so far as one raw part; the builder starts over."""
        return self._finish()


cdef str _holds_element(tree.xmlNode* node, tree.xmlNode* child):
    return (
        f"{(<bytes>node.name).decode()} holds an element (<{(<bytes>child.name).decode()}>) "
        "where a value belongs"
    )


cdef class TextColumn(Column):
    """A scalar field: the element's text and CDATA as UTF-8, "" when empty, null when nil."""

    cdef Buffer offsets
    cdef Buffer data

    def __cinit__(self):
        _append_offset(&self.offsets, 0)

    def __dealloc__(self):
        free(self.offsets.data)
        free(self.data.data)

    cdef int append_node(self, tree.xmlNode* node) except -1:
        cdef tree.xmlNode* child = node.children
        cdef bint has_text = False
        cdef const char* content
        while child is not NULL:
            if child.type == tree.XML_TEXT_NODE or child.type == tree.XML_CDATA_SECTION_NODE:
                content = <const char*>child.content
                _append(&self.data, content, strlen(content))
                has_text = True
            elif child.type == tree.XML_ELEMENT_NODE:
                raise DataError(_holds_element(node, child))
            elif child.type == tree.XML_ENTITY_REF_NODE:
                raise HostileXml(f"an entity reference (&{(<bytes>child.name).decode()};) in a value; refused")
            child = child.next
        if not has_text and _is_nil(node):
            return self.append_null()
        _append_offset(&self.offsets, self.data.size)
        return self._slot(True)

    cdef int append_null(self) except -1:
        _append_offset(&self.offsets, self.data.size)
        return self._slot(False)

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

    def add(self, _Element elem):
        """Append the record, then free its subtree (read; no Python proxy points into it).

        lxml's ``clear`` does the same, but checks every node for proxies and moves it to a
        new document first, which costs a quarter of the parse.
        """
        cdef tree.xmlNode* node = elem._c_node
        cdef tree.xmlNode* children
        self.append_node(node)
        if _free_node_list is not NULL and node.children is not NULL:
            children = node.children
            node.children = node.last = NULL
            _free_node_list(children)

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

    cdef int append_node(self, tree.xmlNode* node) except -1:
        cdef tree.xmlNode* child = node.children
        cdef const char* namespace = self.namespace
        cdef Py_ssize_t pos, next_pos = 0
        cdef bint matched = False
        memset(self.seen, 0, self.width)
        while child is not NULL:
            if _in(child, namespace):
                pos = self._find(<const char*>child.name, next_pos)
                if pos >= 0:  # else a field newer than the shipped WSDL
                    if self.seen[pos]:
                        raise DataError(
                            f"{self.type_name}.{self.names[pos].decode()} appears twice in one record"
                        )
                    self.seen[pos] = 1
                    (<Column>self.children[pos]).append_node(child)
                    matched = True
                    next_pos = pos + 1
            child = child.next
        if not matched and _is_nil(node):
            return self.append_null()
        for pos in range(self.width):
            if not self.seen[pos]:
                (<Column>self.children[pos]).append_null()
        return self._slot(True)

    cdef int append_null(self) except -1:
        cdef Py_ssize_t pos
        for pos in range(self.width):
            (<Column>self.children[pos]).append_null()
        return self._slot(False)

    cdef object _finish(self):
        bitmap, length, nulls = self._start_over()
        children = [(<Column>child)._finish() for child in self.children]
        return ("t", length, nulls, bitmap, children)


cdef class ListColumn(Column):
    """An ``ArrayOfX``: offsets into one item column; null when nil and empty."""

    cdef Buffer offsets
    cdef Column item
    cdef bytes item_tag
    cdef bytes namespace
    cdef Py_ssize_t items

    def __init__(self, ftype, str namespace):
        self.namespace = namespace.encode()
        self.item_tag = ftype.item_tag.encode()
        self.item = column_for(ftype.item, namespace)
        _append_offset(&self.offsets, 0)

    def __dealloc__(self):
        free(self.offsets.data)

    cdef int append_node(self, tree.xmlNode* node) except -1:
        if node.children is NULL and _is_nil(node):
            return self.append_null()
        cdef tree.xmlNode* child = node.children
        cdef const char* namespace = self.namespace
        cdef const char* tag = self.item_tag
        while child is not NULL:
            if _in(child, namespace) and strcmp(<const char*>child.name, tag) == 0:
                self.item.append_node(child)
                self.items += 1
            child = child.next
        _append_offset(&self.offsets, self.items)
        return self._slot(True)

    cdef int append_null(self) except -1:
        _append_offset(&self.offsets, self.items)
        return self._slot(False)

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
