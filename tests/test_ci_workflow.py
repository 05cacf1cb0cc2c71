"""The GitHub Actions recipe in docs/ci/ukehi-jepsen.yml, checked without GitHub.

No runner can be reached from here, so the workflow is checked piece by piece against what
would break it on GitHub: the file's structure (jobs, steps, triggers, the contexts its
expressions read), every ``run:`` script's shell syntax (and shellcheck's warnings where
shellcheck is installed), and every ``ukehi-jepsen`` command line in it parsed by the real CLI,
so a renamed or removed flag fails here before it fails a user's nightly job. The quick job's
regress line itself runs in CI (tests/regress/test_regress_suite.py runs ``regress --quick``).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import typer
import yaml

from harness.cli import build_app

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "docs" / "ci" / "ukehi-jepsen.yml"

# Contexts a workflow expression may read (docs.github.com, "Contexts").
CONTEXTS = {"github", "env", "vars", "job", "jobs", "steps", "runner", "secrets", "strategy",
            "matrix", "needs", "inputs"}
# Status functions and literals allowed in an `if:` besides contexts.
IF_WORDS = {"always", "success", "failure", "cancelled", "true", "false", "null"}
EVENTS = {"push", "pull_request", "schedule", "workflow_dispatch"}


def load() -> dict[str, Any]:
    # PyYAML reads the key `on` as the boolean True (YAML 1.1); GitHub reads it as "on".
    data = yaml.safe_load(WORKFLOW.read_text())
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps() -> Iterator[tuple[str, dict[str, Any]]]:
    for job_name, job in load()["jobs"].items():
        for step in job["steps"]:
            yield job_name, step


def run_scripts() -> list[tuple[str, str]]:
    return [(f"{job}: {step.get('name', '?')}", step["run"]) for job, step in steps() if "run" in step]


def command_lines(script: str) -> list[list[str]]:
    """Each shell command of ``script`` as words: continuation lines joined, sudo dropped,
    redirections cut off."""
    out = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "sudo":
            words = words[1:]
        for i, word in enumerate(words):
            if word in (">", ">>", "2>", "|", "&&", ";"):
                words = words[:i]
                break
        out.append(words)
    return out


def jepsen_commands() -> list[list[str]]:
    return [words[1:] for _, script in run_scripts() for words in command_lines(script)
            if words and words[0].endswith("bin/ukehi-jepsen")]


def _rest(ctx: Any) -> list[str]:
    """The words after the group's own options: the subcommand and its arguments (click keeps
    the subcommand's name apart, as ``protected_args`` or, in typer's own click, ``_protected_args``)."""
    protected = getattr(ctx, "protected_args", None)
    if protected is None:
        protected = getattr(ctx, "_protected_args", [])
    return [*protected, *ctx.args]


def test_the_workflow_has_the_jobs_and_triggers_the_readme_promises() -> None:
    data = load()
    assert set(data["on"]) <= EVENTS and {"push", "pull_request", "schedule"} <= set(data["on"])
    for cron in data["on"]["schedule"]:
        assert len(cron["cron"].split()) == 5, cron
    jobs = data["jobs"]
    assert {"quick-regress", "nightly"} <= set(jobs)
    for name, job in jobs.items():
        assert job["runs-on"], name
        assert 0 < job["timeout-minutes"] <= 360, f"{name}: GitHub's limit is 360 minutes"
        assert job["steps"], name
    # each job's results reach the user: JUnit published and the store uploaded, even on failure
    for name, job in jobs.items():
        uses = {step.get("uses", "").split("@")[0]: step for step in job["steps"]}
        assert uses["actions/upload-artifact"]["with"]["path"].rstrip("/") == "results", name
        assert uses["actions/upload-artifact"]["if"] == "always()", name
        assert uses["mikepenz/action-junit-report"]["with"]["report_paths"].startswith("results/"), name


def test_every_step_is_a_pinned_action_or_a_script() -> None:
    for job, step in steps():
        assert ("uses" in step) != ("run" in step), f"{job}: a step has exactly one of uses/run: {step}"
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), \
                f"{job}: pin actions to a major version (owner/name@vN): {step['uses']}"


def test_expressions_read_only_contexts_github_knows() -> None:
    text = WORKFLOW.read_text()
    expressions = re.findall(r"\$\{\{(.*?)\}\}", text)
    assert expressions, "the artifact names use ${{ github.run_id }}"
    for expr in expressions:
        for name in re.findall(r"\b([A-Za-z_][\w-]*)\.", expr):
            assert name in CONTEXTS, f"unknown context {name!r} in ${{{{{expr}}}}}"
    for job, step in list(steps()) + [(name, job) for name, job in load()["jobs"].items()]:
        condition = step.get("if")
        if condition is None:
            continue
        for quoted in re.findall(r"'([^']*)'", condition):
            assert quoted in EVENTS, f"{job}: if compares with an event GitHub never sends: {quoted!r}"
        words = set(re.findall(r"\b([A-Za-z_][\w-]*)\b", re.sub(r"'[^']*'", "", condition)))
        assert words <= CONTEXTS | IF_WORDS | {"event_name"}, f"{job}: {condition}"


@pytest.mark.parametrize("where,script", run_scripts(), ids=lambda v: v if isinstance(v, str) and ":" in v else None)
def test_every_script_is_valid_bash(where: str, script: str, tmp_path: Path) -> None:
    # GitHub runs `run:` with `bash -e {0}` on Linux runners.
    path = tmp_path / "step.sh"
    path.write_text(script)
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, f"{where}: {done.stderr}"
    if shutil.which("shellcheck"):
        done = subprocess.run(["shellcheck", "--shell=bash", "--severity=warning", str(path)],
                              capture_output=True, text=True)
        assert done.returncode == 0, f"{where}:\n{done.stdout}"


def test_every_ukehi_jepsen_command_parses_with_the_real_cli() -> None:
    commands = jepsen_commands()
    assert {c[0] for c in commands} >= {"regress", "run"}, commands
    root = typer.main.get_command(build_app())
    for args in commands:
        # click parses (options, types, choices) without running: a renamed flag fails here
        ctx = root.make_context("ukehi-jepsen", list(args))
        name, command, rest = root.resolve_command(ctx, _rest(ctx))
        assert command is not None, args
        sub = command.make_context(name, rest, parent=ctx)
        given = {k: v for k, v in sub.params.items() if v not in (None, False, (), [])}
        assert given.get("results_dir") is not None, f"{args}: results go to the uploaded store"
        if "--junit" in args:
            assert str(given["junit"]).startswith("results/"), args


def test_a_renamed_flag_would_be_caught() -> None:
    """The parse check above is not vacuous: the same parser refuses a flag that doesn't exist."""
    root = typer.main.get_command(build_app())
    ctx = root.make_context("ukehi-jepsen", ["regress", "--quick", "--no-such-flag"])
    name, command, rest = root.resolve_command(ctx, _rest(ctx))
    with pytest.raises(Exception, match="no-such-flag|No such option"):
        command.make_context(name, rest, parent=ctx)


def test_the_pytest_step_selects_with_registered_markers() -> None:
    from _pytest.mark.expression import Expression

    registered = set(re.findall(r'^\s*"(\w+):', (ROOT / "pyproject.toml").read_text(), re.M))
    selections = []
    for _, script in run_scripts():
        for words in command_lines(script):
            if "pytest" in words:  # `python -m pytest -m EXPR`: the -m after pytest selects
                after = words[words.index("pytest") + 1:]
                if "-m" in after:
                    selections.append(after[after.index("-m") + 1])
    assert selections, "the quick job runs the fast tests"
    for expression in selections:
        names = set(re.findall(r"\b(\w+)\b", expression)) - {"and", "or", "not"}
        assert names <= registered, f"-m {expression!r} names markers pyproject.toml does not register"
        compiled = Expression.compile(expression)
        assert not compiled.evaluate(lambda m: m == "slow")
        assert compiled.evaluate(lambda m: False)
