"""The GitHub Action: action.yml and the example workflow pass GitHub's schemas and actionlint, no `${{ }}`
reaches a script, every output it declares is set, and its script reads plans portctl really printed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from action import portctl_action as pa
from reconciler.emulator import EmulatorServer
from tests.helpers import FOREIGN, MANIFEST, portctl, snapshot, write

ROOT = Path(__file__).resolve().parent.parent
ACTION = ROOT / "action.yml"
WORKFLOW = ROOT / "examples" / "github-workflow.yml"
SCRIPT = ROOT / "action" / "portctl_action.py"


def tool(name: str) -> str:
    """A command the test extra installs, from this interpreter's virtualenv first."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


def lint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, check=False, timeout=120)


def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    # The schemas are vendored in check-jsonschema: nothing is fetched.
    return lint(tool("check-jsonschema"), "--builtin-schema", schema, str(path))


def actionlint(*paths: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    # No shellcheck or pyflakes: the result must not depend on what else the machine has installed.
    return lint(tool("actionlint"), "-shellcheck=", "-pyflakes=", "-no-color", *paths, cwd=cwd)


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def dump(tmp_path: Path, doc: dict[str, Any], name: str) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def step(doc: dict[str, Any], step_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in doc["runs"]["steps"] if s.get("id") == step_id)
    return found


# -- the files pass the real tools ------------------------------------------------------------


def test_the_action_passes_githubs_action_schema(tmp_path: Path) -> None:
    """action.yml passes check-jsonschema's GitHub Actions schema, which rejects a composite run step with no shell."""
    assert check_jsonschema("vendor.github-actions", ACTION).returncode == 0
    broken = load(ACTION)
    del step(broken, "run")["shell"]
    assert check_jsonschema("vendor.github-actions", dump(tmp_path, broken, "action.yml")).returncode != 0


def test_the_example_workflow_passes_githubs_workflow_schema(tmp_path: Path) -> None:
    """The example workflow passes the GitHub Workflows schema, which rejects a permission level that does not exist."""
    assert check_jsonschema("vendor.github-workflows", WORKFLOW).returncode == 0
    broken = load(WORKFLOW)
    broken["jobs"]["plan"]["permissions"]["pull-requests"] = "writ"
    assert check_jsonschema("vendor.github-workflows", dump(tmp_path, broken, "workflow.yml")).returncode != 0


def test_the_example_workflow_passes_actionlint(tmp_path: Path) -> None:
    """actionlint passes the example workflow, and rejects it with a script-injection expression in a run step."""
    ran = actionlint(str(WORKFLOW.relative_to(ROOT)))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    injected = '      - run: echo "${{ github.event.pull_request.title }}"\n'
    broken = WORKFLOW.read_text().replace("      - name: Validate\n", injected + "      - name: Validate\n", 1)
    (tmp_path / ".git").mkdir()  # actionlint looks for the repository a workflow is in
    (tmp_path / "workflow.yml").write_text(broken)
    ran = actionlint("workflow.yml", cwd=tmp_path)
    assert ran.returncode != 0 and "github.event.pull_request.title" in ran.stdout


def steps_skipped_after_a_failure(workflow: dict[str, Any], job: str) -> list[str]:
    """The steps of `job` that use this action to comment and would be skipped when a step before them fails:
    a step runs after a failure only with a status function (`always()`, `!cancelled()`, `failure()`)."""
    skipped, first = [], True
    for s in workflow["jobs"][job]["steps"]:
        commenting = "portctl" in s.get("uses", "") and str(s.get("with", {}).get("comment", "true")) != "false"
        condition = str(s.get("if", ""))
        if commenting and not first and not re.search(r"always\(\)|cancelled\(\)|failure\(\)", condition):
            skipped.append(s.get("name", "?"))
        first = False
    return skipped


def test_the_example_plan_comments_whatever_failed_before_it() -> None:
    """The plan job's commenting step runs when a step before it failed (an invalid manifest, a missing snapshot
    branch), so the sticky comment is updated with the error instead of keeping an earlier run's plan."""
    workflow = load(WORKFLOW)
    assert steps_skipped_after_a_failure(workflow, "plan") == []
    assert any(s.get("id") == "plan" for s in workflow["jobs"]["plan"]["steps"])
    del next(s for s in workflow["jobs"]["plan"]["steps"] if s.get("id") == "plan")["if"]
    assert steps_skipped_after_a_failure(workflow, "plan") == ["Plan against the snapshot"]


def _repo_using_the_action(tmp_path: Path, workflow: str) -> Path:
    """A repository holding this action at its root and the example workflow using it from there (`./`), so
    that actionlint checks each `with:` and `steps.*.outputs.*` of the workflow against action.yml."""
    (tmp_path / ".git").mkdir(parents=True)
    shutil.copy(ACTION, tmp_path / "action.yml")
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "portctl.yml").write_text(workflow.replace("example/portctl@v0.1.0", "./"))
    return tmp_path


