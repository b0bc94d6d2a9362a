"""Manifest file -> YAML with positions (yamldoc) -> JSON Schema -> semantic checks -> Manifest.

Every problem carries file:line:col and a JSON path, and all of them are reported at once. What
passes every check builds exactly the rows it says: a check that cannot read a value reports it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING, Any

from . import ownership, pinholespec, policy, yamldoc
from .durations import format_duration, parse_duration
from .errors import ManifestError, Problem
from .models import MAX_LEASE, DesiredMapping, Drift, Manifest, MappingKey, OnConflict, Policy, Protocol
from .yamldoc import Document, Path

if TYPE_CHECKING:
    from .cache import Cache

API_VERSION = "portctl/v1"
SCHEMA_URL = "https://portctl.dev/schemas/portctl.schema.json"
MEMO_REFRESH = 86400.0  # seconds between rewrites of a known manifest's entry in the cache
MAX_ROWS = 4096  # router mappings once ranges and `both` expand; a router takes one write per row

# What a value should look like, for messages about values that match no allowed shape.
_HINTS = {
    "external_port": "a port 1-65535 or a range such as 27015-27030",
    "internal_port": "a port 1-65535 or a range such as 27015-27030",
    "protocol": "tcp, udp or both",
    "internal_client": "an IPv4 address or auto",
    "remote_host": "an IPv4 address, or empty for any",
    "lease": "seconds, a duration such as 90m or 1h30m, or permanent",
    "name": "1-24 letters, digits, '.', '_' or '-', starting with a letter or digit",
    "owner": "1-32 letters, digits, '.', '_' or '-', starting with a letter or digit",
    "description": "printable ASCII text",
    "url": "an http:// URL of the router's root description, or pcp://GATEWAY or natpmp://GATEWAY",
}


@cache
def schema() -> dict[str, Any]:
    return json.loads(_schema_text())  # type: ignore[no-any-return]


@cache
def _schema_text() -> str:
    # A warm plan needs this text for the manifest's digest; beside the module it is one open(),
    # where importlib.resources costs the plan a few milliseconds of imports (zipfile among them).
    try:
        with open(os.path.join(os.path.dirname(__file__), "portctl.schema.json"), encoding="utf-8") as f:
            return f.read()
    except OSError:  # installed where modules are not plain files (a zip)
        from importlib import resources

        return resources.files("reconciler").joinpath("portctl.schema.json").read_text(encoding="utf-8")


def load(path: str, memo: Cache | None = None) -> Manifest:
    return parse(read(path), path, memo)


def read(path: str) -> str:
    """The manifest's text, as parse() takes it (and a saved plan keeps it)."""
    text = yamldoc.read(path)
    if isinstance(text, Problem):
        raise ManifestError([text])
    return text


def parse(text: str, path: str = "<manifest>", memo: Cache | None = None) -> Manifest:
    """The manifest `text` says, or ManifestError with every problem. With a `memo`, a text that
    passed the schema before skips it, and a newly valid one is remembered there."""
    doc = Document(text, path)
    data = doc.data
    problems = list(doc.problems)
    if not problems:
        digest = _digest(text) if memo is not None else ""
        seen = memo.get("valid_manifests", digest) if memo is not None else None
        # Importing jsonschema costs more than the rest of a plan on a small table; a text that
        # passed this schema before passes it again, so only a new one pays for it.
        if seen is None:
            problems += _schema_problems(doc)
        # A value the schema refused is not refused again by a check that could not read it either.
        refused = {p.path for p in problems}
        problems += [p for p in _semantic_problems(doc) if p.path not in refused]
        # Rewriting the cache costs a warm plan more than its requests: a known text is only marked
        # used again once a day, which keeps it among the section's newest.
        if not problems and memo is not None and (seen is None or memo.clock() - _stamp(seen) > MEMO_REFRESH):
            memo.put("valid_manifests", digest, {})
    if problems:
        raise ManifestError(sorted(problems, key=lambda p: (p.line, p.column)))
    return _build(data, path, doc)


def _digest(text: str) -> str:
    """Names a manifest's exact text under this schema and this portctl: the same digest, the same verdict.

    The text, not the data read from it: `2024-01-01` and `"2024-01-01"` read as a date and a string,
    which any rendering of the data may spell alike.
    """
    import hashlib

    from . import __version__

    digest = hashlib.sha256()
    # The schema's text, not its data: a warm plan that skips the schema need not parse it either.
    for part in (__version__, _schema_text(), text):
        encoded = part.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
    return digest.hexdigest()


