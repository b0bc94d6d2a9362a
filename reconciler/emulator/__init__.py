"""A spec-following UPnP IGD that runs in-process on loopback: for fast tests, quirk reproduction
and the demo. It is a router, not a fake backend: clients talk to it over HTTP and SOAP, and (with
a `pcp_port`) PCP and NAT-PMP over UDP, on one table as miniupnpd keeps it; IGD v2 routers also
serve IPv6 pinholes (WANIPv6FirewallControl:1)."""

from .profiles import PROFILES, Profile
from .router import Fault, Router
from .server import EmulatorServer

__all__ = ["PROFILES", "EmulatorServer", "Fault", "Profile", "Router"]
