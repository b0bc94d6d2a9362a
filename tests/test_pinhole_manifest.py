"""The manifest's `pinholes:` section and what plans it (pure): schema and meaning with file:line,
addresses in compressed form, the admission gate's refusals, the pinhole diff, and the plan codec."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reconciler import admission, manifest, pinholeplan, plancodec, renewal
from reconciler.boot import Boot, restarted
from reconciler.cache import Cache
from reconciler.errors import ManifestError
from reconciler.models import (
    DesiredPinhole,
    HeldPinhole,
    Manifest,
    Pinhole,
    PinholeAction,
    PinholeChange,
    PinholeKey,
    Plan,
    Protocol,
)
from reconciler.pinholestore import PinholeStore

ME = "2001:db8:77::2"
HEAD = "apiVersion: portctl/v1\nowner: six\nmappings: []\n"


def parsed(pinholes: str, policy: str = "") -> Manifest:
    return manifest.parse(HEAD + policy + "pinholes:\n" + pinholes, "m.yaml")


def problems(pinholes: str, policy: str = "") -> list[str]:
    with pytest.raises(ManifestError) as exc:
        parsed(pinholes, policy)
    return [str(p) for p in exc.value.problems]


def key(port: int = 18800, client: str = ME, protocol: Protocol = Protocol.TCP, **extra: object) -> PinholeKey:
    return PinholeKey(client, port, protocol, **extra)  # type: ignore[arg-type]


# -- the manifest ---------------------------------------------------------------------------------


def test_a_pinhole_gets_its_defaults_and_both_protocols() -> None:
    """internal_client auto, any remote host and port, a 1h lease; `both` is one pinhole per protocol."""
    m = parsed("  - name: game\n    internal_port: 27015\n    protocol: both\n")
    assert m.pinholes == (
        DesiredPinhole("game", key(27015, "auto"), 3600, 5),
        DesiredPinhole("game", key(27015, "auto", Protocol.UDP), 3600, 5),
    )


def test_addresses_are_normalised_to_compressed_form() -> None:
    """An address written long or in capitals becomes the one form the inventory and the router use."""
    m = parsed(
        "  - name: web\n    internal_client: 2001:DB8:77:0::0002\n    internal_port: 18800\n"
        "    remote_host: 2001:0db8:1122::0:2\n    remote_port: 4000\n    lease: 12h\n"
    )
    assert m.pinholes[0].key == key(remote_host="2001:db8:1122::2", remote_port=4000)
    assert m.pinholes[0].lease == 43200


@pytest.mark.parametrize(
    ("body", "policy", "expected"),
    [
        ("    internal_port: 18800\n    lease: 2d\n", "", "m.yaml:7:12: $.pinholes[0].lease: '2d': a pinhole lasts"),
        ("    internal_port: 18800\n    lease: 86401\n", "", "m.yaml:7:12: $.pinholes[0].lease: 86401 is greater"),
        ("    internal_port: 18800\n    lease: permanent\n", "", "m.yaml:7:12: $.pinholes[0].lease: 'permanent' is"),
        (
            "    internal_port: 18800\n    remote_host: 2001:db8::/64\n",
            "",
            "m.yaml:7:18: $.pinholes[0].remote_host: '2001:db8::/64' is not one IPv6 address (UPnP takes no prefix)",
        ),
        (
            "    internal_port: 18800\n    internal_client: 192.168.1.2\n",
            "",
            "m.yaml:7:22: $.pinholes[0].internal_client: '192.168.1.2' is not an IPv6 address of this host, or auto",
        ),
        (
            "    internal_port: 18800\n    internal_client: 'ff02::1'\n",
            "",
            "m.yaml:7:22: $.pinholes[0].internal_client: ff02::1 is not a unicast address",
        ),
        (
            "    internal_port: 18800\n    internal_client: 2001:db8:99::2\n",
            "policy:\n  allowed_ipv6_prefixes: ['2001:db8:77::/64']\n",
            "m.yaml:9:22: $.pinholes[0].internal_client: 2001:db8:99::2 is outside policy.allowed_ipv6_prefixes",
        ),
        ("    internal_port: 70000\n", "", "m.yaml:6:20: $.pinholes[0].internal_port: 70000 is greater"),
        ("    internal_port: 18800\n    colour: red\n", "", "m.yaml:7:5: $.pinholes[0].colour: unknown key 'colour'"),
    ],
)
def test_a_bad_pinhole_is_one_problem_naming_file_and_line(body: str, policy: str, expected: str) -> None:
    """Each breach is reported where it is written, with what is allowed."""
    found = problems("  - name: web\n" + body, policy)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


def test_duplicate_names_and_keys_are_named() -> None:
    """Two pinholes with one name, or one pinhole declared twice, are errors at the second."""
    found = problems(
        "  - name: a\n    internal_port: 18800\n  - name: a\n    internal_port: 18801\n"
        "  - name: b\n    internal_port: 18800\n"
    )
    assert found == [
        "m.yaml:7:11: $.pinholes[1].name: duplicate name 'a' (also pinholes[0])",
        "m.yaml:9:5: $.pinholes[2]: pinhole [auto]:18800/tcp is also declared by 'a'",
    ]


def test_a_bad_ipv6_prefix_in_the_policy_is_named() -> None:
    """policy.allowed_ipv6_prefixes holds IPv6 prefixes."""
    found = problems(
        "  - name: a\n    internal_port: 18800\n", "policy:\n  allowed_ipv6_prefixes: ['2001:db8::/129']\n"
    )
    assert found == ["m.yaml:5:27: $.policy.allowed_ipv6_prefixes[0]: '2001:db8::/129' is not an IPv6 prefix such "
                     "as 2001:db8:77::/64"]  # fmt: skip


# -- admission ------------------------------------------------------------------------------------


def opening(k: PinholeKey, lease: int = 3600) -> Plan:
    return Plan("six", (), (), pinholes=(PinholeChange(PinholeAction.OPEN, "web", k, None, Pinhole(k, lease)),))


def refusals(plan: Plan, policy: str = "", local: tuple[str, ...] = (ME,)) -> list[tuple[str, str]]:
    m = parsed("  - name: web\n    internal_port: 18800\n", policy)
    return [(r.kind, r.message) for r in admission.admit(plan, m, local_ipv6=local)]


def test_a_privileged_port_is_refused_with_the_remedy() -> None:
    """miniupnpd opens no pinhole below 1024: the gate says so before any write."""
    found = refusals(opening(key(443)))
    assert len(found) == 1 and found[0][0] == "pinhole"
    assert "ports 1024-65535 only" in found[0][1] and "serve on a port from 1024" in found[0][1]


def test_a_pinhole_to_another_hosts_address_is_refused_saying_where_to_run() -> None:
    """The router opens pinholes only to the requester's own address: run portctl on that host."""
    found = refusals(opening(key(client="2001:db8:77::9")))
    assert [kind for kind, _ in found] == ["pinhole"]
    assert "not an address of this host" in found[0][1] and "run portctl on the host that owns it" in found[0][1]