@cache
def _validator() -> Any:
    """The schema's validator, where an integer is an int: JSON counts 8080.0 as one, and YAML
    reads `8080.0` as a float that the rows built from it would not accept."""
    from jsonschema import Draft202012Validator, validators

    checker = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return validators.extend(Draft202012Validator, type_checker=checker)(schema())


def _stamp(record: dict[str, Any]) -> float:
    updated = record.get("updated")
    return updated if isinstance(updated, int | float) else 0.0


def _schema_problems(doc: Document) -> Iterator[Problem]:
    for error in _validator().iter_errors(doc.data):
        at: Path = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = sorted(error.schema.get("properties", {}))
            for extra in sorted(set(error.instance) - set(allowed)):
                yield doc.problem((*at, extra), f"unknown key {extra!r} (allowed: {', '.join(allowed)})", key=True)
            continue
        yield doc.problem(at, _message(error, at))


def _message(error: Any, at: Path) -> str:
    """jsonschema's message, made specific for values that match none of several shapes."""
    if error.validator == "maxItems":  # jsonschema's message repeats the whole list
        return f"{len(error.instance)} items; at most {error.validator_value}"
    if error.validator == "anyOf" and not at:  # the top level: neither section (jsonschema repeats the file)
        return "declares neither mappings nor pinholes: add a 'mappings:' list (or 'pinholes:')"
    specific = _specific(error)
    if specific is not None and specific.validator not in ("pattern", "const", "type", "enum"):
        return str(specific.message)
    hints = pinholespec.HINTS if at and at[0] == "pinholes" else _HINTS
    hint = hints.get(str(at[-1])) if at else None
    if error.validator in ("oneOf", "anyOf", "pattern", "const") and hint:
        return f"{error.instance!r} is not {hint}"
    return str(error.message)


