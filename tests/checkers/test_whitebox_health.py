"""White-box node health: unexpected error- and fatal-level events fail the run."""

from __future__ import annotations

from checkers.whitebox import EXPECTED, check_node_health, read_cluster
from whitebox_nodes import healthy, write_all


def check(tmp_path):
    return check_node_health(read_cluster(tmp_path / "nodes"))


def test_an_error_event_is_caught_and_named(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n2"].log("step-failed", level="error", type="append", src="n1", term=1, error="KeyError(7)")
    write_all(nodes)
    result = check(tmp_path)
    assert result["valid"] is False
    v = result["violations"][0]
    assert (v["node"], v["event"], v["pid"]) == ("n2", "step-failed", 101)
    assert "n2 (pid 101) logged level=error event=step-failed" in result["explanation"]


def test_a_fail_stop_invariant_violation_is_caught(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n3"].log("invariant-violated", level="fatal", invariant="commit-went-back", detail="commit 7 < 9")
    write_all(nodes)
    result = check(tmp_path)
    assert result["valid"] is False and "event=invariant-violated" in result["explanation"]


def test_a_traceback_on_stderr_is_caught(tmp_path):
    nodes = healthy(tmp_path)
    write_all(nodes)
    nodes["n1"].write_log("Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: boom\n")
    result = check(tmp_path)
    assert result["valid"] is False and "event=traceback" in result["explanation"]


def test_refuse_start_is_expected_only_under_refuse_start(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n2"].start(policy="refuse-start").log(
        "corruption-report", level="error", kind="crc-mismatch", action="refused").log(
        "refuse-start", level="error", reason="WAL corruption in wal-00000001.seg at byte offset 40")
    write_all(nodes)
    result = check(tmp_path)
    assert result["valid"] is True, result
    assert result["expected_events"] == 2
    nodes["n3"].start(policy="truncate-to-last-good").log("refuse-start", level="error", reason="?")
    write_all(nodes)
    assert check(tmp_path)["valid"] is False
    assert set(EXPECTED) == {"refuse-start", "corruption-report"}


def test_warnings_are_not_failures(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n1"].log("unsafe-bug", level="warning", bug="stale-read").log("log-hole", level="warning")
    write_all(nodes)
    assert check(tmp_path)["valid"] is True
