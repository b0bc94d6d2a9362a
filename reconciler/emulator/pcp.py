"""PCP version 2 (RFC 6887) and NAT-PMP version 0 (RFC 6886) answered on the router's own table.

`Responder.answer` takes one datagram and its sender and gives the datagram to send back (None:
silently dropped, as the RFCs ask for what is not a request). Mappings made here are rows of the
UPnP table, described as miniupnpd describes them (`PCP MAP <nonce>`, `NAT-PMP <port> <proto>`),
so a UPnP listing shows them and a UPnP delete removes them. The semantics are miniupnpd 2.3.1's,
as measured (../shared/PROTOCOL-NOTES.md and tests/test_real_pcp.py):

- a mapping is this host's (protocol, internal port); a MAP from the same host with another nonce
  takes it over; a delete (lifetime 0) with another nonce is NOT_AUTHORIZED;
- a suggested external port another mapping holds moves to the next free one, PREFER_FAILURE or
  not; a port the rules deny fails with CANNOT_PROVIDE_EXTERNAL under PREFER_FAILURE, else moves;
- THIRD_PARTY is UNSUPP_OPTION (pcp_allow_thirdparty=no) unless the profile's pcp_third_party
  says the router maps for other hosts: then the mapping is the named host's, as if it had asked;
- a padded option is MALFORMED_OPTION;
- PCP lifetimes are held to 120..86400 s; error answers carry lifetime 0;
- NAT-PMP for an internal port this host already maps (a UPnP mapping included) takes that row over.

The wire layouts are wire.py's (the client's codec), read the other way round.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from ..backends.pcp import wire
from ..backends.pcp.nonce import miniupnpd_description, natpmp_description
from ..backends.pcp.wire import (
    _HEADER,
    _MAP,
    _NATPMP_ADDRESS,
    _NATPMP_HEADER,
    _NATPMP_MAP,
    _NATPMP_MAPPED,
    _OPTION,
    _RESPONSE_HEADER,
)
from .router import Entry, Router, _permitted

MIN_LIFETIME = 120  # miniupnpd's min_lifetime and max_lifetime defaults
MAX_LIFETIME = 86400
_PROTOCOLS = {int(wire.IpProtocol.TCP): "TCP", int(wire.IpProtocol.UDP): "UDP"}
_MANDATORY_OPTION = 128  # option codes below this must be understood (RFC 6887 section 7.3)


class _Refused(Exception):
    def __init__(self, result: int) -> None:
        super().__init__(result)
        self.result = result


@dataclass(frozen=True)
class _Map:
    nonce: bytes
    protocol: int
    internal_port: int
    external_port: int
    external_address: bytes
    lifetime: int
    prefer_failure: bool


class Responder:
    """Answers PCP and NAT-PMP for `router`, as its profile says; counts what it was asked."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.requests: list[str] = []  # "PCP MAP", "PCP ANNOUNCE", "NAT-PMP MAP", ...: in order

    def answer(self, data: bytes, client: str) -> bytes | None:
        if len(data) < 2 or data[1] & wire.RESPONSE_BIT:
            return None  # not a request
        if data[0] == wire.NATPMP_VERSION:
            return self._natpmp(data, client)
        mode = self.router.profile.pcp
        if mode == "natpmp-only":
            # RFC 6887 section 9: a NAT-PMP-only server answers in its version with UNSUPP_VERSION.
            self.requests.append("PCP refused")
            return _NATPMP_HEADER.pack(0, data[1] | wire.RESPONSE_BIT, 1, self.router.epoch())
        if mode == "unsupp-version":
            self.requests.append("PCP refused")
            return self._pcp_header(data[1], wire.Result.UNSUPP_VERSION, version=1)
        if data[0] != wire.PCP_VERSION:
            return self._pcp_header(data[1], wire.Result.UNSUPP_VERSION)
        return self._pcp(data, client)

    # -- PCP -----------------------------------------------------------------------------------

    def _pcp(self, data: bytes, client: str) -> bytes:
        opcode = data[1]
        if len(data) < _HEADER.size or len(data) % 4 or len(data) > wire.MAX_MESSAGE:
            return self._pcp_header(opcode, wire.Result.MALFORMED_REQUEST)
        _, _, _, lifetime, sender = _HEADER.unpack_from(data)
        if opcode == wire.Opcode.ANNOUNCE:
            self.requests.append("PCP ANNOUNCE")
            return self._pcp_header(opcode, wire.Result.SUCCESS)
        if opcode != wire.Opcode.MAP:
            return self._pcp_header(opcode, wire.Result.UNSUPP_OPCODE)
        self.requests.append("PCP MAP")
        body = data[_HEADER.size :]
        if len(body) < _MAP.size:
            return self._pcp_header(opcode, wire.Result.MALFORMED_REQUEST)
        nonce, protocol, _, internal_port, external_port, external = _MAP.unpack_from(body)
        echo = _Map(nonce, protocol, internal_port, external_port, external, lifetime, False)
        try:
            if _address(sender) != _address(client):
                raise _Refused(wire.Result.ADDRESS_MISMATCH)
            prefer, third_party = _options(body[_MAP.size :], self.router.profile.pcp_third_party)
            request = _Map(nonce, protocol, internal_port, external_port, external, lifetime, prefer)
            granted, life = self._pcp_map(request, third_party or client)
        except _Refused as refused:
            return self._pcp_map_answer(echo, refused.result, 0)
        return self._pcp_map_answer(granted, wire.Result.SUCCESS, life)

    def _pcp_map(self, request: _Map, client: str) -> tuple[_Map, int]:
        protocol = _PROTOCOLS.get(request.protocol)
        if protocol is None:
            raise _Refused(wire.Result.UNSUPP_PROTOCOL)
        if request.internal_port == 0:
            raise _Refused(wire.Result.MALFORMED_REQUEST)
        self._check_allowed(client, wire.Result.NOT_AUTHORIZED, wire.Result.NETWORK_FAILURE)
        if request.lifetime == 0:
            self.router.transact(lambda: self._pcp_delete(request, protocol, client))
            return request, 0
        lifetime = min(max(request.lifetime, MIN_LIFETIME), MAX_LIFETIME)

        def change() -> int:
            port = self._choose(client, request.internal_port, protocol, request.external_port, request.prefer_failure)
            description = miniupnpd_description(request.nonce, self._byteorder)
            expires = self.router.clock() + lifetime
            self.router._store(
                Entry("", port, protocol, request.internal_port, client, True, description, expires, request.nonce)
            )
            return port

        port = self.router.transact(change)
        address = _mapped(self.router.external_ip)
        return _Map(request.nonce, request.protocol, request.internal_port, port, address, lifetime, False), lifetime

    def _pcp_delete(self, request: _Map, protocol: str, client: str) -> None:
        held = self._held(client, request.internal_port, protocol)
        if held is None:
            return  # nothing to delete is done
        if held.nonce != request.nonce:
            raise _Refused(wire.Result.NOT_AUTHORIZED)
        self.router.entries.remove(held)

    def _pcp_header(self, opcode: int, result: int, *, version: int = wire.PCP_VERSION) -> bytes:
        op = (opcode | wire.RESPONSE_BIT) & 0xFF
        return _RESPONSE_HEADER.pack(version, op, 0, result, 0, self.router.epoch(), b"\0" * 12)

    def _pcp_map_answer(self, body: _Map, result: int, lifetime: int) -> bytes:
        header = _RESPONSE_HEADER.pack(
            wire.PCP_VERSION, wire.Opcode.MAP | wire.RESPONSE_BIT, 0, result, lifetime, self.router.epoch(), b"\0" * 12
        )
        return header + _MAP.pack(
            body.nonce, body.protocol, b"\0\0\0", body.internal_port, body.external_port, body.external_address
        )

    # -- NAT-PMP -------------------------------------------------------------------------------

    def _natpmp(self, data: bytes, client: str) -> bytes | None:
        opcode = data[1]
        epoch = self.router.epoch()
        if opcode == wire.NatPmpOpcode.EXTERNAL_ADDRESS:
            self.requests.append("NAT-PMP ADDRESS")
            if not self.router.connected:
                return _NATPMP_HEADER.pack(0, opcode | wire.RESPONSE_BIT, wire.NatPmpResult.NETWORK_FAILURE, epoch)
            address = ipaddress.IPv4Address(self.router.external_ip).packed
            return _NATPMP_ADDRESS.pack(0, opcode | wire.RESPONSE_BIT, 0, epoch, address)
        if opcode not in (wire.NatPmpOpcode.MAP_UDP, wire.NatPmpOpcode.MAP_TCP):
            return _NATPMP_HEADER.pack(0, opcode | wire.RESPONSE_BIT, wire.NatPmpResult.UNSUPPORTED_OPCODE, epoch)
        if len(data) < _NATPMP_MAP.size:
            return None
        self.requests.append("NAT-PMP MAP")
        _, _, _, internal_port, external_port, lifetime = _NATPMP_MAP.unpack_from(data)
        protocol = "TCP" if opcode == wire.NatPmpOpcode.MAP_TCP else "UDP"
        try:
            self._check_allowed(client, wire.NatPmpResult.NOT_AUTHORIZED, wire.NatPmpResult.NETWORK_FAILURE)
            if lifetime == 0:
                self.router.transact(lambda: self._natpmp_delete(client, internal_port, protocol))
                granted = 0
            else:
                granted = self.router.transact(
                    lambda: self._natpmp_map(client, internal_port, protocol, external_port, lifetime)
                )
        except _Refused as refused:
            return _NATPMP_HEADER.pack(0, opcode | wire.RESPONSE_BIT, refused.result, epoch)
        if lifetime == 0:
            return _NATPMP_MAPPED.pack(0, opcode | wire.RESPONSE_BIT, 0, epoch, internal_port, 0, 0)
        return _NATPMP_MAPPED.pack(0, opcode | wire.RESPONSE_BIT, 0, epoch, internal_port, granted, lifetime)

    def _natpmp_map(self, client: str, internal_port: int, protocol: str, suggested: int, lifetime: int) -> int:
        port = self._choose(client, internal_port, protocol, suggested, prefer_failure=False)
        description = natpmp_description(port, protocol)
        self.router._store(
            Entry("", port, protocol, internal_port, client, True, description, self.router.clock() + lifetime)
        )
        return port

    def _natpmp_delete(self, client: str, internal_port: int, protocol: str) -> None:
        held = self._held(client, internal_port, protocol)
        if held is not None:
            self.router.entries.remove(held)

    # -- the shared table (called under the router's lock) --------------------------------------

    @property
    def _byteorder(self) -> Literal["little", "big"]:
        return "big" if self.router.profile.byteorder == "big" else "little"

    def _check_allowed(self, client: str, not_authorized: int, network_failure: int) -> None:
        profile = self.router.profile
        if not self.router.connected or profile.add_error:
            raise _Refused(network_failure)
        if profile.permitted_clients and not _permitted(client, profile.permitted_clients):
            raise _Refused(not_authorized)

    def _held(self, client: str, internal_port: int, protocol: str) -> Entry | None:
        """This host's mapping of `internal_port`, whoever made it (UPnP, PCP or NAT-PMP)."""
        return next(
            (
                e
                for e in self.router.entries
                if e.internal_client == client and e.internal_port == internal_port and e.protocol == protocol
            ),
            None,
        )

    def _choose(self, client: str, internal_port: int, protocol: str, suggested: int, prefer_failure: bool) -> int:
        """The external port to grant: the one this host's mapping of `internal_port` has, else the
        suggested one (the internal port for 0) or the next free one the rules allow."""
        held = self._held(client, internal_port, protocol)
        if held is not None:
            self.router.entries.remove(held)
            return held.external_port
        port = suggested or internal_port
        if self._denied(port) and prefer_failure:
            raise _Refused(wire.Result.CANNOT_PROVIDE_EXTERNAL)
        for _ in range(0x10000):
            if not self._denied(port) and self.router._find(port, protocol) is None:
                return port
            port = port % 0xFFFF + 1
        raise _Refused(wire.Result.NO_RESOURCES)

    def _denied(self, port: int) -> bool:
        return bool(self.router.profile.below_1024_error) and port < 1024


