"""Parsing XML that came from the network.

UPnP documents never need a DTD, so any DTD is refused outright: that rules out entity
expansion (billion laughs) and external entities (XXE) without relying on parser defaults.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

from .errors import RouterProtocolError

MAX_DOCUMENT_BYTES = 1 << 20


def parse(data: bytes | str, what: str) -> Element:
    """The root element of `data`; RouterProtocolError naming `what` if it is unsafe or malformed."""
    import defusedxml
    from defusedxml.ElementTree import ParseError, fromstring

    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise RouterProtocolError(f"{what} is larger than {MAX_DOCUMENT_BYTES} bytes; refused")
    try:
        return fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)  # type: ignore[no-any-return]
    except defusedxml.DefusedXmlException as exc:
        raise RouterProtocolError(f"{what} contains a DTD or entities; refused ({exc})") from exc
    except ParseError as exc:
        raise RouterProtocolError(f"{what} is not well-formed XML: {exc}") from exc


def local(tag: str) -> str:
    """The tag without its namespace: routers disagree on namespaces, never on local names."""
    return tag.rsplit("}", 1)[-1]


def children(element: Element, name: str) -> list[Element]:
    return [e for e in element if local(e.tag) == name]


def text(element: Element, name: str) -> str:
    for e in element:
        if local(e.tag) == name:
            return (e.text or "").strip()
    return ""


def printable(value: str, limit: int = 200) -> str:
    """`value` safe to print or log: control and other invisible characters become \\xNN or \\uNNNN
    escapes (no terminal escape sequences, no forged log lines), cut to `limit` characters."""
    value = value[:limit]
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in value)
