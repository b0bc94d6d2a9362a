"""PCP version 2 (RFC 6887) and NAT-PMP version 0 (RFC 6886) messages as bytes, both ways. Pure.

Encoders take frozen requests and give the datagram to send. Decoders take a datagram and the
request it should answer, and give a frozen response or raise MalformedAnswer naming what was wrong
(too short, too long, wrong opcode, no response bit, another nonce or port); a struct.error or an
IndexError never escapes. A PCP request answered in another version (a NAT-PMP-only server answers
version 0) or with UNSUPP_VERSION raises UnsupportedVersion: the caller falls back to NAT-PMP.

PCP carries IPv4 addresses as IPv4-mapped IPv6 addresses (RFC 6887 section 5); here addresses are
ipaddress objects, and an IPv4-mapped one decodes as IPv4.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

from .errors import MalformedAnswer, ResultError, UnsupportedVersion

PORT = 5351  # both protocols: the gateway's UDP port (RFC 6887 section 19.1, RFC 6886 section 3.1)
PCP_VERSION = 2
NATPMP_VERSION = 0
MAX_MESSAGE = 1100  # RFC 6887 section 7: no PCP message is longer
NONCE_SIZE = 12
RESPONSE_BIT = 0x80

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HEADER = struct.Struct("!BBHI16s")  # version, R|opcode, reserved, lifetime, client address
_RESPONSE_HEADER = struct.Struct("!BBBBII12s")  # version, R|opcode, reserved, result, lifetime, epoch, reserved
_MAP = struct.Struct("!12sB3sHH16s")  # nonce, protocol, reserved, internal port, external port, external address
_OPTION = struct.Struct("!BBH")  # code, reserved, length

_NATPMP_MAP = struct.Struct("!BBHHHI")  # version, opcode, reserved, internal port, external port, lifetime
_NATPMP_HEADER = struct.Struct("!BBHI")  # version, opcode, result, seconds since start of epoch
_NATPMP_ADDRESS = struct.Struct("!BBHI4s")
_NATPMP_MAPPED = struct.Struct("!BBHIHHI")  # ..., internal port, mapped external port, lifetime


class Opcode(IntEnum):
    ANNOUNCE = 0
    MAP = 1
    PEER = 2


class Result(IntEnum):
    """PCP result codes (RFC 6887 section 7.4)."""

    SUCCESS = 0
    UNSUPP_VERSION = 1
    NOT_AUTHORIZED = 2
    MALFORMED_REQUEST = 3
    UNSUPP_OPCODE = 4
    UNSUPP_OPTION = 5
    MALFORMED_OPTION = 6
    NETWORK_FAILURE = 7
    NO_RESOURCES = 8
    UNSUPP_PROTOCOL = 9
    USER_EX_QUOTA = 10
    CANNOT_PROVIDE_EXTERNAL = 11
    ADDRESS_MISMATCH = 12
    EXCESSIVE_REMOTE_PEERS = 13


class OptionCode(IntEnum):
    THIRD_PARTY = 1
    PREFER_FAILURE = 2
    FILTER = 3


class IpProtocol(IntEnum):
    """The IANA protocol numbers PCP MAP carries; 0 means all protocols."""

    ALL = 0
    TCP = 6
    UDP = 17


class NatPmpOpcode(IntEnum):
    EXTERNAL_ADDRESS = 0
    MAP_UDP = 1
    MAP_TCP = 2


class NatPmpResult(IntEnum):
    """NAT-PMP result codes (RFC 6886 section 3.5)."""

    SUCCESS = 0
    UNSUPPORTED_VERSION = 1
    NOT_AUTHORIZED = 2
    NETWORK_FAILURE = 3
    OUT_OF_RESOURCES = 4
    UNSUPPORTED_OPCODE = 5


def result_name(code: int) -> str:
    return Result(code).name if code in Result._value2member_map_ else f"UNKNOWN_{code}"


def natpmp_result_name(code: int) -> str:
    return NatPmpResult(code).name if code in NatPmpResult._value2member_map_ else f"UNKNOWN_{code}"


# -- PCP ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapRequest:
    """Ask for (lifetime > 0) or delete (lifetime 0) the mapping of `internal_port` on the client.

    `client_address` is the source address the request leaves from (the server answers
    ADDRESS_MISMATCH otherwise). `third_party` maps for another host instead (THIRD_PARTY option);
    `prefer_failure` makes a taken external port fail rather than move (PREFER_FAILURE option).
    The suggested external address defaults to the unspecified address of the internal host's family.
    """

    nonce: bytes
    protocol: IpProtocol
    internal_port: int
    client_address: IPAddress
    lifetime: int
    suggested_external_port: int = 0
    suggested_external_address: IPAddress | None = None
    prefer_failure: bool = False
    third_party: IPAddress | None = None

    def __post_init__(self) -> None:
        if len(self.nonce) != NONCE_SIZE:
            raise ValueError(f"a PCP nonce has {NONCE_SIZE} bytes, not {len(self.nonce)}")
        _check_u16("internal port", self.internal_port)
        _check_u16("suggested external port", self.suggested_external_port)
        _check_u32("lifetime", self.lifetime)


@dataclass(frozen=True)
class AnnounceRequest:
    """ANNOUNCE: a header-only request the server answers with its epoch (RFC 6887 section 14.1)."""

    client_address: IPAddress


PcpRequest = MapRequest | AnnounceRequest


@dataclass(frozen=True)
class Option:
    code: int
    data: bytes


@dataclass(frozen=True)
class MapAnswer:
    """The MAP body of a response: what the server granted (or, on failure, echoed)."""

    nonce: bytes
    protocol: int
    internal_port: int
    external_port: int
    external_address: IPAddress


@dataclass(frozen=True)
class PcpResponse:
    opcode: Opcode
    result: int
    lifetime: int
    epoch: int
    map: MapAnswer | None = None
    options: tuple[Option, ...] = ()

    @property
    def result_name(self) -> str:
        return result_name(self.result)

    @property
    def ok(self) -> bool:
        return self.result == Result.SUCCESS

    def raise_for_result(self) -> PcpResponse:
        """This response, or ResultError if the server refused the request."""
        if not self.ok:
            raise ResultError("PCP", self.opcode.name, self.result, self.result_name, self.lifetime)
        return self


def encode_request(request: PcpRequest) -> bytes:
    if isinstance(request, AnnounceRequest):
        return _HEADER.pack(PCP_VERSION, Opcode.ANNOUNCE, 0, 0, _address_bytes(request.client_address))
    internal = request.third_party or request.client_address
    suggested = request.suggested_external_address or _unspecified(internal)
    body = _MAP.pack(
        request.nonce,
        request.protocol,
        b"\0\0\0",
        request.internal_port,
        request.suggested_external_port,
        _address_bytes(suggested),
    )
    options = b""
    if request.third_party is not None:
        options += _OPTION.pack(OptionCode.THIRD_PARTY, 0, 16) + _address_bytes(request.third_party)
    if request.prefer_failure:
        options += _OPTION.pack(OptionCode.PREFER_FAILURE, 0, 0)
    header = _HEADER.pack(PCP_VERSION, Opcode.MAP, 0, request.lifetime, _address_bytes(request.client_address))
    return header + body + options


def decode_response(data: bytes, request: PcpRequest) -> PcpResponse:
    """The response `data` carries to `request`; MalformedAnswer if it is none, UnsupportedVersion
    if the server does not speak version 2."""
    opcode = Opcode.ANNOUNCE if isinstance(request, AnnounceRequest) else Opcode.MAP
    if len(data) < 4:
        raise MalformedAnswer("PCP", f"{len(data)} bytes is too short for any answer")
    version, op = data[0], data[1]
    if not op & RESPONSE_BIT:
        raise MalformedAnswer("PCP", "the response bit is not set (a request, not an answer)")
    if op & ~RESPONSE_BIT != opcode:
        raise MalformedAnswer("PCP", f"opcode {op & ~RESPONSE_BIT} answers no {opcode.name} request")
    if version != PCP_VERSION:
        # NAT-PMP puts a 16-bit result where PCP has reserved + result: byte 3 is 1 in both.
        if data[3] == Result.UNSUPP_VERSION:
            raise UnsupportedVersion(version)
        raise MalformedAnswer("PCP", f"version {version} answer with result {data[3]}, not UNSUPP_VERSION")
    if len(data) < _RESPONSE_HEADER.size:
        raise MalformedAnswer("PCP", f"{len(data)} bytes is shorter than the {_RESPONSE_HEADER.size}-byte header")
    _check_length("PCP", data)
    _, _, _, result, lifetime, epoch, _ = _RESPONSE_HEADER.unpack_from(data)
    if result == Result.UNSUPP_VERSION:
        raise UnsupportedVersion(version)
    rest = data[_RESPONSE_HEADER.size :]
    answer = None
    if opcode == Opcode.MAP:
        assert isinstance(request, MapRequest)
        if len(rest) < _MAP.size:
            # An error answer may come before the server read the body (RFC 6887 section 8.3).
            if result != Result.SUCCESS and not rest:
                return PcpResponse(opcode, result, lifetime, epoch)
            raise MalformedAnswer("PCP", f"the MAP body has {len(rest)} of {_MAP.size} bytes")
        answer = _decode_map(rest, request)
        rest = rest[_MAP.size :]
    return PcpResponse(opcode, result, lifetime, epoch, answer, _decode_options(rest))


def _decode_map(body: bytes, request: MapRequest) -> MapAnswer:
    nonce, protocol, _, internal_port, external_port, external = _MAP.unpack_from(body)
    if nonce != request.nonce:
        raise MalformedAnswer("PCP", f"nonce {nonce.hex()} is not the request's {request.nonce.hex()}")
    if protocol != request.protocol:
        raise MalformedAnswer("PCP", f"protocol {protocol} is not the request's {int(request.protocol)}")
    if internal_port != request.internal_port:
        raise MalformedAnswer("PCP", f"internal port {internal_port} is not the request's {request.internal_port}")
    return MapAnswer(nonce, protocol, internal_port, external_port, _address(external))


def _decode_options(data: bytes) -> tuple[Option, ...]:
    options = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _OPTION.size:
            raise MalformedAnswer("PCP", f"{len(data) - offset} stray bytes after the last option")
        code, _, length = _OPTION.unpack_from(data, offset)
        start = offset + _OPTION.size
        end = start + length
        if end > len(data):
            raise MalformedAnswer("PCP", f"option {code} says {length} bytes; only {len(data) - start} follow")
        expected = {OptionCode.THIRD_PARTY: 16, OptionCode.PREFER_FAILURE: 0}.get(code)
        if expected is not None and length != expected:
            raise MalformedAnswer("PCP", f"option {OptionCode(code).name} has {length} bytes, not {expected}")
        options.append(Option(code, data[start:end]))
        offset = start + (length + 3) // 4 * 4  # option data is padded to 32 bits
    return tuple(options)


def _check_length(protocol: str, data: bytes) -> None:
    if len(data) > MAX_MESSAGE:
        raise MalformedAnswer(protocol, f"{len(data)} bytes is longer than the {MAX_MESSAGE} a message may have")
    if len(data) % 4:
        raise MalformedAnswer(protocol, f"{len(data)} bytes is not a multiple of 4")


def _address_bytes(address: IPAddress) -> bytes:
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + address.packed).packed
    return address.packed


def _address(raw: bytes) -> IPAddress:
    v6 = ipaddress.IPv6Address(raw)
    return v6.ipv4_mapped or v6


def _unspecified(like: IPAddress) -> IPAddress:
    return ipaddress.IPv4Address(0) if isinstance(like, ipaddress.IPv4Address) else ipaddress.IPv6Address(0)


# -- NAT-PMP -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExternalAddressRequest:
    """Ask for the gateway's external IPv4 address (RFC 6886 section 3.2)."""


