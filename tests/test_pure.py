"""The pure parts, table-driven: durations, the ownership tag, and diff's edge cases."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import replace

import pytest

from reconciler import diff, ownership, quirks
from reconciler.durations import format_duration, parse_duration
from reconciler.errors import ConnectionDropped, HttpStatusError, RouterError, RouterUnreachable, UpnpActionError
from reconciler.models import Action, DesiredMapping, Manifest, MappingKey, PortMapping, Protocol

TCP80 = MappingKey(80, Protocol.TCP)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), (90, 90), ("90s", 90), ("90m", 5400), ("1h30m", 5400), ("7d", 604800), ("1w", 604800)],
)
def test_parse_duration(text: str | int, seconds: int) -> None:
    """Durations read as seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    # A final newline, spaces, and digits str.isdigit() takes but a duration does not: '²', Arabic-Indic.
    ["", "soon", "1x", "h", "1h 30m", "-5", "90m\n", " 90", "\u00b2", "\u0663\u0666\u0660\u0660", "9" * 5000],
)
def test_parse_duration_rejects(text: str) -> None:
    """Anything that is not a duration is a ValueError naming it."""
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59, "59s"), (5400, "1h30m"), (90061, "1d1h1m1s")])
def test_format_duration(seconds: int, text: str) -> None:
    """Durations print in their shortest exact form."""
    assert format_duration(seconds) == text


def test_tag_fits_routers_that_cut_descriptions_to_16() -> None:
    """An owned description cut to 16 characters is still recognised as owned."""
    description = ownership.describe("homelab", TCP80, "a-long-mapping-name", "words")
    assert ownership.claim("homelab", TCP80, description[:16]) is not None


@pytest.mark.parametrize(
    ("owner", "key", "owned"),
    [
        ("homelab", TCP80, True),
        ("other", TCP80, False),
        ("homelab", MappingKey(81, Protocol.TCP), False),
        ("homelab", MappingKey(80, Protocol.UDP), False),
    ],
)
def test_tag_binds_owner_and_key(owner: str, key: MappingKey, owned: bool) -> None:
    """A tag is ours only for its own owner, port and protocol."""
    description = ownership.describe("homelab", TCP80, "web")
    assert ownership.is_owned(owner, key, description) is owned


def _manifest(*mappings: DesiredMapping, prune: bool = True) -> Manifest:
    return Manifest("m.yaml", "o", mappings, None, prune)


def _row(d: DesiredMapping, **changes: object) -> PortMapping:
    return replace(diff.target("o", d), **changes)  # type: ignore[arg-type]


WEB = DesiredMapping("web", TCP80, "192.168.1.2", 8080, lease=3600, remote_host="198.51.100.9")
CASES = [
    # (why, table, expected (action, replace) per change)
    ("missing row is added", [], [(Action.ADD, False)]),
    ("remote host listed back empty is not drift", [_row(WEB, remote_host="", lease=3500)], []),
    (
        "a different listed remote host is drift",
        [_row(WEB, remote_host="203.0.113.1", lease=3500)],
        [(Action.CHANGE, False)],
    ),
    ("new internal port changes in place", [_row(WEB, internal_port=9090, lease=3500)], [(Action.CHANGE, False)]),
    (
        "new internal client needs delete then add",
        [_row(WEB, internal_client="192.168.1.3", lease=3500)],
        [(Action.CHANGE, True)],
    ),
    ("lease longer than declared is changed", [_row(WEB, lease=86000)], [(Action.CHANGE, False)]),
    ("permanent row with a finite lease declared is changed", [_row(WEB, lease=0)], [(Action.CHANGE, False)]),
    ("lease past half is renewed", [_row(WEB, lease=1700)], [(Action.RENEW, False)]),
    ("lease before half is left alone", [_row(WEB, lease=1900)], []),
]


@pytest.mark.parametrize(("why", "table", "expected"), CASES, ids=[c[0] for c in CASES])
def test_diff_cases(why: str, table: list[PortMapping], expected: list[tuple[Action, bool]]) -> None:
    """diff(manifest, table) plans exactly the expected writes."""
    plan = diff.diff(_manifest(WEB), table)
    assert [(c.action, c.replace) for c in plan.changes] == expected