def test_the_example_workflow_uses_only_the_inputs_and_outputs_the_action_declares(tmp_path: Path) -> None:
    """actionlint, reading action.yml, accepts the example's inputs and outputs and rejects a misspelled input."""
    assert "example/portctl@v0.1.0" in WORKFLOW.read_text()
    ran = actionlint(cwd=_repo_using_the_action(tmp_path / "good", WORKFLOW.read_text()))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    misspelled = WORKFLOW.read_text().replace("max-snapshot-age:", "max-snapshot-ages:")
    ran = actionlint(cwd=_repo_using_the_action(tmp_path / "bad", misspelled))
    assert ran.returncode != 0 and 'input "max-snapshot-ages" is not defined' in ran.stdout


# -- no expression reaches a script; every output is set ---------------------------------------

_EXPRESSION = re.compile(r"\$\{\{")


def expressions_in_scripts(doc: dict[str, Any]) -> list[str]:
    """The steps whose shell `run:` or github-script `script:` holds a `${{ }}` expression: GitHub pastes its
    value into the script before it runs, so an input, a path or a pull request's text would run as code."""
    return [
        s.get("name", s.get("id", "?"))
        for s in doc["runs"]["steps"]
        if _EXPRESSION.search(str(s.get("run", ""))) or _EXPRESSION.search(str(s.get("with", {}).get("script", "")))
    ]


def test_no_expression_reaches_a_script_of_the_action() -> None:
    """Every value reaches the action's scripts through env:, and the check finds one pasted into a run or a script."""
    doc = load(ACTION)
    assert expressions_in_scripts(doc) == []
    pasted = load(ACTION)
    step(pasted, "run")["run"] += ' --manifest "${{ inputs.manifest }}"'
    labelled = next(s for s in pasted["runs"]["steps"] if "github-script" in s.get("uses", ""))
    labelled["with"]["script"] += "\nconsole.log('${{ github.event.pull_request.title }}')"
    assert expressions_in_scripts(pasted) == ["Run portctl", "Label the pull request"]


def outputs_not_set(doc: dict[str, Any]) -> list[str]:
    """The action's outputs that no step sets: the run step sets the script's OUTPUTS, a shell step what it
    echoes into $GITHUB_OUTPUT."""
    sets: dict[str, set[str]] = {}
    for s in doc["runs"]["steps"]:
        script = str(s.get("run", ""))
        names = set(re.findall(r'echo "([\w-]+)=.*>> "\$GITHUB_OUTPUT"', script))
        if 'portctl_action.py" run' in script:
            names |= set(pa.OUTPUTS)
        if "id" in s:
            sets[s["id"]] = names
    missing = []
    for name, output in doc["outputs"].items():
        m = re.fullmatch(r"\$\{\{ steps\.([\w-]+)\.outputs\.([\w-]+) \}\}", str(output.get("value", "")))
        if not m or m[2] not in sets.get(m[1], set()):
            missing.append(name)
    return missing


def test_every_output_the_action_declares_is_set_by_a_step() -> None:
    """Each output is a step's output that the step sets, and the check finds one that nothing sets."""
    doc = load(ACTION)
    assert set(doc["outputs"]) == set(pa.OUTPUTS)
    assert outputs_not_set(doc) == []
    doc["outputs"]["drift"] = {"description": "x", "value": "${{ steps.run.outputs.drift }}"}
    doc["outputs"]["add"]["value"] = "${{ steps.plan.outputs.add }}"
    assert outputs_not_set(doc) == ["add", "drift"]


# -- the script's pure parts -------------------------------------------------------------------


def env(**values: str) -> dict[str, str]:
    return {f"PORTCTL_ACTION_{k.upper()}": v for k, v in values.items()}


