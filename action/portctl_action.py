"""What the GitHub Action (action.yml at the repository's root) runs: portctl, and what it leaves for the
steps after it.

    portctl_action.py check   refuse inputs that do not make one command (before anything is installed)
    portctl_action.py run     run portctl; write the JSON and markdown plans, the step's outputs, the job summary

Every value comes from the environment (PORTCTL_ACTION_*, set by action.yml through `env:`, never pasted
into a script), and nothing here imports portctl: the installed portctl may be an older release from PyPI.
The plan's counts come from `plan --format json`; the markdown from `plan --format markdown --max-bytes N`,
cut by portctl to a job summary's size and, where that is too big for a comment, again to a comment's;
where the installed portctl has no markdown, from its text in a code block. `run` exits 0 whatever portctl answered, so
that the comment and the label are written; its `exit-code` output lets the action fail after them.
Standard library only: it runs on the runner's Python before anything else is installed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

COMMANDS = ("validate", "plan")
# Every output the `run` step sets (action.yml's outputs name them; tests/test_action.py checks both ways).
OUTPUTS = (
    "exit-code",
    "has-changes",
    "add",
    "change",
    "remove",
    "replace",
    "conflicts",
    "plan-json",
    "plan-markdown",
    "comment-markdown",
)
# GitHub's limits: a comment body holds 65536 characters, a step's summary 1 MiB. Kept below with room.
COMMENT_LIMIT = 60_000
SUMMARY_LIMIT = 1_000_000
_EXIT_USAGE = 2  # what argparse exits with when portctl does not know a flag (an older portctl)
# `FILE:LINE:COL: message`, as portctl names each manifest problem (after "error: " on the first one).
_PROBLEM = re.compile(r"^(?:error: )?(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")


class BadInput(Exception):
    """The action's inputs do not make one portctl command: one message saying what to set."""


@dataclass(frozen=True)
class Inputs:
    manifest: str
    command: str
    router: str = ""
    snapshot: str = ""
    max_snapshot_age: str = ""
    summary: bool = True


@dataclass(frozen=True)
class Counts:
    """What a JSON plan holds, as the action's outputs give it. Pinholes count with mappings:
    one opened is an add, renewed a change, closed a remove. `replace` counts the changes made by
    delete then add (`replace: true`; a takeover deletes a foreign mapping so): they count under
    `change` too, as portctl's summary line counts them, and delete a mapping all the same."""

    add: int
    change: int
    remove: int
    replace: int
    conflicts: int
    has_changes: bool

    @property
    def deletes(self) -> bool:
        """The plan deletes a mapping or closes a pinhole: what the label warns of."""
        return self.remove > 0 or self.replace > 0


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


Runner = Callable[[Sequence[str]], Ran]


# -- inputs ----------------------------------------------------------------------------------


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = env.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("true", "false"):
        return text == "true"
    raise BadInput(f"{_input_name(name)} is {text!r}: use true or false")


def _input_name(variable: str) -> str:
    return variable.removeprefix("PORTCTL_ACTION_").lower().replace("_", "-")


def inputs_from(env: Mapping[str, str]) -> Inputs:
    """The inputs action.yml passed, checked: a plan reads exactly one of a router and a snapshot, validate neither."""

    def get(name: str) -> str:
        return env.get(f"PORTCTL_ACTION_{name}", "").strip()

    command, manifest, router, snapshot = get("COMMAND"), get("MANIFEST"), get("ROUTER"), get("SNAPSHOT")
    if command not in COMMANDS:
        raise BadInput(f"command is {command!r}: use validate or plan")
    if not manifest:
        raise BadInput("manifest is empty: give the path of the manifest to check")
    if command == "plan" and bool(router) == bool(snapshot):
        both = "both router and snapshot are set" if router else "neither router nor snapshot is set"
        raise BadInput(f"{both}: a plan reads exactly one (snapshot for a hosted runner, router on the LAN)")
    if command == "validate" and (router or snapshot):
        raise BadInput("validate reads no router: leave router and snapshot empty")
    age = get("MAX_SNAPSHOT_AGE")
    if age and not snapshot:
        raise BadInput("max-snapshot-age is set without a snapshot")
    return Inputs(
        manifest=manifest,
        command=command,
        router=router,
        snapshot=snapshot,
        max_snapshot_age=age,
        summary=_flag(env, "PORTCTL_ACTION_SUMMARY", True),
    )


