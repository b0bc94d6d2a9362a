"""Deadlines that fit the router: the wait follows what this router has been seen to need, up to a
hard ceiling, the message says what the wait was and why, and one slow answer does not stop an
apply while the router still answers.
"""

from __future__ import annotations

import pytest

from reconciler import api
from reconciler.backends.patience import CEILING, Deadline, Patience
from reconciler.backends.upnp import UpnpBackend
from reconciler.cache import Cache
from reconciler.emulator import EmulatorServer, Router
from reconciler.errors import RouterUnreachable
from reconciler.models import MappingKey, PortMapping, Protocol
from tests.helpers import FOREIGN, owned_ports, portctl, snapshot, write

MANIFEST = """\
apiVersion: portctl/v1
owner: timeouts
mappings:
  - name: games
    external_port: 27015-27017
"""


class Clock:
    """Monotonic time that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# observed answers (action, seconds, timed out) -> deadline for DeletePortMapping with --timeout 5
CASES: dict[str, tuple[list[tuple[str, float, bool]], Deadline]] = {
    "nothing seen yet": ([], Deadline(5.0)),
    "fast answers keep --timeout": ([("DeletePortMapping", 1.2, False)], Deadline(5.0)),
    "a slow answer earns three times it": (
        [("DeletePortMapping", 4.1, False)],
        Deadline(12.3, "this router has needed up to 4.1 s"),
    ),
    "the slowest recent answer counts": (
        [("DeletePortMapping", 4.1, False), ("DeletePortMapping", 0.2, False)],
        Deadline(12.3, "this router has needed up to 4.1 s"),
    ),
    "another action's answer counts before this one answered": (
        [("GetSpecificPortMappingEntry", 3.0, False)],
        Deadline(9.0, "this router has needed up to 3.0 s for GetSpecificPortMappingEntry"),
    ),
    "this action's own answers win over another's": (
        [("GetSpecificPortMappingEntry", 3.0, False), ("DeletePortMapping", 0.5, False)],
        Deadline(5.0),
    ),
    "a timeout means it needed more": (
        [("DeletePortMapping", 5.0, True)],
        Deadline(15.0, "this router has needed more than 5.0 s"),
    ),
    "never past the ceiling": (
        [("DeletePortMapping", 25.0, False)],
        Deadline(CEILING, "this router has needed up to 25.0 s"),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_deadline_follows_what_the_router_needed(case: str) -> None:
    """The deadline is max(--timeout, 3 x the slowest recent answer), at most the ceiling, with the reason."""
    seen, expected = CASES[case]
    patience = Patience(5.0)
    for action, seconds, timed_out in seen:
        patience.observe(action, seconds, timed_out=timed_out)
    assert patience.deadline("DeletePortMapping") == expected


def test_old_slowness_ages_out() -> None:
    """Once the router has answered fast often enough, the deadline is --timeout again."""
    patience = Patience(5.0)
    patience.observe("DeletePortMapping", 9.0)
    for _ in range(8):
        patience.observe("DeletePortMapping", 0.1)
    assert patience.deadline("DeletePortMapping") == Deadline(5.0)


def test_a_timeout_above_the_ceiling_is_honoured() -> None:
    """--timeout 60 is the user's explicit wish: the ceiling does not cut it."""
    patience = Patience(60.0)
    patience.observe("DeletePortMapping", 30.0)
    assert patience.deadline("DeletePortMapping").seconds == 60.0


def test_a_request_waits_as_long_as_the_router_has_needed_and_says_so() -> None:
    """After a 2 s answer (on the test's clock), the next request waits 6 s, not 5, and the error says why."""
    clock = Clock()
    with EmulatorServer(Router(igd_version=2)) as server:
        for port in (27015, 27016):
            server.router.add(port, "TCP", "192.168.1.9", port, "someone's")
        backend = api.connect(server.url, Cache.from_env(), timeout=5.0)
        try:
            assert isinstance(backend, UpnpBackend)
            backend.session.patience = Patience(5.0, clock=clock)
            server.sleep = clock.advance  # the router's slowness costs no wall-clock time
            server.delays["DeletePortMapping"] = 2.0
            row = PortMapping(MappingKey(27015, Protocol.TCP), "192.168.1.9", 27015, "someone's")
            backend.delete_mapping(row)
            # The next one never answers: the client gives up at the deadline it has earned.
            server.stall = 60.0
            server.router.inject("DeletePortMapping", "stall")
            with pytest.raises(RouterUnreachable) as err:
                backend.delete_mapping(PortMapping(MappingKey(27016, Protocol.TCP), "192.168.1.9", 27016, "someone's"))
        finally:
            backend.close()
    assert "DeletePortMapping" in str(err.value)
    assert "did not answer within 6s (this router has needed up to 2.0 s)" in str(err.value)


def test_one_timed_out_delete_does_not_stop_the_destroy(tmp_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The first DeletePortMapping is not answered in time but the router still answers: every other
    deletion is still made, the slow one is found done on read-back, and the foreign row is untouched."""
    with EmulatorServer(Router(igd_version=2)) as server:
        server.router.add(*FOREIGN)
        path = write(tmp_path, MANIFEST)
        made = portctl(capsys, "apply", path, "--router", server.url, "--auto-approve", "--no-color")
        assert made.code == 0, made.out + made.err
        assert owned_ports(server) == {27015, 27016, 27017}
        foreign = [r for r in snapshot(server) if r[0] == FOREIGN[0]]
        server.stall = 60.0  # the router does the deletion, then never answers it
        server.router.inject("DeletePortMapping", "stall")
        run = portctl(capsys, "destroy", path, "--router", server.url, "--auto-approve", "--no-color")
        assert "not attempted" not in run.out, run.out
        assert server.router.calls["DeletePortMapping"] == 3
        assert owned_ports(server) == set()
        assert run.code == 0, run.out + run.err
        assert [r for r in snapshot(server) if r[0] == FOREIGN[0]] == foreign
