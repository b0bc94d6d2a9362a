"""The emulated router on the wire: device and service descriptions, and SOAP control, over HTTP."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

from .. import xmlsafe
from ..errors import RouterProtocolError
from .router import Fault, Router

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
ENCODING = "http://schemas.xmlsoap.org/soap/encoding/"
CONTROL_PATH = "/ctl/IPConn"
SCPD_PATH = "/WANIPCn.xml"

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


class EmulatorServer:
    """Serves `router` on host:port (port 0 picks a free one) until stop(); usable as a context manager."""

    def __init__(self, router: Router | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.router = router or Router()
        self.udn = "uuid:00000000-7e57-4d00-8000-00000000c0de"
        # path -> (HTTP status, body): serve this instead, to imitate broken or hostile routers.
        self.overrides: dict[str, tuple[int, bytes]] = {}
        self._httpd = _QuietServer((host, port), _handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def service_type(self) -> str:
        return f"urn:schemas-upnp-org:service:WANIPConnection:{self.router.igd_version}"

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/rootDesc.xml"  # AF_INET: always a str

    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="portctl-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    # -- documents -------------------------------------------------------------------------

    def root_description(self) -> bytes:
        v = self.router.igd_version
        return (
            '<?xml version="1.0"?>\n<root xmlns="urn:schemas-upnp-org:device-1-0" configId="1">'
            "<specVersion><major>1</major><minor>1</minor></specVersion><device>"
            f"<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:{v}</deviceType>"
            "<friendlyName>portctl emulator</friendlyName><manufacturer>portctl</manufacturer>"
            f"<modelName>IGD emulator</modelName><UDN>{self.udn}</UDN><deviceList><device>"
            f"<deviceType>urn:schemas-upnp-org:device:WANDevice:{v}</deviceType>"
            f"<friendlyName>WANDevice</friendlyName><UDN>{self.udn}-1</UDN><deviceList><device>"
            f"<deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:{v}</deviceType>"
            f"<friendlyName>WANConnectionDevice</friendlyName><UDN>{self.udn}-2</UDN><serviceList><service>"
            f"<serviceType>{self.service_type}</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>"
            f"<SCPDURL>{SCPD_PATH}</SCPDURL><controlURL>{CONTROL_PATH}</controlURL><eventSubURL>/evt/IPConn</eventSubURL>"
            "</service></serviceList></device></deviceList></device></deviceList></device></root>"
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

    def control(self, soap_action: str, body: bytes, client: str) -> tuple[int, bytes]:
        try:
            envelope = xmlsafe.parse(body, "SOAP request")
        except RouterProtocolError:
            return 400, b"malformed SOAP request"
        request = next((c for b in xmlsafe.children(envelope, "Body") for c in b), None)
        if request is None:
            return 400, b"SOAP request without a body"
        action = xmlsafe.local(request.tag)
        if soap_action.strip('"') != f"{self.service_type}#{action}":
            return _fault(401)
        args = {xmlsafe.local(arg.tag): (arg.text or "") for arg in request}
        try:
            out = self.router.call(action, args, client)
        except Fault as fault:
            return _fault(fault.code, fault.description)
        values = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in out.items())
        return 200, _envelope(f'<u:{action}Response xmlns:u="{self.service_type}">{values}</u:{action}Response>')


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A client hanging up mid-answer is normal for a router (portctl does it to refuse
        # oversized documents); anything else is a bug in the emulator and is reported.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


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

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
            pass  # the emulator is quiet; tests read the router's state instead

        def do_GET(self) -> None:
            if self.path in server.overrides:
                self._send(*server.overrides[self.path])
            elif self.path == "/rootDesc.xml":
                self._send(200, server.root_description())
            elif self.path == SCPD_PATH:
                self._send(200, server.service_description())
            else:
                self._send(404, b"not found")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, 1 << 20))
            if self.path in server.overrides:
                self._send(*server.overrides[self.path])
            elif self.path == CONTROL_PATH:
                self._send(*server.control(self.headers.get("SOAPAction", ""), body, self.client_address[0]))
            else:
                self._send(404, b"not found")

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", 'text/xml; charset="utf-8"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