def test_permanent_on_igd2_is_renewed_only_past_half_a_week() -> None:
    """IGD v2 turns permanent into 7 days; that is renewed after 3.5 days, not on every plan."""
    forever = DesiredMapping("f", TCP80, "192.168.1.2", 80, lease=0)
    assert diff.diff(_manifest(forever), [_row(forever, lease=604000)]).changes == ()
    assert [c.action for c in diff.diff(_manifest(forever), [_row(forever, lease=300000)]).changes] == [Action.RENEW]


def test_destroy_removes_only_owned() -> None:
    """destroy plans a removal for each owned row and nothing for foreign ones."""
    foreign = PortMapping(MappingKey(9, Protocol.UDP), "192.168.1.5", 9, "console")
    plan = diff.destroy(_manifest(WEB), [_row(WEB, lease=3000), foreign])
    assert [(c.action, c.key) for c in plan.changes] == [(Action.REMOVE, TCP80)]
    assert plan.foreign == (foreign,)


def test_docs_table_covers_every_profile_and_quirk() -> None:
    """docs/quirks.md has a row for every emulator profile and names every quirk portctl remembers."""
    from reconciler.emulator import PROFILES
    from reconciler.quirks import Quirk

    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "quirks.md")) as f:
        doc = f.read()
    missing = [p for p in PROFILES if p != "spec" and f"| `{p}` |" not in doc]
    missing += [q.value for q in Quirk if f"`{q.value}`" not in doc]
    assert missing == []


ROW = PortMapping(MappingKey(8080, Protocol.TCP), "192.168.1.10", 80, "pc:abcdefgh web", lease=3600)
HERE = quirks.Request(ROW, local="192.168.1.10")
# portctl on another host of the same LAN: the one case that can teach secure mode.
ELSEWHERE = quirks.Request(ROW, local="192.168.1.20", lan=(ipaddress.IPv4Network("192.168.1.0/24"),))
T, Q = quirks.Then, quirks.Quirk


@pytest.mark.parametrize(
    ("action", "error", "request_", "then", "learn"),
    [
        ("AddPortMapping", UpnpActionError("AddPortMapping", 725), HERE, T.NEED, Q.PERMANENT_ONLY),
        ("AddPortMapping", UpnpActionError("AddPortMapping", 402), HERE, T.NEED, Q.PERMANENT_ONLY),
        (
            "AddPortMapping",
            UpnpActionError("AddPortMapping", 402),
            quirks.Request(replace(ROW, lease=0), "192.168.1.10"),
            T.NEED,
            Q.FINITE_ONLY,
        ),
        ("AddPortMapping", UpnpActionError("AddPortMapping", 724), HERE, T.NEED, Q.SAME_PORT_ONLY),
        (
            "AddPortMapping",
            UpnpActionError("AddPortMapping", 726),
            replace(HERE, mapping=replace(ROW, remote_host="198.51.100.7")),
            T.NEED,
            Q.WILDCARD_REMOTE_ONLY,
        ),
        ("AddPortMapping", UpnpActionError("AddPortMapping", 727), HERE, T.STOP, Q.WILDCARD_EXTERNAL_ONLY),
        ("AddPortMapping", UpnpActionError("AddPortMapping", 606), ELSEWHERE, T.STOP, Q.SECURE_MODE),
        ("AddPortMapping", UpnpActionError("AddPortMapping", 718), ELSEWHERE, T.STOP, Q.SECURE_MODE),
        ("AddPortMapping", UpnpActionError("AddPortMapping", 718), HERE, T.REFUSE, None),
        (
            "AddPortMapping",
            UpnpActionError("AddPortMapping", 606),
            replace(HERE, mapping=replace(ROW, key=MappingKey(443, Protocol.TCP))),
            T.REFUSE,
            Q.NO_PRIVILEGED_PORTS,
        ),
        ("AddPortMapping", UpnpActionError("AddPortMapping", 729), HERE, T.REFUSE, None),
        ("DeletePortMapping", UpnpActionError("DeletePortMapping", 714), HERE, T.DONE, None),
        ("DeletePortMapping", UpnpActionError("DeletePortMapping", 606), ELSEWHERE, T.STOP, Q.SECURE_MODE),
        ("GetGenericPortMappingEntry", UpnpActionError("x", 713), None, T.END, None),
        ("GetGenericPortMappingEntry", UpnpActionError("x", 402), None, T.END, None),
        ("GetGenericPortMappingEntry", HttpStatusError("HTTP 500", 500), None, T.END, None),
        ("GetListOfPortMappings", UpnpActionError("x", 730), None, T.EMPTY, None),
        ("GetListOfPortMappings", UpnpActionError("x", 602), None, T.FALL_BACK, Q.NO_PORT_LISTING),
        ("GetListOfPortMappings", ConnectionDropped("reset"), None, T.FALL_BACK, Q.NO_PORT_LISTING),
        ("GetSpecificPortMappingEntry", UpnpActionError("x", 714), None, T.EMPTY, None),
    ],
)
def test_fallback_table(
    action: str, error: RouterError, request_: quirks.Request | None, then: quirks.Then, learn: quirks.Quirk | None
) -> None:
    """Each symptom maps to one decision and, where it is a router's lasting need, one quirk to remember."""
    decision = quirks.decide(action, error, request_)
    assert decision is not None
    assert (decision.then, decision.learn) == (then, learn)


