"""UPnP IGD: `connect` describes a router and returns its `UpnpBackend`.

Modules, one job each: `description` (parse the description documents, choose the connection
service, cache both), `session` (SOAP over an injectable transport, with deadlines, retries and
request counting), `table` (read the whole table in pages that cannot crash the router), `backend`
(the Backend interface: single reads and writes, and what refusals teach).
"""

from .backend import UpnpBackend, connect

__all__ = ["UpnpBackend", "connect"]
