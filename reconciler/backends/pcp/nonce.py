"""Each PCP mapping's nonce, and the descriptions miniupnpd gives PCP and NAT-PMP mappings.

PCP lets only the holder of a mapping's nonce renew or delete it (another nonce gets NOT_AUTHORIZED),
and no router lists PCP mappings. So the nonce is derived, not stored: an HMAC of the mapping's
owner, name, protocol and internal port under a secret kept in the cache directory. The same
mapping always gets the same nonce, and a restarted portctl recognises its own mappings. The secret
keeps other hosts from deriving the nonce of a mapping ahead of time; it is no access control once
the mapping exists: miniupnpd prints each PCP mapping's nonce in its UPnP table, readable by the LAN.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import struct
from typing import Literal

from reconciler.errors import PortctlError

from .wire import NONCE_SIZE

SECRET_FILE = "pcp-secret"
SECRET_SIZE = 32
_CONTEXT = b"portctl PCP nonce v1\0"


class SecretError(PortctlError):
    """The nonce secret cannot be read or made; without it portctl cannot recognise its PCP mappings."""


def load_secret(directory: str) -> bytes:
    """The secret in `directory`, made on first use: random, mode 0600, and created atomically, so
    two portctl processes starting at once end up with the same secret."""
    path = os.path.join(directory, SECRET_FILE)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not os.path.exists(path):
            _create(directory, path)
        with open(path, "rb") as f:
            _private(path, os.fstat(f.fileno()))
            secret = f.read(SECRET_SIZE + 1)
    except OSError as exc:
        raise SecretError(f"{path}: cannot read or create the PCP nonce secret: {exc.strerror or exc}") from exc
    if len(secret) != SECRET_SIZE:
        raise SecretError(
            f"{path}: the PCP nonce secret has {len(secret)} bytes, not {SECRET_SIZE}; "
            "restore it from a backup (a new one would orphan every PCP mapping made with the old one)"
        )
    return secret


def _private(path: str, stat: os.stat_result) -> None:
    """Refuse a secret others can read or that another user owns: a copy restored with the wrong mode
    would keep working while anyone on the host could derive every nonce."""
    if stat.st_mode & 0o077 or stat.st_uid != os.geteuid():
        raise SecretError(
            f"{path}: the PCP nonce secret must be this user's alone (mode 0600); it is mode "
            f"{stat.st_mode & 0o777:o}, owned by uid {stat.st_uid}: chmod 600 it (and chown it) if it is yours"
        )


def _create(directory: str, path: str) -> None:
    # Written in full under a temporary name, then linked into place: link fails if another process
    # got there first, and then its secret stands. Nobody ever reads a half-written secret.
    import tempfile  # only the first run makes a secret; a warm plan that checks PCP rows never does

    fd, tmp = tempfile.mkstemp(prefix=f".{SECRET_FILE}.", dir=directory)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(SECRET_SIZE))
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def mapping_nonce(secret: bytes, owner: str, name: str, protocol: str, internal_port: int) -> bytes:
    """The 96-bit nonce of the mapping (owner, name, protocol, internal port)."""
    identity = json.dumps([owner, name, protocol.upper(), internal_port]).encode()
    return hmac.new(secret, _CONTEXT + identity, hashlib.sha256).digest()[:NONCE_SIZE]


def pinhole_nonce(secret: bytes, key: str) -> bytes:
    """The 96-bit nonce of the IPv6 pinhole `key` (its text: client, port, protocol, remote). No owner
    in it: the router holds one pinhole per key for every owner on this host, and the pinhole
    inventory, not the nonce, says which owners hold it."""
    return hmac.new(secret, _CONTEXT + json.dumps(["pinhole", key]).encode(), hashlib.sha256).digest()[:NONCE_SIZE]


def miniupnpd_description(nonce: bytes, byteorder: Literal["little", "big"] = "little") -> str:
    """How miniupnpd describes a PCP mapping in its UPnP table: `PCP MAP ` and the nonce as three
    32-bit words, each printed in the router's own byte order (little on x86 and most ARM/MIPS-el
    routers, big on big-endian MIPS)."""
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"a PCP nonce has {NONCE_SIZE} bytes, not {len(nonce)}")
    words = struct.unpack("<3I" if byteorder == "little" else ">3I", nonce)
    return "PCP MAP " + "".join(f"{word:08x}" for word in words)


def natpmp_description(external_port: int, protocol: str) -> str:
    """How miniupnpd describes a NAT-PMP mapping in its UPnP table (by the external port granted)."""
    return f"NAT-PMP {external_port} {protocol.lower()}"


class Recogniser:
    """The descriptions miniupnpd lists for the PCP mappings this host made, for a reader of the UPnP
    table (ownerstore.TagStore). The secret in `directory` is read at the first question and never
    made: without one, no PCP mapping is this host's. miniupnpd prints the nonce in its own byte
    order, unknown over UPnP, so both are answered (96 bits of HMAC either way)."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self._secret: bytes | None = None
        self._read = False

    def __call__(self, owner: str, name: str, protocol: str, internal_port: int) -> frozenset[str]:
        secret = self._load()
        if secret is None:
            return frozenset()
        n = mapping_nonce(secret, owner, name, protocol, internal_port)
        return frozenset(miniupnpd_description(n, order) for order in ("little", "big"))

    def _load(self) -> bytes | None:
        if not self._read:
            there = self.directory is not None and os.path.exists(os.path.join(self.directory, SECRET_FILE))
            self._secret = load_secret(self.directory) if there and self.directory else None
            self._read = True
        return self._secret
