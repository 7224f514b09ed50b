# cython: language_level=3, boundscheck=False, wraparound=False
"""Readers over libxml2 nodes: the raw values of :mod:`extractor.parser`, without a Python
object per element.

Optional: built by ``make install`` when a C compiler and Cython are at hand; the parser
falls back to its pure-Python readers otherwise, and the tests hold both to the same output.
Only node fields are read (through lxml's public C API), no libxml2 function is called, so
nothing links against libxml2 beyond what lxml already loaded.
"""

from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport strcmp, strlen
from lxml.includes cimport tree
from lxml.includes.etreepublic cimport _Element, import_lxml__etree

from extractor import schema

import_lxml__etree()

cdef extern from "lxml-version.h":
    const char* LXML_VERSION_STRING

#: The lxml whose node layout this module was compiled against.
BUILT_WITH_LXML = LXML_VERSION_STRING.decode()

cdef bytes XSI = b"http://www.w3.org/2001/XMLSchema-instance"


cdef inline object _decode(const tree.xmlChar* text):
    return PyUnicode_DecodeUTF8(<const char*>text, strlen(<const char*>text), NULL)


cdef object _text(tree.xmlNode* node):
    """The element's text and CDATA, joined; None when it has none."""
    cdef tree.xmlNode* child = node.children
    cdef object first = None
    cdef list parts = None
    while child is not NULL:
        if child.type == tree.XML_TEXT_NODE or child.type == tree.XML_CDATA_SECTION_NODE:
            if first is None:
                first = _decode(child.content)
            else:
                if parts is None:
                    parts = [first]
                parts.append(_decode(child.content))
        child = child.next
    return first if parts is None else "".join(parts)


cdef bint _is_nil(tree.xmlNode* node):
    cdef tree.xmlAttr* attr = node.properties
    cdef const char* xsi = XSI
    while attr is not NULL:
        if (
            strcmp(<const char*>attr.name, b"nil") == 0
            and attr.ns is not NULL
            and strcmp(<const char*>attr.ns.href, xsi) == 0
        ):
            return (
                attr.children is not NULL
                and attr.children.content is not NULL
                and strcmp(<const char*>attr.children.content, b"true") == 0
            )
        attr = attr.next
    return False


cdef inline object _scalar(tree.xmlNode* node):
    text = _text(node)
    if text is None:
        return None if _is_nil(node) else ""
    return text


cdef inline bint _in(tree.xmlNode* node, const char* namespace):
    return (
        node.type == tree.XML_ELEMENT_NODE
        and node.ns is not NULL
        and strcmp(<const char*>node.ns.href, namespace) == 0
    )


cdef class NodeReader:
    cdef bytes namespace

    cdef object read(self, tree.xmlNode* node):
        raise NotImplementedError

    def __call__(self, _Element elem):
        return self.read(elem._c_node)


cdef class StructReader(NodeReader):
    cdef dict scalars
    cdef dict complex
    cdef Py_ssize_t width

    def __init__(self, struct, str namespace):
        self.namespace = namespace.encode()
        self.width = len(struct.fields)
        self.scalars, self.complex = {}, {}
        for pos, f in enumerate(struct.fields):
            read = compile_reader(f.type, namespace)
            if read is None:
                self.scalars[f.name.encode()] = pos
            else:
                self.complex[f.name.encode()] = (pos, read)

    cdef object read(self, tree.xmlNode* node):
        cdef list values = [None] * self.width
        cdef tree.xmlNode* child = node.children
        cdef const char* namespace = self.namespace
        cdef bint matched = False
        while child is not NULL:
            if _in(child, namespace):
                name = <bytes>(<const char*>child.name)
                pos = self.scalars.get(name)
                if pos is not None:
                    values[pos] = _scalar(child)
                    matched = True
                else:
                    entry = self.complex.get(name)
                    if entry is not None:  # else a field newer than the shipped WSDL
                        values[entry[0]] = (<NodeReader>entry[1]).read(child)
                        matched = True
            child = child.next
        if not matched and _is_nil(node):
            return None
        return values


cdef class ListReader(NodeReader):
    cdef bytes item_tag
    cdef NodeReader item

    def __init__(self, ftype, str namespace):
        self.namespace = namespace.encode()
        self.item_tag = ftype.item_tag.encode()
        self.item = compile_reader(ftype.item, namespace)

    cdef object read(self, tree.xmlNode* node):
        if node.children is NULL and _is_nil(node):
            return None
        cdef list items = []
        cdef tree.xmlNode* child = node.children
        cdef const char* namespace = self.namespace
        cdef const char* tag = self.item_tag
        while child is not NULL:
            if _in(child, namespace) and strcmp(<const char*>child.name, tag) == 0:
                items.append(_scalar(child) if self.item is None else self.item.read(child))
            child = child.next
        return items


def compile_reader(ftype, str namespace):
    """A reader for a complex type; None for scalars, which struct readers read inline."""
    if isinstance(ftype, schema.Struct):
        return StructReader(ftype, namespace)
    if isinstance(ftype, schema.ListOf):
        return ListReader(ftype, namespace)
    return None
