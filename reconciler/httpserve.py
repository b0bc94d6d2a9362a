"""An HTTP server on a daemon thread: the agent's control listener and its GENA event listener."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True  # a peer that never finishes its request must not hold up shutdown

    def handle_error(self, request: object, client_address: object) -> None:
        # A peer hanging up mid-request is its own problem; anything else is a bug worth a trace.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class BackgroundServer:
    """Serves `handler` on host:port (0: any free port) between start() and stop()."""

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self._httpd = _Quiet((host, port), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=name, daemon=True)

    @property
    def address(self) -> str:
        """host:port actually bound."""
        host, port = self._httpd.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
