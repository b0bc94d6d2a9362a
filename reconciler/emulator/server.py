"""The emulated router on the wire: device and service descriptions, and SOAP control, over HTTP."""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

from .. import xmlsafe
from ..errors import UPNP_ERROR_NAMES, RouterProtocolError
from . import firewall
from .events import EVENT_PATH, Publisher
from .pcp import Responder
from .router import Fault, Router, WireFault
from .udp import UdpServer

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
ENCODING = "http://schemas.xmlsoap.org/soap/encoding/"
CONTROL_PATH = "/ctl/IPConn"
DEAD_CONTROL_PATH = "/ctl/IPConn0"  # the disconnected WAN connection of the two-wan profile
SCPD_PATH = "/WANIPCn.xml"
FIREWALL_CONTROL_PATH = "/ctl/IP6FCtl"  # miniupnpd's paths for WANIPv6FirewallControl:1
FIREWALL_SCPD_PATH = "/WANIP6FC.xml"

# name -> (UPnP data type, allowed values); the relatedStateVariable of each argument below.
_STATE_VARIABLES = {
    "ExternalIPAddress": ("string", ()),
    "ConnectionStatus": ("string", ("Connected", "Disconnected")),
    "LastConnectionError": ("string", ("ERROR_NONE",)),
    "Uptime": ("ui4", ()),
    "ConnectionType": ("string", ()),
    "PossibleConnectionTypes": ("string", ("IP_Routed",)),
    "PortMappingNumberOfEntries": ("ui2", ()),
    "PortMappingEnabled": ("boolean", ()),
    "PortMappingLeaseDuration": ("ui4", ()),
    "RemoteHost": ("string", ()),
    "ExternalPort": ("ui2", ()),
    "InternalPort": ("ui2", ()),
    "PortMappingProtocol": ("string", ("TCP", "UDP")),
    "InternalClient": ("string", ()),
    "PortMappingDescription": ("string", ()),
    "A_ARG_TYPE_Manage": ("boolean", ()),
    "A_ARG_TYPE_PortListing": ("string", ()),
}
_ENTRY_OUT = [
    ("NewInternalPort", "InternalPort"),
    ("NewInternalClient", "InternalClient"),
    ("NewEnabled", "PortMappingEnabled"),
    ("NewPortMappingDescription", "PortMappingDescription"),
    ("NewLeaseDuration", "PortMappingLeaseDuration"),
]
_KEY = [("NewRemoteHost", "RemoteHost"), ("NewExternalPort", "ExternalPort"), ("NewProtocol", "PortMappingProtocol")]
# action -> (in arguments, out arguments), each (argument name, related state variable)
_ARGUMENTS: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {
    "GetExternalIPAddress": ([], [("NewExternalIPAddress", "ExternalIPAddress")]),
    "GetStatusInfo": (
        [],
        [
            ("NewConnectionStatus", "ConnectionStatus"),
            ("NewLastConnectionError", "LastConnectionError"),
            ("NewUptime", "Uptime"),
        ],
    ),
    "GetConnectionTypeInfo": (
        [],
        [("NewConnectionType", "ConnectionType"), ("NewPossibleConnectionTypes", "PossibleConnectionTypes")],
    ),
    "GetGenericPortMappingEntry": ([("NewPortMappingIndex", "PortMappingNumberOfEntries")], _KEY + _ENTRY_OUT),
    "GetSpecificPortMappingEntry": (_KEY, _ENTRY_OUT),
    "AddPortMapping": (_KEY + _ENTRY_OUT, []),
    "DeletePortMapping": (_KEY, []),
    "GetListOfPortMappings": (
        [
            ("NewStartPort", "ExternalPort"),
            ("NewEndPort", "ExternalPort"),
            ("NewProtocol", "PortMappingProtocol"),
            ("NewManage", "A_ARG_TYPE_Manage"),
            ("NewNumberOfPorts", "PortMappingNumberOfEntries"),
        ],
        [("NewPortListing", "A_ARG_TYPE_PortListing")],
    ),
}

