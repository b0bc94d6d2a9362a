"""portctl's command line: argument parsing and printing. The only module that prints or exits.

Each command runs the stages visibly: load, connect, read, plan, show, confirm, apply, verify.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from . import __version__, numbers
from .errors import ApprovalError, ConflictError, PortctlError

if TYPE_CHECKING:
    from .api import Facts
    from .backends.base import Backend
    from .backends.http import Observer
    from .boot import Booted
    from .cache import Cache
    from .errors import ManifestError
    from .markdown import Read
    from .models import Manifest, Plan
    from .protocols import Spoken

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
T = TypeVar("T")
# Output formats, each a renderer over the same view (render.py, markdown.py; annotations.py for
# GitHub's workflow commands); each command offers those that fit it.
FORMATS = ("text", "json")
MARKDOWN, GITHUB = "markdown", "github"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(_command_named(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        return int(args.command(args))
    except PortctlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _command_named(argv: Sequence[str]) -> str | None:
    """The subcommand `argv` names when it comes first; None when an option of portctl's own comes
    before it (`-h plan`, `--version`): those answer from the whole parser, every command listed."""
    return argv[0] if argv and not argv[0].startswith("-") else None


class _Unbuilt(argparse.ArgumentParser):
    """Stands in for a subcommand that is not being run, whose arguments are never built.

    argparse checks every argument as it is added (a help formatter, a translation lookup that stats
    locale files); for every other subcommand that costs a warm plan more than reading the router.
    """

    def __init__(self) -> None:  # nothing of an ArgumentParser is used: no super().__init__()
        pass

    def add_argument(self, *args: Any, **kwargs: Any) -> Any:
        return None


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """portctl's parser; given `only`, with that subcommand's arguments alone (all of them when it names none)."""
    p = argparse.ArgumentParser(prog="portctl", description="Declarative UPnP port mappings for your router.")
    p.add_argument("--version", action="version", version=f"portctl {__version__}")
    sub = p.add_subparsers(metavar="COMMAND")
    built = []

    def command(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:  # noqa: A002
        if only is not None and name != only:
            return _Unbuilt()
        built.append(name)
        c = sub.add_parser(name, help=help, description=help)
        c.set_defaults(command=fn)
        c.add_argument("--no-color", action="store_true", help="plain output (also: NO_COLOR=1)")
        return c

    def router(c: argparse.ArgumentParser) -> None:
        c.add_argument(
            "--router",
            metavar="URL",
            help="the IGD's root description URL, or pcp://GATEWAY or natpmp://GATEWAY "
            "(default: PORTCTL_ROUTER, router.url, SSDP)",
        )
        c.add_argument(
            "--timeout",
            type=_seconds,
            default=os.environ.get("PORTCTL_TIMEOUT") or "5",  # argparse checks a text default with `type`
            metavar="S",
            help="seconds to wait for each router request (default: PORTCTL_TIMEOUT, else 5)",
        )
        protocols(c)
        trace(c)

    def protocols(c: argparse.ArgumentParser) -> None:
        c.add_argument(
            "--protocols",
            type=_protocols,
            default=os.environ.get("PORTCTL_PROTOCOLS") or None,  # checked by `type` like the flag
            metavar="LIST",
            help="the protocols to try at the gateway, in order, e.g. upnp,pcp,natpmp "
            "(default: PORTCTL_PROTOCOLS, router.protocols, all three in that order)",
        )

    def trace(c: argparse.ArgumentParser) -> None:
        c.add_argument(
            "--trace",
            action="store_true",
            help="print every request to the router and its answer, with timings, to stderr (also: PORTCTL_TRACE=1)",
        )

    def guards(c: argparse.ArgumentParser) -> None:
        c.add_argument(
            "--max-deletions", type=_count, metavar="N", help="refuse a plan that deletes more than N mappings"
        )
        c.add_argument(
            "--allow-empty",
            action="store_true",
            help="let a manifest with no mappings prune every mapping its owner holds (refused otherwise)",
        )

    def output(c: argparse.ArgumentParser, what: str, *more: str) -> None:
        also = "".join(f", {f}" for f in more) + (" (GitHub workflow commands)" if GITHUB in more else "")
        c.add_argument(
            "--format",
            choices=FORMATS + more,
            default="text",
            help=f"print {what} as text (default), one JSON document{also}",
        )
        c.add_argument("--json", dest="format", action="store_const", const="json", help="the same as --format json")
        if MARKDOWN in more:
            c.add_argument(
                "--max-bytes",
                type=_markdown_limit,
                default=65536,  # markdown.COMMENT_BYTES, not imported here: building the parser stays cheap
                metavar="N",
                help="cut the markdown to at most N bytes (default 65536, a pull-request comment; 1048576 for a "
                "job summary)",
            )

    def locking(c: argparse.ArgumentParser) -> None:
        c.add_argument(
            "--lock-timeout",
            type=_seconds_or_zero,
            default=60.0,
            metavar="S",
            help="seconds to wait while another portctl applies to the same router (default 60)",
        )

    c = command("validate", _validate, "check a manifest offline")
    c.add_argument("file")
    output(c, "the verdict", GITHUB)
    c.add_argument("--snapshot", metavar="SNAP.json", help="say what internal_client auto is on the snapshot's host")

    c = command("plan", _plan, "show what apply would change on the router")
    c.add_argument("file")
    router(c)
    output(c, "the plan", MARKDOWN, GITHUB)
    c.add_argument("--out", metavar="PLAN.json", help="save the plan for a later apply")
    c.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when there are changes")
    guards(c)
    c.add_argument(
        "--snapshot",
        metavar="SNAP.json",
        help="plan against a router snapshot (portctl show --snapshot-out, or the agent's) without any network access",
    )
    c.add_argument(
        "--max-snapshot-age",
        type=_duration,
        metavar="AGE",
        help="with --snapshot, fail when the snapshot is older than AGE (such as 24h)",
    )

    c = command("apply", _apply, "make the router match the manifest (or a saved plan)")
    c.epilog = (
        "Run by hand, apply writes every change the plan shows, drift included, whatever a mapping's "
        "drift mode: the modes (warn, ignore) are what the agent does with drift."
    )
    c.add_argument("file", metavar="FILE|PLAN", help="a manifest or a plan saved by plan --out (told apart by content)")
    router(c)
    c.add_argument("--auto-approve", action="store_true", help="apply without asking")
    output(c, "the plan and the result", MARKDOWN)
    guards(c)
    locking(c)
    c.add_argument("--snapshot", metavar="SNAP.json", help=argparse.SUPPRESS)  # refused with a reason

    c = command("destroy", _destroy, "remove every mapping this manifest's owner holds")
    c.add_argument("file")
    router(c)
    c.add_argument("--auto-approve", action="store_true", help="destroy without asking")
    output(c, "the plan and the result")
    locking(c)

    c = command("show", _show, "the router and every mapping it holds")
    c.add_argument("file", nargs="?", help="a manifest, to mark its owner's mappings")
    router(c)
    output(c, "the router and its table", MARKDOWN)
    c.add_argument(
        "--snapshot-out",
        metavar="SNAP.json",
        help="also write the router's snapshot (what --format json prints) to SNAP.json, for plan --snapshot",
    )

    def selectors(c: argparse.ArgumentParser, what: str) -> None:
        c.add_argument("--select", action="append", default=[], metavar="PORT/PROTO", help=f"{what} this mapping")
        c.add_argument("--client", action="append", default=[], metavar="IP", help=f"{what} mappings to this LAN host")
        c.add_argument(
            "--description", action="append", default=[], metavar="REGEX", help=f"{what} mappings described so"
        )

    c = command("import", _import, "write manifest entries that take over foreign mappings you select")
    router(c)
    selectors(c, "import")
    c.add_argument("--out", metavar="FILE", help="write the entries to FILE (default: print them)")
    c.add_argument("--force", action="store_true", help="overwrite FILE if it exists")

    c = command("audit", _audit, "report what in the router's table deserves a look")
    router(c)
    output(c, "the findings", MARKDOWN)
    c.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when there are findings")
    c.add_argument(
        "--no-probe", action="store_true", help="do not ask the LAN hosts mappings lead to whether they answer"
    )
    c.add_argument("--clean", action="store_true", help="delete the foreign mappings selected (asks first)")
    selectors(c, "with --clean, delete")
    c.add_argument("--auto-approve", action="store_true", help="with --clean, delete without asking")
    locking(c)

    c = command("forget", _forget, "drop what portctl learned about a router's needs, so it is asked again")
    c.add_argument("quirks", nargs="*", metavar="QUIRK", help="the needs to forget, as show names them")
    c.add_argument("--all", action="store_true", help="forget everything learned about the router")
    router(c)

    c = command("discover", _discover, "list the gateways that answer SSDP, and what the default gateway speaks")
    c.add_argument("--timeout", type=_seconds, default=3.0, metavar="S")
    protocols(c)
    trace(c)
    output(c, "the gateways found")

    c = command("init", _init, "write a starter manifest")
    c.add_argument("file", nargs="?", default="mappings.yaml")

    c = command("emulate", _emulate, "run the built-in IGD emulator (on loopback unless --host)")
    c.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    c.add_argument("--port", type=_port, default=5000)
    c.add_argument("--igd", type=int, choices=(1, 2), help="IGD version (default: the profile's)")
    c.add_argument(
        "--pcp-port",
        type=_port,
        metavar="PORT",
        help="also answer PCP and NAT-PMP on this UDP port of --host (0: a free one; 5351 is theirs)",
    )
    c.add_argument("--profile", default="spec", help="how the router bends the spec; --profile list shows them")
    c.add_argument(
        "--ssdp",
        action="store_true",
        help="also answer SSDP searches on --host (for test network namespaces; never on a real LAN)",
    )

    c = command("agent", _agent, "keep the router converged to a manifest in git (a GitOps pull loop)")
    c.add_argument(
        "verb",
        nargs="?",
        default="run",
        choices=("run", "status", "reconcile", "suspend", "resume"),
        help="run the agent (default), or talk to a running one",
    )
    c.add_argument("--config", metavar="FILE", help="agent settings in YAML; flags override them")
    c.add_argument("--repo", metavar="URL_OR_PATH", help="the git repository holding the manifest")
    c.add_argument("--ref", help="the branch or tag to follow (default main)")
    c.add_argument(
        "--path",
        action="append",
        help="the manifest's path in the repository (default mappings.yaml); a directory, or repeated: several",
    )
    c.add_argument(
        "--manifest",
        metavar="FILE",
        action="append",
        help="follow a local manifest file instead of a repository; a directory, or repeated: several",
    )
    c.add_argument("--interval", metavar="DURATION", help="time between reconciles, such as 60s or 5m (default 60s)")
    c.add_argument("--listen", metavar="HOST:PORT", help="health, status, metrics and control (127.0.0.1:9477)")
    c.add_argument("--router", metavar="URL", help="the router's URL, as for plan (default: router.url, SSDP)")
    c.add_argument("--timeout", type=_seconds, metavar="S", help="seconds to wait for each router request (5)")
    trace(c)
    c.add_argument("--verify-signatures", action="store_const", const=True, help="apply only signed commits")
    c.add_argument("--allowed-signers", metavar="FILE", help="SSH allowed-signers file for --verify-signatures")
    c.add_argument("--release-on-exit", action="store_const", const=True, help="delete owned mappings on shutdown")
    c.add_argument("--max-deletions", type=_count, metavar="N", help="refuse a pass that deletes more than N mappings")
    c.add_argument(
        "--allow-empty", action="store_const", const=True, help="let an empty manifest prune every owned mapping"
    )
    c.add_argument("--no-events", dest="events", action="store_const", const=False, help="poll; no GENA events")
    c.add_argument("--webhook", metavar="URL", help="POST a JSON event here on changes and failures")
    c.add_argument("--workdir", metavar="DIR", help="where to check the repository out")
    c.add_argument("--snapshot", metavar="FILE", help="write the router's snapshot to FILE after each pass")
    c.add_argument(
        "--wait", type=_seconds_or_zero, default=60.0, metavar="S", help="reconcile: how long to wait for the result"
    )
    output(c, "what the agent answers (status: the whole status document)")

    c = command("demo", _demo, "plan and apply a demo manifest on the built-in emulator (or ask first on --router)")
    c.description = (
        "Plan, apply, plan again and show examples/demo.yaml (or FILE) on the built-in IGD emulator, "
        "without asking. With --router or PORTCTL_ROUTER the demo runs on that router as apply would "
        "without --auto-approve: it shows the plan and asks, writes only as owner portctl-demo, never "
        "prunes and never takes over; without a terminal to ask on it changes nothing and exits 1."
    )
    c.add_argument("file", nargs="?", default=os.path.join("examples", "demo.yaml"))
    router(c)
    if only is not None and not built:
        return _parser()  # not a command: the whole parser, to list the commands in its error
    return p


# -- argument types: argparse turns their ArgumentTypeError into one usage line and exit 2 ------


def _seconds(text: str) -> float:
    return _number(lambda: numbers.seconds(text))


def _protocols(text: str) -> tuple[str, ...]:
    from .protocols import BadOrder, parse_order

    try:
        return parse_order(text)
    except BadOrder as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> int:
    from .durations import parse_duration

    return _number(lambda: parse_duration(text))


def _seconds_or_zero(text: str) -> float:
    return _number(lambda: numbers.seconds(text, allow_zero=True))


def _count(text: str) -> int:
    return _number(lambda: numbers.ascii_int(text, max_digits=9))


def _markdown_limit(text: str) -> int:
    limit = _count(text)
    if limit < 8192:  # markdown.MIN_BYTES: below it, headings and warnings alone may not fit
        raise argparse.ArgumentTypeError(f"{text!r}: markdown needs at least 8192 bytes")
    return limit


def _port(text: str) -> int:
    port = _number(lambda: numbers.ascii_int(text, max_digits=5))
    if port > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0 to 65535)")
    return port


def _number(parse: Callable[[], T]) -> T:
    try:
        return parse()
    except numbers.NotANumber as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- commands --------------------------------------------------------------------------------


def _validate(args: argparse.Namespace) -> int:
    from . import manifest
    from .errors import ManifestError

    try:
        m = manifest.load(args.file)
    except ManifestError as exc:
        if args.format != GITHUB:
            raise
        _annotate_problems(exc)
        return EXIT_ERROR
    auto = _auto_resolved(m, args.snapshot) if _uses_auto(m) else None
    if args.format == "json":
        from .plancodec import header

        counts = {"mappings": len(m.mappings), "pinholes": len(m.pinholes)}
        resolved = {"auto": {"internal_client": auto[0], "from": auto[1]}} if auto else {}
        doc = {**header("validate"), "file": args.file, "valid": True, "owner": m.owner, **counts, **resolved}
        print(json.dumps(doc, indent=2))
    else:
        pinholes = f" and {len(m.pinholes)} IPv6 pinholes" if m.pinholes else ""
        print(f"{args.file}: valid ({len(m.mappings)} router mappings{pinholes} for owner {m.owner!r})")
        if auto:
            from .snapshot import auto_line

            print(auto_line(*auto))
    return EXIT_OK


def _uses_auto(m: Manifest) -> bool:
    return any(x.internal_client == "auto" for x in m.mappings)


def _auto_resolved(m: Manifest, snapshot_path: str | None) -> tuple[str | None, str]:
    """What `internal_client: auto` means, offline: the snapshot's host's address, or this host's
    towards the router (a UDP socket's route choice, which sends nothing)."""
    import socket
    from urllib.parse import urlsplit

    from . import api, discovery, snapshot

    if snapshot_path:
        return snapshot.load(snapshot_path).auto, "from the snapshot"
    url = api.router_url(None, m)
    host = urlsplit(url).hostname if url else discovery.default_gateway()
    if not host:
        return None, "this host"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 1900))
            return str(s.getsockname()[0]), "this host"
    except OSError:
        return None, "this host"


