"""The simulator's availability verdict (harness/sim/runner.py ``judge`` with
checkers/availability.py ``check_sim_availability``): a simulated cluster that stops serving
is invalid, as a real run would be, and the correct build stays valid.

The broken builds come from ``tests/harness/broken_build/sitecustomize.py``, loaded by the
simulator's process (where the node code runs): a Raft core that drops every client
proposal, and one that drops every membership change. Both are liveness bugs no safety checker sees: before the verdict the
seeds below were valid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from checkers.availability import IDLE_BUDGET_VIRTUAL, IDLE_FLOOR_PER_S_VIRTUAL, check_sim_availability, \
    down_from_logs, idle_destinations
from checkers.history import Op
from harness.sim.runner import SimSettings, run_seed
BROKEN = Path(__file__).parent / "broken_build"
S = 1_000_000_000
START = "ts=x level=info node={n} event=starting pid=1\n"


def test_down_from_logs_reads_refuse_start_and_an_unfinished_recovery_of_the_last_process():
    logs = {
        "n1": START.format(n="n1") + "ts=x level=error node=n1 event=refuse-start reason=crc\n",
        "n2": START.format(n="n2") + "ts=x level=warning node=n2 event=recovering refuse_votes_until=9\n",
        "n3": START.format(n="n3") + "ts=x level=warning node=n3 event=recovering refuse_votes_until=9\n"
              "ts=x level=info node=n3 event=recovered commit=9\n",
        # refused once, then started cleanly: only the last process counts
        "n4": START.format(n="n4") + "ts=x level=error node=n4 event=refuse-start\n" + START.format(n="n4"),
    }
    down = down_from_logs(logs)
    assert sorted(down) == ["n1", "n2"], down
    assert "refuse-start" in down["n1"] and "recovering" in down["n2"]


def _op(i: int, t: float, process: int, type_: str) -> Op:
    return Op(index=i, time=int(t * S), process=process, type=type_, f="read", key=0)


def test_the_final_phase_starts_at_the_first_invocation_after_the_workload_phase():
    # Main phase ends at 10 s; an op invoked at 9.9 s completes (info) at 11 s, after the end:
    # it belongs to the main phase. The final phase (from 12 s) served nothing.
    h = [_op(0, 1, 0, "invoke"), _op(1, 1.1, 0, "ok"), _op(2, 9.9, 1, "invoke"), _op(3, 11, 1, "info"),
         _op(4, 12, 10000, "invoke"), _op(5, 12.5, 10000, "fail")]
    result = check_sim_availability(h, {}, 10.0)
    assert result["valid"] is False and result["violations"][0]["rule"] == "final-phase"
    assert "final phase from 12.0 s" in result["explanation"] and "none of its 1 operations" in result["explanation"]
    # A node that refused to start excuses it (as harness/run.py's down_on_purpose).
    logs = {"n2": START.format(n="n2") + "ts=x level=error node=n2 event=refuse-start\n"}
    assert check_sim_availability(h, logs, 10.0)["valid"] is True


PARTITIONS = SimSettings(nemeses=("partition",))
MEMBERSHIP = SimSettings(nemeses=("membership",))


def test_the_correct_build_is_available_on_the_seeds_below():
    for seed, settings in ((0, PARTITIONS), (1, PARTITIONS), (3, MEMBERSHIP), (12, MEMBERSHIP)):
        result = run_seed(seed, settings)
        assert result.valid is True, (seed, result.failing_checkers())
        assert result.checkers["availability"]["valid"] is True


def sim(tmp_path: Path, broken: str, seed: int, nemesis: str) -> tuple[subprocess.CompletedProcess, dict]:
    """One seed of ``ukehi-jepsen sim`` with a planted build (tests/harness/broken_build,
    loaded in the sim's process, where the node code runs); its stored run's results.json."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BROKEN), os.environ.get("PYTHONPATH", "")]),
           "UKJ_TEST_BROKEN_BUILD": broken}
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "sim", "--seed", str(seed), "--workload", "register",
                           "--nemesis", nemesis,
                           "--shrink-budget", "0", "--results-dir", str(results)],
                          capture_output=True, text=True, timeout=300, env=env)
    stored = sorted(results.rglob("results.json"))
    assert stored, proc.stdout + proc.stderr[-2000:]
    return proc, json.loads(stored[-1].read_text())