def test_an_auto_address_outside_the_policy_is_refused() -> None:
    """The prefix policy judges the address as resolved, which the manifest could not check."""
    found = refusals(opening(key()), "policy:\n  allowed_ipv6_prefixes: ['2001:db8:99::/64']\n")
    assert found == [
        ("policy", f"web pinhole [{ME}]:18800/tcp leads to {ME}, outside policy.allowed_ipv6_prefixes"),
    ]


def test_a_router_without_pinholes_refuses_the_plan() -> None:
    """Where the router cannot open pinholes the plan is refused with why, and nothing else is judged."""
    plan = opening(key(443))
    plan = Plan(plan.owner, (), (), pinholes=plan.pinholes, pinholes_unavailable="it answered 401")
    found = refusals(plan)
    assert found == [("pinholes", "pinholes cannot be opened on this router: it answered 401")]
    assert admission.blocking(admission.admit(plan, parsed("  - name: web\n    internal_port: 18800\n")))


def test_a_pinhole_that_can_be_opened_is_admitted() -> None:
    """This host's own address, a port from 1024, a lease within a day: nothing to refuse."""
    assert refusals(opening(key())) == []


# -- the diff -------------------------------------------------------------------------------------

NOW = 1_000_000.0


def held(k: PinholeKey, expires: float, lease: int = 3600, name: str = "web") -> HeldPinhole:
    return HeldPinhole(name, Pinhole(k, lease), 7, expires)


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [
        ((), [(PinholeAction.OPEN, "declared")]),
        ((held(key(), NOW + 3000),), []),
        ((held(key(), NOW + 1700),), [(PinholeAction.RENEW, "half its lease has passed")]),
        ((held(key(), NOW - 1),), [(PinholeAction.OPEN, "its lease ran out")]),
        ((held(key(), NOW + 3000, lease=600),), [(PinholeAction.RENEW, "the manifest asks another lease")]),
        (
            (held(key(), NOW + 3000), held(key(9000), NOW + 3000, name="old")),
            [(PinholeAction.CLOSE, "no longer declared")],
        ),
    ],
)
def test_the_diff_opens_renews_at_half_and_prunes(recorded: tuple[HeldPinhole, ...], expected: list[object]) -> None:
    """Against the inventory: open what is missing or lapsed, renew past half the lease, close the undeclared."""
    desired = [DesiredPinhole("web", key(), 3600)]
    assert [(c.action, c.reason) for c in pinholeplan.diff(desired, recorded, NOW, prune=True)] == expected


def test_without_prune_an_undeclared_pinhole_stays() -> None:
    """prune: false closes nothing it holds."""
    assert pinholeplan.diff([], [held(key(), NOW + 3000)], NOW, prune=False) == ()


BOOT = Boot.from_uptime(5000, NOW - 100.5, NOW - 100.0, 7)  # read when the pinhole was opened


