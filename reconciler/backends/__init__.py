"""Ways of talking to a router: its description, control and event URLs. Only modules in this package
send a router requests; finding one by SSDP is discovery.py's job."""

from .base import Backend, Capabilities, EventSource

__all__ = ["Backend", "Capabilities", "EventSource"]
