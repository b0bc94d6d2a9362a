"""The demo on real miniupnpd: with a router given, it asks like apply, as its own owner, never pruning.

The router holds another device's mapping, the user's own (`homelab`) and a leftover of an earlier
demo; whatever the demo is answered, those stay byte-identical. The terminal is a real pty, and
the answer is typed only once the prompt has appeared.
"""

from __future__ import annotations

import os
import pty
import select
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import routerlab
from tests.helpers import write
from tests.labfixtures import module_lab
from tests.routerlab import LAN_IP

pytestmark = pytest.mark.router
ROOT = Path(__file__).resolve().parent.parent
DEMO_FILE = str(ROOT / "examples" / "demo.yaml")
DEMO_ROWS = {(8080, "TCP", LAN_IP, 80), (25565, "TCP", LAN_IP, 25565)} | {
    (51413, proto, LAN_IP, 51413) for proto in ("TCP", "UDP")
}
PROMPT = "Only 'yes' will be accepted: "
NO_TERMINAL = "answer 'yes' on a terminal, and its input is not a terminal: nothing was changed"


def manifest(owner: str, name: str, port: int) -> str:
    return f"""\
apiVersion: portctl/v1
owner: {owner}
prune: {"false" if owner == "portctl-demo" else "true"}
defaults:
  internal_client: {LAN_IP}
mappings:
  - name: {name}
    external_port: {port}
"""


lab = module_lab("pd")


@pytest.fixture
def clean(lab: routerlab.Lab, tmp_path: Path) -> routerlab.Lab:
    """The router with a foreign row, a `homelab` row and an earlier demo's leftover row, nothing else."""
    lab.empty_table()
    lab.add_foreign(6000, "TCP", "Xbox Live (another device)")
    for owner, name, port in (("homelab", "nas", 7000), ("portctl-demo", "leftover", 7500)):
        r = lab.portctl("apply", write(tmp_path, manifest(owner, name, port), f"{owner}.yaml"), "--auto-approve")
        assert r.returncode == 0, r.stdout + r.stderr
    assert {row[0] for row in lab.table()} == {6000, 7000, 7500}
    return lab


def env(**extra: str) -> dict[str, str]:
    """This process's environment (the test's router cache) without a router or an outer make's flags."""
    drop = ("PORTCTL_ROUTER", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def on_terminal(lab: routerlab.Lab, answer: str) -> tuple[int, str]:
    """`portctl demo --router URL` on a pty; `answer` is typed once the prompt is on the screen."""
    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "reconciler", "demo", DEMO_FILE, "--router", lab.url, "--no-color"]
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.lan, *cmd], stdin=slave, stdout=slave, stderr=slave, env=env(), cwd=ROOT
    )
    os.close(slave)
    try:
        seen = read(master, PROMPT)
        os.write(master, f"{answer}\n".encode())
        seen += read(master, None)
        return proc.wait(60), seen.replace("\r\n", "\n")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)


def read(fd: int, until: str | None, timeout: float = 120) -> str:
    """What the terminal shows until `until` appears, or (None) until the program closes it."""
    deadline, out = time.monotonic() + timeout, b""
    while until is None or until.encode() not in out:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"waited {timeout}s for {until!r}; the terminal showed: {out.decode(errors='replace')}")
        if not select.select([fd], [], [], left)[0]:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the program exited and closed the terminal
            chunk = b""
        if not chunk:
            if until is None:
                break
            raise AssertionError(f"the demo ended without asking; it showed: {out.decode(errors='replace')}")
        out += chunk
    return out.decode(errors="replace")


def test_make_demo_with_a_router_and_no_terminal_changes_nothing(clean: routerlab.Lab, tmp_path: Path) -> None:
    """`make demo ROUTER=URL` with no terminal shows the plan, writes nothing, says why and fails."""
    # The Makefile's own command line, with portctl run from this checkout instead of .venv.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "portctl"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m reconciler "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    before = clean.table()
    make = ["make", "-s", "-C", str(ROOT), "demo", f"ROUTER={clean.url}", "STAMP=", f"BIN={bin_dir}"]
    r = clean.run(clean.lan, *make, check=False, stdin="", env=env(), timeout=180)
    assert r.returncode != 0
    assert f"The demo on the router at {clean.url}" in r.stdout
    assert "Plan: 4 to add, 0 to change, 0 to remove." in r.stdout
    assert NO_TERMINAL in r.stderr
    assert clean.table() == before


def test_demo_with_portctl_router_and_no_terminal_changes_nothing(clean: routerlab.Lab) -> None:
    """`portctl demo` with PORTCTL_ROUTER set and no terminal writes nothing, says why and exits 1."""
    before = clean.table()
    cmd = [sys.executable, "-m", "reconciler", "demo", DEMO_FILE, "--no-color"]
    r = clean.run(clean.lan, *cmd, check=False, stdin="", env=env(PORTCTL_ROUTER=clean.url), timeout=180)
    assert r.returncode == 1, r.stdout + r.stderr
    assert NO_TERMINAL in r.stderr
    assert "Traceback" not in r.stderr
    assert clean.table() == before


def test_demo_on_a_terminal_answered_no_changes_nothing(clean: routerlab.Lab) -> None:
    """The demo asks on a terminal; "no" leaves every row as it was and exits 1."""
    before = clean.table()
    code, screen = on_terminal(clean, "no")
    assert code == 1, screen
    assert "not applied: the answer was not 'yes'" in screen
    assert clean.table() == before


def test_demo_on_a_terminal_answered_yes_adds_only_its_rows(clean: routerlab.Lab) -> None:
    """ "yes" adds the demo's rows as portctl-demo and prunes nothing: the other three rows stay byte-identical."""
    before = clean.table()
    code, screen = on_terminal(clean, "yes")
    assert code == 0, screen
    after = clean.table()
    assert before <= after
    assert {row[:4] for row in after - before} == DEMO_ROWS
    assert 'No changes: the router matches the manifest for owner "portctl-demo".' in screen