def _plan(args: argparse.Namespace) -> int:
    from . import api, manifest, render
    from .errors import ManifestError

    if args.max_snapshot_age is not None and not args.snapshot:
        raise PortctlError("--max-snapshot-age is the oldest snapshot to plan from: give the snapshot with --snapshot")
    if args.snapshot and args.router:
        raise PortctlError("--snapshot plans without the router: leave out --router (or plan live without --snapshot)")
    cache = _cache()
    try:
        text = manifest.read(args.file)
        m = manifest.parse(text, args.file, cache)
    except ManifestError as exc:
        if args.format != GITHUB:
            raise
        _annotate_problems(exc)
        return EXIT_ERROR
    if args.snapshot:
        facts, read = _offline_facts(args.snapshot, args.max_snapshot_age, args.file, m.router_url)
        plan = api.plan(m, facts, max_deletions=args.max_deletions, allow_empty=args.allow_empty)
        if m.pinholes:
            from dataclasses import replace

            # Pinholes live in the reading host's inventory, not in the router's table.
            plan = replace(plan, pinholes_unavailable="a plan from a snapshot does not plan IPv6 pinholes")
        where = "from the snapshot"
    else:
        with _session(args, cache, api.router_url(args.router, m), m) as backend:
            read_at = time.time()
            facts = api.read(backend, cache, m, timeout=args.timeout)
            plan = api.plan(m, facts, max_deletions=args.max_deletions, allow_empty=args.allow_empty)
        read, where = _read(read_at), "this host"
    if args.out:
        from . import planfile  # a plan not saved needs no codec

        guards = {"max_deletions": args.max_deletions, "allow_empty": args.allow_empty}
        _write_json(args.out, planfile.document(plan, args.file, text, **guards))
    if args.format == "json":
        from . import plancodec  # the JSON view is built only when asked for

        doc = plancodec.encode(plan)
        if args.snapshot:
            doc["snapshot"] = _snapshot_json(args.snapshot, read, facts.backend.local_or_unknown())
        print(json.dumps(doc, indent=2))
    elif args.format == MARKDOWN:
        from .markdown import plan_markdown

        print(plan_markdown(plan, read, max_bytes=args.max_bytes))
    elif args.format == GITHUB:
        from . import annotations

        print(render.summary_line(plan))
        for line in annotations.plan_commands(plan, m, args.file):
            print(line)
    else:
        if args.snapshot:
            print(f"Router table {read.text()}.")
        if _uses_auto(m):
            from .snapshot import auto_line

            print(auto_line(facts.backend.local_or_unknown(), where))
        print(render.plan_text(plan, _style(args)))
        if args.out and not (plan.conflicts or plan.blocked):
            print(f"\nSaved the plan to {args.out}; apply it with: portctl apply {args.out}")
    if plan.conflicts or plan.blocked:
        return EXIT_ERROR
    return EXIT_CHANGES if args.detailed_exitcode and plan.has_changes else EXIT_OK


