"""One pinhole action by portctl's firewall client, run as a program on the lab's LAN host; prints JSON.

    python -m tests.pinholeprobe '{"op": "add", "location": "http://[2001:db8:77::1]:5000/rootDesc.xml",
                                   "source": "2001:db8:77::2", "client": "2001:db8:77::2", "port": 18600, ...}'

The real-router tests run it inside the LAN namespace (requests must leave from the pinhole's own
address there), the way they run portctl itself. A typed refusal is printed as its class, code and message.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from reconciler.backends.upnp import firewall
from reconciler.errors import RouterError, UpnpActionError
from reconciler.models import Pinhole, PinholeKey, Protocol


def probe(args: dict[str, Any]) -> dict[str, Any]:
    try:
        with firewall.connect(args["location"], source=args["source"], timeout=30) as fw:
            op = args["op"]
            if op == "status":
                status = fw.status()
                return {"enabled": status.enabled, "inbound_pinholes_allowed": status.inbound_pinholes_allowed}
            if op == "add":
                key = PinholeKey(
                    args["client"],
                    args["port"],
                    Protocol(args.get("protocol", "TCP")),
                    args.get("remote_host", ""),
                    args.get("remote_port", 0),
                )
                return {"unique_id": fw.add(Pinhole(key, args.get("lease", 3600)))}
            if op == "update":
                fw.update(args["unique_id"], args["lease"])
                return {"done": True}
            if op == "delete":
                fw.delete(args["unique_id"])
                return {"done": True}
    except RouterError as exc:
        return {
            "error": type(exc).__name__,
            "code": exc.code if isinstance(exc, UpnpActionError) else None,
            "message": str(exc),
        }
    raise SystemExit(f"unknown op {args['op']!r}")


if __name__ == "__main__":
    print(json.dumps(probe(json.loads(sys.argv[1]))))
