"""The vendor fallback table: what portctl does when a router bends the IGD spec.

RULES is the table. Each row is a symptom (an action and what the router answered to it, maybe only
for some requests), what portctl does about it, and what it then remembers about that router. It is
the only place in portctl that knows what an error code means: the UPnP backend asks `decide()`
whenever an action fails, and the planner asks `shape()` so that a router's known needs are planned
for up front. A backend never rewrites a mapping to suit the router: it writes what the plan shows or
raises a refusal naming the need (Then.NEED), and the planner adapts the next plan, within what the
manifest allows (a need that widens exposure needs an opt-in, WIDENS).

What a router needed is a `Learned` of `Lesson`s (evidence, proven or only suspected, when seen),
kept per router UDN between runs by `cache.Cache`; lessons expire (PROVEN_FOR, SUSPECTED_FOR) so a
router is asked again, and `portctl forget` drops them. Only a proven lesson refuses a mapping.
docs/quirks.md is the same table for people, with the routers known to do each thing.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace

from .durations import format_duration
from .errors import ConnectionDropped, HttpStatusError, RouterError, UpnpActionError
from .models import MAX_LEASE, Adaptation, PortMapping


class Quirk(enum.StrEnum):
    """Something a router needs that the spec does not ask for; remembered once seen."""

    PERMANENT_ONLY = "permanent-only"
    FINITE_ONLY = "finite-only"
    SAME_PORT_ONLY = "same-port-only"
    WILDCARD_REMOTE_ONLY = "wildcard-remote-only"
    WILDCARD_EXTERNAL_ONLY = "wildcard-external-only"
    NO_PRIVILEGED_PORTS = "no-privileged-ports"
    SECURE_MODE = "secure-mode"
    NO_PORT_LISTING = "no-port-listing"
    TRUNCATES_DESCRIPTIONS = "truncates-descriptions"
    CAPS_LISTINGS = "caps-listings"


# What each quirk means, as `portctl show` and the plan say it.
MEANING: dict[Quirk, str] = {
    Quirk.PERMANENT_ONLY: "accepts only permanent leases; portctl re-checks its mappings instead of renewing them",
    Quirk.FINITE_ONLY: "refuses permanent leases; portctl asks for 7 days and renews at half-time",
    Quirk.SAME_PORT_ONLY: "requires the internal port to equal the external port",
    Quirk.WILDCARD_REMOTE_ONLY: "cannot restrict a mapping to one remote host",
    Quirk.WILDCARD_EXTERNAL_ONLY: "cannot map a specific external port",
    Quirk.NO_PRIVILEGED_PORTS: "refuses external ports below 1024",
    Quirk.SECURE_MODE: "only maps ports to the host that asks (secure mode)",
    Quirk.NO_PORT_LISTING: "advertises GetListOfPortMappings but it fails; the table is read entry by entry",
    Quirk.TRUNCATES_DESCRIPTIONS: "cuts descriptions short",
    Quirk.CAPS_LISTINGS: "answers GetListOfPortMappings with fewer rows than asked; full pages are read again in parts",
}

# Needs that widen what a mapping exposes, and the manifest opt-in that allows planning for them.
WIDENS: dict[Quirk, str] = {
    Quirk.PERMANENT_ONLY: "allow_permanent",
    Quirk.WILDCARD_REMOTE_ONLY: "allow_any_remote_host",
    Quirk.SAME_PORT_ONLY: "allow_same_port",
}
# The need shown where a protocol (PCP, NAT-PMP) has no permanent lease at all: not learned, declared.
FINITE_BY_PROTOCOL = "no permanent lease in this protocol; the longest it grants"
# Needs that narrow it, planned for without asking.
NARROWS = frozenset({Quirk.FINITE_ONLY})
PROVEN_FOR = 30 * 86400.0  # seconds a proven lesson is trusted before the router is asked again
SUSPECTED_FOR = 86400.0  # seconds a suspicion is kept (it never blocks; it only names a likely cause)

HTTP_5XX = "HTTP 5xx without a UPnP fault"
DROPPED = "connection dropped"
Answer = int | str  # a UPnP error code, HTTP_5XX or DROPPED


@dataclass(frozen=True)
class Request:
    """The request an answer refers to, as far as a rule needs to know it.

    An unknown `local` or `lan` is never read as "this host" or "on the LAN": a rule that needs them
    does not match, and nothing is learned from the answer.
    """

    mapping: PortMapping | None = None
    local: str | None = None  # this host's address towards the router; None (or "") when unknown
    same_port_ok: bool = False  # the manifest allows internal_port := external_port
    permanent_ok: bool = False  # the manifest allows a permanent lease where the router needs one
    any_remote_ok: bool = False  # the manifest allows any remote host where the router cannot restrict
    longest_lease: int = MAX_LEASE  # what a finite-only router is asked for instead of permanent (capabilities)
    finite_leases: bool = False  # the protocol has no permanent lease (PCP, NAT-PMP): capabilities
    lan: tuple[ipaddress.IPv4Network, ...] | None = None  # subnets this host is attached to; None: unknown
    # A mapping to another host that the router holds or granted ("" if none seen): it is not in
    # secure mode, or was not when that mapping was made.
    other_host_held: str = ""


class Then(enum.Enum):
    AGAIN = "send the same request once more"
    NEED = "refuse this mapping: the router needs something else; the next plan plans for it"
    DONE = "count it as done"
    END = "end of the table"
    EMPTY = "nothing there"
    FALL_BACK = "use the IGD v1 way"
    REFUSE = "refuse this mapping and say what to change"
    STOP = "refuse every write to this router and say what to change"


def _always(r: Request) -> bool:
    return True


def _permanent(r: Request) -> bool:
    return r.mapping is not None and r.mapping.lease == 0


def _finite(r: Request) -> bool:
    return r.mapping is not None and r.mapping.lease != 0


def _other_host(r: Request) -> bool:
    return r.mapping is not None and bool(r.local) and r.mapping.internal_client != r.local


def _this_host(r: Request) -> bool:
    return r.mapping is not None and bool(r.local) and r.mapping.internal_client == r.local


def _not_this_host(r: Request) -> bool:
    """Another host, or this host's address is unknown: the refusal may be about who asked."""
    return r.mapping is not None and not _this_host(r)


