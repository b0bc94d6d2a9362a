"""PCP and NAT-PMP codecs: byte-exact layouts from the RFCs' figures, round trips, strict decoding."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.backends.pcp import wire
from reconciler.backends.pcp.errors import MalformedAnswer, ResultError, UnsupportedVersion

NONCE = bytes.fromhex("00112233445566778899aabb")
CLIENT = ipaddress.IPv4Address("192.168.77.2")
V6_CLIENT = ipaddress.IPv6Address("2001:db8:77::10")
MAP = wire.MapRequest(NONCE, wire.IpProtocol.TCP, 8080, CLIENT, 3600, suggested_external_port=20000)

# RFC 6887 figure 2 (request header) + figure 9 (MAP body), field by field.
MAP_BYTES = bytes.fromhex(
    "02"  # version 2
    "01"  # R=0, opcode MAP
    "0000"  # reserved
    "00000e10"  # requested lifetime 3600
    "00000000000000000000ffffc0a84d02"  # client address ::ffff:192.168.77.2
    "00112233445566778899aabb"  # nonce
    "06"  # protocol TCP
    "000000"  # reserved
    "1f90"  # internal port 8080
    "4e20"  # suggested external port 20000
    "00000000000000000000ffff00000000"  # suggested external address ::ffff:0.0.0.0 (IPv4 wanted)
)


def map_answer(
    *,
    version: int = 2,
    op: int = 0x81,
    result: int = 0,
    nonce: bytes = NONCE,
    protocol: int = 6,
    internal_port: int = 8080,
    options: bytes = b"",
) -> bytes:
    """A MAP response per RFC 6887 figure 3 (response header) + figure 9: 7200 s granted at epoch 1234,
    external 11.22.33.1:20000."""
    return (
        bytes([version, op, 0, result])
        + (7200).to_bytes(4, "big")
        + (1234).to_bytes(4, "big")
        + bytes(12)
        + nonce
        + bytes([protocol, 0, 0, 0])
        + internal_port.to_bytes(2, "big")
        + (20000).to_bytes(2, "big")
        + bytes.fromhex("00000000000000000000ffff0b162101")
        + options
    )


def test_map_request_is_laid_out_as_rfc_6887_figures_2_and_9() -> None:
    """An IPv4 MAP request is the 24-byte header and the 36-byte body, addresses IPv4-mapped."""
    assert wire.encode_request(MAP) == MAP_BYTES


def test_options_follow_the_body_as_rfc_6887_figure_4_says() -> None:
    """THIRD_PARTY carries the internal host's address (16 bytes); PREFER_FAILURE has no data."""
    request = wire.MapRequest(
        NONCE, wire.IpProtocol.UDP, 53, CLIENT, 60, prefer_failure=True, third_party=ipaddress.IPv4Address("10.0.0.9")
    )
    data = wire.encode_request(request)
    assert len(data) == 24 + 36 + 20 + 4
    assert data[60:] == bytes.fromhex("01 00 0010 00000000000000000000ffff0a000009 02 00 0000")
    # The suggested external address follows the internal host's family: IPv4 here.
    assert data[44:60] == bytes.fromhex("00000000000000000000ffff00000000")


def test_ipv6_map_request_carries_plain_ipv6_addresses() -> None:
    """An IPv6 client's request has its own address and :: as the suggested external address."""
    data = wire.encode_request(wire.MapRequest(NONCE, wire.IpProtocol.TCP, 22, V6_CLIENT, 600))
    assert data[8:24] == V6_CLIENT.packed
    assert data[44:60] == bytes(16)


def test_announce_request_is_the_header_alone() -> None:
    """ANNOUNCE is opcode 0 with lifetime 0 and no body (RFC 6887 section 14.1)."""
    assert wire.encode_request(wire.AnnounceRequest(CLIENT)) == bytes.fromhex(
        "02 00 0000 00000000 00000000000000000000ffffc0a84d02"
    )


def test_map_response_decodes_every_field() -> None:
    """A MAP response gives the result, lifetime, epoch and what was granted; IPv4-mapped reads as IPv4."""
    response = wire.decode_response(map_answer(), MAP)
    expected_map = wire.MapAnswer(NONCE, 6, 8080, 20000, ipaddress.IPv4Address("11.22.33.1"))
    assert response == wire.PcpResponse(wire.Opcode.MAP, 0, 7200, 1234, expected_map)
    assert response.raise_for_result() is response


