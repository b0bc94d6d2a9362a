"""UPnP control messages (UDA 1.1 section 3.2): the request envelope and reading the answer.

The answer is parsed by `xmlsafe` (no DTD, no entities, size-capped) whatever its layout: faults are
found by local name wherever the router put them, because routers disagree on prefixes and nesting.
"""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element, tostring

from .. import xmlsafe
from ..errors import HttpStatusError, RouterProtocolError, UpnpActionError
from ..numbers import NotANumber, ascii_int

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
ENCODING_STYLE = "http://schemas.xmlsoap.org/soap/encoding/"
# Characters XML 1.0 forbids. miniupnpd 2.3.1 pads descriptions of 64+ bytes with memory garbage;
# one such foreign row must not make the whole table unreadable.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def escape(text: str) -> str:
    """What xml.sax.saxutils.escape does, byte for byte, without the urllib.request it imports."""
    return text.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")


def envelope(service_type: str, action: str, args: dict[str, str]) -> bytes:
    """The request body. Strict routers want the action element prefixed and no leading whitespace."""
    values = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in args.items())
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<s:Envelope xmlns:s="{SOAP_ENV}" s:encodingStyle="{ENCODING_STYLE}">'
        f'<s:Body><u:{action} xmlns:u="{escape(service_type)}">{values}</u:{action}></s:Body></s:Envelope>'
    ).encode()


def headers(service_type: str, action: str) -> dict[str, str]:
    return {"SOAPAction": f'"{service_type}#{action}"', "Content-Type": 'text/xml; charset="utf-8"'}


def answer(action: str, status: int, body: bytes) -> dict[str, str]:
    """The output arguments of a successful call; UpnpActionError for a UPnP fault, else RouterProtocolError."""
    try:
        root = xmlsafe.parse(_legible(body), "it")
    except RouterProtocolError as exc:
        if status != 200:
            raise HttpStatusError(f"{action} failed: HTTP {status} without a UPnP error code", status) from None
        raise RouterProtocolError(f"{action}: malformed answer from the router ({exc})") from None
    fault = _fault(root, action)
    if fault is not None:
        code, description = fault
        raise UpnpActionError(action, code, description)
    if status != 200:
        raise HttpStatusError(f"{action} failed: HTTP {status} without a UPnP error code", status)
    response = next((e for e in root.iter() if xmlsafe.local(e.tag) == f"{action}Response"), None)
    if response is None:
        raise RouterProtocolError(f"{action}: malformed answer from the router (no {action}Response element)")
    return {xmlsafe.local(arg.tag): _value(arg) for arg in response}


def _fault(root: Element, action: str) -> tuple[int, str] | None:
    fault = next((e for e in root.iter() if xmlsafe.local(e.tag) == "Fault"), None)
    if fault is None:
        return None
    error = next((e for e in fault.iter() if xmlsafe.local(e.tag) == "UPnPError"), fault)
    code = next((e.text or "" for e in error.iter() if xmlsafe.local(e.tag) == "errorCode"), "").strip()
    description = next((e.text or "" for e in error.iter() if xmlsafe.local(e.tag) == "errorDescription"), "")
    try:
        number = ascii_int(code, max_digits=4)
    except NotANumber as exc:
        raise RouterProtocolError(
            f"{action}: malformed answer from the router (a SOAP fault without a UPnP error code: errorCode {exc})"
        ) from None
    return number, xmlsafe.printable(description.strip())


def _value(arg: Element) -> str:
    # Some routers put XML values (NewPortListing) in unescaped: give them back as text.
    if len(arg):
        return "".join(tostring(child, encoding="unicode") for child in arg)
    return arg.text or ""


def _legible(body: bytes) -> bytes:
    text = body.decode("utf-8", "replace")
    return _NOT_XML.sub("\ufffd", text).encode()