def test_a_build_that_drops_every_write_is_invalid_in_the_sim(tmp_path):
    proc, verdict = sim(tmp_path, "drop-proposals", 0, "partition")
    assert proc.returncode == 1 and "failed checkers: availability" in proc.stdout, proc.stdout
    availability = verdict["checkers"]["availability"]
    rules = {(v["rule"], v.get("f")) for v in availability["violations"]}
    assert ("kind-never-served", "write") in rules, availability
    # the safety checkers have nothing to say: no write took effect, reads saw nothing
    assert [n for n, r in verdict["checkers"].items() if r.get("valid") is False] == ["availability"]


def test_a_build_that_drops_every_membership_change_is_invalid_in_the_sim(tmp_path):
    proc, verdict = sim(tmp_path, "drop-conf-changes", 3, "membership")
    assert proc.returncode == 1 and "failed checkers: availability" in proc.stdout, proc.stdout
    (violation,) = verdict["checkers"]["availability"]["violations"]
    assert violation["rule"] == "membership-refused" and violation["count"] >= 3, violation


def _cut(*groups: set[str]) -> frozenset[tuple[str, str]]:
    """Both directions of every link between different GROUPS."""
    return frozenset((a, b) for g in groups for h in groups if g is not h for a in g for b in h)


def test_connected_majority_names_the_voters_raft_must_let_elect_a_leader():
    from harness.sim.runner import connected_majority

    five = {"n1", "n2", "n3", "n4", "n5"}
    none: frozenset = frozenset()
    assert connected_majority(five, none, none, none, none) == five
    assert connected_majority(five, frozenset({"n1", "n2"}), none, none, none) == {"n3", "n4", "n5"}
    assert connected_majority(five, frozenset({"n1", "n2", "n3"}), none, none, none) is None
    # halves: the three are a majority, the two cut off both ways
    halves = _cut({"n1", "n2"}, {"n3", "n4", "n5"})
    assert connected_majority(five, none, halves, none, none) == {"n3", "n4", "n5"}
    # a clock at another rate outside the majority does not matter; inside it does
    assert connected_majority(five, none, halves, none, frozenset({"n1"})) == {"n3", "n4", "n5"}
    assert connected_majority(five, none, halves, none, frozenset({"n4"})) is None
    # a slowed link inside the majority: not judged
    assert connected_majority(five, none, halves, frozenset({("n3", "n4")}), none) is None
    # n1 cut off one way only: it can still reach them (or they it): not judged
    one_way = frozenset((a, "n1") for a in five - {"n1"})
    assert connected_majority(five, none, one_way, none, none) is None
    # a bridge (n3 linked to both sides, the sides cut from each other): not judged
    bridge = _cut({"n1", "n2"}, {"n4", "n5"})
    assert connected_majority(five, none, bridge, none, none) is None


UNANIMOUS_SEED = 15  # kills only: the first seed (of 0-15) whose leader stays down long enough


def test_a_build_whose_elections_need_every_voter_is_invalid_in_the_sim(tmp_path):
    proc, verdict = sim(tmp_path, "unanimous-votes", UNANIMOUS_SEED, "kill")
    assert proc.returncode == 1 and "failed checkers: availability" in proc.stdout, proc.stdout
    rules = [v["rule"] for v in verdict["checkers"]["availability"]["violations"]]
    assert "majority-unserved" in rules, verdict["checkers"]["availability"]
    assert [n for n, r in verdict["checkers"].items() if r.get("valid") is False] == ["availability"]
    assert run_seed(UNANIMOUS_SEED, SimSettings(workload="register", nemeses=("kill",))).valid is True


def test_a_build_that_never_hands_leadership_over_is_invalid_in_the_sim(tmp_path):
    proc, verdict = sim(tmp_path, "no-timeout-now", 0, "transfer")
    assert proc.returncode == 1 and "failed checkers: availability" in proc.stdout, proc.stdout
    (violation,) = verdict["checkers"]["availability"]["violations"]
    assert violation["rule"] == "transfer-refused" and violation["count"] >= 3, violation
    assert "leadership did not move" in violation["what"] or "unanswered" in violation["what"]
    assert run_seed(0, SimSettings(workload="register", nemeses=("transfer",))).valid is True