def _on_lan(r: Request) -> bool | None:
    """Is the mapping's internal client on a subnet this host is attached to? None: cannot tell."""
    if r.mapping is None or r.lan is None:
        return None
    try:
        client = ipaddress.ip_address(r.mapping.internal_client)
    except ValueError:
        return False
    return any(client in net for net in r.lan)


def _off_lan(r: Request) -> bool:
    return _other_host(r) and _on_lan(r) is False


def _surely_secure_mode(r: Request) -> bool:
    """A refusal that only secure mode explains: another host on this LAN, at a port that permission
    rules rarely refuse, on a router not known to hold a mapping to another host."""
    return (
        _other_host(r)
        and _on_lan(r) is True
        and not r.other_host_held
        and r.mapping is not None
        and r.mapping.key.external_port >= 1024
    )


def _remote_host(r: Request) -> bool:
    return r.mapping is not None and bool(r.mapping.remote_host)


def _ports_differ(r: Request) -> bool:
    return r.mapping is not None and r.mapping.internal_port != r.mapping.key.external_port


def _privileged(r: Request) -> bool:
    return r.mapping is not None and r.mapping.key.external_port < 1024 and _this_host(r)


def _not_on_lan_why(r: Request) -> str:
    assert r.mapping is not None
    lan = ", ".join(str(n) for n in r.lan or ())
    return (
        f"{r.mapping.internal_client} is not on this host's LAN ({lan}); the router may refuse mappings to it "
        "(secure mode, permission rules). Check internal_client for a typo"
    )