def _options(options: bytes, third_party_ok: bool) -> tuple[bool, str]:
    """Read the options: whether PREFER_FAILURE is among them, and the host THIRD_PARTY names ("" for
    none; refused unless `third_party_ok`); refuses what miniupnpd refuses."""
    prefer, third_party = False, ""
    offset = 0
    while offset < len(options):
        if len(options) - offset < _OPTION.size:
            raise _Refused(wire.Result.MALFORMED_OPTION)
        code, _, length = _OPTION.unpack_from(options, offset)
        offset += _OPTION.size
        if length % 4 or offset + length > len(options):
            raise _Refused(wire.Result.MALFORMED_OPTION)  # 2.3.1 refuses padded options
        if code == wire.OptionCode.PREFER_FAILURE:
            if length:
                raise _Refused(wire.Result.MALFORMED_OPTION)
            prefer = True
        elif code == wire.OptionCode.THIRD_PARTY and third_party_ok:
            host = _address(options[offset : offset + length]) if length == 16 else None
            if host is None:
                raise _Refused(wire.Result.MALFORMED_OPTION)
            third_party = str(host)
        elif code == wire.OptionCode.THIRD_PARTY or code < _MANDATORY_OPTION:
            raise _Refused(wire.Result.UNSUPP_OPTION)
        offset += length
    return prefer, third_party


def _address(raw: bytes | str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.IPv6Address(raw) if isinstance(raw, bytes) else ipaddress.ip_address(raw.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _mapped(ipv4: str) -> bytes:
    return b"\0" * 10 + b"\xff\xff" + ipaddress.IPv4Address(ipv4).packed