@dataclass(frozen=True)
class NatPmpMapRequest:
    """Map (lifetime > 0) or delete (lifetime 0, suggested port 0) `internal_port` (RFC 6886 section 3.3)."""

    protocol: IpProtocol
    internal_port: int
    lifetime: int
    suggested_external_port: int = 0

    def __post_init__(self) -> None:
        if self.protocol not in (IpProtocol.TCP, IpProtocol.UDP):
            raise ValueError("NAT-PMP maps TCP or UDP")
        _check_u16("internal port", self.internal_port)
        _check_u16("suggested external port", self.suggested_external_port)
        _check_u32("lifetime", self.lifetime)

    @property
    def opcode(self) -> NatPmpOpcode:
        return NatPmpOpcode.MAP_TCP if self.protocol == IpProtocol.TCP else NatPmpOpcode.MAP_UDP


NatPmpRequest = ExternalAddressRequest | NatPmpMapRequest


@dataclass(frozen=True)
class NatPmpResponse:
    """An answer: the external address for EXTERNAL_ADDRESS, the ports and lifetime for a map.

    A refusal may be the 8-byte header alone; then the other fields are None."""

    opcode: NatPmpOpcode
    result: int
    epoch: int
    external_address: ipaddress.IPv4Address | None = None
    internal_port: int | None = None
    external_port: int | None = None
    lifetime: int | None = None

    @property
    def result_name(self) -> str:
        return natpmp_result_name(self.result)

    @property
    def ok(self) -> bool:
        return self.result == NatPmpResult.SUCCESS

    def raise_for_result(self) -> NatPmpResponse:
        if not self.ok:
            raise ResultError("NAT-PMP", self.opcode.name, self.result, self.result_name)
        return self


