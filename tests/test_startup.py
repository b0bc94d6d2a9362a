"""Start-up stays cheap: the offline commands never import the UPnP or HTTP stack, and a warm plan
imports and writes only what it needs."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from reconciler import ownership
from reconciler.cache import Cache
from reconciler.emulator import EmulatorServer
from reconciler.models import MappingKey, Protocol

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


WARM = """
import sys
from reconciler.cli import main
code = main(sys.argv[1:])
needless = ("jsonschema", "deepdiff", "reconciler.planfile", "urllib.request")
print("needless:", ",".join(sorted(m for m in needless if m in sys.modules)), "code:", code)
"""


def test_a_warm_plan_of_an_unchanged_table_imports_and_writes_only_what_it_needs(
    emulator: EmulatorServer, tmp_path: str
) -> None:
    """No validator, differ, plan codec or URL opener imported, and the cache file is not rewritten."""
    for port in (8080, 8443):
        key = MappingKey(port, Protocol.TCP)
        emulator.router.add(port, "TCP", "192.168.1.50", port, ownership.describe("warm", key, f"web{port}"))
    path = os.path.join(tmp_path, "m.yaml")
    with open(path, "w") as f:
        f.write(
            "apiVersion: portctl/v1\nowner: warm\nmappings:\n"
            "  - {name: web8080, external_port: 8080, internal_client: 192.168.1.50}\n"
            "  - {name: web8443, external_port: 8443, internal_client: 192.168.1.50}\n"
        )
    args = [sys.executable, "-c", WARM, "plan", path, "--router", emulator.url]
    cold = subprocess.run(args, capture_output=True, text=True, check=True)
    assert cold.stdout.strip().endswith("code: 0"), cold.stdout + cold.stderr
    cache_file = Cache.from_env().path
    assert cache_file is not None
    with open(cache_file, "rb") as f:
        before = f.read()
    warm = subprocess.run(args, capture_output=True, text=True, check=True)
    assert warm.stdout.strip().endswith("needless:  code: 0"), warm.stdout + warm.stderr
    with open(cache_file, "rb") as f:
        assert f.read() == before


# What a warm plan must not load, each a cost once paid on every run: the package-resource loader
# (and zipfile) for the schema's text, the IDNA codec for the router's address, tempfile when nothing
# is written. argparse's add_parser is watched to see which subcommands were built.
LEAN = """
import argparse, sys
built = []
add_parser = argparse._SubParsersAction.add_parser
def watched(self, name, **kwargs):
    built.append(name)
    return add_parser(self, name, **kwargs)
argparse._SubParsersAction.add_parser = watched
from reconciler.cli import main
code = main(sys.argv[1:])
needless = ("importlib.resources", "zipfile", "encodings.idna", "tempfile")
print("needless:", ",".join(sorted(m for m in needless if m in sys.modules)), "built:", ",".join(built), "code:", code)
"""


def test_a_warm_plan_builds_only_its_own_subcommand_and_loads_no_helper_it_does_not_use(
    emulator: EmulatorServer, tmp_path: str
) -> None:
    """No resource loader, IDNA codec or tempfile imported, and no other subcommand's arguments built."""
    key = MappingKey(8080, Protocol.TCP)
    emulator.router.add(8080, "TCP", "192.168.1.50", 8080, ownership.describe("lean", key, "web"))
    path = os.path.join(tmp_path, "m.yaml")
    with open(path, "w") as f:
        f.write("apiVersion: portctl/v1\nowner: lean\nmappings:\n")
        f.write("  - {name: web, external_port: 8080, internal_client: 192.168.1.50}\n")
    args = [sys.executable, "-c", LEAN, "plan", path, "--router", emulator.url]
    cold = subprocess.run(args, capture_output=True, text=True, check=True)
    assert cold.stdout.strip().endswith("code: 0"), cold.stdout + cold.stderr
    warm = subprocess.run(args, capture_output=True, text=True, check=True)
    assert warm.stdout.strip().splitlines()[-1] == "needless:  built: plan code: 0", warm.stdout + warm.stderr


def test_help_before_the_command_word_lists_every_command(capsys: Any) -> None:
    """`portctl -h plan` is portctl's own help (the command word comes after the option): every
    command is listed, as with `portctl -h`, not only the one named."""
    import pytest

    from reconciler.cli import main

    listed = []
    for argv in (["-h"], ["-h", "plan"], ["--help", "apply"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        listed.append({line.split()[0] for line in out.splitlines() if line.startswith("    ") and line.split()})
    assert listed[0] == listed[1] == listed[2] and {"plan", "apply", "destroy", "agent"} <= listed[0]