@pytest.mark.parametrize(
    ("given", "refusal"),
    [
        (env(command="apply", manifest="m.yaml"), "command is 'apply': use validate or plan"),
        (env(command="plan", manifest=""), "manifest is empty"),
        (env(command="plan", manifest="m.yaml"), "neither router nor snapshot is set"),
        (env(command="plan", manifest="m.yaml", router="http://r", snapshot="s.json"), "both router and snapshot"),
        (env(command="validate", manifest="m.yaml", snapshot="s.json"), "validate reads no router"),
        (env(command="plan", manifest="m.yaml", router="http://r", max_snapshot_age="1h"), "without a snapshot"),
        (env(command="plan", manifest="m.yaml", snapshot="s.json", summary="yes"), "summary is 'yes'"),
    ],
)
def test_inputs_that_make_no_command_are_refused(given: dict[str, str], refusal: str) -> None:
    """Inputs that do not make one portctl command are refused with a message saying which."""
    with pytest.raises(pa.BadInput, match=re.escape(refusal)):
        pa.inputs_from(given)


@pytest.mark.parametrize(
    ("given", "args"),
    [
        (env(command="validate", manifest="m.yaml"), ["validate", "m.yaml", "--format", "json"]),
        (
            env(command="plan", manifest="m.yaml", router="http://r/d.xml"),
            ["plan", "m.yaml", "--router", "http://r/d.xml", "--format", "json", "--detailed-exitcode"],
        ),
        (
            env(command="plan", manifest="m.yaml", snapshot="s.json", max_snapshot_age="24h"),
            [
                "plan",
                "m.yaml",
                "--snapshot",
                "s.json",
                "--max-snapshot-age",
                "24h",
                "--format",
                "json",
                "--detailed-exitcode",
            ],
        ),
    ],
)
def test_inputs_become_portctls_arguments(given: dict[str, str], args: list[str]) -> None:
    """A plan reads the router or the snapshot it is given, with the age limit, and keeps portctl's exit code."""
    assert pa.portctl_args(pa.inputs_from(given), "json") == args


def test_check_exits_1_with_an_annotation_on_bad_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    """`check` exits 1 and says what to set as an error annotation; good inputs pass."""
    assert pa.main(["check"], env(command="plan", manifest="m.yaml")) == 1
    assert capsys.readouterr().out.startswith("::error::portctl action: neither router nor snapshot is set")
    assert pa.main(["check"], env(command="plan", manifest="m.yaml", snapshot="s.json")) == 0


def test_a_long_plan_is_cut_to_fit_with_its_blocks_closed() -> None:
    """A plan past the limit keeps whole lines within it, closes the code block and <details> it cut into,
    and says how many lines were left out; one within the limit is kept whole."""
    text = "### Plan\n\n<details><summary>Foreign</summary>\n\n```text\n" + "".join(f"row {i}\n" for i in range(5000))
    cut = pa.cut(text, 10_000, "see the job summary")
    assert len(cut.encode()) <= 10_000
    kept = cut.split("\n```\n</details>\n\n**")
    assert len(kept) == 2 and text.startswith(kept[0])
    left = 5000 - kept[0].count("row ")
    assert kept[1] == f"{left} more lines were cut here**: see the job summary.\n"
    assert pa.cut("short\n", 10_000, "x") == "short\n"


def test_a_code_block_is_fenced_longer_than_any_backticks_it_holds() -> None:
    """A foreign mapping described with backticks cannot close the block that shows it."""
    assert pa.fenced("a ```` b") == "`````text\na ```` b\n`````"
    assert pa.fenced("plain") == "```text\nplain\n```"


def test_manifest_problems_become_annotations_on_their_lines() -> None:
    """An older portctl's `FILE:LINE:COL: message` lines become errors on those lines, escaped as GitHub reads them."""
    err = "error: m.yaml:4:7: $.mappings[0]: bad, 100%\nm.yaml:9:1: $.owner: missing\n"
    assert pa.annotations_from_text(err, "x") == [
        "::error file=m.yaml,line=4,col=7::$.mappings[0]: bad, 100%25",
        "::error file=m.yaml,line=9,col=1::$.owner: missing",
    ]
    assert pa.annotations_from_text("error: no route\nto host", "x") == ["::error::no route%0Ato host"]


