"""Rows miniupnpd lists for PCP and NAT-PMP mappings, as a UPnP plan reads them: this owner's PCP
mappings recognised by their nonce, every other such row foreign and named for what made it, and a
declared port an app on the same host took over named as such."""

from __future__ import annotations

import os
from typing import Literal

import pytest

from reconciler import diff, madethrough, render
from reconciler.backends.pcp.nonce import SECRET_FILE, Recogniser, load_secret, mapping_nonce, miniupnpd_description
from reconciler.models import (
    Action,
    DesiredMapping,
    Manifest,
    MappingKey,
    OnConflict,
    PortMapping,
    Protocol,
    RouterInfo,
)
from reconciler.ownership import Claim
from reconciler.ownerstore import TagStore

HOST, OTHER_HOST = "192.168.77.2", "192.168.77.3"
WEB = MappingKey(9000, Protocol.TCP)
ORDERS: tuple[Literal["little", "big"], ...] = ("little", "big")


def secret_dir(tmp_path: str) -> str:
    load_secret(str(tmp_path))  # made as the PCP backend makes it
    return str(tmp_path)


def pcp_row(directory: str, owner: str, name: str, internal_port: int, order: Literal["little", "big"]) -> PortMapping:
    """The row miniupnpd lists for `owner`'s PCP mapping `name`, made with this host's secret."""
    n = mapping_nonce(load_secret(directory), owner, name, "TCP", internal_port)
    return PortMapping(WEB, HOST, internal_port, miniupnpd_description(n, order), lease=500)


def natpmp_row(client: str = HOST, internal_port: int = 9000) -> PortMapping:
    return PortMapping(WEB, client, internal_port, f"NAT-PMP {WEB.external_port} tcp", lease=500)


def manifest(on_conflict: OnConflict = OnConflict.FAIL) -> Manifest:
    web = DesiredMapping("web", WEB, HOST, 9000, 3600, on_conflict=on_conflict)
    return Manifest("m.yaml", "home", (web,))


@pytest.mark.parametrize(
    ("description", "through"),
    [
        ("PCP MAP 3322110077665544bbaa9988", "PCP"),
        ("NAT-PMP 9000 tcp", "NAT-PMP"),
        ("NAT-PMP 53 udp", "NAT-PMP"),
        ("PCP MAP 3322110077665544bbaa998", ""),  # one digit short
        ("PCP MAP 3322110077665544BBAA9988", ""),  # miniupnpd prints lower case
        ("PCP PEER 3322110077665544bbaa9988", ""),
        ("NAT-PMP 9000 sctp", ""),
        ("NAT-PMP 9000 tcp extra", ""),
        ("pc:abcdefghijklmnopqrstuvwx web", ""),
        ("", ""),
    ],
)
def test_descriptions_are_recognised_exactly(description: str, through: str) -> None:
    """Only miniupnpd's own two formats say a row was made through PCP or NAT-PMP."""
    assert madethrough.made_through(PortMapping(WEB, HOST, 9000, description)) == through


def test_labels_name_the_protocol_and_for_nat_pmp_the_host() -> None:
    """NAT-PMP maps only for the asking host, so its client made it; a PCP row names nobody."""
    assert madethrough.label(natpmp_row(OTHER_HOST)) == f"made through NAT-PMP by {OTHER_HOST}"
    assert madethrough.label(PortMapping(WEB, HOST, 1, "PCP MAP " + "0" * 24)) == "made through PCP"
    assert madethrough.label(PortMapping(WEB, HOST, 1, "torrent")) == ""


def test_the_recogniser_answers_both_byte_orders_of_the_nonce(tmp_path: str) -> None:
    """The wire nonce 00112233... shows on x86 as 33221100...; a big-endian router prints it as is."""
    directory = secret_dir(tmp_path)
    n = mapping_nonce(load_secret(directory), "home", "web", "TCP", 9000)
    seen = Recogniser(directory)("home", "web", "TCP", 9000)
    assert seen == {"PCP MAP " + n.hex(), miniupnpd_description(n, "little")}
    assert miniupnpd_description(bytes.fromhex("00112233445566778899aabb")) == "PCP MAP 3322110077665544bbaa9988"


def test_without_a_secret_nothing_is_recognised_and_none_is_made(tmp_path: str) -> None:
    """A host that never spoke PCP owns no PCP mapping; a UPnP plan does not create a secret."""
    assert Recogniser(str(tmp_path))("home", "web", "TCP", 9000) == frozenset()
    assert not os.path.exists(os.path.join(str(tmp_path), SECRET_FILE))


@pytest.mark.parametrize("order", ORDERS)
def test_this_owners_pcp_row_is_claimed(tmp_path: str, order: Literal["little", "big"]) -> None:
    """A PCP row whose nonce this host's secret derives for (owner, name, protocol, internal port) is ours."""
    directory = secret_dir(tmp_path)
    row = pcp_row(directory, "home", "web", 9000, order)
    assert TagStore(Recogniser(directory)).claim("home", WEB, row, {"web"}) == Claim("web", False, through="PCP")