def test_error_result_is_named_and_raised_on_request() -> None:
    """A refusal keeps its code's RFC name, and raise_for_result turns it into a ResultError."""
    response = wire.decode_response(map_answer(result=wire.Result.NOT_AUTHORIZED), MAP)
    assert (response.ok, response.result_name) == (False, "NOT_AUTHORIZED")
    with pytest.raises(ResultError) as refused:
        response.raise_for_result()
    assert (refused.value.code, refused.value.name, refused.value.retry_after) == (2, "NOT_AUTHORIZED", 7200)
    assert str(refused.value) == "PCP MAP failed: 2 NOT_AUTHORIZED"


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (3, "MALFORMED_REQUEST"),
        (5, "UNSUPP_OPTION"),
        (6, "MALFORMED_OPTION"),
        (8, "NO_RESOURCES"),
        (11, "CANNOT_PROVIDE_EXTERNAL"),
        (12, "ADDRESS_MISMATCH"),
        (200, "UNKNOWN_200"),
    ],
)
def test_result_codes_have_their_rfc_names(code: int, name: str) -> None:
    """Result codes are named as RFC 6887 section 7.4 names them; unknown ones say so."""
    assert wire.decode_response(map_answer(result=code), MAP).result_name == name


def test_error_answer_without_a_body_is_accepted() -> None:
    """A refusal may be the header alone (the server had not read the body)."""
    response = wire.decode_response(map_answer(result=wire.Result.MALFORMED_REQUEST)[:24], MAP)
    assert (response.result, response.map) == (wire.Result.MALFORMED_REQUEST, None)


def test_options_in_a_response_are_decoded() -> None:
    """Options the server echoes come back as (code, data), in order."""
    third = bytes.fromhex("01000010") + ipaddress.IPv6Address("::ffff:10.0.0.9").packed
    response = wire.decode_response(map_answer(options=third + bytes.fromhex("02000000")), MAP)
    assert response.options == (wire.Option(1, third[4:]), wire.Option(2, b""))


def test_announce_response_gives_the_epoch() -> None:
    """An ANNOUNCE answer is the response header with the server's epoch."""
    data = bytes.fromhex("02 80 00 00 00000000 0000abcd") + bytes(12)
    assert wire.decode_response(data, wire.AnnounceRequest(CLIENT)).epoch == 0xABCD


MALFORMED_PCP = [
    (b"\x02\x81\x00", "3 bytes is too short"),
    (map_answer()[:20], "shorter than the 24-byte header"),
    (map_answer()[:40], "MAP body has 16 of 36 bytes"),
    (map_answer() + bytes(1044), "longer than the 1100"),
    (map_answer() + b"\0\0", "not a multiple of 4"),
    (map_answer(op=0x01), "response bit is not set"),
    (map_answer(op=0x82), "opcode 2 answers no MAP request"),
    (map_answer(nonce=bytes(12)), "nonce 000000000000000000000000 is not the request's"),
    (map_answer(protocol=17), "protocol 17 is not the request's 6"),
    (map_answer(internal_port=8081), "internal port 8081 is not the request's 8080"),
    (map_answer(options=bytes.fromhex("02000008")), "option 2 says 8 bytes; only 0 follow"),
    (map_answer(options=bytes.fromhex("010000040a000009")), "THIRD_PARTY has 4 bytes, not 16"),
    (map_answer(version=1, result=3), "version 1 answer with result 3"),
]


@pytest.mark.parametrize(("data", "reason"), MALFORMED_PCP, ids=[reason for _, reason in MALFORMED_PCP])
def test_malformed_pcp_answers_are_rejected_with_the_reason(data: bytes, reason: str) -> None:
    """Every way an answer can be wrong raises MalformedAnswer naming what was wrong."""
    with pytest.raises(MalformedAnswer) as rejected:
        wire.decode_response(data, MAP)
    assert reason in rejected.value.reason


def test_nat_pmp_only_server_means_unsupported_version() -> None:
    """A NAT-PMP server's version-0 'unsupported version' answer tells the caller to use NAT-PMP."""
    natpmp_answer = bytes.fromhex("00 81 0001 00000064")  # RFC 6886 section 3.5, result 1
    with pytest.raises(UnsupportedVersion) as refused:
        wire.decode_response(natpmp_answer, MAP)
    assert refused.value.server_version == 0


def test_pcp_unsupp_version_result_means_unsupported_version() -> None:
    """A PCP server that answers UNSUPP_VERSION (in its own version) tells the caller the same."""
    with pytest.raises(UnsupportedVersion) as refused:
        wire.decode_response(map_answer(version=1, result=wire.Result.UNSUPP_VERSION)[:24], MAP)
    assert refused.value.server_version == 1


@settings(deadline=None)  # a busy machine may take its time; the property is what matters
@given(st.binary(max_size=1200))
def test_any_datagram_decodes_or_is_rejected_cleanly(data: bytes) -> None:
    """Whatever arrives, decoding gives a response or a typed rejection, never another exception."""
    for request in (MAP, wire.AnnounceRequest(CLIENT)):
        with contextlib.suppress(MalformedAnswer, UnsupportedVersion):
            wire.decode_response(data, request)
    for natpmp in (wire.ExternalAddressRequest(), wire.NatPmpMapRequest(wire.IpProtocol.UDP, 53, 60)):
        with contextlib.suppress(MalformedAnswer):
            wire.decode_natpmp(data, natpmp)


