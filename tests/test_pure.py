"""The pure parts, table-driven: durations, the ownership tag, and diff's edge cases."""

from __future__ import annotations

import pytest

from reconciler import diff, ownership
from reconciler.durations import format_duration, parse_duration
from reconciler.models import Action, DesiredMapping, Manifest, MappingKey, PortMapping, Protocol

TCP80 = MappingKey(80, Protocol.TCP)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), (90, 90), ("90s", 90), ("90m", 5400), ("1h30m", 5400), ("7d", 604800), ("1w", 604800)],
)
def test_parse_duration(text: str | int, seconds: int) -> None:
    """Durations read as seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1x", "h", "1h 30m", "-5"])
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
    assert ownership.owned_name("homelab", TCP80, description[:16]) is not None


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
    from dataclasses import replace

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
