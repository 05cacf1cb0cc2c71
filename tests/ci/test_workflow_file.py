"""docs/ci/ukehi-jepsen.yml as GitHub would run it, checked offline (issue 16).

tests/test_ci_workflow.py checks the file's shape, its scripts' syntax (bash -n, shellcheck) and
that every ``ukehi-jepsen`` line parses with the real CLI. This file checks what the workflow
*does*, which no runner can be asked about from here: which job each event starts, that the
push job runs the quick regress and the nightly one a ``--test-count`` series and the full
suite, that both set up with the README's setup (scripts/setup) and install what it needs,
that every key and action input is one GitHub and the pinned action accept (actionlint's job;
actionlint itself could not be installed here), and that the files root writes in the run
steps are made readable before the upload step, running as the runner user, reads them.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "docs" / "ci" / "ukehi-jepsen.yml"
SETUP = ROOT / "scripts" / "setup"

EVENTS = ("push", "pull_request", "schedule", "workflow_dispatch")

# Keys GitHub accepts (docs.github.com, "Workflow syntax for GitHub Actions"); a misspelt key
# (`timeout-minute`, `with` under a script step) makes GitHub refuse the whole file.
WORKFLOW_KEYS = {"name", "run-name", "on", "permissions", "env", "defaults", "concurrency", "jobs"}
JOB_KEYS = {"name", "needs", "permissions", "if", "runs-on", "environment", "concurrency", "outputs",
            "env", "defaults", "steps", "timeout-minutes", "strategy", "continue-on-error",
            "container", "services", "uses", "with", "secrets"}
STEP_KEYS = {"id", "if", "name", "uses", "run", "working-directory", "shell", "with", "env",
             "continue-on-error", "timeout-minutes"}
PERMISSION_SCOPES = {"actions", "attestations", "checks", "contents", "deployments", "id-token",
                     "issues", "discussions", "packages", "pages", "pull-requests",
                     "repository-projects", "security-events", "statuses"}

# Each pinned action's inputs, from its action.yml at that major version. An input the action
# does not declare is only a warning on GitHub, and the setting silently does nothing.
ACTION_INPUTS = {
    "actions/checkout@v4": {"repository", "ref", "token", "ssh-key", "ssh-known-hosts", "ssh-strict",
                            "ssh-user", "persist-credentials", "path", "clean", "filter",
                            "sparse-checkout", "sparse-checkout-cone-mode", "fetch-depth",
                            "fetch-tags", "show-progress", "lfs", "submodules",
                            "set-safe-directory", "github-server-url"},
    "actions/setup-python@v5": {"python-version", "python-version-file", "cache", "architecture",
                                "check-latest", "token", "cache-dependency-path",
                                "update-environment", "allow-prereleases", "freethreaded"},
    "actions/upload-artifact@v4": {"name", "path", "if-no-files-found", "retention-days",
                                   "compression-level", "overwrite", "include-hidden-files"},
    "mikepenz/action-junit-report@v4": {"token", "report_paths", "test_files_prefix",
                                        "exclude_sources", "suite_regex", "annotate_only",
                                        "update_check", "check_name", "commit", "fail_on_failure",
                                        "require_tests", "require_passed_tests", "include_passed",
                                        "check_title_template", "summary", "check_retries",
                                        "transformers", "job_summary", "detailed_summary",
                                        "flaky_summary", "annotate_notice", "follow_symlink",
                                        "job_name", "check_annotations", "comment", "updateComment",
                                        "include_time_in_summary", "group_suite",
                                        "skip_success_summary", "truncate_stack_traces"},
}
REQUIRED_INPUTS = {"actions/upload-artifact@v4": {"path"},
                   "mikepenz/action-junit-report@v4": {"report_paths"}}

# What scripts/setup may ask apt for that the workflow does not install, and why that is right.
# GitHub's ubuntu-24.04 image (actions/runner-images, images/ubuntu/toolsets/toolset-2404.json and
# scripts/build/install-google-chrome.sh) ships these; Ubuntu's own apt `chromium` would only
# install a snap stub.
NOT_FROM_APT = {
    "chromium": "the image links /usr/bin/chromium (a Chromium snapshot)",
    "chromium-driver": "the image links /usr/bin/chromedriver (Chrome for Testing)",
    "shellcheck": "in the image's apt packages",
    "sudo": "in the image's apt packages",
    "openssh-server": "the image's `ssh` package brings sshd",
    "mmdebstrap": "only for `ukehi-jepsen image build --offline` (the docker tests), not run here",
}


def load() -> dict[str, Any]:
    # PyYAML reads the key `on` as the boolean True (YAML 1.1); GitHub reads it as "on".
    data = yaml.safe_load(WORKFLOW.read_text())
    if True in data:
        data["on"] = data.pop(True)
    return data


JOBS: dict[str, Any] = load()["jobs"]


def words_of(script: str) -> Iterator[list[str]]:
    """Each command of a ``run:`` script as words (continuations joined, comments dropped)."""
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            yield words


def jepsen_lines(job: dict[str, Any]) -> list[list[str]]:
    """The ``ukehi-jepsen`` command lines of a job, from the subcommand on, redirections cut."""
    out = []
    for step in job["steps"]:
        for words in words_of(step.get("run", "")):
            for i, word in enumerate(words):
                if word.endswith("bin/ukehi-jepsen"):
                    rest = words[i + 1:]
                    cut = next((j for j, w in enumerate(rest) if w in (">", ">>", "|", "&&", ";")), len(rest))
                    out.append(rest[:cut])
    return out


def option(args: list[str], name: str) -> str | None:
    for i, word in enumerate(args):
        if word == name:
            return args[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def runs_on(condition: str | None, event: str) -> bool:
    """A job's ``if:`` evaluated for ``event``: the subset this workflow uses (comparisons of
    github.event_name with quoted events, joined by || and &&, in parentheses or not)."""
    if condition is None:
        return True
    expr = condition.strip()
    if expr.startswith("${{") and expr.endswith("}}"):
        expr = expr[3:-2]
    rest = re.sub(r"github\.event_name|'[^']*'|==|!=|\|\||&&|[()\s]", "", expr)
    assert rest == "", f"the test's evaluator does not know {rest!r} in {condition!r}: extend it"
    python = (expr.replace("github.event_name", repr(event)).replace("||", " or ")
              .replace("&&", " and "))
    return bool(eval(python, {"__builtins__": {}}))  # only quoted names and comparisons remain


def jobs_for(event: str) -> set[str]:
    return {name for name, job in JOBS.items() if runs_on(job.get("if"), event)}


def test_every_key_is_one_github_accepts() -> None:
    data = load()
    assert set(data) <= WORKFLOW_KEYS, set(data) - WORKFLOW_KEYS
    assert set(data.get("permissions", {})) <= PERMISSION_SCOPES
    assert set(data["permissions"].values()) <= {"read", "write", "none"}
    for name, job in JOBS.items():
        assert re.fullmatch(r"[A-Za-z_][\w-]*", name), f"job ids are letters, digits, - and _: {name}"
        assert set(job) <= JOB_KEYS, (name, set(job) - JOB_KEYS)
        for step in job["steps"]:
            assert set(step) <= STEP_KEYS, (name, step.get("name"), set(step) - STEP_KEYS)
            if "run" in step:
                assert "with" not in step, f"{name}: a script step takes no `with`: {step.get('name')}"


def test_every_action_input_is_declared_by_the_pinned_action() -> None:
    for name, job in JOBS.items():
        for step in job["steps"]:
            if "uses" not in step:
                continue
            assert step["uses"] in ACTION_INPUTS, f"{name}: add {step['uses']}'s inputs to ACTION_INPUTS"
            given, declared = set(step.get("with", {})), ACTION_INPUTS[step["uses"]]
            assert given <= declared, (name, step["uses"], given - declared)
            assert REQUIRED_INPUTS.get(step["uses"], set()) <= given, (name, step["uses"])


def test_each_event_starts_the_job_it_should() -> None:
    # a push or a pull request: the quick job only; the nightly schedule: the long job only;
    # a manual dispatch may start both
    assert jobs_for("push") == {"quick-regress"}
    assert jobs_for("pull_request") == {"quick-regress"}
    assert jobs_for("schedule") == {"nightly"}
    assert "nightly" in jobs_for("workflow_dispatch")
    for cron in load()["on"]["schedule"]:
        minute, hour, day, month, weekday = cron["cron"].split()
        assert (day, month, weekday) == ("*", "*", "*"), f"nightly means every day: {cron}"
        assert 0 <= int(minute) < 60 and 0 <= int(hour) < 24, cron


def test_the_evaluator_reads_conditions_the_way_github_does() -> None:
    """runs_on is not vacuous: it tells the events apart and refuses what it cannot read."""
    assert runs_on("github.event_name != 'schedule'", "push")
    assert not runs_on("github.event_name != 'schedule'", "schedule")
    assert runs_on("${{ github.event_name == 'schedule' || github.event_name == 'push' }}", "push")
    assert not runs_on("github.event_name == 'schedule' && github.event_name == 'push'", "push")
    with pytest.raises(AssertionError, match="does not know"):
        runs_on("github.ref == 'refs/heads/main'", "push")


def test_the_push_job_runs_the_quick_regress_and_the_nightly_a_series_and_the_full_suite() -> None:
    quick = jepsen_lines(JOBS["quick-regress"])
    assert [c[0] for c in quick] == ["regress"] and "--quick" in quick[0], quick
    nightly = jepsen_lines(JOBS["nightly"])
    runs = [c for c in nightly if c[0] == "run"]
    assert runs, nightly
    for args in runs:
        count = option(args, "--test-count")
        assert count is not None and int(count) >= 2, f"the nightly run is a --test-count series: {args}"
    regress = [c for c in nightly if c[0] == "regress"]
    assert regress and all("--quick" not in c for c in regress), "nightly runs the full suite"
    assert JOBS["nightly"]["timeout-minutes"] > JOBS["quick-regress"]["timeout-minutes"]


def test_every_junit_file_is_one_the_publish_step_picks_up() -> None:
    for name, job in JOBS.items():
        publish = [s for s in job["steps"]
                   if s.get("uses", "").startswith("mikepenz/action-junit-report@")]
        assert len(publish) == 1, name
        patterns = [p.strip() for p in re.split(r"[,\n]", publish[0]["with"]["report_paths"]) if p.strip()]
        junit = [option(c, "--junit") for c in jepsen_lines(job)]
        assert junit and all(junit), f"{name}: every ukehi-jepsen line writes JUnit XML"
        for path in junit:
            assert any(fnmatch.fnmatch(path, p) for p in patterns), f"{name}: {path} not in {patterns}"
            assert path.startswith("results/"), f"{name}: {path} is outside the uploaded store"
        for args in jepsen_lines(job):
            assert option(args, "--results-dir") == "results", f"{name}: {args}"


def test_both_jobs_set_up_with_the_readmes_setup_before_using_the_venv() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "scripts/setup" in (ROOT / "quickstart").read_text() and "./quickstart" in readme
    pyproject = (ROOT / "pyproject.toml").read_text()
    minimum = re.search(r'requires-python = ">=(\d+)\.(\d+)"', pyproject)
    assert minimum
    for name, job in JOBS.items():
        scripts = [(i, s["run"]) for i, s in enumerate(job["steps"]) if "run" in s]
        setup_at = [i for i, run in scripts if any(w[:2] == ["bash", "scripts/setup"] for w in words_of(run))]
        assert setup_at, f"{name}: installs with `bash scripts/setup`, as the README does"
        venv_at = [i for i, run in scripts if ".venv/" in run]
        assert venv_at and min(venv_at) > setup_at[0], f"{name}: .venv used before scripts/setup made it"
        python = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
        assert python and python[0]["with"]["python-version"] == "{}.{}".format(*minimum.groups()), \
            f"{name}: CI tests the oldest Python pyproject.toml allows"
        assert job["steps"].index(python[0]) < setup_at[0], f"{name}: scripts/setup runs that Python"


def setup_apt_packages() -> set[str]:
    """Every package scripts/setup may ask apt for (its ``need_apt+=(...)`` lines)."""
    found = set()
    for group in re.findall(r"need_apt\+=\(([^)]*)\)", SETUP.read_text()):
        found.update(group.split())
    return found


def test_the_apt_step_installs_what_scripts_setup_needs_and_the_image_lacks() -> None:
    wanted = setup_apt_packages()
    assert {"iproute2", "chromium", "libfaketime"} <= wanted, "scripts/setup's need_apt lines moved"
    for name, job in JOBS.items():
        installed: set[str] = set()
        for step in job["steps"]:
            for words in words_of(step.get("run", "")):
                if words[:1] == ["sudo"]:
                    words = words[1:]
                if words[:2] == ["apt-get", "install"]:
                    installed.update(w for w in words[2:] if not w.startswith("-"))
        assert installed, f"{name}: installs the system tools"
        assert installed <= wanted, f"{name}: installs what scripts/setup does not know: {installed - wanted}"
        missing = wanted - installed - set(NOT_FROM_APT)
        assert not missing, (f"{name}: scripts/setup needs {missing}: install them in the workflow, "
                             "or say in NOT_FROM_APT why GitHub's image already has them")


def test_what_root_writes_is_made_readable_before_the_upload_reads_it() -> None:
    """The run steps run as root (sudo, for network namespaces): every node's TLS key is a
    0600 root file and its tls/ directory 0700, which the upload step, running as the runner
    user, cannot read; a chown back to the runner, even after a failure, comes first."""
    for name, job in JOBS.items():
        steps = job["steps"]
        as_root = [i for i, s in enumerate(steps)
                   if any(w[:1] == ["sudo"] and any(x.endswith("bin/ukehi-jepsen") for x in w)
                          for w in words_of(s.get("run", "")))]
        assert as_root, name
        chown = [i for i, s in enumerate(steps)
                 if re.search(r"\bsudo chown -R .+ results$", s.get("run", ""), re.M)]
        assert chown, f"{name}: no step gives the results back to the runner user"
        readers = [i for i, s in enumerate(steps) if s.get("uses", "").split("@")[0]
                   in ("actions/upload-artifact", "mikepenz/action-junit-report")]
        assert max(as_root) < chown[0] < min(readers), name
        assert steps[chown[0]].get("if") == "always()", f"{name}: a failed run's results matter most"


def test_the_readme_section_describes_this_workflow() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Regression CI", 1)[1].split("\n## ", 1)[0]
    assert "docs/ci/ukehi-jepsen.yml" in section
    for args in jepsen_lines(JOBS["nightly"]):
        if args[0] == "run":
            assert f"--test-count {option(args, '--test-count')}" in section, "README and workflow disagree"
    assert "regress --quick" in section and ".ci/run" in section
