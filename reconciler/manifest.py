"""Manifest file -> YAML with positions -> JSON Schema -> semantic checks -> Manifest.

Every problem carries file:line:col and a JSON path, and all of them are reported at once.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

from . import ownership, policy
from .durations import format_duration, parse_duration
from .errors import ManifestError, Problem
from .models import MAX_LEASE, DesiredMapping, Manifest, MappingKey, OnConflict, Policy, Protocol

API_VERSION = "portctl/v1"
SCHEMA_URL = "https://portctl.dev/schemas/portctl.schema.json"

Path = tuple[str | int, ...]

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
    "url": "an http:// URL of the router's root description",
}


@cache
def schema() -> dict[str, Any]:
    text = resources.files("reconciler").joinpath("portctl.schema.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def load(path: str) -> Manifest:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError([Problem(path, 0, 0, "", f"cannot read manifest: {exc}")]) from exc
    return parse(text, path)


def parse(text: str, path: str = "<manifest>") -> Manifest:
    doc = _Document(text, path)
    data = doc.data
    problems = list(doc.problems)
    if not problems:
        problems += _schema_problems(doc)
        problems += _semantic_problems(doc)
        if not problems:
            _remember_valid(doc.data)
    if problems:
        raise ManifestError(sorted(problems, key=lambda p: (p.line, p.column)))
    return _build(data, path, doc)


class _Document:
    """YAML parsed into plain data, remembering where each value and key stands."""

    def __init__(self, text: str, path: str) -> None:
        import yaml

        self.path = path
        self.problems: list[Problem] = []
        self.values: dict[Path, tuple[int, int]] = {}
        self.keys: dict[Path, tuple[int, int]] = {}
        self.data: Any = None
        try:
            loader = _loader_class()(text)
            try:
                node = loader.get_single_node()
                if node is None:
                    self.problems.append(Problem(path, 1, 1, "", "the manifest is empty"))
                    return
                self.data = self._convert(node, (), loader)
            finally:
                loader.dispose()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
            what = " ".join(s for s in (exc.context, exc.problem) if s)
            self.problems.append(Problem(path, line, col, "", f"invalid YAML: {what}"))
        except yaml.YAMLError as exc:
            self.problems.append(Problem(path, 0, 0, "", f"invalid YAML: {exc}"))

    def _convert(self, node: Any, at: Path, loader: Any) -> Any:
        import yaml

        self.values[at] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node)
                if not isinstance(key, str):
                    key = str(key)
                if key in out:
                    line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                    self.problems.append(Problem(self.path, line, col, json_path(at), f"duplicate key {key!r}"))
                    continue
                self.keys[(*at, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[key] = self._convert(value_node, (*at, key), loader)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(n, (*at, i), loader) for i, n in enumerate(node.value)]
        return loader.construct_object(node)

    def where(self, at: Path, *, key: bool = False) -> tuple[int, int]:
        table = self.keys if key else self.values
        while at not in table and at:
            at = at[:-1]
        return table.get(at, (0, 0))

    def problem(self, at: Path, message: str, *, key: bool = False) -> Problem:
        line, col = self.where(at, key=key)
        return Problem(self.path, line, col, json_path(at), message)


@cache
def _loader_class() -> type:
    """A safe loader that reads YAML 1.2 scalars: no sexagesimal `22:22` and no `yes`/`no` booleans."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    bool_tag, int_tag = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int"
    Loader.yaml_implicit_resolvers = {
        first: [(t, rx) for t, rx in resolvers if t not in (bool_tag, int_tag)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    Loader.add_implicit_resolver(
        int_tag, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
    )
    return Loader


def json_path(at: Path) -> str:
    out = "$"
    for part in at:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _digest(data: Any) -> str:
    """Names a parsed document under this schema and this portctl: the same digest, the same verdict."""
    import hashlib

    from . import __version__

    canonical = json.dumps([__version__, schema(), data], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _remember_valid(data: Any) -> None:
    from . import routercache

    routercache.put("valid_manifests", _digest(data), {})


def _schema_problems(doc: _Document) -> Iterator[Problem]:
    # Importing jsonschema costs more than the rest of a plan on a small table; a document that
    # passed this schema before passes it again, so only a new one pays for it.
    from . import routercache

    if routercache.get("valid_manifests", _digest(doc.data)) is not None:
        return
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema())
    for error in validator.iter_errors(doc.data):
        at: Path = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = sorted(error.schema.get("properties", {}))
            for extra in sorted(set(error.instance) - set(allowed)):
                yield doc.problem((*at, extra), f"unknown key {extra!r} (allowed: {', '.join(allowed)})", key=True)
            continue
        yield doc.problem(at, _message(error, at))


def _message(error: Any, at: Path) -> str:
    """jsonschema's message, made specific for values that match none of several shapes."""
    specific = _specific(error)
    if specific is not None and specific.validator not in ("pattern", "const", "type", "enum"):
        return str(specific.message)
    hint = _HINTS.get(str(at[-1])) if at else None
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


def _semantic_problems(doc: _Document) -> Iterator[Problem]:
    """What the schema cannot say. Checks only values the schema accepted, so nothing here crashes."""
    data = doc.data
    if not isinstance(data, dict):
        return
    owner: str = data["owner"] if isinstance(data.get("owner"), str) else "owner"
    defaults: dict[str, Any] = data["defaults"] if isinstance(data.get("defaults"), dict) else {}
    if isinstance(defaults.get("lease"), str):
        yield from _lease_problems(doc, ("defaults", "lease"), defaults["lease"])
    rules, breaches = _policy(data)
    for where, message in breaches:
        yield doc.problem(where, message)
    if isinstance(defaults.get("lease"), str | int) and not policy.lease_allowed(rules, _lease(defaults["lease"])):
        yield doc.problem(("defaults", "lease"), f"longer than policy.max_lease ({format_duration(rules.max_lease)})")
    mappings = data.get("mappings")
    if not isinstance(mappings, list):
        return
    names: dict[str, int] = {}
    claimed: dict[MappingKey, str] = {}
    for i, m in enumerate(mappings):
        if not isinstance(m, dict):
            continue
        at: Path = ("mappings", i)
        name = m.get("name")
        if isinstance(name, str):
            if name in names:
                yield doc.problem((*at, "name"), f"duplicate name {name!r} (also mappings[{names[name]}])")
            names.setdefault(name, i)
        if isinstance(m.get("lease"), str):
            yield from _lease_problems(doc, (*at, "lease"), m["lease"])
        for field in ("internal_client", "remote_host"):
            value = m.get(field)
            if isinstance(value, str) and value not in ("", "auto"):
                yield from _address_problems(doc, (*at, field), value)
        ext = _port_range(m.get("external_port"))
        internal = m.get("internal_port", m.get("external_port"))
        intr = _port_range(internal)
        yield from _mapping_policy_problems(doc, at, m, rules, ext, intr, "lease" in defaults)
        for field, rng in (("external_port", ext), ("internal_port", intr)):
            if isinstance(m.get(field), str) and rng and not 1 <= rng[0] <= rng[1] <= 65535:
                yield doc.problem((*at, field), f"{m.get(field)!r} is not a range of ports 1-65535, low-high")
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


def _policy(data: dict[str, Any]) -> tuple[Policy, list[tuple[Path, str]]]:
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
    return Policy(tuple(nets), tuple(ports), limit), breaches


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
    doc: _Document,
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


def _lease_problems(doc: _Document, at: Path, value: str) -> Iterator[Problem]:
    """Leases written as text; integers are bounded by the schema."""
    if value == "permanent":
        return
    try:
        seconds = parse_duration(value)
    except ValueError:
        return  # the schema's pattern reports it
    if seconds == 0:
        yield doc.problem(at, "a lease of 0 is ambiguous between routers: write permanent")
    elif seconds > MAX_LEASE:
        yield doc.problem(at, f"{value!r} is longer than 7d, the longest lease IGD allows: use permanent")


def _address_problems(doc: _Document, at: Path, value: str) -> Iterator[Problem]:
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
    text = str(value).upper()
    if text == "BOTH":
        return (Protocol.TCP, Protocol.UDP)
    return (Protocol(text),) if text in ("TCP", "UDP") else ()


def _build(data: dict[str, Any], path: str, doc: _Document) -> Manifest:
    owner = data["owner"]
    defaults = data.get("defaults", {})
    out: list[DesiredMapping] = []
    for i, m in enumerate(data["mappings"] or []):
        ext = _port_range(m["external_port"])
        intr = _port_range(m.get("internal_port", m["external_port"]))
        assert ext is not None and intr is not None  # checked above
        lease_value = m.get("lease", defaults.get("lease", "permanent"))
        lease = 0 if lease_value == "permanent" else parse_duration(lease_value)
        for proto in _protocols(m.get("protocol", defaults.get("protocol", "tcp"))):
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
                        allow_same_port=bool(m.get("allow_same_port", False)),
                        line=doc.where(("mappings", i))[0],
                        protect=bool(m.get("protect", False)),
                        allow_sensitive=bool(m.get("allow_sensitive", False)),
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
        _policy(data)[0],
    )


_STARTER = """\
# yaml-language-server: $schema={schema}
apiVersion: {api}
# Every mapping portctl makes carries this owner's tag; it never touches other mappings.
# Keep the owner unique to this installation: two hosts sharing one prune each other's mappings.
owner: {owner}
# router:
#   url: http://192.168.1.1:5000/rootDesc.xml   # default: SSDP discovery
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
