"""What `portctl demo` may write to a real router.

On the built-in emulator the demo is automatic. A real router holds other people's mappings and
the user's own, so there the demo writes only under an owner that nothing else uses, never
prunes, never takes over another mapping's port, and (in the CLI) only after a typed `yes`.
"""

from __future__ import annotations

import os

from .errors import ManifestError, Problem
from .models import Manifest, OnConflict
from .yamldoc import Document

OWNER = "portctl-demo"  # reserved for the demo: no example and no `portctl init` file uses it
DEFAULT_FILE = os.path.join("examples", "demo.yaml")


def check_for_real_router(manifest: Manifest, text: str) -> None:
    """Raise ManifestError, naming the file and line, for what the demo must not do on a real router."""
    doc = Document(text, manifest.path)
    problems: list[Problem] = []
    if manifest.owner != OWNER:
        problems.append(
            doc.problem(
                ("owner",),
                f"the demo writes to a real router only as owner {OWNER!r}, which nothing else writes, "
                f"so it cannot touch the mappings of owner {manifest.owner!r}; try {DEFAULT_FILE}, or run "
                f"`portctl plan` and `portctl apply` on this manifest",
            )
        )
    if manifest.prune:
        problems.append(
            doc.problem(
                ("prune",),
                "the demo never prunes on a real router: set `prune: false` (prune is on unless it says so)",
            )
        )
    takeovers = {m.line: m.name for m in manifest.mappings if m.on_conflict is OnConflict.TAKEOVER}
    for line, name in takeovers.items():  # one per declared mapping: `both` and ranges share a line
        at = ("mappings", _index(doc, line), "on_conflict")
        problems.append(doc.problem(at, f"{name}: the demo never takes over another mapping's port"))
    if problems:
        raise ManifestError(sorted(problems, key=lambda p: (p.line, p.column)))


def _index(doc: Document, line: int) -> int:
    """The position in `mappings` of the entry declared at `line` (0 when not found)."""
    entries = (doc.data.get("mappings") if isinstance(doc.data, dict) else None) or []
    return next((i for i in range(len(entries)) if doc.where(("mappings", i))[0] == line), 0)
