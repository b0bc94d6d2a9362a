"""A spec-following UPnP IGD that runs in-process on loopback: for fast tests, quirk reproduction
and the demo. It is a router, not a fake backend: clients talk to it over HTTP and SOAP."""

from .router import Fault, Router
from .server import EmulatorServer

__all__ = ["EmulatorServer", "Fault", "Router"]