# WANIPv6FirewallControl:1: action -> (in arguments, out arguments), and the state variables they name.
_FIREWALL_VARIABLES = {
    "FirewallEnabled": "boolean",
    "InboundPinholeAllowed": "boolean",
    "OutboundPinholeTimeout": "ui4",
    "A_ARG_TYPE_IPv6Address": "string",
    "A_ARG_TYPE_Port": "ui2",
    "A_ARG_TYPE_Protocol": "ui2",
    "A_ARG_TYPE_LeaseTime": "ui4",
    "A_ARG_TYPE_UniqueID": "ui2",
    "A_ARG_TYPE_PinholePackets": "ui4",
    "A_ARG_TYPE_Boolean": "boolean",
}
_PINHOLE = [
    ("RemoteHost", "A_ARG_TYPE_IPv6Address"),
    ("RemotePort", "A_ARG_TYPE_Port"),
    ("InternalClient", "A_ARG_TYPE_IPv6Address"),
    ("InternalPort", "A_ARG_TYPE_Port"),
    ("Protocol", "A_ARG_TYPE_Protocol"),
]
_UID = [("UniqueID", "A_ARG_TYPE_UniqueID")]
_FIREWALL_ARGUMENTS: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {
    "GetFirewallStatus": (
        [],
        [("FirewallEnabled", "FirewallEnabled"), ("InboundPinholeAllowed", "InboundPinholeAllowed")],
    ),
    "GetOutboundPinholeTimeout": (_PINHOLE, [("OutboundPinholeTimeout", "OutboundPinholeTimeout")]),
    "AddPinhole": ([*_PINHOLE, ("LeaseTime", "A_ARG_TYPE_LeaseTime")], _UID),
    "UpdatePinhole": ([*_UID, ("NewLeaseTime", "A_ARG_TYPE_LeaseTime")], []),
    "DeletePinhole": (_UID, []),
    "GetPinholePackets": (_UID, [("PinholePackets", "A_ARG_TYPE_PinholePackets")]),
    "CheckPinholeWorking": (_UID, [("IsWorking", "A_ARG_TYPE_Boolean")]),
}