def _another_host_why(r: Request) -> str:
    assert r.mapping is not None
    client, port = r.mapping.internal_client, r.mapping.key.external_port
    this = f"this host is {r.local}" if r.local else "this host's address towards the router is unknown"
    why = (
        f"the router refused the mapping to {client}. Either it is in secure mode (it only maps ports to the "
        f"host that asks, and {this}: run portctl on {client}, or turn off secure mode, miniupnpd: secure_mode=no), "
        f"or its permission rules refuse {client} or port {port} (miniupnpd: the allow/deny lines of miniupnpd.conf)"
    )
    if r.other_host_held:
        why += f". It holds a mapping to {r.other_host_held}, so secure mode is unlikely"
    elif port < 1024:
        why += ". Permission rules often refuse ports below 1024"
    return why


@dataclass(frozen=True)
class Rule:
    action: str  # the IGD action, or "*" for any
    answers: frozenset[Answer]
    then: Then
    learn: Quirk | None = None
    when: Callable[[Request], bool] = _always
    # For REFUSE and STOP without a quirk: what happened and what to change.
    why: str | Callable[[Request], str] = ""
    # The answer proves the quirk; otherwise (a code that also means other things) it is a suspicion.
    proven: bool = True


def _rule(
    action: str,
    answers: set[Answer],
    then: Then,
    learn: Quirk | None = None,
    when: Callable[[Request], bool] = _always,
    why: str | Callable[[Request], str] = "",
    proven: bool = True,
) -> Rule:
    return Rule(action, frozenset(answers), then, learn, when, why, proven)


ADD, DELETE, GENERIC, SPECIFIC, LIST = (
    "AddPortMapping",
    "DeletePortMapping",
    "GetGenericPortMappingEntry",
    "GetSpecificPortMappingEntry",
    "GetListOfPortMappings",
)

