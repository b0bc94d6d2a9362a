"""What apply and the next plan must check, each pinned by a case the older tests left open:
the secure-mode canary when the other host's port is the highest, a renewal the router did not
really extend, and a next_free mapping that must stay where it moved."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from reconciler import discovery
from reconciler.emulator import PROFILES, EmulatorServer, Router
from reconciler.emulator.router import Entry
from tests.helpers import portctl, route_table, snapshot, write

THIS_HOST = "127.0.0.1"  # the emulator sees portctl's requests coming from here
LOCAL_FOREIGN = (9999, "TCP", THIS_HOST, 9999, "someone else's game server")  # proves nothing about secure mode


def run(capsys: pytest.CaptureFixture[str], server: EmulatorServer, *args: str) -> tuple[int, str]:
    r = portctl(capsys, *args, "--router", server.url, "--no-color")
    assert "Traceback" not in r.err
    return r.code, r.out + r.err


@pytest.fixture
def secure(tmp_path: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """A router in secure mode; this host is on 192.168.1.0/24, so 192.168.1.50 is another LAN host."""
    monkeypatch.setattr(discovery, "ROUTE_TABLE", route_table(tmp_path, "192.168.1.0/24"))
    with EmulatorServer(Router(PROFILES["secure-mode"])) as server:
        server.router.add(*LOCAL_FOREIGN)
        yield server


def test_the_other_hosts_mapping_is_written_first_even_on_the_highest_port(
    secure: EmulatorServer, tmp_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The other host's add comes first though its port sorts last: refused, and nothing else is written."""
    text = (
        "apiVersion: portctl/v1\nowner: canary\nmappings:\n"
        f"  - {{name: web, external_port: 8080, internal_client: {THIS_HOST}}}\n"
        f"  - {{name: game, external_port: 27015, protocol: both, internal_client: {THIS_HOST}}}\n"
        "  - {name: nas, external_port: 60000, internal_client: 192.168.1.50}\n"
    )
    code, out = run(capsys, secure, "apply", write(tmp_path, text), "--auto-approve")
    assert code == 1
    assert "secure mode" in out
    assert secure.router.journal == []  # one AddPortMapping sent and refused; nothing written
    assert secure.router.calls["AddPortMapping"] == 1
    assert snapshot(secure) == [LOCAL_FOREIGN]


class _RenewKeepsExpiry(Router):
    """A router that acknowledges a re-add of an existing mapping but keeps its old expiry, or
    (with `cut`) shortens it further: AddPortMapping on the same row does not renew it."""

    def __init__(self, clock: list[float], cut: int) -> None:
        super().__init__(clock=lambda: clock[0])
        self.cut = cut

    def _store(self, entry: Entry) -> None:
        old = self._find(entry.external_port, entry.protocol)
        if old is not None and old.expires is not None and old.internal_client == entry.internal_client:
            entry = replace(entry, expires=old.expires - self.cut)
        super()._store(entry)


@pytest.mark.parametrize("cut", [0, 60], ids=["same-lease", "shorter-lease"])
def test_a_renewal_the_router_did_not_extend_is_not_counted_done(
    cut: int, tmp_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A renew whose row comes back with no more lease than before is not done until the lease is really new."""
    now = [1000.0]
    with EmulatorServer(_RenewKeepsExpiry(now, cut)) as server:
        path = write(
            tmp_path,
            f"apiVersion: portctl/v1\nowner: t\nmappings:\n"
            f"  - {{name: web, external_port: 8080, lease: 2h, internal_client: {THIS_HOST}}}\n",
        )
        assert run(capsys, server, "apply", path, "--auto-approve")[0] == 0
        now[0] += 4000  # 53 minutes left of 2 hours: due for renewal
        code, out = run(capsys, server, "plan", path, "--detailed-exitcode")
        assert code == 2 and "renew" in out
        code, out = run(capsys, server, "apply", path, "--auto-approve")
        left = server.router.remaining(server.router.rows()[0])
        assert (code, left) == (0, 7200), out


def test_a_next_free_mapping_stays_on_the_port_it_moved_to(tmp_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Once moved to 51414, the mapping stays there when 51413 frees up: the next plan has nothing to do."""
    with EmulatorServer(Router()) as server:
        server.router.add(51413, "UDP", "192.168.1.80", 51413, "other torrent client")
        path = write(
            tmp_path,
            "apiVersion: portctl/v1\nowner: t\nmappings:\n  - name: qbt\n    external_port: 51413\n"
            f"    protocol: both\n    internal_client: {THIS_HOST}\n    on_conflict: next_free\n",
        )
        assert run(capsys, server, "apply", path, "--auto-approve")[0] == 0
        assert {(r[0], r[1]) for r in snapshot(server)} == {(51413, "UDP"), (51414, "TCP"), (51414, "UDP")}
        assert server.router.remove(51413, "UDP")  # the other client lets its port go
        moved = snapshot(server)
        code, out = run(capsys, server, "plan", path, "--detailed-exitcode")
        assert code == 0, out
        assert run(capsys, server, "apply", path, "--auto-approve")[0] == 0
        assert snapshot(server) == moved


class _DeleteRepoints(Router):
    """A router that acknowledges DeletePortMapping but keeps the row, pointing elsewhere: the
    description (our tag) is still there, so the mapping is still ours and not removed."""

    def _delete(self, args: dict[str, str], client: str) -> dict[str, str]:
        row = self._find(int(args["NewExternalPort"]), args["NewProtocol"])
        if row is not None:
            self._store(replace(row, internal_client="127.0.0.99"))
        return {}


def test_a_removal_is_done_only_when_our_row_is_gone(tmp_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A row that still carries our description after the delete was acknowledged is not reported done."""
    web = f"  - {{name: web, external_port: 8080, internal_client: {THIS_HOST}}}\n"
    path = write(tmp_path, "apiVersion: portctl/v1\nowner: t\nmappings:\n" + web)
    with EmulatorServer(_DeleteRepoints()) as server:
        assert run(capsys, server, "apply", path, "--auto-approve")[0] == 0
        code, out = run(capsys, server, "destroy", path, "--auto-approve")
        assert code == 1 and "still lists the mapping" in out, out