def _offline_facts(path: str, max_age: int | None, manifest_path: str, url: str | None) -> tuple[Facts, Read]:
    """The facts a snapshot recorded, through a backend that opens no socket and writes nothing, if
    it is of the router the manifest names (`url`, its router.url)."""
    from . import api, snapshot
    from .markdown import Read

    snap = snapshot.load(path)
    now = time.time()
    snapshot.check_age(path, snap, max_age, now)
    snapshot.check_plannable(path, snap)
    snapshot.check_router(path, snap, manifest_path, url)
    backend = snapshot.SnapshotBackend(snap, path)
    read = Read(snap.read_at, now, snapshot.source(path))
    return api.Facts(backend, list(snap.table), api.owners(backend, None)), read


def _snapshot_json(path: str, read: Read, auto: str | None) -> dict[str, Any]:
    """Where a plan from a snapshot got its table, in plan --format json."""
    from .plancodec import time_json

    age = max(0, round(read.now - read.at))
    return {"path": path, "read_at": time_json(read.at), "age_seconds": age, "auto": auto}


def _apply(args: argparse.Namespace) -> int:
    from . import api, manifest, planfile

    if args.snapshot:
        raise PortctlError(
            "apply never writes from a snapshot: a snapshot is the router as it was, and apply reads the router as "
            "it is. Plan with --snapshot, then apply on a host that reaches the router. Nothing was changed"
        )
    cache = _cache()
    if planfile.is_plan(args.file):
        # A saved plan is trusted with nothing: plan again from the manifest it carries, against
        # the router as it is now, and write that plan only if it is the one saved.
        saved = planfile.load(args.file)
        m = manifest.parse(
            saved.manifest_text, f"{args.file} (the manifest {saved.manifest_path} it was made from)", cache
        )
        url = api.router_url(args.router, m) or (saved.plan.router.location if saved.plan.router else None)
        with (
            _session(args, cache, url, m) as backend,
            _router_lock(cache, backend, args.lock_timeout),
        ):
            args.read_at = time.time()
            facts = api.read(backend, cache, m, timeout=args.timeout)
            planfile.check_current(saved.plan, facts.table, backend.info)
            deletions = [n for n in (saved.max_deletions, args.max_deletions) if n is not None]
            plan = api.plan(
                m,
                facts,
                max_deletions=min(deletions) if deletions else None,
                allow_empty=saved.allow_empty or args.allow_empty,
            )
            planfile.check_replanned(args.file, saved.plan, plan)
            # Saving a plan and applying it is the approval.
            return _execute(plan, facts, True, args)
    m = manifest.load(args.file, cache)
    # Read and write under the router's lock: another portctl's writes would make the plan stale.
    with (
        _session(args, cache, api.router_url(args.router, m), m) as backend,
        _router_lock(cache, backend, args.lock_timeout),
    ):
        args.read_at = time.time()
        facts = api.read(backend, cache, m, timeout=args.timeout)
        plan = api.plan(m, facts, max_deletions=args.max_deletions, allow_empty=args.allow_empty)
        return _execute(plan, facts, args.auto_approve, args)


