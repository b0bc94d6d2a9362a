"""Start-up stays cheap: the offline commands never import the UPnP or HTTP stack."""

from __future__ import annotations

import os
import subprocess
import sys

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "homelab.yaml")
PROBE = """
import sys
from reconciler.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("upnpclient", "requests", "lxml", "deepdiff") if m in sys.modules)
print("heavy:", ",".join(heavy))
"""


def test_validate_does_not_import_the_upnp_stack() -> None:
    """validate loads YAML and the schema only."""
    out = subprocess.run([sys.executable, "-c", PROBE, "validate", EXAMPLE], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("heavy:")


def test_version_does_not_import_the_upnp_stack() -> None:
    """--version answers before anything heavy is imported."""
    probe = (
        "import sys\nfrom reconciler import cli\n"
        "print(sorted(m for m in ('upnpclient', 'requests', 'yaml', 'jsonschema') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
