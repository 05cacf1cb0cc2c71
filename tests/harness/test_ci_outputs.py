"""Regression-CI outputs: `run --junit/--json`, `regress --junit/--json`, `--nodes-file`
(harness/ci.py) and UKEHI_CLUSTER for `ukehi kv`. The commands run through the real CLI
with the cluster replaced by stored verdicts: no node is started here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from harness import ci
from harness.cli import main
from harness.regress import Row
from harness.run import RunOutcome
from harness.store import new_run

INVALID = {"valid": False, "ops": 7, "checkers": {
    "linearizable": {"valid": False, "explanation": "could not linearize: 1: read -> 0", "failures": [
        {"blocked_index": 14}]},
    "stats": {"valid": True}}}
VALID = {"valid": True, "ops": 9, "checkers": {"linearizable": {"valid": True}, "stats": {"valid": True}}}
UNKNOWN = {"valid": "unknown", "ops": 3, "checkers": {"linearizable": {"valid": "unknown", "explanation": "time limit"}}}


def _history(path: Path) -> None:
    lines = [{"index": i, "time": i * 100_000_000, "process": 0, "type": "invoke" if i % 2 == 0 else "ok",
              "f": "read", "key": 1, "value": None if i % 2 == 0 else 0} for i in range(16)]
    (path / "history.jsonl").write_text("".join(json.dumps(op) + "\n" for op in lines), encoding="utf-8")


@pytest.fixture
def fake_runs(monkeypatch, tmp_path):
    """run_test replaced: seed 0 valid, seed 1 invalid, seed 2 unknown; records the specs."""
    seen: list[Any] = []

    def run_test(spec, **_: Any) -> RunOutcome:
        seen.append(spec)
        run = new_run(spec.results_dir, spec.name)
        _history(run.path)
        verdict = [VALID, INVALID, UNKNOWN][spec.seed % 3]
        run.write_json("results.json", verdict)
        return RunOutcome(run, json.loads(json.dumps(verdict)))

    monkeypatch.setattr("harness.run.run_test", run_test)
    return seen


def _args(tmp_path: Path, *more: str) -> list[str]:
    return ["run", "--workload", "register", "--nemesis", "none", "--results-dir", str(tmp_path / "results"),
            "--time-limit", "1", *more]


def test_run_junit_one_case_per_run(fake_runs, tmp_path, capsys):
    junit = tmp_path / "junit.xml"
    code = main(_args(tmp_path, "--test-count", "3", "--junit", str(junit)))
    assert code == 1  # the worst of valid, invalid, unknown
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuites" and suite.get("tests") == "3"
    assert suite.get("failures") == "1" and suite.get("errors") == "1"
    cases = suite.findall("testsuite/testcase")
    assert [c.get("name") for c in cases] == ["seed 0", "seed 1", "seed 2"]
    assert cases[0].find("failure") is None and cases[0].find("error") is None
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message") == "invalid: linearizable"
    assert "could not linearize" in failure.text
    assert cases[2].find("error").get("message").startswith("unknown: linearizable")
    props = {p.get("name"): p.get("value") for p in cases[1].findall("properties/property")}
    assert props["checker.linearizable"] == "invalid" and props["run_dir"].startswith(str(tmp_path))
    assert "VALID" in capsys.readouterr().out  # without --json the summary stays on stdout


def test_run_json_is_the_only_thing_on_stdout(fake_runs, tmp_path, capsys):
    code = main(_args(tmp_path, "--seed", "1", "--json"))
    out, err = capsys.readouterr()
    assert code == 1
    doc = json.loads(out)
    assert doc["valid"] is False and len(doc["runs"]) == 1
    assert doc["runs"][0]["results"]["checkers"]["linearizable"]["valid"] is False
    assert Path(doc["runs"][0]["run_dir"]).is_dir() and doc["runs"][0]["seed"] == 1
    assert "INVALID" in err and sys.stdout is not sys.stderr


def test_run_refuses_an_unwritable_junit_before_running(fake_runs, tmp_path, capsys):
    code = main(_args(tmp_path, "--junit", str(tmp_path / "missing" / "junit.xml")))
    assert code == 254 and not fake_runs
    assert "does not exist" in capsys.readouterr().err


def test_nodes_file_merges_with_nodes(fake_runs, tmp_path, capsys):
    nodes = tmp_path / "nodes"
    nodes.write_text("# the test hosts\nn3\n\nn4  # spare\nn1\n", encoding="utf-8")
    assert main(_args(tmp_path, "--nodes", "n1,n2", "--nodes-file", str(nodes))) == 0
    assert fake_runs[-1].nodes == ("n1", "n2", "n3", "n4")
    assert main(_args(tmp_path, "--nodes-file", str(nodes))) == 0
    assert fake_runs[-1].nodes == ("n3", "n4", "n1")
    assert main(_args(tmp_path, "--nodes-file", str(tmp_path / "none"))) == 254
    assert "--nodes-file" in capsys.readouterr().err
    (tmp_path / "empty").write_text("# nothing\n", encoding="utf-8")
    assert main(_args(tmp_path, "--nodes-file", str(tmp_path / "empty"))) == 254
    assert "no node names" in capsys.readouterr().err


def test_read_nodes_file_refuses_lists_on_one_line(tmp_path):
    f = tmp_path / "nodes"
    f.write_text("n1,n2\n", encoding="utf-8")
    with pytest.raises(ci.CIError, match="line 1"):
        ci.read_nodes_file(str(f))


def _row(bug: str, outcome: str, ok: bool, caught: list[str], detail: str = "") -> Row:
    return Row(bug, "register", "partition", 11, 20.0, outcome, ok, caught, 4.2 if caught else None,
               "/r/x", 31.0, detail)


def test_regress_cases():
    cases = ci.regress_cases([_row("(correct build)", "valid", True, []),
                              _row("stale-read", "detected", True, ["linearizable"]),
                              _row("forget-vote", "escaped", False, [], "verdict True"),
                              _row("(correct build)", "FALSE ALARM", False, ["linearizable"], "judged invalid"),
                              _row("no-crc-check", "error", False, [], "RuntimeError: boom")])
    assert [c.status for c in cases] == ["passed", "passed", "failure", "failure", "error"]
    assert cases[2].message == "escaped: verdict True" and cases[3].message.startswith("FALSE ALARM")
    root = ET.fromstring(ci.junit_xml("ukehi-jepsen regress", cases))
    assert root.get("failures") == "2" and root.get("errors") == "1" and root.get("tests") == "5"
    names = [c.get("name") for c in root.iter("testcase")]
    assert names[1] == "stale-read (seed 11)"


def test_regress_command_junit_and_json(monkeypatch, tmp_path, capsys):
    import harness.regress as regress

    def runner(spec):
        run = new_run(spec.results_dir, spec.name)
        _history(run.path)
        bug = spec.node_options.get("unsafe_bug")
        return RunOutcome(run, json.loads(json.dumps(INVALID if bug == "stale-read" else VALID)))

    real = regress.run_suite
    monkeypatch.setattr(regress, "run_suite", lambda *a, **k: real(*a, **k, runner=runner))
    junit = tmp_path / "regress.xml"
    code = main(["regress", "--quick", "--no-sim", "--only", "stale-read,ack-before-commit", "--results-dir",
                 str(tmp_path / "results"), "--junit", str(junit), "--json"])
    out, err = capsys.readouterr()
    assert code == 1  # ack-before-commit "escaped" (the fake run was valid)
    doc = json.loads(out)
    assert doc["ok"] is False and doc["summary"]["escaped"] == ["ack-before-commit"]
    assert [r["outcome"] for r in doc["rows"]] == ["detected", "escaped"] and Path(doc["table_dir"]).is_dir()
    assert "planted bugs detected: 1/2" in err
    cases = ET.parse(junit).getroot().findall("testsuite/testcase")
    assert [c.get("name").split(" ")[0] for c in cases] == ["stale-read", "ack-before-commit"]
    assert cases[0].find("failure") is None and cases[1].find("failure") is not None


def _kv(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "UKEHI_CLUSTER"} | env
    return subprocess.run([sys.executable, "-m", "ukehi.cli", "kv", *args], env=full, capture_output=True,
                          text=True, timeout=60)


def test_ukehi_kv_cluster_defaults_to_ukehi_cluster():
    missing = _kv({}, "get", "k")
    assert missing.returncode == 254 and "--cluster" in missing.stderr
    # a cluster from the environment is used: nothing listens there, so the read certainly did nothing (1)
    from_env = _kv({"UKEHI_CLUSTER": "127.0.0.1:1"}, "get", "k", "--timeout", "1")
    assert from_env.returncode == 1 and "127.0.0.1:1" in from_env.stderr
    # --cluster still wins over the environment
    flag = _kv({"UKEHI_CLUSTER": "127.0.0.1:1"}, "get", "k", "--cluster", "not-an-address")
    assert flag.returncode == 254 and "not-an-address" in flag.stderr