def _destroy(args: argparse.Namespace) -> int:
    from . import api, manifest

    cache = _cache()
    m = manifest.load(args.file, cache)
    with (
        _session(args, cache, api.router_url(args.router, m), m) as backend,
        _router_lock(cache, backend, args.lock_timeout),
    ):
        facts = api.read(backend, cache, m, timeout=args.timeout)
        return _execute(api.destroy_plan(m, facts), facts, args.auto_approve, args)


def _execute(plan: Plan, facts: Facts, approved: bool, args: argparse.Namespace) -> int:
    """Show the plan, get approval, write (recording owners where `facts` says they are kept),
    and report: shared by apply and destroy."""
    from . import render
    from .apply import apply

    style = _style(args)
    if args.format == MARKDOWN:
        return _execute_markdown(plan, facts, approved, args)
    if args.format != "json":
        print(render.plan_text(plan, style))
    if plan.blocked:
        raise ConflictError(f"{plan.blocked}. Nothing was changed")
    if plan.conflicts:
        raise ConflictError("resolve the conflicts above; nothing was changed")
    if not plan.has_changes:
        if args.format == "json":
            report = apply(plan, facts.backend, store=facts.store, pinholes=facts.pinholes)
            print(json.dumps(render.report_json(report, facts.backend.info, now=time.time()), indent=2))
        return EXIT_OK
    if not approved:
        _confirm()
    progress = None if args.format == "json" else lambda c: print(f"  ... {c.action.value} {c.name} {c.key}")
    report = apply(plan, facts.backend, progress, store=facts.store, pinholes=facts.pinholes)
    if args.format == "json":
        print(json.dumps(render.report_json(report, facts.backend.info, now=time.time()), indent=2))
    else:
        print()
        print(render.report_text(report, style))
        if leases := render.leases_text(report, time.time()):
            print(leases)
        if report.skipped:
            print("The router's table changed after the plan was read; the rows marked SKIPPED were left alone.")
            print("Run plan again to see the router as it is now.")
        elif (
            not report.ok and all(r.final for r in report.failed) and all(p.final for p in report.pinholes if not p.ok)
        ):
            print("The router refused the changes marked FAILED; running apply again would be refused the same way.")
            print("Change what each says first.")
        elif not report.ok:
            print("Some changes failed; the router holds the rest. Run apply again to finish.")
    return EXIT_OK if report.ok else EXIT_ERROR


def _confirm() -> None:
    if not sys.stdin.isatty():
        raise ApprovalError("refusing to change the router without a terminal to confirm on; pass --auto-approve")
    answer = input("\nApply these changes to the router? Only 'yes' will be accepted: ")
    if answer.strip() != "yes":
        raise ApprovalError("not applied: the answer was not 'yes'")


