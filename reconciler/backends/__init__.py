"""Ways of talking to a router: one Backend per protocol (upnp/ today), each declaring its Capabilities.
Only modules in this package send a router requests; finding one by SSDP is discovery.py's job."""

from .base import Backend, Capabilities, EventSource

__all__ = ["Backend", "Capabilities", "EventSource"]