def test_the_transfers_asked_for_at_the_end_of_a_seed_catch_it_without_a_transfer_nemesis(tmp_path):
    proc, verdict = sim(tmp_path, "no-timeout-now", 0, "partition")
    assert proc.returncode == 1 and "failed checkers: availability" in proc.stdout, proc.stdout
    (violation,) = verdict["checkers"]["availability"]["violations"]
    assert violation["rule"] == "transfer-refused" and violation["count"] == 3, violation
    stored = sorted((tmp_path / "results").rglob("history.jsonl"))[-1]
    transfers = [op for op in map(json.loads, stored.read_text().splitlines()) if op.get("f") == "transfer-leader"]
    assert len(transfers) == 6 and all(op["value"]["final"] for op in transfers), transfers
    # the correct build hands leadership over at the first of them
    result = run_seed(0, SimSettings(workload="register", nemeses=("partition",)))
    assert result.valid is True
    finals = [op for op in result.history if op.f == "transfer-leader" and op.type == "info"]
    assert [op.value["outcome"] for op in finals] == ["ok"], finals


def test_a_message_storm_on_an_idle_cluster_is_invalid_in_the_sim(tmp_path):
    """append-echo (the leader answers every append response with another append) serves
    everything and breaks no safety property; every seed's idle window at its end shows it,
    and the stored run carries the window so analyze judges it the same way."""
    proc, verdict = sim(tmp_path, "append-echo", 0, "partition")
    assert proc.returncode == 1 and "failed checkers: availability" in proc.stdout, proc.stdout
    violations = verdict["checkers"]["availability"]["violations"]
    assert violations and {v["rule"] for v in violations} == {"busy-when-idle"}, violations
    assert [n for n, r in verdict["checkers"].items() if r.get("valid") is False] == ["availability"]
    facts = json.loads(sorted((tmp_path / "results").rglob("availability.json"))[-1].read_text())
    assert facts["idle"]["virtual"] is True and facts["idle"]["caught_up"] is True
    # the correct build at the same seed: heartbeats only, within the budget
    result = run_seed(0, SimSettings(workload="register", nemeses=("partition",)))
    assert result.valid is True and result.idle["caught_up"] is True and result.idle["nodes"], result.idle
    for rec in result.idle["nodes"].values():  # one message per heartbeat to each node it talks to
        assert rec["messages_per_s"] <= idle_destinations(rec) * 1000 / rec["heartbeat_ms"] + 1, rec


def test_twice_the_heartbeat_work_on_an_idle_cluster_is_invalid_in_the_sim(tmp_path):
    """heartbeat-probe (the leader answers every heartbeat answer with an append: one more
    append and answer per heartbeat and follower) serves everything and breaks nothing; the
    per-role budget of virtual time flags every node, where the older one (2 x heartbeats x
    peers + 10 for every role) let the leader's 2 messages per heartbeat and peer through."""
    proc, verdict = sim(tmp_path, "heartbeat-probe", 0, "partition")
    assert proc.returncode == 1 and "failed checkers: availability" in proc.stdout, proc.stdout
    assert [n for n, r in verdict["checkers"].items() if r.get("valid") is False] == ["availability"]
    violations = verdict["checkers"]["availability"]["violations"]
    assert {v["rule"] for v in violations} == {"busy-when-idle"}, violations
    idle = json.loads(sorted((tmp_path / "results").rglob("availability.json"))[-1].read_text())["idle"]
    assert sorted(v["node"] for v in violations) == sorted(idle["nodes"]), (violations, idle)
    for rec in idle["nodes"].values():
        heartbeats = 1000 / rec["heartbeat_ms"]
        # about twice one message per heartbeat and destination: over 1.5 x + floor, under the old budget
        assert IDLE_BUDGET_VIRTUAL * heartbeats * idle_destinations(rec) + IDLE_FLOOR_PER_S_VIRTUAL \
            < rec["messages_per_s"] <= 2.0 * heartbeats * max(1, rec["peers"]) + 10.0, rec