def _show(args: argparse.Namespace) -> int:
    from . import api, diff, manifest, render

    cache = _cache()
    m = manifest.load(args.file, cache) if args.file else None
    with _session(args, cache, api.router_url(args.router, m), m) as backend:
        read_at = time.time()
        facts = api.read(backend, cache, m, timeout=args.timeout)
        booted = _booted(backend)
    spoken = api.remembered_protocols(cache, backend)
    used = "upnp" if backend.info.protocol.startswith("upnp") else backend.info.protocol
    table = facts.table
    owned = diff.owned_rows(m, table, backend.learned, facts.store) if m else {}
    held = facts.pinholes.held if facts.pinholes else ()
    now = time.time()
    if args.format == "json" or args.snapshot_out:
        from . import snapshot

        doc = snapshot.document(
            backend,
            table,
            read_at=read_at,
            boot=booted.to_json(),
            owners={r.key: render.owner_label(r, owned) for r in table},
            protocols={"used": used, "gateway_speaks": list(spoken.spoken) if spoken else None},
            pinholes=[render.held_json(h, now) for h in held],
            pinhole_source=facts.pinholes.source if facts.pinholes else None,
        )
        if args.snapshot_out:
            snapshot.write(args.snapshot_out, doc)
            print(f"Wrote a snapshot of {len(table)} mappings to {args.snapshot_out}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(doc, indent=2))
    elif args.format == MARKDOWN:
        from .markdown import table_markdown
        from .protocols import NAMES

        said = NAMES.get(used, used) + (f"; the gateway speaks {_spoken_text(spoken)}" if spoken else "")
        print(
            table_markdown(
                backend.info,
                table,
                owned,
                owner=m.owner if m else "",
                learned=backend.learned,
                booted=booted,
                held=held,
                read=_read(read_at, now),
                protocol=said,
                max_bytes=args.max_bytes,
            )
        )
    else:
        print(render.table_text(backend.info, table, owned, _style(args), backend.learned, booted))
        if facts.pinholes is not None:
            print(render.held_text(held, now, m.owner if m else ""))
        from .protocols import NAMES

        also = f"; the gateway speaks {_spoken_text(spoken)}" if spoken else ""
        print(f"Protocol: {NAMES.get(used, used)}{also}")
    return EXIT_OK


def _booted(backend: Backend) -> Booted:
    """Since when the router has been up and its boot id, as far as it says; unknown is not an error here."""
    from .boot import Booted, Epochs
    from .errors import RouterError

    try:
        uptime = backend.uptime()
    except RouterError:
        uptime = None
    if uptime is not None and not 0 <= uptime < 2**32:
        uptime = None
    rule = backend.epoch_rule if isinstance(backend, Epochs) else None  # PCP, NAT-PMP: an epoch, not an uptime
    return Booted(uptime, time.time(), backend.boot_id(), rule)


def _selection(args: argparse.Namespace) -> Any:
    from . import selection

    return selection.parse(args.select, args.client, args.description)


def _listing(backend: Backend, command: str) -> list[Any]:
    """The router's whole table; a protocol that cannot list it (PCP, NAT-PMP) is one clear refusal."""
    if not backend.capabilities.can_list:
        raise PortctlError(
            f"{command} needs the router's whole table, and the router at {backend.info.address} is spoken to "
            f"through {backend.info.protocol}, which cannot list it; give its UPnP IGD URL with --router "
            "(or --protocols upnp). Nothing was changed"
        )
    return backend.list_mappings()


def _import(args: argparse.Namespace) -> int:
    from . import api, importer, selection

    chosen = _selection(args)
    if chosen.empty:
        raise PortctlError(f"import selects nothing by default: {selection.HOW}")
    cache = _cache()
    with _session(args, cache, api.router_url(args.router, None), None) as backend:
        table = _listing(backend, "import")
        where = backend.info.description or backend.info.address
    result = importer.build(table, chosen)
    for row, why in result.skipped:
        print(f"skipped {row.key} {row.description!a}: {why}", file=sys.stderr)
    if not result.entries:
        raise PortctlError("no foreign mapping on the router matches the selection; nothing was written")
    n = len(result.entries)
    header = (
        f"# {n} mapping{'s' if n > 1 else ''} imported from {ascii(where)[1:-1]}: put them under `mappings:`; "
        "the next apply takes each over (delete, then add with the owner's tag)\n"
    )
    if not args.out:
        print(header + result.text, end="")
        return EXIT_OK
    _write_new(args.out, header + result.text, force=args.force)
    print(f"Wrote {n} entr{'ies' if n > 1 else 'y'} to {args.out}: {', '.join(name for name, _ in result.entries)}.")
    return EXIT_OK


def _audit(args: argparse.Namespace) -> int:
    from . import api, audit, auditview

    chosen = _selection(args)
    if args.clean:
        return _audit_clean(args, chosen)
    if not chosen.empty:
        raise PortctlError("--select, --client and --description choose what audit --clean deletes; add --clean")
    cache = _cache()
    read_at = time.time()
    with _session(args, cache, api.router_url(args.router, None), None) as backend:
        table = _listing(backend, "audit")
        info = backend.info
    result = audit.audit(table, None if args.no_probe else audit.tcp_answers)
    if args.format == "json":
        print(json.dumps(auditview.json_doc(result, info), indent=2))
    elif args.format == MARKDOWN:
        from .markdown import audit_markdown

        print(audit_markdown(result, info, _read(read_at), max_bytes=args.max_bytes))
    else:
        print(auditview.text(result, info))
    return EXIT_CHANGES if args.detailed_exitcode and result.findings else EXIT_OK


def _audit_clean(args: argparse.Namespace, chosen: Any) -> int:
    """Delete the foreign rows selected, and nothing else, after approval (as apply asks)."""
    from . import api, audit, auditview, plancodec, render, selection
    from .apply import apply
    from .ownerstore import InventoryError

    if chosen.empty:
        raise PortctlError(f"audit --clean deletes only what you select: {selection.HOW}. Nothing was deleted")
    cache = _cache()
    with (
        _session(args, cache, api.router_url(args.router, None), None) as backend,
        _router_lock(cache, backend, args.lock_timeout),
    ):
        table = _listing(backend, "audit --clean")
        try:
            held = api.recorded(backend, cache)
            plan = audit.clean_plan(table, chosen, backend.info, held)
        except InventoryError as exc:
            raise PortctlError(f"{exc}: audit --clean cannot tell which rows are owned. Nothing was deleted") from exc
        if args.format != "json":
            print(render.router_line(backend.info))
            print()
        if not plan.changes:
            if args.format == "json":
                doc = {**plancodec.header("audit-clean"), "router": plancodec.router_json(backend.info)}
                print(json.dumps({**doc, "deleting": [], "report": None}, indent=2))
            else:
                print("No mapping matches the selection: nothing to delete.")
            return EXIT_OK
        if args.format != "json":
            print(f"audit --clean will delete {len(plan.changes)} mapping(s), and nothing else:")
            print("\n".join(f"  -   {auditview.row_text(c.before)}" for c in plan.changes if c.before))
            print(f"{len(plan.foreign)} other mapping(s) are left as they are.")
        if not args.auto_approve:
            _confirm()
        progress = None if args.format == "json" else lambda c: print(f"  ... delete {c.key}")
        report = apply(plan, backend, progress)
    if args.format == "json":
        deleting = [plancodec.mapping_json(c.before) for c in plan.changes]
        doc = {
            **plancodec.header("audit-clean"),
            "router": plancodec.router_json(backend.info),
            "deleting": deleting,
            "report": render.report_json(report, backend.info, now=time.time()),
        }
        print(json.dumps(doc, indent=2))
    else:
        print()
        print(render.report_text(report, _style(args)))
    return EXIT_OK if report.ok else EXIT_ERROR


def _forget(args: argparse.Namespace) -> int:
    from . import api
    from .quirks import Quirk

    known = ", ".join(q.value for q in Quirk)
    unknown = [q for q in args.quirks if q not in Quirk._value2member_map_]
    if unknown:
        raise PortctlError(f"no such need: {', '.join(unknown)}; the needs portctl learns are: {known}")
    if bool(args.quirks) == args.all:
        raise PortctlError(f"name the needs to forget ({known}), or pass --all")
    cache = _cache()
    # Connected only for the router's identity, which names its entry in the cache.
    backend = api.connect(
        api.router_url(args.router, None),
        cache,
        timeout=args.timeout,
        observe=_observer(args),
        order=api.protocol_order(args.protocols, None),
    )
    # Re-read and rewritten under the cache's lock: what another portctl stores meanwhile stays.
    try:
        dropped = cache.forget(backend.info.identity, None if args.all else {Quirk(q) for q in args.quirks})
    except OSError as exc:
        raise PortctlError(f"cannot write the cache {cache.path}: {exc}; nothing was forgotten") from exc
    name = backend.info.description or backend.info.address
    if dropped:
        print(f"Forgot what {name} needed: {', '.join(q.value for q in dropped)}. The router is asked again.")
    else:
        print(f"Nothing of that was learned about {name}.")
    return EXIT_OK


def _discover(args: argparse.Namespace) -> int:
    import threading

    from . import discovery, plancodec, protocols
    from .backends import upnp
    from .errors import RouterError

    cache, observe = _cache(), _observer(args)
    order = args.protocols or protocols.PROTOCOLS
    gateway = discovery.default_gateway()
    # PCP and NAT-PMP are asked of the default gateway while SSDP searches the LAN: one wait for all.
    probed: list[Spoken] = []
    others = discovery.probes(gateway, [p for p in order if p != protocols.UPNP], observe=observe)
    asking = threading.Thread(target=lambda: probed.append(protocols.probe(gateway or "", others, args.timeout)))
    asking.start()
    answers = discovery.discover(args.timeout, observe=observe) if protocols.UPNP in order else []
    asking.join()
    at_gateway = [a for a in answers if a.source == gateway]
    findings = dict(probed[0].findings)
    if at_gateway:
        findings[protocols.UPNP] = protocols.Finding(protocols.UPNP, True, at_gateway[0].location)
    spoken = protocols.Spoken(gateway or "", findings)
    speaks = list(spoken.spoken)
    rows = []
    for a in answers:
        try:
            backend = upnp.connect(a.location, cache=cache, timeout=args.timeout, observe=observe)
            backend.close()
            info: dict[str, Any] = plancodec.router_json(backend.info)
        except RouterError as exc:
            info = {"location": a.location, "error": str(exc)}
        rows.append({**info, "boot_id": a.boot_id, "protocols": speaks if a.source == gateway else ["upnp"]})
    if not at_gateway and speaks:
        first = speaks[0]
        details = {p: f.detail for p, f in spoken.findings.items() if spoken.speaks(p)}
        rows.append({"location": f"{first}://{gateway}", "gateway": gateway, "protocols": speaks, "details": details})
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"No gateway answered {', '.join(protocols.NAMES[p] for p in order)} within {args.timeout:g}s.")
    for r in [] if args.format == "json" else rows:
        if "error" in r:
            print(f"{r['location']}: {r['error']}")
        elif "gateway" not in r:
            what = f"{r['friendly_name']} (IGD v{r['igd_version']}), {r['service_type']}"
            boot = f", BOOTID {r['boot_id']}" if r["boot_id"] is not None else ""
            print(f"{r['location']}: {what}, external IP {r['external_ip'] or 'unknown'}{boot}")
    if args.format != "json" and gateway and speaks:
        print(f"Gateway {gateway} speaks: {_spoken_text(spoken)}")
    return EXIT_OK if rows else EXIT_ERROR