@pytest.mark.parametrize(
    ("owner", "name", "internal_port", "names"),
    [
        ("office", "web", 9000, {"web"}),  # another owner's nonce
        ("home", "ssh", 9000, {"web"}),  # a mapping the manifest does not place here
        ("home", "web", 9001, {"web"}),  # made for another internal port than the row shows
        ("home", "web", 9000, set()),  # nothing declared at this key
    ],
)
def test_any_other_pcp_row_is_foreign(
    tmp_path: str, owner: str, name: str, internal_port: int, names: set[str]
) -> None:
    """Only the nonce of a declared mapping of this owner claims a row."""
    directory = secret_dir(tmp_path)
    row = pcp_row(directory, owner, name, internal_port, "little")
    row = PortMapping(row.key, row.internal_client, 9000, row.description)
    assert TagStore(Recogniser(directory)).claim("home", WEB, row, names) is None


def test_a_pcp_row_from_another_hosts_secret_is_foreign(tmp_path: str) -> None:
    """The same owner and name on another host (another secret) is not this host's mapping."""
    theirs = secret_dir(os.path.join(str(tmp_path), "theirs"))
    ours = secret_dir(os.path.join(str(tmp_path), "ours"))
    row = pcp_row(theirs, "home", "web", 9000, "little")
    assert TagStore(Recogniser(ours)).claim("home", WEB, row, {"web"}) is None


def test_a_plan_over_upnp_re_tags_this_owners_pcp_mapping_instead_of_adding_one(tmp_path: str) -> None:
    """Switching from pcp:// to UPnP: the PCP row is claimed and re-made with the tag, saying it was
    made through PCP; nothing is added beside it and nothing is foreign."""
    directory = secret_dir(tmp_path)
    row = pcp_row(directory, "home", "web", 9000, "little")
    plan = diff.diff(manifest(), [row], store=TagStore(Recogniser(directory)))
    assert [(c.action, c.key, c.replace) for c in plan.changes] == [(Action.CHANGE, WEB, True)]
    assert "made through PCP by this owner" in plan.changes[0].reason
    assert plan.foreign == () and plan.conflicts == ()
    again = diff.diff(manifest(), [plan.desired[0]], store=TagStore(Recogniser(directory)))
    assert again.changes == ()


def test_a_nat_pmp_takeover_of_a_declared_port_is_a_named_conflict() -> None:
    """on_conflict fail: the app on the same host that mapped the same internal port is named."""
    plan = diff.diff(manifest(), [natpmp_row()])
    assert [k.reason for k in plan.conflicts] == [
        f"9000/tcp was taken over through NAT-PMP by {HOST}: the app on that host mapped the same internal port"
    ]
    assert plan.changes == () and plan.foreign == (natpmp_row(),)


def test_a_foreign_pcp_takeover_of_a_declared_port_is_named_too() -> None:
    """A MAP from the same host with another nonce takes a mapping over on miniupnpd: named as such."""
    theirs = PortMapping(WEB, HOST, 9000, "PCP MAP " + "ab" * 12, lease=500)
    plan = diff.diff(manifest(), [theirs])
    assert [k.reason for k in plan.conflicts] == [
        f"9000/tcp was taken over through PCP for {HOST}: the app on that host mapped the same internal port"
    ]


def test_a_nat_pmp_row_of_another_host_is_an_ordinary_foreign_holder() -> None:
    """A NAT-PMP row forwarding elsewhere holds the port like any foreign mapping, and says what made it."""
    plan = diff.diff(manifest(), [natpmp_row(OTHER_HOST)])
    assert [k.reason for k in plan.conflicts] == ["held by a foreign mapping"]
    assert f"made through NAT-PMP by {OTHER_HOST}" in render.plan_text(plan, render.Style(False))


def test_takeover_takes_a_nat_pmp_mapping_back_and_says_whose_it_was() -> None:
    """on_conflict takeover: the row is replaced, and the reason names the app's takeover."""
    plan = diff.diff(manifest(OnConflict.TAKEOVER), [natpmp_row()])
    [change] = plan.changes
    assert (change.action, change.replace, change.before) == (Action.CHANGE, True, natpmp_row())
    assert change.reason == f"takeover: 9000/tcp was taken over through NAT-PMP by {HOST}: " + (
        "the app on that host mapped the same internal port"
    )


def test_next_free_moves_past_a_nat_pmp_takeover_and_says_why() -> None:
    """on_conflict next_free: the mapping goes to the next port, and the plan says who holds its own."""
    plan = diff.diff(manifest(OnConflict.NEXT_FREE), [natpmp_row()])
    [change] = plan.changes
    assert (change.action, change.key) == (Action.ADD, MappingKey(9001, Protocol.TCP))
    assert change.reason.startswith(f"9000/tcp was taken over through NAT-PMP by {HOST}")
    assert change.reason.endswith("using 9001 (next_free)")


def test_show_and_plans_label_pcp_and_nat_pmp_rows() -> None:
    """Foreign rows made through PCP or NAT-PMP carry what made them in a plan and in `show`."""
    pcp = PortMapping(MappingKey(9100, Protocol.UDP), OTHER_HOST, 9100, "PCP MAP " + "ab" * 12)
    table = [natpmp_row(OTHER_HOST), pcp]
    plan = diff.diff(Manifest("m.yaml", "home", ()), table)
    text = render.plan_text(plan, render.Style(False))
    info = RouterInfo("upnp-igd2", "uuid:r", "http://r/", "r")
    shown = render.table_text(info, table, set(), render.Style(False))
    for out in (text, shown):
        assert f"'NAT-PMP 9000 tcp'  (made through NAT-PMP by {OTHER_HOST})" in out
        assert f"'{pcp.description}'  (made through PCP)" in out
