"""The ownership tag: how a mapping on the router says which manifest owns it. The only module
that knows the format; everything else asks `claim`.

There is no state file; the router's descriptions are the inventory. A description portctl writes is

    pc:CCCCCCCCCCCCCCCCCCCCCCCC [!]NAME[ DESCRIPTION]

C... is 24 base32 characters (120 bits) of a hash of the owner, the external port and the
protocol. 120 bits put a pair of owners whose tags collide beyond any search, and binding the
code to the port and protocol means a tag copied onto another port no longer matches and that
mapping counts as foreign. The name follows in clear text for people reading `upnpc -l`; a "!"
before it marks a protected mapping, which prune and destroy never delete. The mark lives on the
router because a mapping removed from the manifest must still be known to be protected.

Before, the tag was `pc:OOOOKKKK`: 20 bits of the owner and 20 of owner, port and protocol, few
enough that owner names whose tags collide are found in seconds. Such legacy rows are still
claimed, so an upgrade orphans nothing, but only where the name in clear text is one the manifest
places at that port: the planner then re-tags them.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass

from .models import MappingKey

PREFIX = "pc:"
PROTECTED = "!"
CODE_CHARS = 24  # base32: 5 bits each, 120 bits
TAG_LENGTH = len(PREFIX) + CODE_CHARS
# Routers that cut descriptions to 16 bytes keep "pc:" and 13 characters of the code: 65 bits,
# still far beyond a search for a colliding owner. A description cut shorter is never claimed.
MIN_KEPT = 16
# miniupnpd 2.3.1 returns garbage past 63 bytes; most routers keep at least this much.
MAX_DESCRIPTION_BYTES = 63
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,23}")  # the schema's pattern for a mapping name


@dataclass(frozen=True)
class Claim:
    """What an owned row's description says about it."""

    name: str  # "" when the router cut the name off
    protected: bool
    legacy: bool = False  # carries the old 8-character tag: re-tag it
    through: str = ""  # made through PCP with this owner's nonce, as miniupnpd lists it: re-tag it
    here: bool = False  # this installation's own record says it made the row (an inventory's claim)


def code(owner: str, key: MappingKey) -> str:
    """The 120-bit code of `owner`'s mapping at `key`."""
    # Length-prefixed, so no two (owner, port, protocol) triples hash the same input.
    data = f"{len(owner)}:{owner}/{key.external_port}/{key.protocol.value}".encode()
    digest = hashlib.blake2b(data, digest_size=CODE_CHARS * 5 // 8, person=b"portctl-tag-v2").digest()
    return base64.b32encode(digest).decode().lower()


def tag(owner: str, key: MappingKey) -> str:
    return PREFIX + code(owner, key)


def legacy_tag(owner: str, key: MappingKey) -> str:
    """The tag portctl wrote before: only recognised, never written."""

    def part(*parts: str) -> str:
        digest = hashlib.blake2s("\x00".join(parts).encode(), digest_size=5).digest()
        return base64.b32encode(digest).decode().lower()[:4]

    return f"{PREFIX}{part(owner)}{part(owner, str(key.external_port), key.protocol.value)}"


def describe(owner: str, key: MappingKey, name: str, description: str = "", *, protect: bool = False) -> str:
    """The router description for a mapping this owner makes."""
    text = f"{tag(owner, key)} {PROTECTED if protect else ''}{name}"
    return f"{text} {description}" if description else text


def claim(owner: str, key: MappingKey, description: str, names: Collection[str] = (), cut: int = 0) -> Claim | None:
    """What `description` says if it is `owner`'s mapping at `key`; None if it is not ours.

    `names` are the names the manifest may place at `key`, and `cut` the length the router is
    known to cut descriptions to (0: not known). A row whose clear text is malformed is not
    claimed; a legacy row only when its clear-text name is one of `names` (or, where the router
    cut it, the start of one).
    """
    if not description.startswith(PREFIX):
        return None
    head, space, rest = description.partition(" ")
    found = head[len(PREFIX) :]
    if found == code(owner, key):
        return _clear_text(rest) if space else Claim("", False)
    if not space and MIN_KEPT <= len(description) < TAG_LENGTH and code(owner, key).startswith(found):
        return Claim("", False)  # the router cut the tag itself; what it kept is enough
    if head == legacy_tag(owner, key) and space:
        said = _clear_text(rest)
        if said is None or not said.name:
            return None
        cut_short = cut > 0 and len(description) == cut and " " not in rest.removeprefix(PROTECTED)
        if said.name in names or (cut_short and any(n.startswith(said.name) for n in names)):
            return Claim(said.name, said.protected, legacy=True)
    return None


def _clear_text(rest: str) -> Claim | None:
    """`[!]NAME[ DESCRIPTION]`, possibly cut anywhere by the router; None if malformed."""
    protected = rest.startswith(PROTECTED)
    name, space, _ = rest.removeprefix(PROTECTED).partition(" ")
    if name and not _NAME.fullmatch(name):
        return None
    if not name and space:
        return None  # a space where the name belongs
    return Claim(name, protected)


def is_protected(description: str) -> bool:
    """Does this (owned) row carry the protected mark?"""
    return description.startswith(PREFIX) and description.partition(" ")[2].startswith(PROTECTED)


def is_owned(owner: str, key: MappingKey, description: str, names: Collection[str] = ()) -> bool:
    return claim(owner, key, description, names) is not None