def test_what_portctl_printed_reaches_the_log_as_text_not_commands() -> None:
    """Text from portctl (a foreign mapping's description) is logged between stop-commands and its token."""
    quiet = pa.quiet("::add-mask::secret")
    first, middle, last = quiet.splitlines()
    token = first.removeprefix("::stop-commands::")
    assert len(token) == 32 and middle == "::add-mask::secret" and last == f"::{token}::"


# -- the script on plans portctl prints --------------------------------------------------------

PRUNED = """\
apiVersion: portctl/v1
owner: test
prune: true
mappings:
  - name: web
    external_port: 8080
    internal_port: 80
    internal_client: 127.0.0.1
    description: nginx
"""

BLOCKED = (
    PRUNED
    + """\
  - name: clash
    external_port: 9999
    internal_client: 127.0.0.1
"""
)


def test_counts_come_from_the_json_plan(
    tmp_path: str, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The counts of `plan --format json`: five adds on an empty router; after apply, four removes once pruned."""
    path = write(tmp_path, MANIFEST)
    fresh = json.loads(portctl(capsys, "plan", path, "--router", emulator.url, "--format", "json").out)
    assert pa.counts(fresh) == pa.Counts(add=5, change=0, remove=0, replace=0, conflicts=0, has_changes=True)
    assert portctl(capsys, "apply", path, "--router", emulator.url, "--auto-approve").code == 0
    pruned = write(tmp_path, PRUNED)
    doc = json.loads(portctl(capsys, "plan", pruned, "--router", emulator.url, "--format", "json").out)
    assert pa.counts(doc) == pa.Counts(add=0, change=0, remove=4, replace=0, conflicts=0, has_changes=True)


def test_a_takeover_counts_as_a_replacement_and_labels_the_pull_request(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """A takeover deletes the foreign mapping before adding: `replace` 1 (and `change` 1, as portctl's
    summary counts it), so the removal label goes on though `remove` is 0; the foreign row is as it was."""
    emulator.router.add(8080, "TCP", "192.168.1.77", 8080, "old thing")
    before = snapshot(emulator)
    path = write(tmp_path, MANIFEST.replace("description: nginx", "description: nginx\n    on_conflict: takeover"))
    outputs, _, _ = run_script(tmp_path, command="plan", manifest=path, router=emulator.url)
    assert {k: outputs[k] for k in ("exit-code", "add", "change", "remove", "replace")} == {
        "exit-code": "2",
        "add": "4",
        "change": "1",
        "remove": "0",
        "replace": "1",
    }
    assert label_calls(outputs) == ["addLabels"]
    assert snapshot(emulator) == before


def label_calls(outputs: dict[str, str]) -> list[str]:
    """What action.yml's label script calls given these outputs, run by node with a recording `github`."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (GitHub's runners have it)")
    labelled = next(s for s in load(ACTION)["runs"]["steps"] if "github-script" in s.get("uses", ""))
    harness = (
        "const calls = [];\n"
        "const record = (name) => async () => { calls.push(name); };\n"
        "const github = { rest: { issues: { addLabels: record('addLabels'), removeLabel: record('removeLabel') } } };\n"
        "const context = { repo: { owner: 'o', repo: 'r' }, payload: { pull_request: { number: 1 } } };\n"
        f"(async () => {{\n{labelled['with']['script']}\n}})().then(() => console.log(JSON.stringify(calls)));\n"
    )
    step_env = {
        **os.environ,
        "PORTCTL_ACTION_LABEL": "portctl:removes",
        **{f"PORTCTL_ACTION_{k.upper()}": outputs[k] for k in ("remove", "replace")},
    }
    ran = subprocess.run([node, "-e", harness], capture_output=True, text=True, env=step_env, check=False, timeout=60)
    assert ran.returncode == 0, ran.stderr
    calls: list[str] = json.loads(ran.stdout)
    return calls


def test_the_label_comes_off_a_plan_that_deletes_nothing() -> None:
    """The label script takes the label off where nothing is removed or replaced, and puts it on for either."""
    assert label_calls({"remove": "0", "replace": "0"}) == ["removeLabel"]
    assert label_calls({"remove": "2", "replace": "0"}) == ["addLabels"]
    assert label_calls({"remove": "0", "replace": "3"}) == ["addLabels"]


