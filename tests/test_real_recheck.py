"""Real miniupnpd: the table changes while the user reads the plan, and apply leaves the new row alone.

apply asks for approval on a terminal (a pty here); while it waits, another app deletes our row and
maps the port for itself with upnpc. After "yes", every write that would touch a row the plan did
not see is skipped and reported, and the other app's row is exactly as it was.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests import routerlab
from tests.helpers import write
from tests.labfixtures import module_lab
from tests.routerlab import LAN_IP

pytestmark = pytest.mark.router
PROMPT = "Only 'yes' will be accepted: "


lab = module_lab("pk")


def manifest(owner: str, *mappings: str) -> str:
    body = "".join(mappings) or " []"
    return f"apiVersion: portctl/v1\nowner: {owner}\ndefaults:\n  internal_client: {LAN_IP}\nmappings:{body}\n"


def mapping(name: str, port: int, internal_port: int, description: str = "") -> str:
    text = f"\n  - name: {name}\n    external_port: {port}\n    internal_port: {internal_port}"
    return text + (f"\n    description: {description}" if description else "")


def _read(fd: int, until: Callable[[str], bool], timeout: float) -> str:
    """What the pty shows until `until` holds for it, or the other side closes it."""
    out = b""
    deadline = time.monotonic() + timeout
    while not until(out.decode(errors="replace")):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no end after {timeout}s; the terminal showed:\n{out.decode(errors='replace')}")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: every holder of the other end has closed it
            break
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace").replace("\r\n", "\n")


def apply_on_a_terminal(lab: routerlab.Lab, path: str, meanwhile: Callable[[], None]) -> tuple[int, str]:
    """Run apply with a pty for a terminal; when it asks, run `meanwhile`, then answer yes."""
    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "reconciler", "apply", path, "--router", lab.url, "--no-color"]
    proc = subprocess.Popen(["ip", "netns", "exec", lab.lan, *cmd], stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        shown = _read(master, lambda text: PROMPT in text, 60)
        assert proc.poll() is None, shown
        meanwhile()
        os.write(master, b"yes\n")
        shown += _read(master, lambda _text: False, 120)
        return proc.wait(60), shown
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)


def take_port(lab: routerlab.Lab, port: int, description: str) -> Callable[[], None]:
    """Another app deletes the row on `port` and maps the port for itself."""

    def act() -> None:
        lab.upnpc("-d", str(port), "TCP")
        lab.add_foreign(port, "TCP", description, internal_port=port + 10)

    return act


def row(lab: routerlab.Lab, port: int) -> tuple[int, str, str, int, str] | None:
    return next((r for r in lab.table() if r[0] == port and r[1] == "TCP"), None)


def test_removal_skips_a_row_another_app_took_meanwhile(lab: routerlab.Lab, tmp_path: str) -> None:
    """A planned removal is skipped, and reported as moved, when the port now holds another app's row."""
    path = write(tmp_path, manifest("recheck-rm", mapping("web", 7101, 80), mapping("keep", 7102, 81)))
    assert lab.portctl("apply", path, "--auto-approve").returncode == 0
    write(tmp_path, manifest("recheck-rm", mapping("keep", 7102, 81)))
    foreign = []
    take = take_port(lab, 7101, "another app took it")

    def meanwhile() -> None:
        take()
        foreign.append(row(lab, 7101))

    code, shown = apply_on_a_terminal(lab, path, meanwhile)
    assert "0 to add, 0 to change, 1 to remove." in shown.split(PROMPT)[0], shown
    assert foreign[0] == (7101, "TCP", LAN_IP, 7111, "another app took it")
    assert row(lab, 7101) == foreign[0], shown
    assert code == 1, shown
    assert "SKIPPED remove web 7101/tcp: moved: the row is no longer the one the plan saw" in shown
    assert "Traceback" not in shown


def test_add_skips_a_port_another_app_took_meanwhile(lab: routerlab.Lab, tmp_path: str) -> None:
    """A planned add is skipped, and reported as taken, when another app mapped the port meanwhile."""
    path = write(tmp_path, manifest("recheck-add", mapping("web", 7201, 80)))
    foreign = []

    def meanwhile() -> None:
        lab.add_foreign(7201, "TCP", "another app got here first", internal_port=7211)
        foreign.append(row(lab, 7201))

    code, shown = apply_on_a_terminal(lab, path, meanwhile)
    assert foreign[0] == (7201, "TCP", LAN_IP, 7211, "another app got here first")
    assert row(lab, 7201) == foreign[0], shown
    assert code == 1, shown
    assert "SKIPPED add    web 7201/tcp: taken: another mapping now holds the port" in shown
    assert "Traceback" not in shown


@pytest.mark.parametrize(
    ("port", "edit"),
    [(7301, ("internal_port: 80", "internal_port: 81")), (7401, ("description: nginx", "description: caddy"))],
    ids=["in-place", "replace"],
)
def test_change_skips_a_row_another_app_took_meanwhile(
    lab: routerlab.Lab, tmp_path: str, port: int, edit: tuple[str, str]
) -> None:
    """A planned change (re-add in place, or delete and add) is skipped when the row is another app's now."""
    text = manifest("recheck-change", mapping("web", port, 80, "nginx"))
    path = write(tmp_path, text)
    assert lab.portctl("apply", path, "--auto-approve").returncode == 0
    write(tmp_path, text.replace(*edit))
    foreign = []
    take = take_port(lab, port, "another app took it")

    def meanwhile() -> None:
        take()
        foreign.append(row(lab, port))

    code, shown = apply_on_a_terminal(lab, path, meanwhile)
    assert "0 to add, 1 to change, 0 to remove." in shown.split(PROMPT)[0], shown
    assert foreign[0] == (port, "TCP", LAN_IP, port + 10, "another app took it")
    assert row(lab, port) == foreign[0], shown
    assert code == 1, shown
    assert f"SKIPPED change web {port}/tcp: moved: the row is no longer the one the plan saw" in shown
    assert "Traceback" not in shown


def test_saved_plan_edited_to_remove_a_foreign_mapping_writes_nothing(lab: routerlab.Lab, tmp_path: str) -> None:
    """A saved plan with a foreign mapping added as a removal is refused; the router is as it was."""
    lab.add_foreign(7501, "TCP", "another app mapping", internal_port=7511)
    path = write(tmp_path, manifest("recheck-saved", mapping("web", 7502, 80)))
    saved = os.path.join(tmp_path, "plan.json")
    assert lab.portctl("plan", path, "--out", saved).returncode == 0
    with open(saved, encoding="utf-8") as f:
        doc = json.load(f)
    foreign = next(m for m in doc["foreign"] if m["key"]["external_port"] == 7501)
    doc["changes"].insert(
        0, {**doc["changes"][0], "action": "remove", "key": foreign["key"], "before": foreign, "after": None}
    )
    with open(saved, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    before = lab.table()
    r = lab.portctl("apply", saved, "--no-color")
    assert r.returncode == 1, r.stdout + r.stderr
    assert lab.table() == before
    assert (7501, "TCP", LAN_IP, 7511, "another app mapping") in before
    assert r.stderr.startswith(f"error: {saved}: the router changed since the plan was saved, or the plan was edited")
    assert "only in the saved plan: remove web 7501/tcp" in r.stderr
    assert "Traceback" not in r.stderr
