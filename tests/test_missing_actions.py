"""A router whose service description leaves an action out: portctl says so, and never calls it a fault."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from reconciler.emulator import EmulatorServer, Router
from reconciler.emulator.router import Args
from tests.helpers import FOREIGN, MANIFEST, portctl, snapshot, write


class _Without(Router):
    """A router that does not implement (and so does not describe) some actions."""

    def __init__(self, *missing: str) -> None:
        super().__init__(igd_version=2)
        self.missing = set(missing)

    @property
    def actions(self) -> dict[str, Callable[[Args, str], Args]]:
        return {name: handler for name, handler in super().actions.items() if name not in self.missing}


@pytest.fixture
def no_add() -> Iterator[EmulatorServer]:
    with EmulatorServer(_Without("AddPortMapping")) as server:
        server.router.add(*FOREIGN)
        yield server


def test_an_action_the_router_does_not_offer_is_named_not_reported_as_fault_401(
    no_add: EmulatorServer, tmp_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """apply fails with "does not offer AddPortMapping", not "401 InvalidAction", and writes nothing."""
    before = snapshot(no_add)
    run = portctl(capsys, "apply", write(tmp_path, MANIFEST), "--router", no_add.url, "--auto-approve", "--no-color")
    assert run.code == 1
    assert "the router does not offer AddPortMapping" in run.out + run.err
    assert "InvalidAction" not in run.out + run.err and "failed: 401" not in run.out + run.err
    assert "Traceback" not in run.err
    assert snapshot(no_add) == before
    assert no_add.router.calls["AddPortMapping"] == 0  # never sent: the description already said no
