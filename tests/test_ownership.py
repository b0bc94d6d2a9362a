"""The ownership tag: strong enough that owners never claim each other's rows, legacy tags upgraded,
clear text that disagrees refused, `init` owners unique, removals pointing at another host flagged."""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path

import pytest

from reconciler import ownership
from reconciler.emulator import EmulatorServer
from reconciler.models import MappingKey, Protocol
from tests.helpers import FOREIGN, MANIFEST, portctl, snapshot, write

TCP8080 = MappingKey(8080, Protocol.TCP)
KEYS = [TCP8080, MappingKey(8080, Protocol.UDP), MappingKey(27015, Protocol.TCP)]
# Found by a birthday search over "team<N>" (3 million names, 20 s): under the old tag,
# pc: + 20 bits of the owner + 20 bits of owner, port and protocol, both write
# "pc:nyfyhnfr" at 8080/tcp, so each claimed the other's mapping there.
OLD_COLLISION = ("team951318", "team1088377")
OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")  # the schema's pattern


def _owners(count: int, seed: int) -> list[str]:
    """Random valid owners, each with near twins: one character changed, case flipped, one appended."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "._-"
    out: list[str] = []
    while len(out) < count:
        base = rng.choice(string.ascii_lowercase) + "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 20)))
        i = rng.randrange(len(base))
        twins = [base, base[:i] + rng.choice(string.digits) + base[i + 1 :], base.swapcase(), base + "x"]
        out += [t for t in twins if OWNER.match(t) and t not in out]
    return out


def test_the_code_is_at_least_96_bits_and_the_tag_fits_the_budget() -> None:
    """The owner part of a tag is a 120-bit code, and tag, mark and longest name fit in 63 bytes."""
    code = ownership.code("homelab", TCP8080)
    assert len(code) * 5 >= 96
    assert set(code) <= set("abcdefghijklmnopqrstuvwxyz234567")
    assert ownership.tag("homelab", TCP8080) == "pc:" + code
    longest = ownership.describe("o" * 32, TCP8080, "n" * 24, protect=True)
    assert len(longest.encode()) <= ownership.MAX_DESCRIPTION_BYTES


def test_the_old_collision_pair_really_collided_under_the_legacy_tag() -> None:
    """The hard-coded pair shares a legacy tag at 8080/tcp, and no longer shares a tag."""
    a, b = OLD_COLLISION
    assert ownership.legacy_tag(a, TCP8080) == ownership.legacy_tag(b, TCP8080)
    assert ownership.tag(a, TCP8080) != ownership.tag(b, TCP8080)


@pytest.mark.parametrize("cut", [0, 16, 20, 27, 28, 40])
def test_owners_differing_in_any_way_never_claim_each_others_rows(cut: int) -> None:
    """Over many owners and their near twins, a row (whole or cut by the router) is claimed by its owner only."""
    owners = [*OLD_COLLISION, *_owners(150, seed=cut)]
    for key in KEYS:
        rows = {o: ownership.describe(o, key, "web", "words") for o in owners}
        if cut:
            rows = {o: d[:cut] for o, d in rows.items()}
        for mine in owners:
            claimed = [o for o, d in rows.items() if ownership.claim(mine, key, d, names={"web"}, cut=cut) is not None]
            assert claimed == [mine], (mine, key, cut)


def test_a_description_cut_to_16_bytes_is_claimed_only_by_its_owner() -> None:
    """Cut to 16 bytes (pc: and 13 characters, 65 bits) a row is still its owner's and no one else's."""
    cut = ownership.describe("homelab", TCP8080, "a-long-mapping-name", "words")[:16]
    assert ownership.claim("homelab", TCP8080, cut) == ownership.Claim("", False)
    assert ownership.claim("homelab", MappingKey(8081, Protocol.TCP), cut) is None
    others = [o for o in _owners(2000, seed=16) if o != "homelab"]
    assert [o for o in others if ownership.claim(o, TCP8080, cut) is not None] == []
    assert ownership.claim("homelab", TCP8080, cut[:15]) is None  # too little of the code kept


CODE = ownership.tag("homelab", TCP8080)
LEGACY = ownership.legacy_tag("homelab", TCP8080)


# (description, names the manifest places at 8080/tcp) -> what is claimed
CLEAR_TEXT = {
    (f"{CODE} web nginx", ()): ownership.Claim("web", False),
    (f"{CODE} !vpn", ()): ownership.Claim("vpn", True),
    (f"{CODE} w@b", ()): None,  # not a mapping name
    (f"{CODE}  web", ()): None,  # a space where the name belongs
    (f"{CODE} !!web", ()): None,
    (f"{CODE} {'n' * 25}", ()): None,  # longer than any name
    (f"{CODE}x web", ()): None,  # the code runs on
    (f"{LEGACY} web nginx", ("web",)): ownership.Claim("web", False, legacy=True),
    (f"{LEGACY} !web", ("web",)): ownership.Claim("web", True, legacy=True),
    (f"{LEGACY} theirs", ("web",)): None,  # the name is not the manifest's for this key
    (f"{LEGACY} web", ()): None,  # the manifest places nothing called web here
    (f"{LEGACY} w@b", ("w@b",)): None,
    (f"{LEGACY}", ("web",)): None,  # no clear text to check
    (f"{LEGACY} we", ("web",)): None,  # a shorter name is another name, unless the router cut it
}


def test_clear_text_that_disagrees_is_not_claimed() -> None:
    """A malformed clear-text part, or a legacy tag whose name the manifest does not place there, is not ours."""
    claimed = {case: ownership.claim("homelab", TCP8080, case[0], case[1]) for case in CLEAR_TEXT}
    assert claimed == CLEAR_TEXT


def test_a_legacy_name_cut_by_the_router_is_claimed_by_its_start() -> None:
    """On a router known to cut at 16, a legacy row's cut name is enough when it starts a name placed there."""
    cut = f"{LEGACY} minecraft"[:16]
    assert ownership.claim("homelab", TCP8080, cut, {"minecraft"}, cut=16) == ownership.Claim("mine", False, True)
    assert ownership.claim("homelab", TCP8080, cut, {"minecraft"}) is None  # not known to cut: not ours