@pytest.mark.parametrize(
    "error",
    [
        RouterUnreachable("refused"),  # not a hiccup: retrying a refused connection helps nobody
        HttpStatusError("HTTP 404", 404),
        UpnpActionError("AddPortMapping", 501),  # an answer, not a transport failure
    ],
)
def test_only_transport_hiccups_are_sent_again(error: RouterError) -> None:
    """The repeat-once rule covers a bare 5xx and a dropped connection, nothing else."""
    decision = quirks.decide("AddPortMapping", error, HERE, again=True)
    assert decision is None or decision.then is not quirks.Then.AGAIN
    assert quirks.decide("AddPortMapping", ConnectionDropped("x"), HERE, again=True).then is quirks.Then.AGAIN  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("learned", "request_", "expected"),
    [
        ({Q.PERMANENT_ONLY}, replace(HERE, permanent_ok=True), replace(ROW, lease=0)),
        ({Q.PERMANENT_ONLY}, HERE, "Set allow_permanent: true"),
        ({Q.FINITE_ONLY}, HERE, ROW),
        ({Q.WILDCARD_REMOTE_ONLY}, replace(HERE, any_remote_ok=True), ROW),
        ({Q.WILDCARD_REMOTE_ONLY}, HERE, ROW),
        ({Q.SAME_PORT_ONLY}, quirks.Request(local="192.168.1.10", same_port_ok=True), replace(ROW, internal_port=8080)),
        ({Q.SAME_PORT_ONLY}, HERE, "set internal_port: 8080"),
        ({Q.SECURE_MODE}, ELSEWHERE, "Run portctl on 192.168.1.10"),
        ({Q.SECURE_MODE}, HERE, ROW),
    ],
)
def test_shape_plans_for_learned_quirks(
    learned: set[quirks.Quirk], request_: quirks.Request, expected: PortMapping | str
) -> None:
    """A learned quirk turns the target into what the router will hold, or into the reason it cannot."""
    state = quirks.Learned({q: quirks.Lesson("test", True, 0.0) for q in learned})
    shaped = quirks.shape(ROW, state, request_)
    if isinstance(expected, str):
        assert isinstance(shaped, str) and expected in shaped
    else:
        assert not isinstance(shaped, str) and shaped[0] == expected


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("11.22.33.1", False),
        ("203.0.113.7", False),
        ("100.64.0.1", True),
        ("10.1.2.3", True),
        ("0.0.0.0", True),
        ("", False),
    ],
)
def test_wan_blocker(address: str, blocked: bool) -> None:
    """Only an address the internet can reach (or an unknown one) lets mappings be planned."""
    assert bool(quirks.wan_blocker(address)) == blocked


@pytest.mark.parametrize(
    "text", ["", "plain", "a&b", "<x>", "&amp; already", 'say "hi"', "it's", "]]>", "\u00e9\u4e2d", "&<>&<>"]
)
def test_soap_escapes_values_as_saxutils_does(text: str) -> None:
    """The envelope's escaping is byte-identical to xml.sax.saxutils.escape, which it replaces to spare an import."""
    from xml.sax.saxutils import escape as reference

    from reconciler.backends import soap

    assert soap.escape(text) == reference(text)