# First matching row wins. The comment on each row names the routers seen doing it.
RULES: tuple[Rule, ...] = (
    # Overloaded or flaky firmware (ISP boxes under load, Wi-Fi mesh nodes): once, then go on down.
    _rule("*", {HTTP_5XX, DROPPED}, Then.AGAIN),
    # The spec's own: past the last index.
    _rule(GENERIC, {713, 714}, Then.END),
    # DD-WRT (402), Linksys WRT1900AC (bare HTTP 500), assorted ISP boxes (501): their own end of table.
    _rule(GENERIC, {402, 501, HTTP_5XX}, Then.END),
    # The spec's own: no mapping at that key.
    _rule(SPECIFIC, {714}, Then.EMPTY),
    # The spec's own (WANIPConnection:2): no mappings in the range.
    _rule(LIST, {730}, Then.EMPTY),
    # Routers whose SCPD lists v2 actions they do not implement (401/602), and the Ubee EVW32C,
    # which resets the connection on GetListOfPortMappings: read entry by entry, the v1 way.
    _rule(LIST, {401, 602, 501, DROPPED, HTTP_5XX}, Then.FALL_BACK, Quirk.NO_PORT_LISTING),
    # The spec's own, and miniupnpd: deleting what is not there.
    _rule(DELETE, {714}, Then.DONE),
    # miniupnpd secure_mode=yes on IGD v2: only the host a mapping points to may delete it.
    _rule(DELETE, {606}, Then.STOP, Quirk.SECURE_MODE, _other_host),
    # MikroTik RouterOS, some Netgear and Zyxel firmware: 725 OnlyPermanentLeasesSupported.
    _rule(ADD, {725}, Then.NEED, Quirk.PERMANENT_ONLY, _finite),
    # Arris cable gateways (TG1682, SB6183 firmware): a finite lease is "invalid args". 402 says
    # nothing about which argument: only a suspicion.
    _rule(ADD, {402}, Then.NEED, Quirk.PERMANENT_ONLY, _finite, proven=False),
    # IGD v1 firmware that reads lease 0 literally as invalid (some D-Link, Technicolor): ask for 7 days.
    _rule(ADD, {402}, Then.NEED, Quirk.FINITE_ONLY, _permanent, proven=False),
    # Some Broadcom-based ISP boxes: 724 SamePortValuesRequired.
    _rule(ADD, {724}, Then.NEED, Quirk.SAME_PORT_ONLY, _ports_differ),
    # Many consumer routers (Netgear, TP-Link Archer): 726 RemoteHostOnlySupportsWildcard.
    _rule(ADD, {726}, Then.NEED, Quirk.WILDCARD_REMOTE_ONLY, _remote_host),
    # Routers that only accept AddAnyPortMapping-style wildcards: 727, nothing portctl can place.
    _rule(ADD, {727}, Then.STOP, Quirk.WILDCARD_EXTERNAL_ONLY),
    # An internal client off this host's LAN (a typo, another subnet): miniupnpd refuses it in secure
    # mode and by its default permission rules alike. It says nothing about other mappings: never learned.
    _rule(ADD, {606, 718}, Then.REFUSE, when=_off_lan, why=_not_on_lan_why),
    # miniupnpd secure_mode=yes: 606 on IGD v2, 718 on IGD v1, for a client other than the caller.
    # Learned only when nothing else explains the refusal (see _surely_secure_mode).
    _rule(ADD, {606, 718}, Then.STOP, Quirk.SECURE_MODE, _surely_secure_mode),
    # Another host where secure mode is in doubt: miniupnpd's permission rules (allow/deny lines)
    # answer the same codes. This mapping is refused; the others are still tried.
    _rule(ADD, {606, 718}, Then.REFUSE, when=_not_this_host, why=_another_host_why),
    # TP-Link ER605, miniupnpd's default permission rules: nothing below 1024.
    _rule(ADD, {606, 718, 729}, Then.REFUSE, Quirk.NO_PRIVILEGED_PORTS, _privileged),
    # miniupnpd behind a private or CGNAT WAN address: 501 for every add (the plan says so up front).
    _rule(
        ADD,
        {501},
        Then.REFUSE,
        why="the router refused the mapping (501 ActionFailed); miniupnpd answers this when its WAN address "
        "is private or CGNAT. Check `portctl show` for the external IP",
    ),
    _rule(
        ADD,
        {606},
        Then.REFUSE,
        why="the router does not allow this mapping; check its UPnP permission rules (miniupnpd: upnp_perm rules)",
    ),
    _rule(
        ADD,
        {718},
        Then.REFUSE,
        why="another mapping took this port since the plan was read; run plan again",
    ),
    _rule(ADD, {728}, Then.REFUSE, why="the router's mapping table is full; remove unused mappings on the router"),
    # Fritz!Box and others with static port forwards: a forward made on the admin page holds the port.
    _rule(
        ADD,
        {729},
        Then.REFUSE,
        why="the port is held by another mechanism on the router (a static port forward, NAT-PMP or PCP); "
        "free it on the router's admin page or choose another port",
    ),
)


@dataclass(frozen=True)
class Decision:
    then: Then
    learn: Quirk | None
    why: str
    proven: bool = True

    @property
    def final(self) -> bool:
        return self.then in (Then.REFUSE, Then.STOP, Then.NEED)


def answer(exc: RouterError) -> Answer | None:
    """What the router answered, in the table's terms; None for failures no row is about."""
    if isinstance(exc, UpnpActionError):
        return exc.code
    if isinstance(exc, HttpStatusError):
        return HTTP_5XX if exc.status >= 500 else None
    if isinstance(exc, ConnectionDropped):
        return DROPPED
    return None


