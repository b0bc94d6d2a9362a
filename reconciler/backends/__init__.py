"""Ways of talking to a router. Only modules in this package do network I/O with one."""

from .base import Backend

__all__ = ["Backend"]