class EmulatorServer:
    """Serves `router` on host:port (port 0 picks a free one) until stop(); usable as a context manager.

    With `pcp_port` (0 picks a free one) it also answers PCP and NAT-PMP over UDP on host:pcp_port,
    on the same table. `host` may be an IPv6 address (such as ::1, for pinholes)."""

    def __init__(
        self, router: Router | None = None, host: str = "127.0.0.1", port: int = 0, *, pcp_port: int | None = None
    ) -> None:
        self.router = router or Router()
        self.profile = self.router.profile
        self.udn = "uuid:00000000-7e57-4d00-8000-00000000c0de"
        # path -> (HTTP status, body): serve this instead, to imitate broken or hostile routers.
        self.overrides: dict[str, tuple[int, bytes]] = {}
        self.requests = 0  # every HTTP request served, for the flaky profile and for tests
        self._count_lock = threading.Lock()
        self.controls = {CONTROL_PATH: self.router}
        if self.profile.dead_wan_first:
            self.controls[DEAD_CONTROL_PATH] = Router(self.profile, connected=False)
        self.stall = 3.0  # seconds a "stall" fault holds the answer back
        # action -> seconds it takes, slept with `sleep`: a test hands in its clock's advance, so a
        # slow router costs no wall-clock time and the client measures exactly this much.
        self.delays: dict[str, float] = {}
        self.sleep: Callable[[float], None] = time.sleep
        self.events = True  # answer SUBSCRIBE; False imitates routers that list an eventSubURL but refuse it
        self.publisher = Publisher()
        self.router.on_change.append(self.publisher.publish)
        self._httpd = (_QuietServer6 if ":" in host else _QuietServer)((host, port), _handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.pcp = Responder(self.router)
        self._udp: UdpServer | None = None
        if pcp_port is not None:
            try:
                self._udp = UdpServer(self.pcp.answer, host, pcp_port)
            except OSError:
                self._httpd.server_close()
                raise

    @property
    def pinholes(self) -> bool:
        """Is WANIPv6FirewallControl:1 served (IGD v2 and the profile's say)?"""
        return self.router.igd_version >= 2 and self.profile.pinholes

    @property
    def pcp_port(self) -> int:
        """The UDP port PCP and NAT-PMP are answered on; ValueError when the server has none."""
        if self._udp is None:
            raise ValueError("this emulator serves no PCP/NAT-PMP port (pass pcp_port)")
        return self._udp.port

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    def pcp_url(self, scheme: str = "pcp") -> str:
        """pcp://HOST:PORT (or natpmp://) of the UDP port, as portctl's --router takes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.pcp_port}"

    @property
    def service_type(self) -> str:
        return self.profile.service_type or f"urn:schemas-upnp-org:service:WANIPConnection:{self.router.igd_version}"

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        host = f"[{host!s}]" if ":" in str(host) else str(host)
        return f"http://{host}:{port}/rootDesc.xml"

    def count_request(self) -> int:
        """Number this request (from 1); the flaky profile fails by the count, so runs repeat exactly."""
        with self._count_lock:
            self.requests += 1
            return self.requests

    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="portctl-emulator", daemon=True
        )  # a short poll: stop() returns at once, which hundreds of property-test examples notice
        self._thread.start()
        if self._udp is not None:
            self._udp.start()
        return self

    def stop(self) -> None:
        if self._udp is not None:
            self._udp.stop()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.hang_up()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        if self._udp is not None:
            self._udp.start()
        self._httpd.serve_forever()

    def reboot(self, *, uptime_kept: bool = False) -> None:
        """Restart the router: its table and its event subscribers are gone (see Router.reboot)."""
        self.router.reboot(uptime_kept=uptime_kept)
        self.publisher.forget_all()

    # -- documents -------------------------------------------------------------------------

    def root_description(self) -> bytes:
        v = self.router.igd_version
        connections = [(CONTROL_PATH, "")]
        if DEAD_CONTROL_PATH in self.controls:
            connections.insert(0, (DEAD_CONTROL_PATH, "-dead"))
        # miniupnpd lists the firewall service beside WANIPConnection:2 in the WANConnectionDevice.
        pinholes = (
            f"<service><serviceType>{firewall.SERVICE_TYPE}</serviceType>"
            "<serviceId>urn:upnp-org:serviceId:WANIPv6Firewall1</serviceId>"
            f"<SCPDURL>{FIREWALL_SCPD_PATH}</SCPDURL><controlURL>{FIREWALL_CONTROL_PATH}</controlURL>"
            "<eventSubURL>/evt/IP6FCtl</eventSubURL></service>"
            if self.pinholes
            else ""
        )
        devices = "".join(
            f"<device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:{v}</deviceType>"
            f"<friendlyName>WANConnectionDevice{suffix}</friendlyName><UDN>{self.udn}-2{suffix}</UDN><serviceList>"
            f"<service><serviceType>{self.service_type}</serviceType>"
            f"<serviceId>urn:upnp-org:serviceId:WANIPConn1{suffix}</serviceId>"
            f"<SCPDURL>{SCPD_PATH}</SCPDURL><controlURL>{path}</controlURL><eventSubURL>{EVENT_PATH}</eventSubURL>"
            f"</service>{'' if suffix else pinholes}</serviceList></device>"
            for path, suffix in connections
        )
        return (
            '<?xml version="1.0"?>\n<root xmlns="urn:schemas-upnp-org:device-1-0" configId="1">'
            "<specVersion><major>1</major><minor>1</minor></specVersion><device>"
            f"<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:{v}</deviceType>"
            "<friendlyName>portctl emulator</friendlyName><manufacturer>portctl</manufacturer>"
            f"<modelName>IGD emulator</modelName><UDN>{self.udn}</UDN><deviceList><device>"
            f"<deviceType>urn:schemas-upnp-org:device:WANDevice:{v}</deviceType>"
            f"<friendlyName>WANDevice</friendlyName><UDN>{self.udn}-1</UDN><deviceList>{devices}"
            "</deviceList></device></deviceList></device></root>"
        ).encode()

    def service_description(self) -> bytes:
        actions = "".join(
            f"<action><name>{name}</name><argumentList>"
            + "".join(
                f"<argument><name>{arg}</name><direction>{direction}</direction>"
                f"<relatedStateVariable>{var}</relatedStateVariable></argument>"
                for direction, args in (("in", _ARGUMENTS[name][0]), ("out", _ARGUMENTS[name][1]))
                for arg, var in args
            )
            + "</argumentList></action>"
            for name in self.router.actions
        )
        variables = "".join(
            f'<stateVariable sendEvents="no"><name>{name}</name><dataType>{kind}</dataType>'
            + (
                "<allowedValueList>"
                + "".join(f"<allowedValue>{a}</allowedValue>" for a in allowed)
                + "</allowedValueList>"
                if allowed
                else ""
            )
            + "</stateVariable>"
            for name, (kind, allowed) in _STATE_VARIABLES.items()
        )
        return (
            '<?xml version="1.0"?>\n<scpd xmlns="urn:schemas-upnp-org:service-1-0">'
            "<specVersion><major>1</major><minor>0</minor></specVersion>"
            f"<actionList>{actions}</actionList><serviceStateTable>{variables}</serviceStateTable></scpd>"
        ).encode()

    def firewall_description(self) -> bytes:
        actions = "".join(
            f"<action><name>{name}</name><argumentList>"
            + "".join(
                f"<argument><name>{arg}</name><direction>{direction}</direction>"
                f"<relatedStateVariable>{var}</relatedStateVariable></argument>"
                for direction, args in (("in", ins), ("out", outs))
                for arg, var in args
            )
            + "</argumentList></action>"
            for name, (ins, outs) in _FIREWALL_ARGUMENTS.items()
        )
        variables = "".join(
            f'<stateVariable sendEvents="no"><name>{name}</name><dataType>{kind}</dataType></stateVariable>'
            for name, kind in _FIREWALL_VARIABLES.items()
        )
        return (
            '<?xml version="1.0"?>\n<scpd xmlns="urn:schemas-upnp-org:service-1-0">'
            "<specVersion><major>1</major><minor>0</minor></specVersion>"
            f"<actionList>{actions}</actionList><serviceStateTable>{variables}</serviceStateTable></scpd>"
        ).encode()

    def firewall_control(self, soap_action: str, body: bytes, client: str) -> tuple[int, bytes]:
        """Answer one pinhole request; without the service (IGD v1, or the profile's say) every
        action is 401 Invalid Action, as a router without IGD2 answers."""
        try:
            action, args = _soap_request(body)
        except _BadRequest as bad:
            return 400, bad.reason.encode()
        if not self.pinholes or soap_action.strip('"') != f"{firewall.SERVICE_TYPE}#{action}":
            return _fault(401)
        try:
            out = self.router.firewall.call(action, args, client)
        except firewall.PinholeFault as fault:
            return _fault(fault.code, UPNP_ERROR_NAMES.get(fault.code, "ActionFailed"))
        values = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in out.items())
        return 200, _envelope(f'<u:{action}Response xmlns:u="{firewall.SERVICE_TYPE}">{values}</u:{action}Response>')

    def control(self, soap_action: str, body: bytes, client: str, router: Router | None = None) -> tuple[int, bytes]:
        """Answer one SOAP request; raises WireFault where the router would answer no SOAP at all."""
        try:
            envelope = xmlsafe.parse(body, "SOAP request")
        except RouterProtocolError:
            return 400, b"malformed SOAP request"
        request = next((c for b in xmlsafe.children(envelope, "Body") for c in b), None)
        if request is None:
            return 400, b"SOAP request without a body"
        action = xmlsafe.local(request.tag)
        if self.profile.strict_soap:
            refusal = _strict_refusal(soap_action, body, self.service_type, action)
            if refusal:
                return 500, refusal.encode()
        if soap_action.strip('"') != f"{self.service_type}#{action}":
            return _fault(401)
        args = {xmlsafe.local(arg.tag): (arg.text or "") for arg in request}
        try:
            out = (router or self.router).call(action, args, client)
        except Fault as fault:
            return _fault(fault.code, fault.description)
        values = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in out.items())
        return 200, _envelope(f'<u:{action}Response xmlns:u="{self.service_type}">{values}</u:{action}Response>')


class _BadRequest(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _soap_request(body: bytes) -> tuple[str, dict[str, str]]:
    """The action and arguments a SOAP request carries; _BadRequest (HTTP 400) for a malformed one."""
    try:
        envelope = xmlsafe.parse(body, "SOAP request")
    except RouterProtocolError:
        raise _BadRequest("malformed SOAP request") from None
    request = next((c for b in xmlsafe.children(envelope, "Body") for c in b), None)
    if request is None:
        raise _BadRequest("SOAP request without a body")
    return xmlsafe.local(request.tag), {xmlsafe.local(arg.tag): (arg.text or "") for arg in request}


class _QuietServer(ThreadingHTTPServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open: set[socket.socket] = set()  # connections clients keep alive
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self.open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self.open.discard(request)
        super().shutdown_request(request)

    def hang_up(self) -> None:
        """Drop every open connection, as a router that goes away does (kept-alive ones included)."""
        with self._open_lock:
            conns = list(self.open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: object, client_address: object) -> None:
        # A client hanging up mid-answer is normal for a router (portctl does it to refuse
        # oversized documents); anything else is a bug in the emulator and is reported.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _QuietServer6(_QuietServer):
    address_family = socket.AF_INET6


def _strict_refusal(soap_action: str, body: bytes, service_type: str, action: str) -> str:
    """Why a strict router (Linksys WRT120N, MikroTik RB951G) would reject this request; "" if it would not."""
    if soap_action != f'"{service_type}#{action}"':
        return f'SOAPAction must be exactly "{service_type}#{action}" in double quotes'
    if body[:1].isspace():
        return "the body starts with whitespace"
    if not re.search(rb"<([A-Za-z_][\w.-]*):" + re.escape(action.encode()) + rb"[\s>]", body):
        return "the action element has no namespace prefix"
    return ""


def _envelope(body: str) -> bytes:
    return (
        f'<?xml version="1.0"?>\n<s:Envelope xmlns:s="{SOAP_ENV}" s:encodingStyle="{ENCODING}">'
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def _fault(code: int, description: str = "InvalidAction") -> tuple[int, bytes]:
    return 500, _envelope(
        "<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>"
        '<UPnPError xmlns="urn:schemas-upnp-org:control-1-0">'
        f"<errorCode>{code}</errorCode><errorDescription>{escape(description)}</errorDescription>"
        "</UPnPError></detail></s:Fault>"
    )


def _handler(server: EmulatorServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle on, a kept-alive client waits for its
        # own delayed ACK (40 ms) before the body arrives.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
            pass  # the emulator is quiet; tests read the router's state instead

        def _deviate(self) -> bool:
            """Apply the profile's wire behaviour; True if the request is already answered (or dropped)."""
            n = server.count_request()
            if server.profile.delay:
                time.sleep(server.profile.delay)
            every = server.profile.flaky_every
            if every and n % every == 0:
                self._wire("drop" if (n // every) % 2 == 0 else "http-500")
                return True
            return False

        def _wire(self, kind: str) -> None:
            if kind == "stall":
                time.sleep(server.stall)  # longer than the client waits: it gives up first
                kind = "drop"
            if kind == "drop":
                self.close_connection = True  # hang up without a status line
            else:
                self._send(500, b"Internal Server Error")

        def do_GET(self) -> None:
            if self._deviate():
                return
            if self.path in server.overrides:
                self._send(*server.overrides[self.path])
            elif self.path == "/rootDesc.xml":
                self._send(200, server.root_description())
            elif self.path == SCPD_PATH:
                self._send(200, server.service_description())
            elif self.path == FIREWALL_SCPD_PATH and server.pinholes:
                self._send(200, server.firewall_description())
            else:
                self._send(404, b"not found")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, 1 << 20))
            if self._deviate():
                return
            if self.path in server.overrides:
                self._send(*server.overrides[self.path])
            elif self.path in server.controls:
                action, client = self.headers.get("SOAPAction", ""), self.client_address[0]
                delay = server.delays.get(action.strip('"').rpartition("#")[2], 0.0)
                if delay:
                    server.sleep(delay)
                try:
                    self._send(*server.control(action, body, client, server.controls[self.path]))
                except WireFault as fault:
                    self._wire(fault.kind)
            elif self.path == FIREWALL_CONTROL_PATH:
                action, client = self.headers.get("SOAPAction", ""), self.client_address[0]
                self._send(*server.firewall_control(action, body, client))
            else:
                self._send(404, b"not found")

        def do_SUBSCRIBE(self) -> None:
            if not server.events or self.path != EVENT_PATH:
                self._send(501 if not server.events else 404, b"")
                return
            sid = self.headers.get("SID")
            if sid:
                seconds = server.publisher.renew(sid, self.headers.get("TIMEOUT", ""))
                if seconds is None:
                    self._send(412, b"")
                    return
            else:
                if self.headers.get("NT") != "upnp:event":
                    self._send(412, b"")
                    return
                count = len(server.router.rows())
                made = server.publisher.subscribe(
                    self.headers.get("CALLBACK", ""), self.headers.get("TIMEOUT", ""), count
                )
                if made is None:
                    self._send(412, b"")
                    return
                sid, seconds = made
            self._send(200, b"", {"SID": sid, "TIMEOUT": f"Second-{seconds}"})

        def do_UNSUBSCRIBE(self) -> None:
            ok = server.events and server.publisher.unsubscribe(self.headers.get("SID", ""))
            self._send(200 if ok else 412, b"")

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", 'text/xml; charset="utf-8"')
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler
