"""Two owners whose old tags collided, on real miniupnpd: each keeps its own mappings through apply
with prune, old-tag rows are re-tagged only by their owner, and foreign rows stay byte-identical.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import ownership
from reconciler.models import MappingKey, Protocol
from tests import routerlab
from tests.helpers import write
from tests.labfixtures import module_lab
from tests.routerlab import LAN_IP
from tests.test_ownership import OLD_COLLISION

pytestmark = pytest.mark.router
ALPHA, BETA = OLD_COLLISION  # both wrote "pc:nyfyhnfr" at 8080/tcp under the old tag
WEB = MappingKey(8080, Protocol.TCP)


def manifest(owner: str, name: str, port: int) -> str:
    return f"""\
apiVersion: portctl/v1
owner: {owner}
prune: true
defaults:
  internal_client: {LAN_IP}
mappings:
  - name: {name}
    external_port: {port}
"""


lab = module_lab("po")


@pytest.fixture
def clean(lab: routerlab.Lab) -> routerlab.Lab:
    """The router with two foreign rows, one of them dressed like a portctl row."""
    lab.empty_table()
    lab.add_foreign(6000, "TCP", "Xbox Live (another device)")
    lab.add_foreign(8085, "TCP", "pc:zzzzzzzz web")
    return lab


def foreign(lab: routerlab.Lab) -> set[tuple[int, str, str, int, str]]:
    return {row for row in lab.table() if row[0] in (6000, 8085)}


def apply(lab: routerlab.Lab, path: str) -> str:
    r = lab.portctl("apply", path, "--auto-approve", "--no-color")
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def converged(lab: routerlab.Lab, path: str) -> None:
    r = lab.portctl("plan", path, "--detailed-exitcode", "--no-color")
    assert r.returncode == 0, r.stdout + r.stderr


def test_owners_whose_old_tags_collided_keep_their_own_mappings(clean: routerlab.Lab, tmp_path: Path) -> None:
    """Each of the pair applies with prune, twice, and neither removes the other's mapping."""
    before = foreign(clean)
    alpha = write(tmp_path, manifest(ALPHA, "web", 8080), "alpha.yaml")
    beta = write(tmp_path, manifest(BETA, "game", 8090), "beta.yaml")
    for _ in range(2):
        apply(clean, alpha)
        apply(clean, beta)
    table = clean.table()
    assert {row for row in table if row[0] in (8080, 8090)} == {
        (8080, "TCP", LAN_IP, 8080, ownership.describe(ALPHA, WEB, "web")),
        (8090, "TCP", LAN_IP, 8090, ownership.describe(BETA, MappingKey(8090, Protocol.TCP), "game")),
    }
    assert foreign(clean) == before
    converged(clean, alpha)
    converged(clean, beta)


def test_an_old_tag_row_is_retagged_by_its_owner_only(clean: routerlab.Lab, tmp_path: Path) -> None:
    """A row made under the old tag survives the colliding owner's prune, then its owner re-tags it."""
    old = f"{ownership.legacy_tag(ALPHA, WEB)} web"
    assert old == f"{ownership.legacy_tag(BETA, WEB)} web"  # the collision the old code fell for
    clean.add_foreign(8080, "TCP", old)  # as the old portctl left it
    before = foreign(clean)
    alpha = write(tmp_path, manifest(ALPHA, "web", 8080), "alpha.yaml")
    beta = write(tmp_path, manifest(BETA, "game", 8090), "beta.yaml")

    apply(clean, beta)
    assert (8080, "TCP", LAN_IP, 8080, old) in clean.table()
    out = apply(clean, alpha)
    assert "re-tag" in out
    assert {row for row in clean.table() if row[0] == 8080} == {
        (8080, "TCP", LAN_IP, 8080, ownership.describe(ALPHA, WEB, "web"))
    }
    apply(clean, beta)
    assert foreign(clean) == before
    converged(clean, alpha)
    converged(clean, beta)