def test_every_truncation_of_a_valid_answer_is_rejected() -> None:
    """Cutting a valid MAP answer anywhere short of its end is a MalformedAnswer, never an IndexError."""
    data = map_answer()
    for size in range(len(data)):
        with pytest.raises(MalformedAnswer):
            wire.decode_response(data[:size], MAP)


def test_requests_refuse_values_the_wire_cannot_carry() -> None:
    """A nonce of another size, or a port or lifetime outside its field, is refused before sending."""
    with pytest.raises(ValueError, match="12 bytes"):
        wire.MapRequest(b"short", wire.IpProtocol.TCP, 80, CLIENT, 60)
    with pytest.raises(ValueError, match="internal port 70000"):
        wire.MapRequest(NONCE, wire.IpProtocol.TCP, 70000, CLIENT, 60)
    with pytest.raises(ValueError, match="lifetime -1"):
        wire.NatPmpMapRequest(wire.IpProtocol.TCP, 80, -1)


# -- NAT-PMP ----------------------------------------------------------------------------------


def test_natpmp_requests_are_laid_out_as_rfc_6886_says() -> None:
    """External address is 2 bytes; a map is 12, with opcode 1 for UDP and 2 for TCP."""
    assert wire.encode_natpmp(wire.ExternalAddressRequest()) == b"\x00\x00"
    tcp = wire.NatPmpMapRequest(wire.IpProtocol.TCP, 8080, 7200, 20000)
    assert wire.encode_natpmp(tcp) == bytes.fromhex("00 02 0000 1f90 4e20 00001c20")
    udp = wire.NatPmpMapRequest(wire.IpProtocol.UDP, 53, 0)
    assert wire.encode_natpmp(udp) == bytes.fromhex("00 01 0000 0035 0000 00000000")


def test_natpmp_answers_decode_every_field() -> None:
    """The external-address answer gives the address; a map answer gives the ports and lifetime."""
    address = bytes.fromhex("00 80 0000 00000010 0b162101")
    assert wire.decode_natpmp(address, wire.ExternalAddressRequest()) == wire.NatPmpResponse(
        wire.NatPmpOpcode.EXTERNAL_ADDRESS, 0, 16, external_address=ipaddress.IPv4Address("11.22.33.1")
    )
    tcp = wire.NatPmpMapRequest(wire.IpProtocol.TCP, 8080, 7200, 20000)
    mapped = bytes.fromhex("00 82 0000 00000010 1f90 4e21 00000e10")
    assert wire.decode_natpmp(mapped, tcp) == wire.NatPmpResponse(
        wire.NatPmpOpcode.MAP_TCP, 0, 16, internal_port=8080, external_port=20001, lifetime=3600
    )


def test_natpmp_address_of_a_refusal_is_ignored() -> None:
    """A refused external-address request gives no address, whatever its bytes say (RFC 6886 3.2)."""
    refused = wire.decode_natpmp(bytes.fromhex("00 80 0003 00000010 0b162101"), wire.ExternalAddressRequest())
    assert (refused.result_name, refused.external_address) == ("NETWORK_FAILURE", None)


def test_natpmp_refusal_may_be_the_header_alone() -> None:
    """An 8-byte refusal decodes with its result named; raise_for_result raises it."""
    tcp = wire.NatPmpMapRequest(wire.IpProtocol.TCP, 8080, 7200)
    refused = wire.decode_natpmp(bytes.fromhex("00 82 0002 00000010"), tcp)
    assert (refused.result_name, refused.external_port) == ("NOT_AUTHORIZED", None)
    with pytest.raises(ResultError, match="NAT-PMP MAP_TCP failed: 2 NOT_AUTHORIZED"):
        refused.raise_for_result()


MALFORMED_NATPMP = [
    (bytes.fromhex("008200"), "shorter than the 8-byte header"),
    (bytes.fromhex("02820000000000101f904e2100000e10"), "version 2 answer"),
    (bytes.fromhex("00020000000000101f904e2100000e10"), "response bit is not set"),
    (bytes.fromhex("00810000000000101f904e2100000e10"), "opcode 1 answers no MAP_TCP request"),
    (bytes.fromhex("00820000000000101f904e2100000e1000"), "17 bytes; a MAP_TCP answer has 16"),
    (bytes.fromhex("0082000000000010"), "8 bytes; a MAP_TCP answer has 16"),
    (bytes.fromhex("00820000000000101f914e2100000e10"), "internal port 8081 is not the request's 8080"),
]


@pytest.mark.parametrize(("data", "reason"), MALFORMED_NATPMP, ids=[reason for _, reason in MALFORMED_NATPMP])
def test_malformed_natpmp_answers_are_rejected_with_the_reason(data: bytes, reason: str) -> None:
    """A short, long or mismatched NAT-PMP answer raises MalformedAnswer naming what was wrong."""
    with pytest.raises(MalformedAnswer) as rejected:
        wire.decode_natpmp(data, wire.NatPmpMapRequest(wire.IpProtocol.TCP, 8080, 7200))
    assert reason in rejected.value.reason