def read_outputs(path: Path) -> dict[str, str]:
    """$GITHUB_OUTPUT as the runner reads it: `name<<DELIMITER`, the value's lines, the delimiter."""
    values, lines = {}, iter(path.read_text().splitlines())
    for line in lines:
        name, delimiter = line.split("<<", 1)
        value = []
        for inner in lines:
            if inner == delimiter:
                break
            value.append(inner)
        values[name] = "\n".join(value)
    return values


def run_script(tmp_path: Path, **inputs: str) -> tuple[dict[str, str], str, str]:
    """The action's run step as the runner runs it, with the portctl installed here: its outputs, its job
    summary and its log."""
    for name in ("output", "summary"):
        (tmp_path / name).write_text("")
    step_env = {
        **os.environ,
        **env(portctl=tool("portctl"), **inputs),
        "GITHUB_OUTPUT": str(tmp_path / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
        "RUNNER_TEMP": str(tmp_path),
        "NO_COLOR": "1",
    }
    ran = subprocess.run(
        [sys.executable, str(SCRIPT), "run"], capture_output=True, text=True, env=step_env, check=False, timeout=300
    )
    assert ran.returncode == 0, ran.stderr
    return read_outputs(tmp_path / "output"), (tmp_path / "summary").read_text(), ran.stdout


def test_a_plan_with_changes_sets_every_output(tmp_path: Path, emulator: EmulatorServer) -> None:
    """A plan that adds: exit code 2, the counts, the JSON plan as portctl printed it, the markdown in the job
    summary and in the comment; the foreign mapping is as it was."""
    emulator.router.add(*FOREIGN)
    before = snapshot(emulator)
    path = write(tmp_path, MANIFEST)
    outputs, summary, _ = run_script(tmp_path, command="plan", manifest=path, router=emulator.url)
    assert set(outputs) == set(pa.OUTPUTS)
    assert {k: outputs[k] for k in ("exit-code", "has-changes", "add", "change", "remove", "replace", "conflicts")} == {
        "exit-code": "2",
        "has-changes": "true",
        "add": "5",
        "change": "0",
        "remove": "0",
        "replace": "0",
        "conflicts": "0",
    }
    doc = json.loads(Path(outputs["plan-json"]).read_text())
    assert [c["action"] for c in doc["changes"]] == ["add"] * 5
    markdown = Path(outputs["plan-markdown"]).read_text()
    assert "8080" in markdown and summary == markdown + "\n"
    assert Path(outputs["comment-markdown"]).read_text() == markdown
    assert snapshot(emulator) == before


def test_a_plan_past_a_comment_keeps_every_row_in_the_summary(tmp_path: Path, emulator: EmulatorServer) -> None:
    """A plan whose markdown is past a comment's size: the job summary holds every foreign row (portctl rendered
    it to a summary's size), and the comment is portctl's own cut, within the limit, saying how many rows it
    left out; the action cuts nothing more."""
    for port in range(20000, 20400):
        emulator.router.add(port, "UDP", "192.168.1.77", port, f"row {port} " + "x" * 280)
    path = write(tmp_path, MANIFEST)
    outputs, summary, _ = run_script(tmp_path, command="plan", manifest=path, router=emulator.url)
    assert outputs["exit-code"] == "2"
    assert len(summary.encode()) > 2 * pa.COMMENT_LIMIT
    assert all(f"row {port} " in summary for port in range(20000, 20400))
    assert "left out" not in summary and "cut here" not in summary
    comment = Path(outputs["comment-markdown"]).read_text()
    assert len(comment.encode()) <= pa.COMMENT_LIMIT
    said = re.search(r"\*… (\d+) more foreign mappings left out to stay under (\d+) bytes", comment)
    assert said and int(said[2]) == pa.COMMENT_LIMIT, comment[-500:]
    assert int(said[1]) == 400 - len(re.findall(r"\| row \d+ ", comment))
    assert "cut here" not in comment


def test_a_blocked_plan_exits_1_after_writing_its_summary(tmp_path: Path, emulator: EmulatorServer) -> None:
    """A plan a foreign mapping blocks: exit code 1 for the last step to fail on, the conflict counted, the
    plan in the summary, an error annotation in the log."""
    emulator.router.add(*FOREIGN)
    path = write(tmp_path, BLOCKED)
    outputs, summary, log = run_script(tmp_path, command="plan", manifest=path, router=emulator.url)
    assert (outputs["exit-code"], outputs["conflicts"]) == ("1", "1")
    assert "9999" in summary
    assert f"::error::portctl plan {path}: blocked, refused or failed (exit 1)" in log


def test_an_invalid_manifest_is_annotated_on_its_line(tmp_path: Path, emulator: EmulatorServer) -> None:
    """A plan of an invalid manifest: exit code 1, no plan and no counts, the error in the summary and as an
    annotation on the manifest's line."""
    path = write(tmp_path, MANIFEST.replace("external_port: 8080", "external_port: 80800"))
    outputs, summary, log = run_script(tmp_path, command="plan", manifest=path, router=emulator.url)
    assert (outputs["exit-code"], outputs["plan-json"], outputs["remove"], outputs["has-changes"]) == ("1", "", "", "")
    assert "80800" in summary
    assert re.search(rf"^::error file={re.escape(path)},line=5,col=\d+(,title=[^:,]*)?::", log, re.MULTILINE), log


def test_validate_gives_its_verdict(tmp_path: Path) -> None:
    """validate: exit code 0 and the verdict for a valid manifest; 1 and an annotation on the line of an invalid one."""
    good = write(tmp_path, MANIFEST)
    outputs, summary, _ = run_script(tmp_path, command="validate", manifest=good)
    assert outputs["exit-code"] == "0" and "valid (5 router mappings" in summary
    bad = write(tmp_path, MANIFEST.replace("protocol: both", "protocol: sctp"), "bad.yaml")
    outputs, summary, log = run_script(tmp_path, command="validate", manifest=bad)
    assert outputs["exit-code"] == "1" and "sctp" in summary
    assert re.search(rf"^::error file={re.escape(bad)},line=11,col=\d+(,title=[^:,]*)?::", log, re.MULTILINE), log
    assert f"::error::portctl validate {bad}: invalid (exit 1)" in log


def test_an_older_portctl_without_markdown_gets_its_text_plan_in_a_code_block(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """Where portctl knows no --format markdown (a release before it), the markdown is its text plan in a code
    block under a heading that counts the removals."""
    real = pa.subprocess_runner(tool("portctl"), os.environ)

    def older(args: Sequence[str]) -> pa.Ran:
        if "markdown" in args or "github" in args:
            return pa.Ran(2, "", "portctl: error: argument --format: invalid choice")
        return real(args)

    path = write(tmp_path, MANIFEST)
    assert portctl_apply(path, emulator) == 0
    pruned = write(tmp_path, PRUNED)
    outputs = pa.run_action(env(command="plan", manifest=pruned, router=emulator.url), older, str(tmp_path))
    markdown = Path(outputs["plan-markdown"]).read_text()
    assert markdown.startswith(f"### ✅ portctl plan `{pruned}`: ⚠️ 4 to remove\n\n```text\n")
    assert "Plan: 0 to add, 0 to change, 4 to remove." in markdown


def portctl_apply(path: str, emulator: EmulatorServer) -> int:
    return subprocess.run(
        [tool("portctl"), "apply", path, "--router", emulator.url, "--auto-approve"],
        capture_output=True,
        check=False,
        timeout=300,
    ).returncode


def test_a_plan_portctl_cannot_make_fails_the_check(tmp_path: Path) -> None:
    """A plan portctl refuses as a usage error (exit 2, as a release without --snapshot does) is exit code 1,
    not 2 ("changes"), so the last step fails; its message is in the markdown."""
    calls: list[Sequence[str]] = []

    def without_snapshot(args: Sequence[str]) -> pa.Ran:
        calls.append(args)
        return pa.Ran(2, "", "portctl plan: error: unrecognized arguments: --snapshot s.json")

    given = env(command="plan", manifest="m.yaml", snapshot="s.json")
    outputs = pa.run_action(given, without_snapshot, str(tmp_path))
    assert (outputs["exit-code"], outputs["has-changes"], outputs["plan-json"]) == ("1", "", "")
    assert "unrecognized arguments: --snapshot" in Path(outputs["plan-markdown"]).read_text()
    assert [list(a[:2]) for a in calls] == [["plan", "m.yaml"], ["validate", "m.yaml"]]
