"""A corpus of malformed and hostile router answers (SOAP, listings, descriptions, GENA, SSDP), each
seed also mutated by hypothesis: the client only ever returns a value or raises a RouterError, never
anything else, and never follows an SSDP answer anywhere but the responder or the gateway.

Hostile SOAP also goes over the wire to a real `portctl plan`, which must fail with one message.
The example counts are fixed (derandomize=True) and are the figures README gives.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import discovery
from reconciler.backends import gena, soap
from reconciler.emulator import EmulatorServer
from reconciler.errors import RouterError, RouterProtocolError, UpnpActionError
from tests.helpers import MANIFEST, portctl, write

FUZZ_EXAMPLES = 1500
ENV = b'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
END = b"</s:Body></s:Envelope>"
ST = "urn:schemas-upnp-org:service:WANIPConnection:2"
SOAP_CORPUS = [
    ENV + b'<u:GetExternalIPAddressResponse xmlns:u="' + ST.encode() + b'"><NewExternalIPAddress>203.0.113.7'
    b"</NewExternalIPAddress></u:GetExternalIPAddressResponse>" + END,
    ENV + b"<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError>"
    b"<errorCode>714</errorCode><errorDescription>NoSuchEntryInArray</errorDescription></UPnPError></detail>"
    b"</s:Fault>" + END,
    ENV + b"<s:Fault><detail><UPnPError><errorCode>abc</errorCode></UPnPError></detail></s:Fault>" + END,
    ENV + b"<s:Fault></s:Fault>" + END,
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]>' + ENV[21:] + b"&lol3;" + END,
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/shadow">]><x>&xxe;</x>',
    b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "http://192.0.2.1/evil.dtd"><x/>',
    b"<x>" * 5000 + b"</x>" * 5000,
    b"<html><body>500 Internal Server Error</body></html>",
    b"",
    b"\xff\xfe\x00<\x00x\x00>",
    ENV + b"<u:GetGenericPortMappingEntryResponse><NewPortMappingDescription>ab\x01\x1b[31m\xc3\x28"
    b"</NewPortMappingDescription></u:GetGenericPortMappingEntryResponse>" + END,
    ENV + b"<u:GetListOfPortMappingsResponse><NewPortListing><p:PortMappingList><p:PortMappingEntry>"
    b"<p:NewExternalPort>80</p:NewExternalPort></p:PortMappingEntry></p:PortMappingList></NewPortListing>"
    b"</u:GetListOfPortMappingsResponse>" + END,
]
SSDP_CORPUS = [
    b"HTTP/1.1 200 OK\r\nLOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n"
    b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\nSERVER: x\r\nCONFIGID.UPNP.ORG: 7\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nLOCATION: http://127.0.0.1:5000/rootDesc.xml\r\n"
    b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n",
    *(
        b"HTTP/1.1 200 OK\r\nLOCATION: "
        + location
        + b"\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n"
        for location in (
            b"http://evil.example:5000/x",
            b"http://192.168.1.1:99999/x",
            b"file:///etc/passwd",
            b"http://[::1]:5000/",
            b"http://192.168.1.50@192.168.1.1/x",
            b"http://10.0.0.1:5000/rootDesc.xml",
        )
    ),
    b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * 3000 + b"\r\n\r\n",
    b"\x00\xff garbage",
]
GENA_CORPUS = [
    b'<?xml version="1.0"?><e:propertyset xmlns:e="urn:schemas-upnp-org:event-1-0"><e:property>'
    b"<PortMappingNumberOfEntries>3</PortMappingNumberOfEntries></e:property></e:propertyset>",
    b'<!DOCTYPE e [<!ENTITY a "b">]><e:propertyset xmlns:e="x">&a;</e:propertyset>',
    b"<notaset/>",
]


def mutated(corpus: list[bytes]) -> st.SearchStrategy[bytes]:
    """A seed, cut, spliced with random bytes, or with one byte flipped."""
    seed = st.sampled_from(corpus)
    cut = st.tuples(seed, st.integers(0, 4000)).map(lambda t: t[0][: t[1]])
    spliced = st.tuples(seed, st.integers(0, 4000), st.binary(max_size=40)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]
    )
    flipped = st.tuples(seed, st.integers(0, 4000), st.integers(0, 255)).map(
        lambda t: t[0][: t[1] % max(len(t[0]), 1)] + bytes([t[2]]) + t[0][t[1] % max(len(t[0]), 1) + 1 :]
    )
    return st.one_of(seed, cut, spliced, flipped, st.binary(max_size=300))


@settings(max_examples=FUZZ_EXAMPLES, derandomize=True, deadline=None)
@given(body=mutated(SOAP_CORPUS), status=st.sampled_from([200, 500, 404]))
def test_soap_answers_give_values_or_router_errors(body: bytes, status: int) -> None:
    for action in ("GetExternalIPAddress", "GetGenericPortMappingEntry", "GetListOfPortMappings"):
        try:
            out = soap.answer(action, status, body)
        except UpnpActionError as exc:
            assert 0 <= exc.code <= 9999 and exc.description.isprintable()
            continue
        except RouterError:
            continue
        assert status == 200 and all(isinstance(v, str) for v in out.values())


@settings(max_examples=FUZZ_EXAMPLES, derandomize=True, deadline=None)
@given(data=mutated(SSDP_CORPUS), source=st.sampled_from(["192.168.1.1", "192.168.1.50", "127.0.0.1", "10.9.9.9"]))
def test_ssdp_answers_never_lead_off_the_responder_or_gateway(data: bytes, source: str) -> None:
    subnets = [ipaddress.IPv4Network("192.168.1.0/24")]
    answer = discovery.parse_reply(data, source, gateway="192.168.1.1", subnets=subnets)
    if answer is None:
        return
    host = str(urlsplit(answer.location).hostname)
    assert answer.location.startswith("http://") and "@" not in answer.location and host in (source, "192.168.1.1")
    assert ipaddress.IPv4Address(host) in subnets[0]
    assert answer.server.isprintable()


@settings(max_examples=FUZZ_EXAMPLES // 3, derandomize=True, deadline=None)
@given(body=mutated(GENA_CORPUS))
def test_gena_bodies_give_variables_or_router_errors(body: bytes) -> None:
    try:
        variables = gena.properties(body)
    except RouterError:
        return
    assert all(isinstance(v, str) for v in variables.values())


@pytest.mark.parametrize("body", SOAP_CORPUS[2:11])
def test_hostile_soap_over_the_wire_is_one_message(
    tmp_path: str, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer, body: bytes
) -> None:
    """Through HTTP into `portctl plan`: exit 1, one line naming the action, no traceback, nothing written."""
    emulator.overrides["/ctl/IPConn"] = (500, body)
    run = portctl(capsys, "plan", write(tmp_path, MANIFEST), "--router", emulator.url)
    assert run.code == 1 and "Traceback" not in run.err
    assert run.err.startswith("error: GetExternalIPAddress") and run.err.count("\n") == 1, run.err
    assert emulator.router.calls["AddPortMapping"] == 0


def test_entity_payloads_are_refused_by_name() -> None:
    for body in SOAP_CORPUS[4:7]:
        with pytest.raises(RouterProtocolError, match="contains a DTD or entities; refused"):
            soap.answer("GetExternalIPAddress", 200, body)


def test_the_emulator_agrees_with_the_reference_client(emulator: EmulatorServer) -> None:
    """upnpclient, an independent UPnP client, reads the emulator the way portctl does."""
    import upnpclient

    from reconciler.backends import upnp

    emulator.router.add(4000, "TCP", "192.168.1.5", 80, "web")
    device = upnpclient.Device(emulator.url)
    service = next(s for s in device.services if s.service_type == emulator.service_type)
    theirs = service.GetGenericPortMappingEntry(NewPortMappingIndex=0)
    ours = upnp.connect(emulator.url).list_mappings()
    assert [(m.key.external_port, m.internal_client, m.internal_port, m.description) for m in ours] == [
        (
            theirs["NewExternalPort"],
            theirs["NewInternalClient"],
            theirs["NewInternalPort"],
            theirs["NewPortMappingDescription"],
        )
    ]
    assert service.GetExternalIPAddress()["NewExternalIPAddress"] == upnp.connect(emulator.url).external_address()
