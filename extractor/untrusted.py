"""What a response may not do to us: the only parser libxml2 is given, and what its errors mean.

The parser loads nothing and resolves nothing (no DTD, no entities, no network); a DOCTYPE on
a SOAP envelope, or a DTD that declares anything, is hostile and refused without expanding it;
a page that is not SOAP is only the wrong answer (retried); a body that stops is broken
(retried), never a short result.
"""

from __future__ import annotations

from typing import Any, Final

from lxml import etree

from extractor.errors import HostileXml, MalformedResponse

SOAP_NAMESPACES: Final = frozenset(
    {"http://schemas.xmlsoap.org/soap/envelope/", "http://www.w3.org/2003/05/soap-envelope"}
)
_HOSTILE_ERRORS: Final = ("ENTITY", "DTD", "DOCTYPE", "ERR_RESOURCE_LIMIT")
_ERROR_NAMES: Final = {
    value: name for name, value in vars(etree.ErrorTypes).items() if isinstance(value, int)
}


def safe_parser(**options: Any) -> etree.XMLPullParser:
    """A pull parser that can neither load nor resolve anything: no DTD, no entity
    substitution, no network, libxml2's own size limits kept. Comments and processing
    instructions are dropped, so the text around them joins (one rule for both readers)."""
    return etree.XMLPullParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        **options,
    )


def refuse_doctype(root: etree._Element) -> None:
    """Judged by the parser, whatever the encoding or what precedes it: a DOCTYPE on a SOAP
    envelope, or any DTD that declares something, is hostile; a plain DOCTYPE on a page
    that is not SOAP (a proxy's XHTML) is only the wrong answer."""
    info: Any = root.getroottree().docinfo  # lxml-stubs lack doctype and DTD.iterentities
    if not info.doctype and info.internalDTD is None:
        return
    dtd: Any = info.internalDTD
    declares = dtd is not None and (list(dtd.iterentities()) or list(dtd.iterelements()))
    if declares or is_envelope(root):
        raise HostileXml(
            f"response declares a DTD ({info.doctype[:80]}); refused without expanding it"
        )
    raise not_soap(root)


def refuse_unless_soap(root: etree._Element) -> None:
    """A whole document judged: a DOCTYPE (:func:`refuse_doctype`), then a root that is not
    a SOAP envelope (the wrong answer, retried)."""
    refuse_doctype(root)
    if not is_envelope(root):
        raise not_soap(root)


def not_soap(root: etree._Element) -> MalformedResponse:
    name = etree.QName(root).localname
    return MalformedResponse(
        f"HTTP 200 but not a SOAP response (a document whose root is '{name}')"
    )


def is_envelope(root: etree._Element) -> bool:
    name = etree.QName(root)
    return name.localname == "Envelope" and name.namespace in SOAP_NAMESPACES


def syntax_error(exc: etree.XMLSyntaxError, when: str) -> HostileXml | MalformedResponse:
    """A libxml2 error as what it means: entity and DTD trouble (amplification included) is
    hostile XML, anything else a broken (retryable) body.

    The error's log is the thread's, which keeps the errors of every earlier document parsed
    on it (a refused DOCTYPE, an undeclared entity): :class:`~extractor.parser.RecordStream`
    clears it when a
    document begins, or a body cut off after any of those would be called hostile and stop
    the run. (Documents parsed interleaved on one thread still share it.)"""
    error: Any = exc  # lxml-stubs lack code and the log's iteration
    return _failure([error.code, *(entry.type for entry in error.error_log)], str(exc), when)


def parse_failure(
    errors: list[tuple[int, str, int, int]], when: str
) -> HostileXml | MalformedResponse:
    """libxml2's errors of one document, as the compiled SAX reader collects them (code,
    message, line, column; the last is the one told), judged as :func:`syntax_error` judges
    lxml's."""
    _, message, line, column = errors[-1]
    told = f"{message}, line {line}, column {column}" if line else message
    return _failure([code for code, *_ in errors], told, when)


def _failure(codes: list[int], told: str, when: str) -> HostileXml | MalformedResponse:
    names = [_ERROR_NAMES.get(code, "") for code in codes]
    # a body cut off inside "&amp;" is broken, not hostile: entity *references* gone wrong
    # are syntax (ERR_ENTITYREF_AT_EOF, _SEMICOL_MISSING, ...); declarations are not
    names = [name for name in names if not name.startswith("ERR_ENTITYREF_")]
    if any(marker in name for name in names for marker in _HOSTILE_ERRORS):
        return HostileXml(f"response refused without expanding it: {told}")
    return MalformedResponse(f"{when}: {told}")
