"""The ownership tag: how a mapping on the router says which manifest owns it.

There is no state file; the router's descriptions are the inventory. A description portctl writes is

    pc:OOOOKKKK [!]NAME[ DESCRIPTION]

OOOO is a hash of the owner, KKKK a hash of the owner and the mapping's external port and
protocol. The tag is 11 characters so it survives routers that cut descriptions to 16; binding it
to the port means a tag copied onto another port or protocol no longer matches and that mapping
counts as foreign. The name follows in clear text for people reading `upnpc -l`; a "!" before it
marks a protected mapping, which prune and destroy never delete. The mark lives on the router
because a mapping removed from the manifest must still be known to be protected.
"""

from __future__ import annotations

import base64
import hashlib

from .models import MappingKey

PREFIX = "pc:"
PROTECTED = "!"
TAG_LENGTH = len(PREFIX) + 8
# miniupnpd 2.3.1 returns garbage past 63 bytes; most routers keep at least this much.
MAX_DESCRIPTION_BYTES = 63


def _code(*parts: str) -> str:
    digest = hashlib.blake2s("\x00".join(parts).encode(), digest_size=5).digest()
    return base64.b32encode(digest).decode().lower()[:4]


def tag(owner: str, key: MappingKey) -> str:
    return f"{PREFIX}{_code(owner)}{_code(owner, str(key.external_port), key.protocol.value)}"


def describe(owner: str, key: MappingKey, name: str, description: str = "", *, protect: bool = False) -> str:
    """The router description for a mapping this owner makes."""
    text = f"{tag(owner, key)} {PROTECTED if protect else ''}{name}"
    return f"{text} {description}" if description else text


def owned_name(owner: str, key: MappingKey, description: str) -> str | None:
    """The mapping's name if `description` carries this owner's tag for this key, else None.

    An owned mapping whose name was cut off by the router gives "".
    """
    expected = tag(owner, key)
    if not description.startswith(expected):
        return None
    rest = description[len(expected) :]
    if rest and not rest.startswith(" "):
        return None
    return rest[1:].split(" ", 1)[0].removeprefix(PROTECTED)


def is_protected(description: str) -> bool:
    """Does this (owned) row carry the protected mark?"""
    return description[TAG_LENGTH : TAG_LENGTH + 2] == f" {PROTECTED}"


def is_owned(owner: str, key: MappingKey, description: str) -> bool:
    return owned_name(owner, key, description) is not None