def encode_natpmp(request: NatPmpRequest) -> bytes:
    if isinstance(request, ExternalAddressRequest):
        return bytes([NATPMP_VERSION, NatPmpOpcode.EXTERNAL_ADDRESS])
    return _NATPMP_MAP.pack(
        NATPMP_VERSION,
        request.opcode,
        0,
        request.internal_port,
        request.suggested_external_port,
        request.lifetime,
    )


def decode_natpmp(data: bytes, request: NatPmpRequest) -> NatPmpResponse:
    """The answer `data` carries to `request`, or MalformedAnswer saying why it is none."""
    opcode = NatPmpOpcode.EXTERNAL_ADDRESS if isinstance(request, ExternalAddressRequest) else request.opcode
    if len(data) < _NATPMP_HEADER.size:
        raise MalformedAnswer("NAT-PMP", f"{len(data)} bytes is shorter than the {_NATPMP_HEADER.size}-byte header")
    version, op, result, epoch = _NATPMP_HEADER.unpack_from(data)
    if version != NATPMP_VERSION:
        raise MalformedAnswer("NAT-PMP", f"version {version} answer to a version {NATPMP_VERSION} request")
    if not op & RESPONSE_BIT:
        raise MalformedAnswer("NAT-PMP", "the response bit is not set (a request, not an answer)")
    if op & ~RESPONSE_BIT != opcode:
        raise MalformedAnswer("NAT-PMP", f"opcode {op & ~RESPONSE_BIT} answers no {opcode.name} request")
    full = _NATPMP_ADDRESS if opcode == NatPmpOpcode.EXTERNAL_ADDRESS else _NATPMP_MAPPED
    if len(data) == _NATPMP_HEADER.size and result != NatPmpResult.SUCCESS:
        return NatPmpResponse(opcode, result, epoch)
    if len(data) != full.size:
        raise MalformedAnswer("NAT-PMP", f"{len(data)} bytes; a {opcode.name} answer has {full.size}")
    if opcode == NatPmpOpcode.EXTERNAL_ADDRESS:
        raw = _NATPMP_ADDRESS.unpack(data)[4]
        # RFC 6886 section 3.2: the address is undefined unless the result is SUCCESS.
        address = ipaddress.IPv4Address(raw) if result == NatPmpResult.SUCCESS else None
        return NatPmpResponse(opcode, result, epoch, external_address=address)
    assert isinstance(request, NatPmpMapRequest)
    *_, internal_port, external_port, lifetime = _NATPMP_MAPPED.unpack(data)
    if internal_port != request.internal_port:
        raise MalformedAnswer("NAT-PMP", f"internal port {internal_port} is not the request's {request.internal_port}")
    return NatPmpResponse(
        opcode, result, epoch, internal_port=internal_port, external_port=external_port, lifetime=lifetime
    )


def _check_u16(what: str, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} {value} is outside 0..65535")


def _check_u32(what: str, value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{what} {value} is outside 0..4294967295")