def _spoken_text(spoken: Spoken) -> str:
    """`UPnP IGD, PCP (epoch 7), NAT-PMP (external address ...)`: each protocol spoken, with what it said."""
    from .protocols import NAMES, UPNP

    parts = []
    for p in spoken.spoken:
        found = spoken.findings.get(p)
        detail = found.detail if found is not None and found.spoken and p != UPNP else ""
        parts.append(f"{NAMES[p]} ({detail})" if detail else NAMES[p])
    return ", ".join(parts)


def _init(args: argparse.Namespace) -> int:
    import secrets
    import socket
    import string

    from .manifest import starter, starter_owner

    token = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4))
    _write_new(args.file, starter(starter_owner(socket.gethostname(), token)))
    print(f"Wrote {args.file}. Edit it, then: portctl plan {args.file}")
    return EXIT_OK


def _write_new(path: str, text: str, *, force: bool = False) -> None:
    """Write `text` to a file that must not exist yet (`force`: overwrite one that does)."""
    try:
        with open(path, "w" if force else "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError as exc:
        raise PortctlError(f"{path} exists; not overwriting it" + ("" if force else " (--force does)")) from exc
    except OSError as exc:
        raise PortctlError(f"cannot write {path}: {exc}") from exc


def _emulate(args: argparse.Namespace) -> int:
    from .emulator import PROFILES, EmulatorServer, Router
    from .emulator.ssdp import SsdpResponder

    if args.profile == "list":
        width = max(map(len, PROFILES))
        for p in PROFILES.values():
            print(f"{p.name:<{width}}  {p.summary} ({p.seen_on})")
        return EXIT_OK
    if args.profile not in PROFILES:
        raise PortctlError(f"no emulator profile {args.profile!r}; the profiles are: {', '.join(PROFILES)}")
    try:
        server = EmulatorServer(
            Router(PROFILES[args.profile], igd_version=args.igd), host=args.host, port=args.port, pcp_port=args.pcp_port
        )
        ssdp = (
            SsdpResponder(
                server.url,
                server.udn,
                args.host,
                PROFILES[args.profile].ssdp,
                boot_id=lambda: server.router.boot_id,
            )
            if args.ssdp
            else None
        )
    except OSError as exc:
        raise PortctlError(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    version = server.router.igd_version
    print(f"IGD v{version} emulator, profile {args.profile}, at {server.url} (Ctrl-C stops it)", flush=True)
    if args.pcp_port is not None:
        print(f"PCP and NAT-PMP on UDP: {server.pcp_url()} and {server.pcp_url('natpmp')}", flush=True)
    if ssdp:
        ssdp.start()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    if ssdp:
        ssdp.stop()
    return EXIT_OK


def _agent(args: argparse.Namespace) -> int:
    from .agent import config as agent_config

    if args.verb != "run":
        return _agent_client(args)
    flags = {
        k: getattr(args, k)
        for k in (
            "repo", "ref", "path", "manifest", "interval", "listen", "router", "timeout",
            "verify_signatures", "allowed_signers", "release_on_exit", "events", "webhook", "workdir",
            "max_deletions", "allow_empty", "snapshot",
        )
    }  # fmt: skip
    config = agent_config.build(args.config, flags)
    import signal

    from .agent.control import ControlServer
    from .agent.controller import Agent

    agent = Agent(config, observe=_observer(args))
    host, port = config.listen_address
    try:
        server = ControlServer(agent, host, port).start()
    except OSError as exc:
        raise PortctlError(f"cannot listen on {config.listen}: {exc.strerror or exc}") from exc
    agent.log.info(f"listening on http://{server.address} (/healthz /readyz /status /metrics)")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop())
    try:
        agent.run()
    finally:
        server.stop()
    return EXIT_OK


def _agent_client(args: argparse.Namespace) -> int:
    from .agent import config as agent_config
    from .agent.control import call

    listen = args.listen or (agent_config.build(args.config, {"manifest": "-"}).listen if args.config else None)
    listen = listen or agent_config.DEFAULT_LISTEN
    try:
        agent_config.split_address(listen)
    except agent_config.ConfigError as exc:
        raise agent_config.ConfigError(f"--listen: {exc}") from None
    doc = call(listen, args.verb, wait=args.wait)
    text, code = _agent_answer(args.verb, doc, args.wait)
    # Whatever the format, status exits as /readyz answers (the status document says the same).
    print(json.dumps(doc, indent=2) if args.format == "json" else text)
    return code


def _agent_answer(verb: str, doc: dict[str, Any], wait: float) -> tuple[str, int]:
    """What a running agent answered to `verb`, in words, and the exit code it means."""
    if verb == "status":
        # 0 only when Ready.
        ready: dict[str, Any] = next((c for c in doc["conditions"] if c["type"] == "Ready"), {})
        return _status_text(doc), EXIT_OK if ready.get("status") == "True" else EXIT_ERROR
    if verb == "reconcile":
        result = doc.get("result")
        if not doc.get("done") or not result:
            return f"the agent is still reconciling after {wait:g}s; see: portctl agent status", EXIT_ERROR
        lines = [f"{result['result']}: {result['message']}", *(f"  {line}" for line in result["changes"])]
        return "\n".join(lines), EXIT_ERROR if result["result"] == "failed" else EXIT_OK
    return ("suspended" if doc.get("suspended") else "resumed"), EXIT_OK


def _status_text(doc: dict[str, Any]) -> str:
    lines = [
        f"source:    {doc.get('source', '')}",
        f"applied:   {doc['lastAppliedRevision'] or '(nothing yet)'}",
        f"attempted: {doc['lastAttemptedRevision'] or '(nothing yet)'}",
        f"router:    {doc['router'] or '(not connected)'}",
        f"events:    {'subscribed' if doc.get('events', {}).get('subscribed') else 'polling'}",
    ]
    boot = doc.get("routerBoot") or {}
    if boot.get("since") or boot.get("bootId") is not None:
        booted = f"since {boot['since']}" if boot.get("since") else "at an unknown moment"
        if str(boot.get("source", "")).endswith("-epoch"):
            booted += f" (by its {boot['source']}: when its mapping state began)"
        lines.append(f"booted:    {booted}" + (f", BOOTID {boot['bootId']}" if boot.get("bootId") is not None else ""))
    if boot.get("restarts"):
        lines.append(f"restarts:  {boot['restarts']}, last at {boot['lastRestart']} ({boot['lastRestartCause']})")
    if doc["suspended"]:
        lines.append("SUSPENDED: the router is not kept converged")
    for c in doc["conditions"]:
        lines.append(f"{c['type']:<12} {c['status']:<7} {c['reason']}: {c['message']}".rstrip(": "))
    for p in doc.get("problems", []):
        lines.append(f"problem:     {p['message']}")
    sections = doc.get("manifests") or []
    if len(sections) > 1:
        # Several manifests: each says how it fares and what it owns.
        for s in sections:
            lines.append(
                f"manifest {s['file']} (owner {s['owner'] or '?'}, {s['lastAppliedRevision'] or 'nothing applied'})"
            )
            ready = (s.get("conditions") or [{}])[0]
            lines.append(f"  {'Ready':<10} {ready.get('status', ''):<7} {s['reason']}: {s['message']}".rstrip(": "))
            lines += _owned_lines(s["inventory"], "    ")
    elif doc["inventory"]:
        lines.append("owned mappings:")
        lines += _owned_lines(doc["inventory"], "  ")
    return "\n".join(lines)


def _owned_lines(inventory: list[dict[str, Any]], indent: str) -> list[str]:
    lines = []
    for e in inventory:
        lease = f"lease until {e['leaseExpiry']}" if e["leaseExpiry"] else "permanent"
        lines.append(f"{indent}{e['mapping']:<11} -> {e['target']:<21} {e['name']:<16} {lease}")
    return lines


def _demo(args: argparse.Namespace) -> int:
    """plan, apply, plan again, show: the whole loop in one command."""
    url = args.router or os.environ.get("PORTCTL_ROUTER")
    return _demo_real(args, url) if url else _demo_emulated(args)


def _demo_emulated(args: argparse.Namespace) -> int:
    """On the built-in emulator nothing real is at stake: every step runs without asking."""
    from .emulator import EmulatorServer, Router

    server = EmulatorServer(Router()).start()
    # Another device's mapping, which portctl must leave alone.
    server.router.add(3074, "UDP", "127.0.0.1", 3074, "Xbox Live (a game console)")
    print(f"Started the built-in IGD emulator at {server.url}\n")
    try:
        for step in (
            ["plan", args.file],
            ["apply", args.file, "--auto-approve"],
            ["plan", args.file, "--detailed-exitcode"],
            ["show", args.file],
        ):
            code = _demo_step(step, server.url, args)
            if code != EXIT_OK:
                return code
    finally:
        server.stop()
    return EXIT_OK


def _demo_real(args: argparse.Namespace, url: str) -> int:
    """On a real router the demo is `apply` with its approval: it asks, and writes nothing unasked."""
    from . import demo, manifest

    text = manifest.read(args.file)
    demo.check_for_real_router(manifest.parse(text, args.file), text)
    print(
        f"The demo on the router at {url}: it writes only as owner {demo.OWNER!r}, never prunes, "
        "and changes nothing until you answer yes.\n"
    )
    code = _demo_step(["plan", args.file, "--detailed-exitcode"], url, args)
    if code == EXIT_CHANGES:
        if not sys.stdin.isatty():
            raise ApprovalError(
                "the demo changes a real router only after you answer 'yes' on a terminal, and its input is "
                "not a terminal: nothing was changed. Run it in a terminal, or use `portctl apply` on a "
                "manifest of your own"
            )
        code = _demo_step(["apply", args.file], url, args)
        if code == EXIT_OK:
            code = _demo_step(["plan", args.file, "--detailed-exitcode"], url, args)
    if code != EXIT_OK:
        return code
    code = _demo_step(["show", args.file], url, args)
    print(f"To remove what the demo made: portctl destroy {args.file} --router {url}")
    return code


def _demo_step(step: list[str], url: str, args: argparse.Namespace) -> int:
    """One command of the demo, printed as a user would type it, then run."""
    print(f"$ portctl {' '.join(step)}")
    color = ["--no-color"] if args.no_color else []
    trace = ["--trace"] if args.trace else []
    code = main([*step, "--router", url, "--timeout", str(args.timeout), *color, *trace])
    print(flush=True)  # before any error on stderr, where a pipe would otherwise put it first
    return code


def _cache() -> Cache:
    """The one cache a command reads and writes (validate never touches it)."""
    from .cache import Cache

    return Cache.from_env()


def _session(
    args: argparse.Namespace, cache: Cache, url: str | None, m: Manifest | None
) -> contextlib.AbstractContextManager[Backend]:
    """A connected backend as the command's flags and the manifest `m` ask (--timeout, --trace, --protocols)."""
    from . import api

    order = api.protocol_order(args.protocols, m)
    return api.session(url, cache, timeout=args.timeout, observe=_observer(args), order=order)


def _observer(args: argparse.Namespace) -> Observer | None:
    """--trace or PORTCTL_TRACE: every exchange with the router, to stderr."""
    if not (getattr(args, "trace", False) or os.environ.get("PORTCTL_TRACE", "") not in ("", "0")):
        return None
    from .backends.trace import Tracer

    return Tracer(sys.stderr)


def _router_lock(cache: Cache, backend: Backend, timeout: float) -> contextlib.AbstractContextManager[None]:
    """The router's lock, kept beside the cache."""
    from . import lock

    return lock.held(cache.lock_directory, backend.info.identity, timeout)


def _style(args: argparse.Namespace) -> Any:
    from .render import Style

    return Style(sys.stdout.isatty() and not args.no_color and not os.environ.get("NO_COLOR"))


def _write_json(path: str, doc: dict[str, Any]) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
    except OSError as exc:
        raise PortctlError(f"cannot write {path}: {exc}") from exc


# -- markdown and GitHub workflow commands ---------------------------------------------------


def _read(at: float, now: float | None = None) -> Read:
    """When the router was read (`at`), as the markdown names its age; `now` defaults to the clock."""
    from .markdown import Read

    return Read(at, time.time() if now is None else now)


def _annotate_problems(exc: ManifestError) -> None:
    """A ManifestError's problems as `::error` commands on stdout, where the runner reads them."""
    from .annotations import problem_commands

    for line in problem_commands(exc.problems):
        print(line)


def _execute_markdown(plan: Plan, facts: Facts, approved: bool, args: argparse.Namespace) -> int:
    """_execute for --format markdown: the plan, then one document of the plan and its result."""
    from .apply import apply
    from .markdown import apply_markdown, plan_markdown

    read = _read(getattr(args, "read_at", time.time()))
    if plan.blocked or plan.conflicts or not plan.has_changes or not approved:
        print(plan_markdown(plan, read, max_bytes=args.max_bytes))
    if plan.blocked:
        raise ConflictError(f"{plan.blocked}. Nothing was changed")
    if plan.conflicts:
        raise ConflictError("resolve the conflicts above; nothing was changed")
    if not plan.has_changes:
        return EXIT_OK
    if not approved:
        _confirm()
    report = apply(plan, facts.backend, store=facts.store, pinholes=facts.pinholes)
    # Now is after the read back: the leases' ends count from it.
    print(apply_markdown(plan, report, _read(read.at), max_bytes=args.max_bytes))
    return EXIT_OK if report.ok else EXIT_ERROR