def decide(action: str, exc: RouterError, request: Request | None = None, *, again: bool = False) -> Decision | None:
    """The table's row for this failure, or None when nothing is to be done but report it.

    `again` allows the rows that repeat the same request; the backend asks with it once per request.
    """
    got = answer(exc)
    if got is None:
        return None
    request = request or Request()
    for rule in RULES:
        if rule.action not in ("*", action) or got not in rule.answers or not rule.when(request):
            continue
        if rule.then is Then.AGAIN and not again:
            continue
        why = rule.why(request) if callable(rule.why) else rule.why
        why = why or (remedy(rule.learn, request) if rule.learn else "")
        return Decision(rule.then, rule.learn, why, rule.proven)
    return None


# -- what a learned quirk does to a mapping ----------------------------------------------------------


def adapt(quirk: Quirk, m: PortMapping, request: Request, *, proven: bool = True) -> PortMapping | str:
    """`m` as a router with `quirk` will take it, within what the manifest allows, or why it cannot.

    A need that widens exposure is planned only with the request's opt-in. A suspicion (`proven`
    false) adapts a mapping only where that refuses nothing: it never blocks one.
    """
    refused = remedy(quirk, replace(request, mapping=m)) if proven else ""
    port = m.key.external_port
    if quirk is Quirk.PERMANENT_ONLY and m.lease != 0:
        return replace(m, lease=0) if request.permanent_ok else (refused or m)
    if quirk is Quirk.FINITE_ONLY:
        return replace(m, lease=request.longest_lease) if m.lease == 0 else m
    if quirk is Quirk.WILDCARD_REMOTE_ONLY and m.remote_host:
        return replace(m, remote_host="") if request.any_remote_ok else (refused or m)
    if quirk is Quirk.SAME_PORT_ONLY and m.internal_port != port:
        return replace(m, internal_port=port) if request.same_port_ok else (refused or m)
    if quirk is Quirk.NO_PRIVILEGED_PORTS and port < 1024:
        return refused or m
    if quirk is Quirk.SECURE_MODE and m.internal_client != request.local:  # unknown local: not this host
        return refused or m
    if quirk is Quirk.WILDCARD_EXTERNAL_ONLY:
        return refused or m
    return m


def remedy(quirk: Quirk, request: Request) -> str:
    """What the user has to change when `quirk` refuses the request's mapping."""
    m = request.mapping
    port = m.key.external_port if m else 0
    if quirk is Quirk.PERMANENT_ONLY:
        asked = f"asks for a {format_duration(m.lease)} lease" if m and m.lease else "asks for a finite lease"
        return (
            f"the router accepts only permanent leases, and this mapping {asked}. "
            "Set allow_permanent: true to map it permanently instead, or lease: permanent"
        )
    if quirk is Quirk.WILDCARD_REMOTE_ONLY:
        only = f"only {m.remote_host}" if m and m.remote_host else "one remote host"
        return (
            f"the router cannot restrict a mapping to one remote host, and this mapping allows {only}. "
            "Set allow_any_remote_host: true to open it to every remote host instead, or drop remote_host"
        )
    if quirk is Quirk.SAME_PORT_ONLY:
        return (
            f"the router {MEANING[quirk]} (724); set internal_port: {port}, "
            "or allow_same_port: true to forward to that port instead"
        )
    if quirk is Quirk.NO_PRIVILEGED_PORTS:
        return f"the router {MEANING[quirk]}; choose an external port of 1024 or more"
    if quirk is Quirk.SECURE_MODE:
        client = m.internal_client if m else "that host"
        this = f"this host is {request.local}" if request.local else "this host's address towards it is unknown"
        return (
            f"the router {MEANING[quirk]}, and {this}. "
            f"Run portctl on {client}, or turn off secure mode on the router (miniupnpd: secure_mode=no). "
            "If secure mode is off, its permission rules refuse the mapping (miniupnpd: allow/deny lines)"
        )
    if quirk is Quirk.WILDCARD_EXTERNAL_ONLY:
        return f"the router {MEANING[quirk]} (727); portctl cannot manage mappings on it"
    return f"the router {MEANING[quirk]}"


