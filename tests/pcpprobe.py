"""One PCP or NAT-PMP exchange, run as a program on the lab's LAN host; prints the answer as JSON.

    python -m tests.pcpprobe '{"op": "map", "gateway": "192.168.77.1", "nonce": "00..", ...}'

The real-router tests run it inside the LAN namespace (the socket must leave from there), the way
they run portctl itself.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from typing import Any

from reconciler.backends.pcp import wire
from reconciler.backends.pcp.client import Client
from reconciler.backends.pcp.errors import UnsupportedVersion


def probe(args: dict[str, Any]) -> dict[str, Any]:
    with Client(args["gateway"], deadline=float(args.get("deadline", 30))) as client:
        op = args["op"]
        if op == "map":
            request = wire.MapRequest(
                nonce=bytes.fromhex(args["nonce"]),
                protocol=wire.IpProtocol[args["protocol"]],
                internal_port=args["internal_port"],
                client_address=client.local_address,
                lifetime=args["lifetime"],
                suggested_external_port=args.get("external_port", 0),
                prefer_failure=args.get("prefer_failure", False),
                third_party=ipaddress.ip_address(args["third_party"]) if args.get("third_party") else None,
            )
            try:
                answer = client.pcp(request)
            except UnsupportedVersion as exc:
                return {"unsupported_version": exc.server_version}
            r = answer.response
            granted = r.map
            return {
                "result": r.result_name,
                "lifetime": r.lifetime,
                "epoch": r.epoch,
                "external_port": granted.external_port if granted else None,
                "external_address": str(granted.external_address) if granted else None,
            }
        if op == "announce":
            a = client.pcp(wire.AnnounceRequest(client.local_address))
            return {"result": a.response.result_name, "epoch": a.response.epoch, "at": a.received_at}
        if op == "natpmp-map":
            n = client.natpmp(
                wire.NatPmpMapRequest(
                    wire.IpProtocol[args["protocol"]],
                    args["internal_port"],
                    args["lifetime"],
                    args.get("external_port", 0),
                )
            ).response
            return {"result": n.result_name, "external_port": n.external_port, "lifetime": n.lifetime, "epoch": n.epoch}
        if op == "natpmp-address":
            n = client.natpmp(wire.ExternalAddressRequest()).response
            return {"result": n.result_name, "external_address": str(n.external_address), "epoch": n.epoch}
    raise SystemExit(f"unknown op {op!r}")


if __name__ == "__main__":
    print(json.dumps(probe(json.loads(sys.argv[1]))))
