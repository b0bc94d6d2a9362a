"""An Audit as text for people and JSON for machines. Pure."""

from __future__ import annotations

from typing import Any

from .audit import KINDS, PROBE_TIMEOUT, Audit, Finding
from .durations import format_duration
from .models import PortMapping, RouterInfo
from .plancodec import header, mapping_json, router_json


def row_text(m: PortMapping) -> str:
    lease = "permanent" if m.lease == 0 else format_duration(m.lease)
    return f"{m.key!s:<11} -> {m.internal_client}:{m.internal_port}  lease {lease}  {m.description!a}"


def text(result: Audit, router: RouterInfo | None = None) -> str:
    from .render import router_line

    out = [router_line(router), ""] if router else []
    n = len(result.findings)
    if not n:
        out.append(f"Audit of {result.rows} mappings: nothing deserves a look.")
    else:
        out.append(f"Audit of {result.rows} mappings: {n} finding{'s' if n > 1 else ''}.")
    width = max([len(f.kind) for f in result.findings] + [4])
    for f in result.findings:
        out += _finding(f, width)
    if result.probed:
        out.append("")
        out.append(f"Probed {len(result.probed)} LAN hosts by a TCP connect ({PROBE_TIMEOUT:g}s each).")
    if result.unprobed:
        out.append(f"Not probed (past the bound on probes or their time): {', '.join(result.unprobed)}.")
    if n:
        counts = ", ".join(f"{result.count(k)} {k}" for k in KINDS if result.count(k))
        out += ["", f"Findings: {counts}."]
    return "\n".join(out)


def _finding(f: Finding, width: int) -> list[str]:
    if len(f.rows) == 1:
        return [f"  {f.kind:<{width}}  {row_text(f.rows[0])}", f"  {'':<{width}}    {f.why}"]
    lines = [f"  {f.kind:<{width}}  {f.subject}: {f.why}"]
    lines += [f"  {'':<{width}}    {row_text(r)}" for r in f.rows]
    return lines


def json_doc(result: Audit, router: RouterInfo | None = None) -> dict[str, Any]:
    return {
        **header("audit"),
        "router": router_json(router) if router else None,
        "rows": result.rows,
        "findings": [
            {"kind": f.kind, "subject": f.subject, "why": f.why, "rows": [mapping_json(r) for r in f.rows]}
            for f in result.findings
        ],
        "counts": {k: result.count(k) for k in KINDS},
        "probed": list(result.probed),
        "unprobed": list(result.unprobed),
    }
