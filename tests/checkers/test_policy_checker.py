"""The CorruptionPolicy conformance checker against crafted node logs and nemesis records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from checkers.history import Op
from checkers.policy import check_policy, policy_checker, process_events, read_events
from ukehi.nodelog import format_line

SEG = "wal-00000001.seg"


def line(event: str, **fields: Any) -> str:
    return format_line("info", "n2", event, fields, 1_790_000_000.0)


def previous_life(policy: str) -> list[str]:
    # The process before the damage: its campaign and leadership must not count against the restart.
    return [line("starting", pid=41, policy=policy), line("became-candidate", term=2),
            line("became-leader", term=2), line("shutdown", applied=90)]


def write_log(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "node.log"
    path.write_text("\n".join(lines) + "\nTraceback: not a logfmt line\n", encoding="utf-8")
    return path


def record(kind: str = "bitflip", **extra: Any) -> dict[str, Any]:
    base = {"kind": kind, "segment": SEG, "file": f"/w/n2/data/group-0/wal/{SEG}", "pid": 42,
            "changes": [{"offset": 500, "before_len": 1, "after_len": 1, "before": "aa", "after": "ab"}]}
    return {**base, **extra}


def history(rec: dict[str, Any], node: str = "n2") -> list[Op]:
    value = {"target": "one", "kind": rec["kind"], "victims": [node], "nodes": {node: rec}}
    return [Op(index=10, time=1, process="nemesis", type="invoke", f="corrupt-wal",
               value={"target": "one", "kind": rec["kind"]}),
            Op(index=11, time=2, process=0, type="ok", f="read", value=3),
            Op(index=12, time=3, process="nemesis", type="info", f="corrupt-wal", value=value)]


def judge(tmp_path: Path, policy: str, lines: list[str], rec: dict[str, Any]) -> dict[str, Any]:
    log = write_log(tmp_path, previous_life(policy) + lines)
    return check_policy(history(rec), {"n2": log}, policy)


def problems(result: dict[str, Any]) -> str:
    return " | ".join(p for f in result["nodes"]["n2"]["faults"] for p in f["problems"])


# ------------------------------------------------------------------------- RefuseStart

REFUSED = [line("starting", pid=42, policy="refuse-start"), line("listening", address="10.0.0.2:7000"),
           line("corruption-report", policy="refuse-start", segment=SEG, offset=480, kind="crc-mismatch",
                action="refused", index=61),
           line("refuse-start", reason=f"WAL corruption in /w/{SEG} at byte offset 480: crc-mismatch. "
                                       "Policy refuse-start: nothing on disk was changed."),
           line("shutdown", applied=0)]
REFUSED_RECORD = dict(started=False, exit_code=4, refused=True, wal_unchanged=True)


def test_refuse_start_that_names_segment_and_offset_and_changes_nothing_conforms(tmp_path: Path) -> None:
    result = judge(tmp_path, "refuse-start", REFUSED, record(**REFUSED_RECORD))
    assert result["valid"] is True, result["explanation"]
    assert "refused to start: n2" in result["explanation"]
    fault = result["nodes"]["n2"]["faults"][0]
    assert fault["op"] == 12 and fault["observed"]["refused"] and fault["observed"]["exit_code"] == 4


@pytest.mark.parametrize("change, lines, expected", [
    ({"wal_unchanged": False}, REFUSED, "WAL files changed"),
    ({"exit_code": 1}, REFUSED, "exited with 1 instead of 4"),
    ({}, [l.replace(SEG, "wal-00000007.seg") for l in REFUSED], "refused over wal-00000007.seg"),
    ({}, [l.replace("offset=480", "offset=900") for l in REFUSED], "after the damaged bytes"),
    ({}, [l for l in REFUSED if "event=refuse-start" not in l], "no refuse-start line"),
    ({}, [l.replace("at byte offset 480", "somewhere") for l in REFUSED], "does not name a segment and an offset"),
])
def test_refuse_start_violations_are_named(tmp_path: Path, change: dict[str, Any], lines: list[str],
                                           expected: str) -> None:
    result = judge(tmp_path, "refuse-start", lines, record(**{**REFUSED_RECORD, **change}))
    assert result["valid"] is False
    assert expected in problems(result) and expected in result["explanation"]


def test_a_node_that_reads_damaged_bytes_silently_breaks_every_promise(tmp_path: Path) -> None:
    silent = [line("starting", pid=42, policy="refuse-start"), line("replay-done", entries=90)]
    result = judge(tmp_path, "refuse-start", silent, record(started=True, phase="running"))
    assert result["valid"] is False and "was not reported at all" in problems(result)


def test_a_crash_like_tail_cut_under_refuse_start_is_allowed(tmp_path: Path) -> None:
    tail = [line("starting", pid=42, policy="refuse-start"),
            line("corruption-report", segment=SEG, offset=700, kind="torn-tail", action="cut"),
            line("replay-done", entries=89)]
    assert judge(tmp_path, "refuse-start", tail, record("torn-tail", started=True))["valid"] is True
    refused_tail = record("torn-tail", started=False, exit_code=4)
    result = judge(tmp_path, "refuse-start", tail, refused_tail)
    assert result["valid"] is False and "did not start" in problems(result)


# ------------------------------------------------------------------ TruncateToLastGood

CUT = [line("starting", pid=42, policy="truncate-to-last-good"),
       line("corruption-report", segment=SEG, offset=480, kind="crc-mismatch", action="cut", index=61),
       line("recovering", refuse_votes_until=120, last_good_index=60),
       line("replay-done", entries=60, recovering=True), line("became-follower", term=3),
       line("recovered", commit=130), line("became-candidate", term=4), line("became-leader", term=4)]
CUT_RECORD = dict(started=True, phase="running", recovering=True, refuse_votes_until=120)


def test_truncate_that_cuts_reports_and_waits_until_caught_up_conforms(tmp_path: Path) -> None:
    # Campaigning after `recovered` is allowed; the previous process's leadership does not count.
    result = judge(tmp_path, "truncate-to-last-good", CUT, record(**CUT_RECORD))
    assert result["valid"] is True, result["explanation"]
    assert result["nodes"]["n2"]["faults"][0]["observed"]["recovered"] is True


def test_truncate_still_recovering_at_the_end_conforms_if_it_never_campaigned(tmp_path: Path) -> None:
    lines = CUT[:5] + [line("shutdown", applied=60)]
    assert judge(tmp_path, "truncate-to-last-good", lines, record(**CUT_RECORD))["valid"] is True


@pytest.mark.parametrize("lines, change, expected", [
    (CUT[:5] + [line("became-pre-candidate", term=3)] + CUT[5:], {}, "campaigned while recovering"),
    ([l.replace("action=cut", "action=skipped") for l in CUT], {}, "action(s) skipped instead of cut"),
    ([l for l in CUT if "event=recovering" not in l], {}, "never logged recovering"),
    ([l.replace("commit=130", "commit=100") for l in CUT], {}, "below refuse_votes_until 120"),
    (CUT[:3], {"started": False, "exit_code": 4}, "did not start (exit 4)"),
    (CUT, {"refuse_votes_until": 0}, "refuse_votes_until 0"),
])
def test_truncate_violations_are_named(tmp_path: Path, lines: list[str], change: dict[str, Any],
                                       expected: str) -> None:
    result = judge(tmp_path, "truncate-to-last-good", lines, record(**{**CUT_RECORD, **change}))
    assert result["valid"] is False and expected in problems(result)


# -------------------------------------------------------------------- AlertAndContinue

SKIP = [line("starting", pid=42, policy="alert-and-continue"),
        line("corruption-report", segment=SEG, offset=480, kind="crc-mismatch", action="skipped", index=61),
        line("corruption-report", segment=SEG, offset=560, kind="index-discontinuity", action="kept", index=62),
        line("log-hole", missing_from=61, entries_ignored=29), line("replay-done", entries=60)]


def test_alert_that_skips_and_reports_conforms_and_counts_the_hole(tmp_path: Path) -> None:
    result = judge(tmp_path, "alert-and-continue", SKIP, record("zero-chunk", started=True))
    assert result["valid"] is True, result["explanation"]
    assert result["nodes"]["n2"]["faults"][0]["observed"]["log_holes"] == 1


@pytest.mark.parametrize("lines, change, expected", [
    ([l.replace("action=skipped", "action=cut") for l in SKIP], {}, "action(s) cut instead of skipped"),
    (SKIP[:2], {"started": False, "exit_code": 4}, "did not start (exit 4)"),
    ([l.replace("policy=alert-and-continue", "policy=truncate-to-last-good") for l in SKIP], {},
     "ran policy truncate-to-last-good"),
])
def test_alert_violations_are_named(tmp_path: Path, lines: list[str], change: dict[str, Any],
                                    expected: str) -> None:
    result = judge(tmp_path, "alert-and-continue", lines, record("zero-chunk", **{"started": True, **change}))
    assert result["valid"] is False and expected in problems(result)


# ------------------------------------------- a restart killed by another fault after replay

KILLED = dict(started=None, error="killed by another fault before it served")


def test_a_restart_killed_after_replay_done_is_judged_from_its_log(tmp_path: Path) -> None:
    # Sim seeds 4227, 4900, 5197: the harness had not yet seen the restarted node serve when
    # another fault killed it, but the node logs replay-done in the step that starts serving.
    lines = CUT[:5] + [line("shutdown", applied=60)]
    result = judge(tmp_path, "truncate-to-last-good", lines, record(**KILLED))
    assert result["valid"] is True, result["explanation"]
    assert result["nodes"]["n2"]["faults"][0]["observed"]["started"] is True


@pytest.mark.parametrize("policy, lines, expected", [
    ("truncate-to-last-good", CUT[:5] + [line("became-pre-candidate", term=3)], "campaigned while recovering"),
    ("truncate-to-last-good", [l.replace("action=cut", "action=skipped") for l in CUT[:5]], "instead of cut"),
    ("refuse-start", [l.replace("truncate-to-last-good", "refuse-start") for l in CUT[:4]],
     "started instead of refusing"),
])
def test_a_restart_killed_after_replay_done_is_held_to_its_promise(tmp_path: Path, policy: str,
                                                                    lines: list[str], expected: str) -> None:
    result = judge(tmp_path, policy, lines, record(**KILLED))
    assert result["valid"] is False and expected in problems(result)


def test_a_restart_killed_before_replay_done_stays_unknown(tmp_path: Path) -> None:
    result = judge(tmp_path, "truncate-to-last-good", CUT[:3], record(**KILLED))
    assert result["valid"] == "unknown" and "killed by another fault" in result["explanation"]


# ------------------------------------------------------------------ unknown, plumbing


def test_nothing_damaged_or_nothing_to_read_is_unknown_not_valid(tmp_path: Path) -> None:
    assert check_policy([], {}, "refuse-start")["valid"] == "unknown"
    missing = check_policy(history(record(**REFUSED_RECORD)), {"n2": tmp_path / "absent.log"}, "refuse-start")
    assert missing["valid"] == "unknown" and "cannot read" in missing["explanation"]
    other_pid = judge(tmp_path, "refuse-start", REFUSED, record(**{**REFUSED_RECORD, "pid": 77}))
    assert other_pid["valid"] == "unknown" and "no starting line for pid 77" in other_pid["explanation"]
    # Killed while replaying (no replay-done): whether it would have started is unknown.
    unseen = judge(tmp_path, "alert-and-continue", SKIP[:-1], record(started=None, error="killed by another fault"))
    assert unseen["valid"] == "unknown"
    with pytest.raises(ValueError, match="choose one of"):
        check_policy([], {}, "yolo")


def test_events_are_split_per_process_and_the_checker_has_the_workload_signature(tmp_path: Path) -> None:
    log = write_log(tmp_path, previous_life("refuse-start") + REFUSED + [line("starting", pid=43)])
    events = read_events(log)
    own = process_events(events, 42)
    assert own is not None and own[0]["pid"] == "42" and len(own) == len(REFUSED)
    assert process_events(events, 99) is None
    check = policy_checker({"n2": log}, "refuse-start")
    assert check(history(record(**REFUSED_RECORD)), {"time_limit": 5})["valid"] is True