def forget_hint(quirk: Quirk) -> str:
    return f"if the router changed, `portctl forget {quirk}` drops what was learned"


def first_need(quirk: Quirk, m: PortMapping, allowed: Collection[str], proven: bool) -> tuple[str, bool]:
    """What to say about a need a router first showed by refusing `m` mid-apply, and whether
    running apply again can help (the next plan adapts the mapping: a narrowing, or an allowed widening)."""
    opt_in = WIDENS.get(quirk, "")
    helps = quirk in NARROWS or opt_in in allowed
    request = Request(
        m, same_port_ok="allow_same_port" in allowed, permanent_ok="allow_permanent" in allowed,
        any_remote_ok="allow_any_remote_host" in allowed,
    )  # fmt: skip
    if helps:
        allowed_by = f"; {opt_in} allows adapting this mapping" if opt_in else ""
        text = f"the router {MEANING[quirk]}{allowed_by}. Nothing else was written; the next plan shows the adapted row"
    else:
        text = remedy(quirk, request) + ". Nothing broader was written"
    if not proven:
        text = f"likely cause (suspected, not proven: the code also means other bad arguments): {text}"
    else:
        text += f"; the next plan shows this need ({forget_hint(quirk)})"
    return text, helps


# -- what portctl remembers -----------------------------------------------------------------------


@dataclass(frozen=True)
class Lesson:
    """What one answer of a router showed about one quirk."""

    evidence: str
    proven: bool  # the answer leaves no doubt; a suspicion is only named as a likely cause
    seen: float  # Unix time of the answer

    def expired(self, now: float) -> bool:
        return now - self.seen > (PROVEN_FOR if self.proven else SUSPECTED_FOR)


# Opposite lease needs cannot both hold; the newer evidence wins.
_OPPOSITE = {Quirk.PERMANENT_ONLY: Quirk.FINITE_ONLY, Quirk.FINITE_ONLY: Quirk.PERMANENT_ONLY}


