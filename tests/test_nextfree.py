"""next_free where the router picks the port (PCP, NAT-PMP): the window the planner approves, the
admission gate's judgement of it, and how a plan carries and shows it. Pure: no router."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from reconciler import admission, diff, plancodec, planfile, render
from reconciler.errors import PlanFileError
from reconciler.models import (
    Action,
    ApplyReport,
    ChangeResult,
    DesiredMapping,
    Manifest,
    MappingKey,
    OnConflict,
    Plan,
    Policy,
    PortWindow,
    Protocol,
    RouterInfo,
)

HOST = "192.168.77.2"
WEB = MappingKey(9000, Protocol.TCP)
GAPPED = Policy(allowed_external_ports=((8000, 9020), (9021, 9040), (9050, 9999)))
OPEN = Policy()  # no limits


def mapping(
    port: int = 9000, on_conflict: OnConflict = OnConflict.NEXT_FREE, name: str = "web", allow_sensitive: bool = False
) -> DesiredMapping:
    key = MappingKey(port, Protocol.TCP)
    return DesiredMapping(name, key, HOST, 8080, 3600, on_conflict=on_conflict, allow_sensitive=allow_sensitive)


def plan(*mappings: DesiredMapping, picks_port: bool = True, policy: Policy = OPEN) -> Plan:
    m = Manifest("m.yaml", "home", mappings, policy=policy)
    return diff.diff(m, [], local=HOST, describes=False, finite_leases=True, picks_port=picks_port)


def windows(p: Plan) -> dict[str, PortWindow | None]:
    return {c.name: c.window for c in p.changes}


@pytest.mark.parametrize(
    ("declared", "policy", "sensitive_ok", "expected"),
    [
        (9000, Policy(), False, PortWindow(9000, 9100)),
        # The contiguous allowed run that holds the declared port: adjacent ranges join, a gap ends it.
        (9000, GAPPED, False, PortWindow(9000, 9040)),
        (65500, Policy(), False, PortWindow(65500, 65535)),
        # A sensitive port (RDP's 3389) ends it, unless allow_sensitive says it may be exposed.
        (3300, Policy(), False, PortWindow(3300, 3388)),
        (3300, Policy(), True, PortWindow(3300, 3400)),
    ],
)
def test_a_next_free_add_on_a_router_that_picks_ports_carries_its_window(
    declared: int, policy: Policy, sensitive_ok: bool, expected: PortWindow
) -> None:
    """The add asks for the declared port and may be granted any port from it up to NEXT_FREE_WINDOW
    above, narrowed to what the policy allows and what is not sensitive."""
    (add,) = plan(mapping(declared, allow_sensitive=sensitive_ok), policy=policy).changes
    assert (add.action, add.key, add.window) == (Action.ADD, MappingKey(declared, Protocol.TCP), expected)


def test_no_window_where_the_router_takes_the_port_it_is_given_or_on_conflict_is_not_next_free() -> None:
    """UPnP (the planner picks the free port itself) and on_conflict fail get no window."""
    assert windows(plan(mapping(), picks_port=False)) == {"web": None}
    assert windows(plan(mapping(on_conflict=OnConflict.FAIL))) == {"web": None}


def test_the_window_stops_before_another_declared_mappings_port() -> None:
    """A port granted where another of the manifest's mappings is declared would push that one off
    its own: the window ends before it."""
    p = plan(mapping(), mapping(9030, OnConflict.FAIL, name="api"))
    assert windows(p) == {"web": PortWindow(9000, 9029), "api": None}


def test_a_group_of_ports_gets_no_window_and_the_plan_says_why() -> None:
    """Both protocols of one name cannot be kept together where the router picks each port alone: no
    window, and a note in the plan that a moved grant is refused as with on_conflict: fail."""
    tcp = mapping()
    udp = replace(tcp, key=MappingKey(9000, Protocol.UDP))
    p = plan(tcp, udp)
    assert [c.window for c in p.changes] == [None, None]
    assert all("cannot be kept together" in c.note and "on_conflict: fail" in c.note for c in p.changes)
    assert "the 2 ports of web cannot be kept together" in render.plan_text(p, render.Style(False))


def test_a_policy_leaving_no_room_gives_no_window_and_says_so() -> None:
    """A policy that allows the declared port alone: no window, and the note names why."""
    (add,) = plan(mapping(), policy=Policy(allowed_external_ports=((9000, 9000),))).changes
    assert add.window is None
    assert "leaves no port above 9000" in add.note


def test_the_plan_text_shows_the_window() -> None:
    """The plan a user approves says which ports the router may grant."""
    text = render.plan_text(plan(mapping()), render.Style(False))
    assert "the router may grant a port from 9000 to 9100 (next_free)" in text


def test_the_report_says_which_port_was_granted() -> None:
    """A grant kept inside the window is reported as such, in text and JSON."""
    (add,) = plan(mapping()).changes
    report = ApplyReport((ChangeResult(add, True, granted=MappingKey(9003, Protocol.TCP)),))
    assert "granted 9003 instead of 9000 (next_free)" in render.report_text(report, render.Style(False))
    assert render.report_json(report, now=0.0)["results"][0]["granted"] == {"external_port": 9003, "protocol": "TCP"}


@pytest.mark.parametrize(
    ("window", "refused"),
    [
        (PortWindow(9000, 9050), ""),
        (PortWindow(9000, 9100), "reaches 9051, outside policy.allowed_external_ports"),
        (PortWindow(9000, 9200), "not within 100 above"),
        (PortWindow(9001, 9050), "not within 100 above"),
    ],
)
def test_admission_refuses_a_window_reaching_outside_the_policy(window: PortWindow, refused: str) -> None:
    """A window (a hand-edited plan's, say) is judged port by port: one the policy does not allow, or
    one not just above the mapping's port, refuses the plan."""
    rules = Policy(allowed_external_ports=((9000, 9050),))
    m = Manifest("m.yaml", "home", (mapping(),), policy=rules)
    (add,) = plan(mapping(), policy=rules).changes
    edited = replace(plan(mapping(), policy=rules), changes=(replace(add, window=window),))
    messages = [r.message for r in admission.admit(edited, m)]
    assert refused in " ".join(messages)
    assert bool(messages) == bool(refused)


def test_admission_refuses_a_window_reaching_a_sensitive_port() -> None:
    """A window that reaches a sensitive port needs allow_sensitive, as the port itself would."""
    p = plan(mapping(3300))
    (add,) = p.changes
    wide = replace(p, changes=(replace(add, window=PortWindow(3300, 3400)),))
    m = Manifest("m.yaml", "home", (mapping(3300),))
    assert ["RDP (port 3389)" in r.message for r in admission.admit(wide, m)] == [True]
    allowed = Manifest("m.yaml", "home", (mapping(3300, allow_sensitive=True),))
    assert admission.admit(wide, allowed) == []


def test_the_window_round_trips_through_the_codec_and_old_plans_have_none() -> None:
    """A saved plan carries the window; one saved before windows reads as none; a window that does not
    hold its change's port is malformed."""
    p = plan(mapping())
    doc = json.loads(json.dumps(plancodec.encode(p)))
    assert doc["changes"][0]["window"] == {"low": 9000, "high": 9100}
    assert plancodec.decode(doc) == p
    del doc["changes"][0]["window"]
    assert plancodec.decode(doc).changes[0].window is None
    doc["changes"][0]["window"] = {"low": 9001, "high": 9100}
    with pytest.raises(plancodec.Malformed, match=r"changes\[0\]\.window"):
        plancodec.decode(doc)


def test_a_saved_plan_with_a_widened_window_is_not_what_its_manifest_plans() -> None:
    """apply PLAN writes exactly the approved window: one edited in the file differs from the plan made
    again from its manifest, and nothing is written."""
    now = plan(mapping())
    (add,) = now.changes
    edited = replace(now, changes=(replace(add, window=PortWindow(9000, 9050)),))
    with pytest.raises(PlanFileError, match="may grant a port from 9000 to 9050"):
        planfile.check_replanned("plan.json", edited, now)
    planfile.check_replanned("plan.json", now, now)


def test_a_plan_for_a_pcp_router_round_trips_so_it_can_be_saved_and_applied() -> None:
    """A saved plan names a PCP or NAT-PMP router as it does a UPnP one, and reads back as the same
    router (it has no IGD version), so `plan --out` and `apply PLAN` work over PCP too."""
    for mode in ("pcp", "natpmp"):
        router = RouterInfo(mode, f"{mode}:192.168.77.1", f"{mode}://192.168.77.1", service=mode, external_ip="1.2.3.4")
        p = replace(plan(mapping(), picks_port=False), router=router)
        assert plancodec.decode(json.loads(json.dumps(plancodec.encode(p)))) == p