@pytest.mark.parametrize(
    ("recorded", "now", "expected"),
    [
        (BOOT, Boot.from_uptime(5100, NOW - 0.5, NOW, 7), []),  # the same boot
        (BOOT, Boot.from_uptime(90, NOW - 0.5, NOW, 8), [(PinholeAction.OPEN, pinholeplan.RESTARTED)]),
        (BOOT, Boot.from_uptime(6000, NOW - 0.5, NOW, 8), [(PinholeAction.OPEN, pinholeplan.RESTARTED)]),  # new id
        (BOOT, Boot.from_uptime(90, NOW - 0.5, NOW), [(PinholeAction.OPEN, pinholeplan.RESTARTED)]),  # uptime only
        (None, Boot.from_uptime(90, NOW - 0.5, NOW, 8), []),  # a record older than the field: unknown
        (BOOT, Boot(), []),  # the router says nothing of its boot now
        (BOOT, None, []),
    ],
)
def test_a_pinhole_opened_before_the_routers_restart_is_opened_again(
    recorded: Boot | None, now: Boot | None, expected: list[object]
) -> None:
    """A restart loses every pinhole: one whose recorded boot is older than the router's is opened again."""
    desired = [DesiredPinhole("web", key(), 3600)]
    record = replace(held(key(), NOW + 3000), boot=recorded)
    assert [(c.action, c.reason) for c in pinholeplan.diff(desired, [record], NOW, prune=True, boot=now)] == expected


def test_a_routers_clock_drifting_over_hours_is_not_a_restart() -> None:
    """Six hours after the reading, an uptime 3 s short of the time passed is drift, not a restart."""
    desired = [DesiredPinhole("web", key(), 86400)]
    record = replace(held(key(), NOW + 86400 - 100, lease=86400), boot=BOOT)
    later = NOW + 6 * 3600
    now = Boot.from_uptime(5100 + 6 * 3600 - 3, later - 0.5, later, 7)
    assert restarted(BOOT, now)  # compared as between two checks a minute apart, it would be one
    assert pinholeplan.diff(desired, [record], later, prune=True, boot=now) == ()


def test_the_agent_renews_earlier_than_a_plan() -> None:
    """With the agent's share a pinhole with 58 % of its lease left is renewed; a plan leaves it."""
    desired = [DesiredPinhole("web", key(), 3600)]
    record = held(key(), NOW + 0.58 * 3600)
    assert pinholeplan.diff(desired, [record], NOW, prune=True) == ()
    due = pinholeplan.diff(desired, [record], NOW, prune=True, renew_below=renewal.AGENT_BELOW)
    assert [c.action for c in due] == [PinholeAction.RENEW]


def test_the_inventory_keeps_the_boot_each_pinhole_was_opened_in(tmp_path: str) -> None:
    """A recorded boot reads back as it was written; a record without one (older portctl) reads as unknown."""
    store = PinholeStore(Cache(str(tmp_path)), "uuid:router")
    store.record("six", "web", Pinhole(key(), 3600), 7, NOW + 3600, BOOT)
    store.record("six", "old", Pinhole(key(9000), 3600), 8, NOW + 3600)
    by_name = {h.name: h for h in store.held("six")}
    assert by_name["web"].boot == BOOT
    assert by_name["old"].boot is None


# -- the codec ------------------------------------------------------------------------------------


def test_a_plan_with_pinholes_round_trips() -> None:
    """Open, renew and close, with the record each renews or closes and why none can open, survive JSON."""
    remote = key(18801, remote_host="2001:db8:1122::2", remote_port=4000, protocol=Protocol.UDP)
    changes = (
        PinholeChange(PinholeAction.OPEN, "web", key(), None, Pinhole(key(), 3600), "declared"),
        PinholeChange(PinholeAction.RENEW, "udp", remote, held(remote, NOW + 5.5), Pinhole(remote, 600), "half"),
        PinholeChange(PinholeAction.CLOSE, "old", key(9000), held(key(9000), NOW), None, "no longer declared"),
    )
    plan = Plan("six", (), (), pinholes=changes, pinholes_unavailable="none at all")
    assert plancodec.decode(plancodec.encode(plan)) == plan


def test_a_close_with_a_lease_is_malformed() -> None:
    """decode refuses a pinhole change whose lease contradicts its action, naming the field."""
    doc = plancodec.encode(opening(key()))
    doc["pinholes"][0]["action"] = "close"
    with pytest.raises(plancodec.Malformed, match=r"pinholes\[0\]\.lease"):
        plancodec.decode(doc)


def test_a_manifest_of_pinholes_alone_needs_no_empty_mappings_list(tmp_path: str) -> None:
    """`pinholes:` without `mappings:` is a manifest; one with neither is refused at line 1, saying what to add;
    validate counts the pinholes."""
    from reconciler.cli import main
    from tests.helpers import write

    pinhole = f"  - {{name: web6, internal_client: '{ME}', internal_port: 18800}}\n"
    text = "apiVersion: portctl/v1\nowner: six\npinholes:\n" + pinhole
    m = manifest.parse(text, "six.yaml")
    assert m.mappings == () and [p.name for p in m.pinholes] == ["web6"]
    with pytest.raises(ManifestError, match=r"^neither\.yaml:1:1: \$: declares neither mappings nor pinholes"):
        manifest.parse("apiVersion: portctl/v1\nowner: six\n", "neither.yaml")
    path = write(tmp_path, text)
    assert main(["validate", path]) == 0