@dataclass
class Learned:
    """What one router needed, with the evidence for each; kept between runs by `cache.Cache`."""

    quirks: dict[Quirk, Lesson] = field(default_factory=dict)
    description_limit: int = 0  # characters kept, for TRUNCATES_DESCRIPTIONS
    list_cap: int = 0  # rows one GetListOfPortMappings answers at most, for CAPS_LISTINGS
    changed: bool = False  # learned something this run, so the cache needs writing
    # The needs learned or dropped since this was loaded (all of them, for one made by hand): what
    # saving it changes in the cache, so what another process stored about other needs is kept.
    touched: set[Quirk] = field(default_factory=set, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.touched |= set(self.quirks)

    def learn(self, quirk: Quirk, evidence: str, *, now: float, proven: bool = True) -> None:
        """Remember `quirk`; a suspicion never replaces a proven lesson, and a repeat renews the lesson."""
        old = self.quirks.get(quirk)
        if old is None or proven or not old.proven:
            self.quirks[quirk] = Lesson(evidence[:200], proven or bool(old and old.proven), now)
            self.touched.add(quirk)
            self.changed = True
        opposite = _OPPOSITE.get(quirk)
        if opposite in self.quirks:
            del self.quirks[opposite]
            self.touched.add(opposite)
            self.changed = True

    def forget(self, which: Collection[Quirk] | None = None) -> list[Quirk]:
        """Drop the lessons `which` (all with None); returns those that were held."""
        dropped = [q for q in list(self.quirks) if which is None or q in which]
        for quirk in dropped:
            del self.quirks[quirk]
        if which is None or Quirk.TRUNCATES_DESCRIPTIONS in which:
            self.description_limit = 0
        if which is None or Quirk.CAPS_LISTINGS in which:
            self.list_cap = 0
        self.touched |= set(Quirk if which is None else which)
        self.changed = True
        return dropped

    def onto(self, stored: Learned) -> Learned:
        """`stored` (what the cache holds now) with what this run learned and forgot written over it;
        what another process learned or forgot meanwhile about other needs stays. A suspicion here
        does not replace a lesson proven there."""
        for quirk in self.touched:
            lesson, theirs = self.quirks.get(quirk), stored.quirks.get(quirk)
            if lesson is None:
                stored.quirks.pop(quirk, None)
            elif lesson.proven or theirs is None or not theirs.proven:
                stored.quirks[quirk] = lesson
                if quirk in _OPPOSITE:
                    stored.quirks.pop(_OPPOSITE[quirk], None)
        if Quirk.TRUNCATES_DESCRIPTIONS in self.touched:
            stored.description_limit = self.description_limit
        if Quirk.CAPS_LISTINGS in self.touched:
            stored.list_cap = self.list_cap
        return stored

    def saved(self) -> None:
        """What was learned is in the cache now."""
        self.changed = False
        self.touched.clear()

    def expire(self, now: float) -> list[Quirk]:
        """Drop the lessons too old to trust, so the router is asked again."""
        old = [q for q, lesson in self.quirks.items() if lesson.expired(now)]
        if old:
            self.forget(old)
        return old

    def __contains__(self, quirk: object) -> bool:
        return quirk in self.quirks

    def to_json(self) -> dict[str, object]:
        return {
            "quirks": {
                q.value: {"evidence": lesson.evidence, "proven": lesson.proven, "seen": lesson.seen}
                for q, lesson in sorted(self.quirks.items())
            },
            "description_limit": self.description_limit,
            "list_cap": self.list_cap,
        }

    @classmethod
    def from_json(cls, doc: object, now: float) -> Learned:
        """Tolerant: a cache entry portctl does not understand is dropped, never an error. An entry
        from before lessons had proof and age is a suspicion seen when the entry was written."""
        learned = cls()
        if not isinstance(doc, dict):
            return learned
        written = doc.get("updated")
        written = float(written) if isinstance(written, int | float) and not isinstance(written, bool) else now
        quirks = doc.get("quirks")
        for name, lesson in quirks.items() if isinstance(quirks, dict) else []:
            if name not in Quirk._value2member_map_:
                continue
            if isinstance(lesson, dict):
                seen = lesson.get("seen")
                seen = float(seen) if isinstance(seen, int | float) and not isinstance(seen, bool) else 0.0
                learned.quirks[Quirk(name)] = Lesson(
                    str(lesson.get("evidence", ""))[:200], lesson.get("proven") is True, seen
                )
            else:
                learned.quirks[Quirk(name)] = Lesson(str(lesson)[:200], False, written)
        limit = doc.get("description_limit")
        if isinstance(limit, int) and 0 < limit < 256:
            learned.description_limit = limit
        cap = doc.get("list_cap")
        if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
            learned.list_cap = cap
        learned.expire(now)
        learned.saved()  # what it holds is what the cache holds
        return learned


def learn_list_cap(learned: Learned, cap: int, evidence: str, now: float) -> None:
    """A listing answered `cap` rows of a range that held more: a page that full is not complete."""
    if not learned.list_cap or cap < learned.list_cap:
        learned.list_cap = cap
        learned.changed = True
    learned.learn(Quirk.CAPS_LISTINGS, evidence, now=now)


_ADAPTED_FIELDS = ("lease", "remote_host", "internal_port")


def shape(m: PortMapping, learned: Learned, request: Request) -> tuple[PortMapping, tuple[Adaptation, ...]] | str:
    """The row a router with these needs will hold for `m`, with what was adapted and why, or why
    it cannot hold it (a proven need the manifest does not allow)."""
    adapted_by: list[Adaptation] = []
    if request.finite_leases and m.lease == 0:
        longest = format_duration(request.longest_lease)
        if not request.permanent_ok:
            return (
                f"lease: permanent cannot be held: this router's protocol has no permanent lease (at most {longest}). "
                "Set a lease such as lease: 1h (portctl renews it at half), "
                f"or allow_permanent: true to accept the longest lifetime, {longest}"
            )
        adapted_by.append(Adaptation("lease", 0, request.longest_lease, FINITE_BY_PROTOCOL, "allow_permanent"))
        m = replace(m, lease=request.longest_lease)
    for quirk in Quirk:
        lesson = learned.quirks.get(quirk)
        if lesson is None:
            continue
        adapted = adapt(quirk, m, replace(request, mapping=m), proven=lesson.proven)
        if isinstance(adapted, str):
            return f"{adapted} (learned: {lesson.evidence}; {forget_hint(quirk)})"
        for name in _ADAPTED_FIELDS:
            asked, written = getattr(m, name), getattr(adapted, name)
            if asked != written:
                adapted_by.append(Adaptation(name, asked, written, quirk.value, WIDENS.get(quirk, ""), lesson.proven))
        m = adapted
    if learned.description_limit:
        m = replace(m, description=m.description[: learned.description_limit])
    return m, tuple(adapted_by)


def same_description(held: str, sent: str) -> bool:
    """Does a router holding `held` hold the description `sent`?

    miniupnpd (and portctl's own reading of a listing) drops trailing whitespace: that is not drift.
    """
    return held.rstrip() == sent.rstrip()


def observe_readback(sent: PortMapping, row: PortMapping, learned: Learned, minimum: int, now: float) -> bool:
    """Learn from a row read back after writing `sent`; True if the difference is a known quirk.

    A description that comes back as a strict prefix of what was sent, at least `minimum` characters
    long (the ownership tag), is a router cutting descriptions short, not drift; one that lost only
    trailing whitespace is the same description, and teaches nothing.
    """
    d = row.description
    if same_description(d, sent.description):
        return True
    if len(d) >= minimum and sent.description.startswith(d):
        if learned.description_limit != len(d):
            learned.description_limit = len(d)
            learned.changed = True
        learned.learn(Quirk.TRUNCATES_DESCRIPTIONS, f"kept {len(d)} characters of a description", now=now)
        return True
    return False


# -- the WAN address ---------------------------------------------------------------------------------

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_NOT_A_WAN = tuple(ipaddress.ip_network(n) for n in ("127.0.0.0/8", "169.254.0.0/16"))


def wan_blocker(external_ip: str, *, allow_private: bool = False) -> str:
    """Why no mapping on this router can work, judged from its external address; "" if none.

    Checked before any write: miniupnpd (and the routers built on it) answers 501 to every add
    behind a private or CGNAT address, and even a router that accepts them maps a port nobody on
    the internet can reach.
    """
    try:
        ip = ipaddress.ip_address(external_ip)
    except ValueError:
        return ""  # unknown: GetExternalIPAddress failed or is not offered; let the adds speak
    if ip.version != 4:
        return ""
    if ip.is_unspecified:
        return (
            "the router reports no external address (0.0.0.0): its internet connection is down. "
            "Nothing can be mapped until it is up"
        )
    if ip in _CGNAT:
        return (
            f"the router's external address {ip} is carrier-grade NAT (100.64.0.0/10): the internet cannot "
            "reach mappings made here, and the router refuses them. Ask your ISP for a public IPv4 address, "
            "or reach the service through a tunnel"
        )
    if any(ip in n for n in _PRIVATE + _NOT_A_WAN) and not allow_private:
        return (
            f"the router's external address {ip} is private: it sits behind another router (double NAT), "
            "so mappings made here are not reachable from the internet. Map the ports on the upstream "
            "router, or set router.allow_private_wan: true to map them here anyway"
        )
    return ""
