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
    assert set(EXPECTED) == {"refuse-start", "corruption-report", "listen-failed"}


IN_USE = "[Errno 98] error while attempting to bind on address ('127.0.0.1', 7001): address already in use"


def test_port_in_use_on_a_restart_is_the_environment_not_the_build(tmp_path):
    nodes = healthy(tmp_path)
    # the nemesis killed n2 and restarted it; the restart found its port taken
    nodes["n2"].log("starting", pid=202, policy="truncate-to-last-good").log(
        "listen-failed", level="error", address="127.0.0.1:7001", error=IN_USE)
    write_all(nodes)
    result = check(tmp_path)
    assert result["valid"] is True, result
    assert result["expected_events"] == 1
    assert result["expected"][0]["node"] == "n2" and "EADDRINUSE" in result["expected"][0]["why"]
    assert "listen-failed on n2 (pid 202)" in result["explanation"]


def test_port_in_use_at_the_first_start_or_another_listen_error_still_fails(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n1"].log("listen-failed", level="error", address="127.0.0.1:7000", error=IN_USE)
    write_all(nodes)
    result = check(tmp_path)  # n1's first process: the harness had just picked the port as free
    assert result["valid"] is False and "event=listen-failed" in result["explanation"]
    other = tmp_path / "other"
    nodes = healthy(other)
    nodes["n3"].log("starting", pid=303).log(
        "listen-failed", level="error", address="10.9.9.9:7002",
        error="[Errno 99] cannot assign requested address")
    write_all(nodes)
    assert check(other)["valid"] is False  # a bad address is not a taken port


def test_warnings_are_not_failures(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n1"].log("unsafe-bug", level="warning", bug="stale-read").log("log-hole", level="warning")
    write_all(nodes)
    assert check(tmp_path)["valid"] is True