def portctl_args(inputs: Inputs, fmt: str) -> list[str]:
    """portctl's arguments for the command the inputs name, printing `fmt`."""
    if inputs.command == "validate":
        return ["validate", inputs.manifest, "--format", fmt]
    source = ["--router", inputs.router] if inputs.router else ["--snapshot", inputs.snapshot]
    if inputs.max_snapshot_age:
        source += ["--max-snapshot-age", inputs.max_snapshot_age]
    # --detailed-exitcode: 0 no changes, 2 changes, 1 blocked, refused or failed, as the exit-code output says.
    return ["plan", inputs.manifest, *source, "--format", fmt, "--detailed-exitcode"]


# -- reading the plan ------------------------------------------------------------------------


def counts(doc: Mapping[str, object]) -> Counts:
    """The counts of a plan as `portctl plan --format json` prints it."""
    objects = _objects(doc, "changes")
    changes = [c.get("action") for c in objects]
    pinholes = [p.get("action") for p in _objects(doc, "pinholes")]
    return Counts(
        add=changes.count("add") + pinholes.count("open"),
        change=changes.count("change") + changes.count("renew") + pinholes.count("renew"),
        remove=changes.count("remove") + pinholes.count("close"),
        replace=sum(1 for c in objects if c.get("replace") is True),
        conflicts=len(_objects(doc, "conflicts")),
        has_changes=bool(changes or pinholes),
    )


def _objects(doc: Mapping[str, object], field: str) -> list[dict[str, object]]:
    value = doc.get(field) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError(f"the plan's {field!r} is not a list of objects")
    return value


def plan_document(text: str) -> dict[str, object] | None:
    """The JSON plan portctl printed, or None when it printed none (it failed before planning)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and "changes" in doc else None


# -- writing for GitHub ----------------------------------------------------------------------


def fenced(text: str, info: str = "text") -> str:
    """`text` in a code block whose fence no backtick run inside it can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip()}\n{fence}"


def cut(text: str, limit: int, where: str) -> str:
    """`text` within `limit` UTF-8 bytes: whole lines kept, open code blocks and <details> closed, and a
    last line saying how much was left out and where the whole of it is."""
    if len(text.encode()) <= limit:
        return text
    lines, kept, size = text.splitlines(), [], 0
    room = limit - 400  # the closing lines and the note
    for line in lines:
        size += len(line.encode()) + 1
        if size > room:
            break
        kept.append(line)
    fence, details = "", 0
    for line in kept:
        mark = re.match(r"^\s*(`{3,})", line)
        if mark and (not fence or mark.group(1).startswith(fence)):
            fence = "" if fence else mark.group(1)
        if not fence:
            details += line.count("<details") - line.count("</details>")
    closing = ([fence] if fence else []) + ["</details>"] * max(details, 0)
    left = len(lines) - len(kept)
    return "\n".join([*kept, *closing, "", f"**{left} more lines were cut here**: {where}.", ""])


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(message: str, file: str = "", line: str = "", col: str = "") -> str:
    """A workflow command that shows `message` as an error on the pull request (on its line when given)."""
    where = [f"{k}={_escape_property(v)}" for k, v in (("file", file), ("line", line), ("col", col)) if v]
    return f"::error {','.join(where)}::{_escape_data(message)}" if where else f"::error::{_escape_data(message)}"