def _specific(error: Any) -> Any:
    """For oneOf/anyOf, the error from the one branch whose type matched, if exactly one did."""
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        return error
    branches: dict[Any, list[Any]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    meant = [errs for errs in branches.values() if all(e.validator not in ("type", "const") for e in errs)]
    if len(meant) != 1:
        return None
    return _specific(meant[0][0])


def _semantic_problems(doc: Document) -> Iterator[Problem]:
    """What the schema cannot say. Checks only values the schema accepted, so nothing here crashes."""
    data = doc.data
    if not isinstance(data, dict):
        return
    owner: str = data["owner"] if isinstance(data.get("owner"), str) else "owner"
    defaults: dict[str, Any] = data["defaults"] if isinstance(data.get("defaults"), dict) else {}
    if isinstance(defaults.get("lease"), str):
        yield from _lease_problems(doc, ("defaults", "lease"), defaults["lease"])
    yield from _protocol_problems(doc, ("defaults", "protocol"), defaults.get("protocol"))
    yield from _router_problems(doc, data.get("router"))
    raw_policy = data.get("policy")
    if isinstance(raw_policy, dict) and isinstance(raw_policy.get("max_lease"), str):
        yield from _lease_problems(doc, ("policy", "max_lease"), raw_policy["max_lease"])
    rules, breaches = _policy(data, doc)
    for where, message in breaches:
        yield doc.problem(where, message)
    yield from pinholespec.prefixes(doc, raw_policy if isinstance(raw_policy, dict) else {})[1]
    yield from pinholespec.problems(doc, rules)
    if isinstance(defaults.get("lease"), str | int) and not policy.lease_allowed(rules, _lease(defaults["lease"])):
        yield doc.problem(("defaults", "lease"), f"longer than policy.max_lease ({format_duration(rules.max_lease)})")
    mappings = data.get("mappings")
    if not isinstance(mappings, list):
        return
    names: dict[str, int] = {}
    claimed: dict[MappingKey, str] = {}
    rows = 0
    for i, m in enumerate(mappings):
        if not isinstance(m, dict):
            continue
        at: Path = ("mappings", i)
        name = m.get("name")
        yield from doc.repeated_name(at, name, names)
        if isinstance(m.get("lease"), str):
            yield from _lease_problems(doc, (*at, "lease"), m["lease"])
        for field in ("internal_client", "remote_host"):
            value = m.get(field)
            if isinstance(value, str) and value not in ("", "auto"):
                yield from _address_problems(doc, (*at, field), value)
        yield from _protocol_problems(doc, (*at, "protocol"), m.get("protocol"))
        ext = _port_range(m.get("external_port"))
        internal = m.get("internal_port", m.get("external_port"))
        intr = _port_range(internal)
        if ext and 1 <= ext[0] <= ext[1] <= 65535:
            # Checked before any loop over the range's ports, so 1-65535 a thousand times is quick.
            rows += (ext[1] - ext[0] + 1) * len(_protocols(m.get("protocol", defaults.get("protocol", "tcp"))))
            if rows > MAX_ROWS:
                yield doc.problem(
                    (*at, "external_port"),
                    f"the manifest declares more than {MAX_ROWS} router mappings by here "
                    "(a range is one mapping per port and protocol)",
                )
                return
        yield from _mapping_policy_problems(doc, at, m, rules, ext, intr, "lease" in defaults)
        for field, rng in (("external_port", ext), ("internal_port", intr)):
            value = m.get(field)
            if isinstance(value, str) and rng is None:
                yield doc.problem((*at, field), f"{value!r} is not {_HINTS[field]}")
            elif isinstance(value, str) and rng and not 1 <= rng[0] <= rng[1] <= 65535:
                yield doc.problem((*at, field), f"{value!r} is not a range of ports 1-65535, low-high")
        if not (ext and 1 <= ext[0] <= ext[1] <= 65535):
            continue
        if intr and intr[1] - intr[0] != ext[1] - ext[0]:
            yield doc.problem(
                (*at, "internal_port"),
                f"internal_port {internal!r} covers {intr[1] - intr[0] + 1} ports but "
                f"external_port {m.get('external_port')!r} covers {ext[1] - ext[0] + 1}",
            )
            continue
        if not isinstance(name, str):
            continue
        protocol = m.get("protocol", defaults.get("protocol", "tcp"))
        for proto in _protocols(protocol):
            for port in range(ext[0], ext[1] + 1):
                key = MappingKey(port, proto)
                if key in claimed and claimed[key] != name:
                    yield doc.problem(
                        (*at, "external_port"),
                        f"external port {key} is also declared by {claimed[key]!r}",
                    )
                    break
                claimed.setdefault(key, name)
        description = m.get("description", "")
        if isinstance(description, str):
            text = ownership.describe(owner, MappingKey(ext[1], Protocol.TCP), name, description)
            size = len(text.encode())
            if size > ownership.MAX_DESCRIPTION_BYTES:
                yield doc.problem(
                    (*at, "description"),
                    f"the router description would be {size} bytes (tag, name and description); "
                    f"routers keep {ownership.MAX_DESCRIPTION_BYTES}: shorten it by "
                    f"{size - ownership.MAX_DESCRIPTION_BYTES}",
                )


def _policy(data: dict[str, Any], doc: Document | None = None) -> tuple[Policy, list[tuple[Path, str]]]:
    """The manifest's policy, and what is wrong with it (values the schema accepted)."""
    raw = data.get("policy") if isinstance(data.get("policy"), dict) else {}
    assert isinstance(raw, dict)
    breaches: list[tuple[Path, str]] = []
    nets = []
    for i, cidr in enumerate(_list(raw.get("allowed_internal_clients"))):
        if not isinstance(cidr, str):
            continue  # the schema reports it
        try:
            nets.append(str(ipaddress.IPv4Network(cidr, strict=False)))
        except ValueError:
            breaches.append(
                (("policy", "allowed_internal_clients", i), f"{cidr!r} is not an IPv4 network such as 192.168.1.0/24")
            )
    ports = []
    for i, value in enumerate(_list(raw.get("allowed_external_ports"))):
        rng = _port_range(value)
        if rng and 1 <= rng[0] <= rng[1] <= 65535:
            ports.append(rng)
        elif rng:
            breaches.append(
                (("policy", "allowed_external_ports", i), f"{value!r} is not a range of ports 1-65535, low-high")
            )
    max_lease = raw.get("max_lease")
    limit = _lease(max_lease) if isinstance(max_lease, str | int) else 0
    prefixes = pinholespec.prefixes(doc, raw)[0] if doc is not None else ()
    return Policy(tuple(nets), tuple(ports), limit, prefixes), breaches


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _lease(value: str | int) -> int:
    """Seconds, 0 for permanent (or for text the schema reports)."""
    if isinstance(value, int):
        return value
    try:
        return 0 if value == "permanent" else parse_duration(value)
    except ValueError:
        return 0


def _mapping_policy_problems(
    doc: Document,
    at: Path,
    m: dict[str, Any],
    rules: Policy,
    ext: tuple[int, int] | None,
    intr: tuple[int, int] | None,
    inherits_lease: bool,
) -> Iterator[Problem]:
    """Breaches of the manifest's own policy and sensitive ports, for values written in the mapping."""
    client = m.get("internal_client")
    if isinstance(client, str) and client != "auto" and not policy.client_allowed(rules, client):
        yield doc.problem((*at, "internal_client"), f"{client} is outside policy.allowed_internal_clients")
    lease = m.get("lease")
    if isinstance(lease, str | int) and not policy.lease_allowed(rules, _lease(lease)):
        yield doc.problem((*at, "lease"), f"longer than policy.max_lease ({format_duration(rules.max_lease)})")
    elif lease is None and not inherits_lease and rules.max_lease:
        yield doc.problem(
            at, f"no lease given, so permanent, which policy.max_lease ({format_duration(rules.max_lease)}) refuses"
        )
    if not (ext and intr and 1 <= ext[0] <= ext[1] <= 65535 and intr[1] - intr[0] == ext[1] - ext[0]):
        return
    outside = [p for p in range(ext[0], ext[1] + 1) if not policy.port_allowed(rules, p)]
    if outside:
        yield doc.problem((*at, "external_port"), f"port {outside[0]} is outside policy.allowed_external_ports")
    if m.get("allow_sensitive") is not True:
        for offset in range(ext[1] - ext[0] + 1):
            why = policy.sensitive(ext[0] + offset, intr[0] + offset)
            if why:
                yield doc.problem(
                    (*at, "external_port"), f"exposes {why} to the internet; set allow_sensitive: true if that is meant"
                )
                break


def _lease_problems(doc: Document, at: Path, value: str) -> Iterator[Problem]:
    """Leases written as text; integers are bounded by the schema."""
    if value == "permanent":
        return
    try:
        seconds = parse_duration(value)
    except ValueError:
        yield doc.problem(at, f"{value!r} is not {_HINTS['lease']}")
        return
    if seconds == 0:
        yield doc.problem(at, "a lease of 0 is ambiguous between routers: write permanent")
    elif seconds > MAX_LEASE:
        yield doc.problem(at, f"{value!r} is longer than 7d, the longest lease IGD allows: use permanent")


def _protocol_problems(doc: Document, at: Path, value: object) -> Iterator[Problem]:
    """A protocol written as text that names none: it would build no rows, and prune would delete."""
    if isinstance(value, str) and not _protocols(value):
        yield doc.problem(at, f"{value!r} is not {_HINTS['protocol']}")


def _address_problems(doc: Document, at: Path, value: str) -> Iterator[Problem]:
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        return  # the schema's pattern reports it
    if address.is_unspecified or address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
        yield doc.problem(at, f"{value} cannot receive forwarded traffic")


def _port_range(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,5}-[0-9]{1,5}", value):
        low, high = value.split("-")
        return (int(low), int(high))
    return None


def _protocols(value: Any) -> tuple[Protocol, ...]:
    text = value.upper() if isinstance(value, str) else ""
    if text == "BOTH":
        return (Protocol.TCP, Protocol.UDP)
    return (Protocol(text),) if text in ("TCP", "UDP") else ()


def _build(data: dict[str, Any], path: str, doc: Document) -> Manifest:
    owner = data["owner"]
    defaults = data.get("defaults", {})
    out: list[DesiredMapping] = []
    for i, m in enumerate(data.get("mappings") or []):
        ext = _port_range(m["external_port"])
        intr = _port_range(m.get("internal_port", m["external_port"]))
        assert ext is not None and intr is not None  # checked above
        lease_value = m.get("lease", defaults.get("lease", "permanent"))
        lease = 0 if lease_value == "permanent" else parse_duration(lease_value)
        protocols = _protocols(m.get("protocol", defaults.get("protocol", "tcp")))
        assert protocols  # checked above: a mapping that builds no rows would be pruned
        for proto in protocols:
            for offset in range(ext[1] - ext[0] + 1):
                out.append(
                    DesiredMapping(
                        name=m["name"],
                        key=MappingKey(ext[0] + offset, proto),
                        internal_client=m.get("internal_client", defaults.get("internal_client", "auto")),
                        internal_port=intr[0] + offset,
                        lease=lease,
                        description=m.get("description", ""),
                        remote_host=m.get("remote_host", ""),
                        on_conflict=OnConflict(m.get("on_conflict", "fail")),
                        allow_same_port=_opt_in(m, defaults, "allow_same_port"),
                        allow_permanent=_opt_in(m, defaults, "allow_permanent"),
                        allow_any_remote_host=_opt_in(m, defaults, "allow_any_remote_host"),
                        line=doc.where(("mappings", i))[0],
                        protect=bool(m.get("protect", False)),
                        allow_sensitive=bool(m.get("allow_sensitive", False)),
                        drift=Drift(m.get("drift", defaults.get("drift", "heal"))),
                        ignore_drift=frozenset(m.get("ignore_drift", defaults.get("ignore_drift", ()))),
                    )
                )
    router = data.get("router", {})
    return Manifest(
        path,
        owner,
        tuple(out),
        router.get("url"),
        data.get("prune", True),
        bool(router.get("allow_private_wan", False)),
        _policy(data, doc)[0],
        tuple(router.get("protocols", ())),
        pinholespec.build(doc),
    )


def _router_problems(doc: Document, router: Any) -> Iterator[Problem]:
    """A router.url no router can have (no host, an unreadable address or port), or whose protocol
    router.protocols leaves out: the two contradict each other."""
    if isinstance(router, dict) and isinstance(router.get("url"), str):
        from .urls import problem as url_problem

        problem = url_problem(router["url"])
        if problem:
            yield doc.problem(("router", "url"), f"{router['url']!r} is not a router URL: {problem}")
            return
    if (
        not isinstance(router, dict)
        or not isinstance(router.get("url"), str)
        or not isinstance(router.get("protocols"), list)
    ):
        return
    scheme = router["url"].partition("://")[0]
    spoken = "upnp" if scheme in ("http", "https") else scheme
    if spoken not in router["protocols"]:
        yield doc.problem(
            ("router", "url"),
            f"speaks {spoken}, which router.protocols ({', '.join(map(str, router['protocols']))}) leaves out: "
            "drop the url to let portctl choose, or list its protocol",
        )


def _opt_in(m: dict[str, Any], defaults: dict[str, Any], name: str) -> bool:
    """A widening opt-in: the mapping's own value, else the defaults'."""
    return bool(m.get(name, defaults.get(name, False)))


_STARTER = """\
# yaml-language-server: $schema={schema}
apiVersion: {api}
# Every mapping portctl makes carries this owner's tag; it never touches other mappings.
# Keep the owner unique to this installation: two hosts sharing one prune each other's mappings.
owner: {owner}
# router:
#   url: http://192.168.1.1:5000/rootDesc.xml   # default: probe the gateway (UPnP, then PCP, then NAT-PMP)
#   protocols: [upnp, pcp, natpmp]               # which to try, in this order
defaults:
  internal_client: auto    # this host's address towards the router
  lease: permanent
prune: true                # remove owned mappings that are no longer declared
mappings:
  - name: web
    external_port: 8080
    internal_port: 80
    protocol: tcp
    description: web server
"""


def starter(owner: str) -> str:
    """The manifest `portctl init` writes."""
    return _STARTER.format(schema=SCHEMA_URL, api=API_VERSION, owner=owner)


def starter_owner(hostname: str, token: str) -> str:
    """An owner unique to an installation: `homelab-<hostname>-<token>`, valid for the schema.

    The token (random, from the caller) keeps two hosts apart even when they share a hostname.
    """
    room = 32 - len("homelab-") - len(token) - 1
    host = re.sub(r"[^a-z0-9-]+", "-", hostname.split(".")[0].lower())[:room].strip("-")
    return "-".join(part for part in ("homelab", host, token) if part)