def test_legacy_rows_are_recognised_and_retagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """An old-tag row named as the manifest names it is replaced by a new-tag one; others with old tags stay."""
    emulator.router.add(*FOREIGN)
    old = ownership.legacy_tag("test", TCP8080)
    emulator.router.add(8080, "TCP", "127.0.0.1", 80, f"{old} web nginx")
    stray = f"{ownership.legacy_tag('test', MappingKey(8090, Protocol.TCP))} theirs"
    emulator.router.add(8090, "TCP", "192.168.1.50", 8090, stray)
    untouched = [r for r in snapshot(emulator) if r[0] in (9999, 8090)]
    path = write(tmp_path, MANIFEST)

    plan = portctl(capsys, "plan", path, "--router", emulator.url, "--no-color")
    assert plan.code == 0, plan.err
    retag = next(line for line in plan.out.splitlines() if "8080/tcp" in line)
    assert retag.split()[:2] == ["-/+", "web"] and "legacy 8-character tag" in retag
    assert "Plan: 4 to add, 1 to change, 0 to remove." in plan.out

    assert portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve").code == 0
    row = next(r for r in snapshot(emulator) if r[0] == 8080)
    assert row == (8080, "TCP", "127.0.0.1", 80, ownership.describe("test", TCP8080, "web", "nginx"))
    assert [r for r in snapshot(emulator) if r[0] in (9999, 8090)] == untouched
    again = portctl(capsys, "plan", path, "--router", emulator.url, "--detailed-exitcode")
    assert again.code == 0, again.out


def test_a_removal_pointing_at_another_host_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], emulator: EmulatorServer
) -> None:
    """An owned mapping to another host, about to be pruned, is flagged under its removal, in text and JSON."""
    nas = MappingKey(7000, Protocol.TCP)
    emulator.router.add(7000, "TCP", "192.168.1.20", 7000, ownership.describe("test", nas, "nas"))
    emulator.router.add(7001, "TCP", "127.0.0.1", 7001, ownership.describe("test", MappingKey(7001, Protocol.TCP), "x"))
    path = write(tmp_path, MANIFEST)
    run = portctl(capsys, "plan", path, "--router", emulator.url, "--no-color")
    lines = run.out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:3] == ["-", "nas", "7000/tcp"])
    expected = "points at 192.168.1.20, not this host (127.0.0.1): another installation with the same owner?"
    assert lines[at + 1].strip() == expected
    assert run.out.count("not this host") == 1  # 7001 points here: nothing to say

    doc = json.loads(portctl(capsys, "plan", path, "--router", emulator.url, "--json").out)
    notes = {c["key"]["external_port"]: c["note"] for c in doc["changes"] if c["action"] == "remove"}
    assert notes == {7000: expected, 7001: ""}


def test_init_gives_each_installation_its_own_owner(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two `portctl init` runs write different owners, each naming this host, each valid."""
    import socket

    from reconciler import manifest

    owners = []
    for name in ("a.yaml", "b.yaml"):
        path = f"{tmp_path}/{name}"
        assert portctl(capsys, "init", path).code == 0
        run = portctl(capsys, "validate", path)
        assert run.code == 0, run.out + run.err
        owners.append(manifest.load(path).owner)
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().split(".")[0].lower())[:19].strip("-")
    assert owners[0] != owners[1]
    assert all(re.fullmatch(rf"homelab-{re.escape(host)}-[a-z0-9]{{4}}", o) for o in owners), owners


@pytest.mark.parametrize(
    ("hostname", "owner"),
    [
        ("nas", "homelab-nas-ab12"),
        ("My_Laptop.fritz.box", "homelab-my-laptop-ab12"),
        ("a-very-long-hostname-indeed-yes", "homelab-a-very-long-hostnam-ab12"),
        ("___", "homelab-ab12"),
        ("", "homelab-ab12"),
    ],
)
def test_starter_owner_is_valid_for_any_hostname(hostname: str, owner: str) -> None:
    """The starter owner names the host as far as the schema allows, and always fits it."""
    from reconciler.manifest import starter_owner

    assert starter_owner(hostname, "ab12") == owner
    assert OWNER.match(owner)