def annotations_from_text(err: str, fallback: str) -> list[str]:
    """What an older portctl (no --format github) printed, as annotations: each `FILE:LINE:COL: message`
    on its line, else one for the whole message."""
    found = [
        annotation(m["message"], m["file"], m["line"], m["col"])
        for m in (_PROBLEM.match(line.strip()) for line in err.splitlines())
        if m
    ]
    return found or [annotation(err.strip().removeprefix("error: ") or fallback)]


def quiet(text: str) -> str:
    """`text` for the log with no workflow command in it taking effect: a router's foreign mapping is
    described by whoever made it, and a line of it must not reach the runner as a command."""
    token = secrets.token_hex(16)
    return f"::stop-commands::{token}\n{text.rstrip()}\n::{token}::"


def write_outputs(path: str, values: Mapping[str, str]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for name, value in values.items():
            delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
            f.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


# -- running ---------------------------------------------------------------------------------


def subprocess_runner(portctl: str, env: Mapping[str, str]) -> Runner:
    def run(args: Sequence[str]) -> Ran:
        done = subprocess.run([portctl, *args], capture_output=True, text=True, env=dict(env), check=False)
        return Ran(done.returncode, done.stdout, done.stderr)

    return run


@dataclass(frozen=True)
class Result:
    """What one command left: its exit code, the markdown to show, the plan (None for validate or a failure),
    and annotations to print to the log as they are."""

    code: int
    markdown: str
    plan: dict[str, object] | None
    log: str
    commands: str
    comment: str = ""  # the markdown for a comment, where portctl rendered one smaller; else `markdown`


def _heading(ok: bool, what: str) -> str:
    return f"### {'✅' if ok else '❌'} portctl {what}"


def validate(inputs: Inputs, run: Runner) -> Result:
    text = run(portctl_args(inputs, "text"))
    github = run(portctl_args(inputs, "github"))
    if github.code == _EXIT_USAGE:  # an older portctl: the annotations from its text
        commands = "" if text.code == 0 else "\n".join(annotations_from_text(text.err, "the manifest is invalid"))
    else:
        commands = github.out
    ok = text.code == 0
    body = fenced(text.out if ok else text.err)
    markdown = f"{_heading(ok, f'validate `{inputs.manifest}`')}\n\n{body}\n"
    return Result(0 if ok else 1, markdown, None, text.out + text.err, commands)


def plan(inputs: Inputs, run: Runner) -> Result:
    as_json = run(portctl_args(inputs, "json"))
    doc = plan_document(as_json.out)
    if doc is None:
        # Failed before planning: a manifest problem shows on its line (validate reads no router).
        checked = run(portctl_args(Inputs(inputs.manifest, "validate"), "github"))
        if checked.code == _EXIT_USAGE or checked.code == 0:
            commands = "\n".join(annotations_from_text(as_json.err, "portctl plan failed"))
        else:
            commands = checked.out
        markdown = f"{_heading(False, f'plan `{inputs.manifest}` failed')}\n\n{fenced(as_json.err)}\n"
        # 1 whatever portctl exited: argparse's 2 for a flag it does not know (--snapshot to an older
        # release) would read as "changes" and pass the check.
        return Result(1, markdown, None, as_json.err, commands)
    whole = _markdown(inputs, run, SUMMARY_LIMIT)
    if whole is not None:
        # portctl cuts each section to the size asked for, saying what it left out; the comment gets a render
        # of its own where the whole plan does not fit in one (the router, when live, is read once more).
        fits = len(whole.encode()) <= COMMENT_LIMIT
        comment = (whole if fits else _markdown(inputs, run, COMMENT_LIMIT)) or whole
        return Result(as_json.code, whole, doc, comment, "", comment)
    # an older portctl: its text plan in a code block
    text = run(portctl_args(inputs, "text")[:-1])
    c = counts(doc)
    warned = [f"{c.remove} to remove" if c.remove else "", f"{c.replace} to replace" if c.replace else ""]
    title = f"plan `{inputs.manifest}`" + (f": ⚠️ {', '.join(w for w in warned if w)}" if c.deletes else "")
    markdown = f"{_heading(as_json.code != 1, title)}\n\n{fenced(text.out or text.err)}\n"
    return Result(as_json.code, markdown, doc, text.out + text.err, "")


def _markdown(inputs: Inputs, run: Runner, max_bytes: int) -> str | None:
    """The plan as portctl's markdown, cut by portctl to `max_bytes`; None where the installed portctl
    has no markdown. A release with markdown but no --max-bytes gives its own size (a comment's)."""
    args = portctl_args(inputs, "markdown")[:-1]  # no --detailed-exitcode: 2 means an unknown flag only
    shown = run([*args, "--max-bytes", str(max_bytes)])
    if shown.code == _EXIT_USAGE:
        shown = run(args)
    return shown.out if shown.code != _EXIT_USAGE and shown.out.strip() else None


def run_action(env: Mapping[str, str], run: Runner, out_dir: str) -> dict[str, str]:
    """Run the command the inputs in `env` name; write its files, outputs and summary; the outputs."""
    inputs = inputs_from(env)
    result = (plan if inputs.command == "plan" else validate)(inputs, run)
    json_path = os.path.join(out_dir, "plan.json")
    md_path = os.path.join(out_dir, "plan.md")
    comment_path = os.path.join(out_dir, "comment.md")
    if result.plan is not None:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(result.plan, f, indent=2)
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(result.markdown)
    with open(comment_path, "w", encoding="utf-8") as f:
        # A no-op but for an older portctl's text: portctl's markdown is already cut to the limit.
        f.write(cut(result.comment or result.markdown, COMMENT_LIMIT, "the whole plan is in this run's job summary"))
    c = counts(result.plan) if result.plan is not None else None
    outputs = {
        "exit-code": str(result.code),
        "has-changes": "" if c is None else str(c.has_changes).lower(),
        "add": "" if c is None else str(c.add),
        "change": "" if c is None else str(c.change),
        "remove": "" if c is None else str(c.remove),
        "replace": "" if c is None else str(c.replace),
        "conflicts": "" if c is None else str(c.conflicts),
        "plan-json": json_path if result.plan is not None else "",
        "plan-markdown": md_path,
        "comment-markdown": comment_path,
    }
    if env.get("GITHUB_OUTPUT"):
        write_outputs(env["GITHUB_OUTPUT"], outputs)
    if inputs.summary and env.get("GITHUB_STEP_SUMMARY"):
        with open(env["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as f:
            f.write(cut(result.markdown, SUMMARY_LIMIT, f"the whole plan is in {md_path} on the runner") + "\n")
    print(quiet(result.log))
    if result.commands.strip():
        print(result.commands.strip())
    if result.code == 1:
        what = "invalid" if inputs.command == "validate" else "blocked, refused or failed"
        print(annotation(f"portctl {inputs.command} {inputs.manifest}: {what} (exit 1)"))
    return outputs


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    # The runner's own Python may be older than the project's floor (ubuntu-22.04 has 3.10): say what to do.
    if sys.version_info < (3, 11):  # noqa: UP036
        print(annotation("portctl needs Python 3.11 or later: run actions/setup-python before this action"))
        return 1
    if len(argv) != 1 or argv[0] not in ("check", "run"):
        print("usage: portctl_action.py check|run", file=sys.stderr)
        return 1
    try:
        if argv[0] == "check":
            inputs_from(env)
            return 0
        portctl = env.get("PORTCTL_ACTION_PORTCTL") or "portctl"
        out_dir = tempfile.mkdtemp(prefix="portctl-", dir=env.get("RUNNER_TEMP") or None)
        run_action(env, subprocess_runner(portctl, env), out_dir)
    except BadInput as exc:
        print(annotation(f"portctl action: {exc}"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
