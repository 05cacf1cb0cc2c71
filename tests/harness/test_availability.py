"""The availability checker (checkers/availability.py): a build whose cluster never serves is
invalid, not unknown, and a machine that cannot run the cluster is not blamed on the build.

Hand-made histories and node logs for each rule, then real runs: the correct build, a build
that never elects, one that dies at start with a traceback, and a port in use (the machine's
fault: still a harness crash, exit 255). The broken builds come from
``tests/harness/broken_build/sitecustomize.py``, loaded by the node processes only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from checkers.availability import check_availability, classify_exit, idle_caught_up, idle_record
from checkers.history import Op

CLI = [sys.executable, "-m", "harness.cli"]
BROKEN = Path(__file__).parent / "broken_build"
S = 1_000_000_000


def op(i: int, t_s: float, process: int | str, type_: str, f: str = "read", error: str | None = None) -> Op:
    return Op(index=i, time=int(t_s * S), process=process, type=type_, f=f, key=0, error=error)


def history(*pairs: tuple[float, float, str, str | None]) -> list[Op]:
    """(invoked at s, completed at s, type, error) per op, each on its own process."""
    out: list[Op] = []
    for n, (start, end, type_, error) in enumerate(pairs):
        out.append(op(len(out), start, n, "invoke"))
        out.append(op(len(out), end, n, type_, error=error))
    return out


FACTS = {"main_end_ns": 10 * S, "final_start_ns": 11 * S, "final_leader": "n1", "exited": {},
         "down_on_purpose": {}}


def test_a_cluster_that_served_in_main_and_final_phase_is_valid():
    h = history((1, 1.1, "ok", None), (2, 2.5, "info", "timeout"), (11.5, 11.6, "ok", None))
    result = check_availability(h, FACTS)
    assert result["valid"] is True, result
    assert "2 of 3" in result["explanation"] and "1 of them in the final phase" in result["explanation"]


def test_no_ok_operation_in_the_whole_run_is_invalid_and_says_what_failed():
    h = history((1, 1.1, "fail", "not_leader"), (2, 4, "info", "timeout"), (12, 14, "info", "timeout"))
    result = check_availability(h, FACTS)
    assert result["valid"] is False
    assert [v["rule"] for v in result["violations"]] == ["no-ok-op"]
    assert "3 invoked, 1 failed, 2 unknown" in result["explanation"]
    assert "'timeout' x2" in result["explanation"]


def test_nothing_served_after_the_faults_healed_is_invalid_and_names_the_window():
    h = history((1, 1.1, "ok", None), (11.2, 13.2, "info", "timeout"), (11.3, 11.4, "fail", "no leader"))
    result = check_availability(h, {**FACTS, "final_leader": None, "final_leader_error": "no leader after 15 s"})
    assert result["valid"] is False
    (violation,) = result["violations"]
    assert violation["rule"] == "final-phase"
    assert "final phase from 11.0 s" in violation["what"] and "none of its 2 operations" in violation["what"]
    assert "no leader was found (no leader after 15 s)" in violation["what"]


def test_a_node_down_on_purpose_excuses_an_unavailable_final_phase():
    h = history((1, 1.1, "ok", None), (11.2, 13.2, "info", "timeout"))
    facts = {**FACTS, "down_on_purpose": {"n2": "refused to start (corruption policy refuse-start)",
                                          "n3": "refused to start (corruption policy refuse-start)"}}
    result = check_availability(h, facts)
    assert result["valid"] is True, result
    assert "n2 was down on purpose" in result["explanation"]


def test_a_run_that_ended_before_any_final_op_judges_only_the_main_phase():
    h = history((1, 1.1, "ok", None))
    result = check_availability(h, FACTS)
    assert result["valid"] is True and "no final-phase operations" in result["explanation"]


def test_an_empty_history_without_a_startup_diagnosis_is_unknown():
    assert check_availability([], FACTS)["valid"] == "unknown"


def test_a_startup_the_build_broke_is_invalid_and_names_the_nodes():
    facts = {"startup": {"cause": "build", "reason": "n2 exited at start: a Python traceback on its stderr: "
                                                     "KeyError: 'x'",
                         "nodes": {"n2": {"cause": "build", "reason": "exited at start: KeyError: 'x'"}}}}
    result = check_availability([], facts)
    assert result["valid"] is False
    assert result["violations"][0]["rule"] == "startup" and result["violations"][0]["nodes"] == ["n2"]
    assert "did not come up because of the build" in result["explanation"] and "KeyError" in result["explanation"]


def test_without_facts_the_final_phase_is_what_came_after_the_time_limit():
    h = history((1, 1.1, "ok", None), (21, 23, "info", "timeout"))
    result = check_availability(h, None, time_limit_s=20)
    assert result["valid"] is False and result["violations"][0]["rule"] == "final-phase"
    assert check_availability(h, None)["valid"] is True  # no time limit known: main phase only


LOG_START = ("ts=2026-12-06T10:00:00.000Z level=info node=n1 event=starting pid=7 listen=10.0.0.1:7000 "
             "policy=truncate-to-last-good\n")


@pytest.mark.parametrize("tail, status, cause, words", [
    ('ts=x level=error node=n1 event=listen-failed address=a error="[Errno 98] address already in use"\n',
     1, "environment", "port in use"),
    ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
     "ModuleNotFoundError: No module named 'ukehi'\n", 1, "environment", "ModuleNotFoundError"),
    ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nKeyError: 'planted'\n",
     1, "build", "KeyError: 'planted'"),
    ('ts=x level=fatal node=n1 event=fatal task=ready error="ZeroDivisionError()" traceback="..."\n',
     1, "build", "event=fatal"),
    ('ts=x level=fatal node=n1 event=invariant-violated invariant=log-matching term=3\n',
     70, "build", "invariant"),
    ('ts=x level=error node=n1 event=refuse-start reason="damaged"\n', 4, "expected", "refuse-start"),
    ('ts=x level=error node=n1 event=storage-open-failed error="[Errno 13] Permission denied"\n',
     1, "environment", "data directory"),
    ("", 1, "unexplained", "nothing in its log"),
])
def test_classify_exit_tells_the_build_from_the_machine(tail, status, cause, words):
    got, reason = classify_exit(LOG_START + tail, status)
    assert got == cause, reason
    assert words in reason


def test_classify_exit_reads_only_the_last_process():
    earlier = "Traceback (most recent call last):\nKeyError: 'old'\n"  # an earlier process's crash
    later = LOG_START.replace("pid=7", "pid=8") + "ts=x level=error node=n1 event=refuse-start reason=r\n"
    assert classify_exit(LOG_START + earlier + later, 4)[0] == "expected"


def test_an_exited_node_is_judged_by_its_log(tmp_path):
    (tmp_path / "nodes" / "n2").mkdir(parents=True)
    (tmp_path / "nodes" / "n2" / "node.log").write_text(
        LOG_START + 'ts=x level=fatal node=n2 event=invariant-violated invariant=commit-regress term=4\n')
    (tmp_path / "nodes" / "n3").mkdir(parents=True)
    (tmp_path / "nodes" / "n3" / "node.log").write_text(LOG_START + 'ts=x level=error node=n3 event=refuse-start\n')
    h = history((1, 1.1, "ok", None), (11.5, 11.6, "ok", None))
    result = check_availability(h, {**FACTS, "exited": {"n2": 70, "n3": 4}}, run_dir=tmp_path)
    assert result["valid"] is False
    (violation,) = result["violations"]
    assert violation["rule"] == "node-exit" and violation["node"] == "n2"
    assert "status 70" in violation["what"] and "invariant" in violation["what"]
    assert any("n3" in note and "expected" in note for note in result["notes"])


def idle_facts(caught_up: bool = True, **rates: tuple[float, float]) -> dict:
    """FACTS with an idle record: node -> (readies per s, messages per s), 2 peers, 50 ms heartbeats."""
    nodes = {n: {"role": "leader" if n == "n1" else "follower", "peers": 2, "heartbeat_ms": 50,
                 "readies_per_s": r, "messages_per_s": m} for n, (r, m) in rates.items()}
    return {**FACTS, "idle": {"nodes": nodes, "caught_up": caught_up, "window_s": 2.0}}


def test_a_node_busy_with_no_client_and_no_fault_is_invalid():
    h = history((1, 1.1, "ok", None), (11.5, 11.6, "ok", None))
    quiet = idle_facts(n1=(16.5, 33.1), n2=(16.5, 16.5), n3=(16.5, 16.5))
    assert check_availability(h, quiet)["valid"] is True
    # budget with 2 peers at 50 ms heartbeats: 5 x 20 x 2 + 50 = 250 a second
    assert check_availability(h, idle_facts(n1=(16.5, 250.0), n2=(250.0, 16.5)))["valid"] is True
    result = check_availability(h, idle_facts(n1=(16.5, 251.0), n2=(900.0, 16.5), n3=(16.5, 16.5)))
    assert result["valid"] is False
    assert [(v["rule"], v["node"]) for v in result["violations"]] == [("busy-when-idle", "n1"),
                                                                     ("busy-when-idle", "n2")]
    assert "251 messages a second" in result["violations"][0]["what"]
    assert "900 readies a second" in result["violations"][1]["what"]


def virtual_idle(**nodes: tuple) -> dict:
    """FACTS with a simulator's idle record: node -> (role, peers, heartbeat ms, readies per s,
    messages per s[, learners])."""
    recs = {n: {"role": role, "peers": peers, "heartbeat_ms": hb, "readies_per_s": r, "messages_per_s": m,
                "learners": rest[0] if rest else 0} for n, (role, peers, hb, r, m, *rest) in nodes.items()}
    return {**FACTS, "idle": {"nodes": recs, "caught_up": True, "window_s": 2.0, "virtual": True}}


def busy(facts: dict) -> list[tuple[str, str]]:
    h = history((1, 1.1, "ok", None), (11.5, 11.6, "ok", None))
    return [(v["rule"], v["node"]) for v in check_availability(h, facts)["violations"]]


def test_idle_work_in_virtual_time_has_the_tighter_budget():
    facts = idle_facts(n1=(16.5, 91.0), n2=(16.5, 16.5))
    assert busy(facts) == []  # wall clock: 5 x 20 x 2 + 50 = 250 a second
    facts["idle"]["virtual"] = True  # simulator: a leader with 2 peers, 1.5 x 20 x 2 + 2 = 62 a second
    assert busy(facts) == [("busy-when-idle", "n1")]


def test_the_virtual_budget_is_per_role_and_flags_the_old_edge():
    """At 20 heartbeats a second with 2 peers the old virtual budget (2 x 20 x 2 + 10 = 90 a
    second, for every role) let a leader send 2 messages per heartbeat and peer, and a
    follower answer 4 times per heartbeat. Now a leader may send 1.5 x 20 x 2 + 2 = 62, a
    follower (one leader to answer) 1.5 x 20 + 2 = 32, and either may run 32 Readies."""
    assert busy(virtual_idle(n1=("leader", 2, 50, 20.0, 80.0), n2=("follower", 2, 50, 20.0, 40.0),
                             n3=("follower", 2, 50, 20.0, 90.0))) == [
        ("busy-when-idle", "n1"), ("busy-when-idle", "n2"), ("busy-when-idle", "n3")]
    # just inside and just over the new edges, messages and Readies alike
    assert busy(virtual_idle(n1=("leader", 2, 50, 32.0, 62.0), n2=("follower", 2, 50, 32.0, 32.0))) == []
    assert busy(virtual_idle(n1=("leader", 2, 50, 32.0, 62.5), n2=("follower", 2, 50, 32.5, 20.0))) == [
        ("busy-when-idle", "n1"), ("busy-when-idle", "n2")]
    # a learner answers its leader like a follower; a candidate asks each of its peers
    assert busy(virtual_idle(n1=("learner", 4, 50, 20.0, 33.0), n2=("candidate", 4, 50, 5.0, 60.0))) == [
        ("busy-when-idle", "n1")]


def test_the_measured_correct_maxima_are_within_the_virtual_budget():
    """The busiest correct nodes measured over 380 seeds (checkers/availability.py module doc):
    a follower answering 1.2 times per heartbeat at 5 heartbeats a second (seed 96), one with
    duplicated packets at 30 ms heartbeats (seed 290), a leader with 4 peers at 1.04 messages
    per heartbeat and peer (seed 2), a leader at 30 ms heartbeats (seed 76)."""
    assert busy(virtual_idle(n3=("follower", 2, 200, 6.0, 6.0), n5=("follower", 4, 30, 35.5, 35.5),
                             n2=("leader", 4, 160, 6.5, 26.0), n1=("leader", 2, 30, 34.0, 68.0))) == []
    # twice the heartbeat work is over the budget at the slowest heartbeats the simulator draws
    assert busy(virtual_idle(n3=("follower", 2, 200, 5.0, 10.0), n2=("leader", 4, 200, 5.0, 40.0))) == [
        ("busy-when-idle", "n2"), ("busy-when-idle", "n3")]


def test_a_leader_heartbeats_its_learners_too():
    # 2 voting peers and 2 learners at 20 heartbeats a second: 80 messages a second is its
    # heartbeat work (budget 1.5 x 20 x 4 + 2 = 122); without learners it would be a storm
    assert busy(virtual_idle(n1=("leader", 2, 50, 20.0, 80.0, 2))) == []
    assert busy(virtual_idle(n1=("leader", 2, 50, 20.0, 80.0, 0))) == [("busy-when-idle", "n1")]
    assert busy(virtual_idle(n1=("leader", 2, 50, 20.0, 123.0, 2))) == [("busy-when-idle", "n1")]


def status(role: str, term: int, commit: int, applied: int, readies: int = 0, sent: int = 0, **more) -> dict:
    return {"role": role, "term": term, "commit_index": commit, "applied_index": applied, "readies": readies,
            "messages_sent": sent, "members": ["n1", "n2", "n3"], "learners": [], "heartbeat_ms": 50, **more}


def test_idle_caught_up_follows_the_newest_leader_and_its_members():
    spare = status("follower", 0, 0, 0, members=[])
    assert idle_caught_up({"n1": status("leader", 3, 10, 10), "n2": status("follower", 3, 10, 10), "n4": spare})
    assert not idle_caught_up({"n1": status("leader", 3, 10, 10), "n2": status("follower", 3, 8, 9)})
    # a deposed leader (older term) does not say what must be applied
    assert not idle_caught_up({"n1": status("leader", 2, 5, 5), "n2": status("leader", 3, 10, 10),
                               "n3": status("follower", 3, 10, 7)})
    # a learner of the leader's configuration is waited for; no leader: not caught up
    assert not idle_caught_up({"n1": status("leader", 3, 10, 10, learners=["n4"]), "n4": status("learner", 3, 10, 4)})
    assert not idle_caught_up({"n2": status("follower", 3, 10, 10)})


def test_idle_record_is_the_rate_over_the_window():
    first = {"n1": status("leader", 3, 10, 10, readies=100, sent=200, election_timeout_ms=[300, 600]),
             "n2": status("follower", 3, 10, 10, readies=100, sent=100),
             "n3": status("follower", 3, 10, 10, readies=500, sent=500)}
    second = {"n1": status("leader", 3, 10, 10, readies=140, sent=281, learners=["n4"], election_timeout_ms=[300, 600]),
              "n2": status("follower", 3, 10, 10, readies=141, sent=141),
              "n3": status("follower", 3, 10, 10, readies=3, sent=3)}  # restarted in the window
    rec = idle_record(first, second, 2.0, caught_up=True, virtual=True)
    assert rec == {"caught_up": True, "window_s": 2.0, "virtual": True, "nodes": {
        "n1": {"role": "leader", "peers": 2, "learners": 1, "readies_per_s": 20.0, "messages_per_s": 40.5,
               "heartbeat_ms": 50, "election_timeout_ms": [300, 600]},
        "n2": {"role": "follower", "peers": 2, "learners": 0, "readies_per_s": 20.5, "messages_per_s": 20.5,
               "heartbeat_ms": 50}}}
    assert "virtual" not in idle_record(first, {}, 2.0, caught_up=False)


def test_idle_work_is_not_judged_before_the_nodes_caught_up():
    h = history((1, 1.1, "ok", None), (11.5, 11.6, "ok", None))
    result = check_availability(h, idle_facts(caught_up=False, n1=(16.5, 5000.0)))
    assert result["valid"] is True
    assert any("not caught up" in note for note in result["notes"]), result


# ----------------------------------------------------------------------------- real runs

def run(tmp_path: Path, *args: str, broken: str | None = None, timeout: float = 240) -> tuple[subprocess.CompletedProcess, Path]:
    env = dict(os.environ)
    if broken:
        env["PYTHONPATH"] = os.pathsep.join([str(BROKEN), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["UKJ_TEST_BROKEN_BUILD"] = broken
    results = tmp_path / "results"
    proc = subprocess.run(CLI + ["run", "--workload", "register", "--nemesis", "none", "--results-dir",
                                 str(results), *args], capture_output=True, text=True, timeout=timeout, env=env)
    return proc, results


def verdict(results: Path) -> dict:
    return json.loads((results / "latest" / "results.json").read_text())


def test_the_correct_build_is_available(tmp_path):
    proc, results = run(tmp_path, "--time-limit", "5", "--seed", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    availability = verdict(results)["checkers"]["availability"]
    assert availability["valid"] is True
    facts = json.loads((results / "latest" / "availability.json").read_text())
    assert facts["final_start_ns"] >= facts["main_end_ns"] > 0 and facts["exited"] == {}
    final_ok = int(availability["explanation"].split(", ")[1].split(" of them")[0])
    assert final_ok > 0, availability  # the final reads were served
    transfers = final_transfers(results)
    assert transfers and transfers[-1]["outcome"] == "ok", transfers  # leadership was handed over
    idle = facts["idle"]
    assert idle["caught_up"] and sorted(idle["nodes"]) == ["n1", "n2", "n3"], idle
    assert all(0 < n["messages_per_s"] <= 100 for n in idle["nodes"].values()), idle  # heartbeats only


def final_transfers(results: Path) -> list[dict]:
    """The completions of the leadership transfers the run asked for after its final phase."""
    ops = [json.loads(line) for line in (results / "latest" / "history.jsonl").read_text().splitlines() if line]
    return [op["value"] for op in ops if op["process"] == "nemesis" and op["f"] == "transfer-leader"
            and op["type"] == "info" and (op.get("value") or {}).get("final")]


def test_a_message_storm_on_an_idle_cluster_is_invalid_in_a_real_run(tmp_path):
    """append-echo: the leader answers each append response with another append. Every
    request is served and nothing unsafe happens; only the idle window shows it."""
    proc, results = run(tmp_path, "--time-limit", "5", "--seed", "3", broken="append-echo")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    availability = verdict(results)["checkers"]["availability"]
    assert {v["rule"] for v in availability["violations"]} == {"busy-when-idle"}, availability
    leader = next(v for v in availability["violations"] if "(leader)" in v["what"])
    assert "messages a second" in leader["what"] and "no client and no fault" in leader["what"]


def test_a_build_that_never_hands_leadership_over_is_invalid_in_a_real_run(tmp_path):
    """No nemesis ever transfers leadership here: the transfers every run asks for after its
    final phase are what judge it (transfer-refused), as the simulator's do at a seed's end."""
    proc, results = run(tmp_path, "--time-limit", "5", "--seed", "3", broken="no-timeout-now")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    availability = verdict(results)["checkers"]["availability"]
    assert availability["valid"] is False
    assert [v["rule"] for v in availability["violations"]] == ["transfer-refused"], availability
    transfers = final_transfers(results)
    assert len(transfers) == 3 and all(t["outcome"] != "ok" for t in transfers), transfers
    assert len({t["node"] for t in transfers}) == 2  # round robin over the other two voters


def test_a_build_that_never_elects_is_invalid_not_a_crash(tmp_path):
    proc, results = run(tmp_path, "--time-limit", "5", "--seed", "3", broken="no-votes")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = verdict(results)
    assert result["valid"] is False and result["ops"] == 0
    availability = result["checkers"]["availability"]
    assert availability["valid"] is False and availability["violations"][0]["rule"] == "startup"
    assert "no leader elected in 30 s" in availability["explanation"]
    assert "could reach every other" in availability["explanation"]
    assert sorted(availability["violations"][0]["nodes"]) == ["n1", "n2", "n3"]


def test_a_build_that_dies_at_start_is_invalid_with_its_traceback(tmp_path):
    proc, results = run(tmp_path, "--time-limit", "5", broken="crash-at-start")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    availability = verdict(results)["checkers"]["availability"]
    assert availability["valid"] is False
    assert "exited at start" in availability["explanation"]
    assert "KeyError" in availability["explanation"] and "planted" in availability["explanation"]


def test_a_port_in_use_is_the_machine_not_the_build(tmp_path):
    proc, results = run(tmp_path, "--time-limit", "5", broken="port-in-use")
    assert proc.returncode == 255, proc.stdout + proc.stderr
    assert "the cluster did not come up" in proc.stderr
    assert "not blamed on the build under test (environment)" in proc.stderr
    assert "port in use" in proc.stderr
    assert not (results / "latest").exists()  # no verdict: the harness could not test


def test_a_node_that_runs_but_does_not_answer_after_the_heal_is_invalid(tmp_path):
    (tmp_path / "nodes" / "n1").mkdir(parents=True)
    (tmp_path / "nodes" / "n1" / "node.log").write_text(
        LOG_START + "ts=x level=info node=n1 event=snapshot-installed index=150 term=1\n")
    h = history((1, 1.1, "ok", None), (11.5, 11.6, "ok", None))
    why = "running but answered no status request for 20 s after the final phase"
    result = check_availability(h, {**FACTS, "unresponsive": {"n1": why}}, run_dir=tmp_path)
    assert result["valid"] is False
    (violation,) = result["violations"]
    assert violation["rule"] == "node-unresponsive" and violation["node"] == "n1"
    assert why in violation["what"] and "event=snapshot-installed" in violation["what"]
    assert check_availability(h, {**FACTS, "unresponsive": {}}, run_dir=tmp_path)["valid"] is True


def test_a_kind_of_operation_never_answered_while_others_are_served_is_invalid():
    reads = [(t, t + 0.1, "ok", None) for t in range(1, 6)]
    writes = [(t + 0.5, t + 2.5, "info", "timeout") for t in range(10)]
    h = history(*reads, *writes)
    h = [Op(o.index, o.time, o.process, o.type, "write" if o.process >= 5 else "read", key=0, error=o.error)
         for o in h]
    result = check_availability(h, {**FACTS, "main_end_ns": 20 * S, "final_start_ns": 20 * S})
    assert result["valid"] is False
    (violation,) = result["violations"]
    assert violation["rule"] == "kind-never-served" and violation["f"] == "write"
    assert "10 invoked (10 with no fault active), all unknown ('timeout' x10), while read succeeded" in violation["what"]
    # One refusal is an answer (a cas whose precondition failed): the kind was served.
    refused = h[:-1] + [Op(h[-1].index, h[-1].time, h[-1].process, "fail", "write", key=0, error="precondition")]
    assert check_availability(refused, {**FACTS, "main_end_ns": 20 * S, "final_start_ns": 20 * S})["valid"] is True
    # Fewer than 10 attempts: too few to judge.
    short = [o for o in h if not (o.f == "write" and o.process >= 14)]
    assert check_availability(short, {**FACTS, "main_end_ns": 20 * S, "final_start_ns": 20 * S})["valid"] is True


def _kinds(h: list[Op], write_from: int) -> list[Op]:
    """The same ops with processes from ``write_from`` on made writes (the rest reads)."""
    return [Op(o.index, o.time, o.process, o.type, "write" if o.process >= write_from else "read", key=0,
               error=o.error) for o in h]


WHOLE = {**FACTS, "main_end_ns": 20 * S, "final_start_ns": 20 * S}


def test_a_kind_refused_as_not_served_every_time_while_others_are_served_is_invalid():
    # A build whose leader refuses every write ("not_leader", "unavailable") while reads
    # through the same leaders succeed: before, any refusal counted as an answer.
    reads = [(t, t + 0.1, "ok", None) for t in range(1, 6)]
    writes = [(t + 0.5, t + 0.6, "fail", "not_leader" if t % 2 else "unavailable") for t in range(8)]
    writes += [(9.5, 11.5, "info", "timeout"), (12, 12.1, "fail", "recovering")]
    h = _kinds(history(*reads, *writes), 5)
    result = check_availability(h, WHOLE)
    assert result["valid"] is False, result
    (violation,) = result["violations"]
    assert violation["rule"] == "kind-never-served" and violation["f"] == "write"
    assert "10 invoked (10 with no fault active), 9 refused as not served now, 1 unknown" in violation["what"], violation
    # One answer about the request itself (a failed cas precondition) means it was served.
    answered = h[:-1] + [Op(h[-1].index, h[-1].time, h[-1].process, "fail", "write", key=0, error="cas_failed")]
    assert check_availability(answered, WHOLE)["valid"] is True
    # And one ok write, of course.
    ok = h[:-1] + [Op(h[-1].index, h[-1].time, h[-1].process, "ok", "write", key=0)]
    assert check_availability(ok, WHOLE)["valid"] is True


def nemesis(i: int, t_s: float, f: str, type_: str, value: object = None) -> Op:
    return Op(index=i, time=int(t_s * S), process="nemesis", type=type_, f=f, value=value)


def membership_history(outcomes: list[dict], faults: list[tuple[float, float, str, str]] = ()) -> list[Op]:
    """Served client reads, one membership change a second with OUTCOMES, and FAULTS
    ((start s, stop s, start f, stop f) nemesis windows)."""
    h = history(*[(t, t + 0.1, "ok", None) for t in range(1, 6)])
    for k, value in enumerate(outcomes):
        f = "add-node" if k % 2 else "remove-node"
        h.append(nemesis(len(h), 1.0 + k, f, "invoke", {"seed": k}))
        h.append(nemesis(len(h), 1.5 + k, f, "info", {"node": "n4", **value}))
    return with_faults(h, faults)


def with_faults(h: list[Op], faults: list[tuple[float, float, str, str]]) -> list[Op]:
    """H with FAULTS ((start s, stop s, start f, stop f) nemesis windows on n1), in time order."""
    for start, stop, f_start, f_stop in faults:
        h.append(nemesis(len(h), start, f_start, "invoke", ["n1"]))
        h.append(nemesis(len(h), start + 0.01, f_start, "info", ["n1"]))
        h.append(nemesis(len(h), stop, f_stop, "invoke", ["n1"]))
        h.append(nemesis(len(h), stop + 0.01, f_stop, "info", ["n1"]))
    h.sort(key=lambda o: o.time)
    return [Op(i, o.time, o.process, o.type, o.f, key=o.key, value=o.value, error=o.error) for i, o in enumerate(h)]


REFUSED = {"outcome": "fail", "error": "unavailable", "message": "leadership is moving to None"}


def test_every_membership_change_refused_with_no_fault_active_is_invalid():
    result = check_availability(membership_history([REFUSED] * 4), FACTS)
    assert result["valid"] is False, result
    (violation,) = result["violations"]
    assert violation["rule"] == "membership-refused" and violation["count"] == 4
    assert "membership change (add/remove) was ever accepted: 4 requests made while no other fault was active, 4 refused and 0 unanswered" \
        in violation["what"]
    assert "leadership is moving to None" in violation["what"]
    # The simulator records the error code as the outcome itself.
    sim = membership_history([{"outcome": "unavailable"}] * 3)
    assert check_availability(sim, FACTS)["violations"][0]["rule"] == "membership-refused"
    # A change that never commits times out at the client (the node retries for 30 s, the
    # nemesis waits 15): unanswered changes count the same.
    timeouts = [{"outcome": "unknown", "error": "timeout"}] * 2 + [{"outcome": "fail", "error": "timeout"}]
    (violation,) = check_availability(membership_history(timeouts), FACTS)["violations"]
    assert "0 refused and 3 unanswered" in violation["what"]


def test_a_membership_request_still_unanswered_at_the_end_counts_as_unanswered():
    h = membership_history([REFUSED] * 2)
    h.append(nemesis(len(h), 9.0, "add-node", "invoke", {"node": "n5", "via": "n1"}))  # the run ended first
    (violation,) = check_availability(h, FACTS)["violations"]
    assert "2 refused and 1 unanswered" in violation["what"]


def test_membership_refusals_are_excused_by_one_success_a_fault_or_too_few():
    assert check_availability(membership_history([REFUSED] * 4 + [{"outcome": "ok"}]), FACTS)["valid"] is True
    assert check_availability(membership_history([REFUSED] * 2), FACTS)["valid"] is True
    # Refused while a partition (generic start-/stop- pair) or a kill was active: explained.
    partitioned = membership_history([REFUSED] * 4, [(0.5, 2.8, "start-partition", "stop-partition")])
    killed = membership_history([REFUSED] * 4, [(2.9, 9.0, "kill", "start")])
    assert check_availability(partitioned, FACTS)["valid"] is True
    assert check_availability(killed, FACTS)["valid"] is True
    # A fault that started while the request was waiting for its answer explains it too.
    late = membership_history([REFUSED] * 3, [(1.2, 1.3, "pause", "resume")])
    assert check_availability(late, FACTS)["valid"] is True
    # Skipped ops (no leader, no spare) asked nothing.
    skipped = [{"skipped": "no spare node is running", "outcome": "fail"}] * 4
    assert check_availability(membership_history(skipped), FACTS)["valid"] is True


def test_a_kind_missed_only_while_faults_were_active_is_not_judged():
    # Sim seed 17 (fencing): 13 fenced-puts, each under a partition, a kill or a slow link,
    # none answered, while a few acquires got through in short windows. Too little to call the
    # build unable to serve the kind: at least 3 attempts must have run with no fault active.
    reads = [(t, t + 0.1, "ok", None) for t in range(1, 6)]
    writes = [(t + 0.5, t + 2.5, "info", "timeout") for t in range(10)]
    h = _kinds(history(*reads, *writes), 5)

    def with_faults(windows: list[tuple[float, float]]) -> list[Op]:
        out = list(h)
        for start, stop in windows:
            out += [nemesis(0, start, "start-partition", "invoke", ["n1"]), nemesis(0, start, "start-partition", "info", ["n1"]),
                    nemesis(0, stop, "stop-partition", "invoke"), nemesis(0, stop, "stop-partition", "info")]
        out.sort(key=lambda o: o.time)
        return [Op(i, o.time, o.process, o.type, o.f, key=o.key, value=o.value, error=o.error) for i, o in enumerate(out)]

    # writes span 0.5-2.5, 1.5-3.5, ..., 9.5-11.5: a fault over 0-8 leaves 2 quiet (8.5-, 9.5-)
    two_quiet = check_availability(with_faults([(0.0, 8.0)]), WHOLE)
    assert two_quiet["valid"] is True, two_quiet
    three_quiet = check_availability(with_faults([(0.0, 7.0)]), WHOLE)
    assert three_quiet["valid"] is False
    (violation,) = three_quiet["violations"]
    assert violation["rule"] == "kind-never-served" and violation["quiet"] == 3
    # A fault's effect outlasts its window by up to an election (the simulator gives its
    # longest election timeout as recovery_s; sim seed 686): with 0.6 s of recovery the write
    # invoked 0.5 s after the window of 0-7 ends is not quiet, the two after it still are.
    recovering = check_availability(with_faults([(0.0, 7.0)]), {**WHOLE, "recovery_s": 0.6})
    assert recovering["valid"] is True, recovering
    # Recovery counts after a window, never before it: a window that starts right after the
    # three quiet writes' last answer (11.5) leaves them quiet.
    after = check_availability(with_faults([(0.0, 7.0), (11.6, 12.0)]), {**WHOLE, "recovery_s": 0.05})
    assert after["valid"] is False and after["violations"][0]["quiet"] == 3


def transfer_history(outcomes: list[dict], faults: list[tuple[float, float, str, str]] = ()) -> list[Op]:
    """Served client reads, one leadership transfer a second with OUTCOMES, and FAULTS."""
    h = history(*[(t, t + 0.1, "ok", None) for t in range(1, 6)])
    for k, value in enumerate(outcomes):
        h.append(nemesis(len(h), 1.0 + k, "transfer-leader", "invoke", {"node": "n2", "via": "n1"}))
        h.append(nemesis(len(h), 1.8 + k, "transfer-leader", "info", {"node": "n2", "via": "n1", **value}))
    return with_faults(h, faults)


TIMED_OUT = {"outcome": "timeout"}  # the simulator's record of "leadership did not move in time"


def test_every_leadership_transfer_failing_with_no_fault_active_is_invalid():
    result = check_availability(transfer_history([TIMED_OUT] * 3), FACTS)
    assert result["valid"] is False, result
    (violation,) = result["violations"]
    assert violation["rule"] == "transfer-refused" and violation["count"] == 3
    assert "no leadership transfer was ever accepted: 3 requests made while no other fault was active, " \
           "0 refused and 3 unanswered" in violation["what"]
    # A real run's record (nemeses.membership: outcome and error code apart) counts the same.
    real = [{"outcome": "fail", "error": "timeout", "message": "leadership did not move to n2 in time"}] * 3
    assert check_availability(transfer_history(real), FACTS)["violations"][0]["rule"] == "transfer-refused"


def test_transfer_failures_are_excused_by_one_success_a_fault_a_skip_or_too_few():
    assert check_availability(transfer_history([TIMED_OUT] * 4 + [{"outcome": "ok"}]), FACTS)["valid"] is True
    assert check_availability(transfer_history([TIMED_OUT] * 2), FACTS)["valid"] is True
    partitioned = transfer_history([TIMED_OUT] * 4, [(0.5, 3.9, "start-partition", "stop-partition")])
    assert check_availability(partitioned, FACTS)["valid"] is True
    # a target that was no voter is refused by design: recorded as skipped, never judged
    skipped = [{"outcome": "bad_request", "skipped": "n2 was not a voter"}] * 4
    assert check_availability(transfer_history(skipped), FACTS)["valid"] is True
    # an older history whose transfers carry no outcome at all is not judged either
    assert check_availability(transfer_history([{}] * 4), FACTS)["valid"] is True


def pinned(i: int, t_s: float, process: int, type_: str, node: str, error: str | None = None) -> Op:
    return Op(index=i, time=int(t_s * S), process=process, type=type_, f="write", key=0, error=error,
              extra={"node": node} if type_ == "invoke" else {})


def unserved_in_span(node: str = "n1", start: float = 3.0) -> list[Op]:
    """An ok write at 0.5 s, then four writes sent to NODE from START s, one a second, each
    timing out 0.5 s later."""
    h = [pinned(0, 0.5, 0, "invoke", "n1"), pinned(1, 0.6, 0, "ok", "n1")]
    for k in range(4):
        h.append(pinned(len(h), start + k, 1 + k, "invoke", node))
        h.append(pinned(len(h), start + k + 0.5, 1 + k, "info", node, error="timeout"))
    return h


HEALTHY = [(1.0, 9.0, frozenset({"n3"}))]  # only n3 down from 1 s to 9 s


def test_a_majority_up_and_unimpaired_that_serves_nothing_after_the_grace_is_invalid():
    result = check_availability(unserved_in_span(), FACTS, healthy=HEALTHY, grace_s=1.5)
    assert result["valid"] is False, result
    (violation,) = result["violations"]
    assert violation["rule"] == "majority-unserved" and violation["count"] == 4 and violation["down"] == ["n3"]
    assert "from 1.0 s to 9.0 s a majority was up and connected (n3 down or cut off" in violation["what"]
    assert "none of the 4 operations sent to its nodes after a grace of 1.5 s was served" in violation["what"]


def test_majority_unserved_judges_only_ops_to_running_nodes_after_the_grace_within_the_span():
    # one of them served: the majority serves
    h = unserved_in_span()
    h[3] = pinned(3, 3.5, 1, "ok", "n1")
    assert check_availability(h, FACTS, healthy=HEALTHY, grace_s=1.5)["valid"] is True
    # sent to the node that was down: no evidence about the majority
    assert check_availability(unserved_in_span(node="n3"), FACTS, healthy=HEALTHY, grace_s=1.5)["valid"] is True
    # invoked within the grace (the span began at 1 s; 4 s of grace leaves two ops: too few)
    assert check_availability(unserved_in_span(), FACTS, healthy=HEALTHY, grace_s=4.0)["valid"] is True
    # the span ended before they were answered (a fault began at 5 s)
    assert check_availability(unserved_in_span(), FACTS, healthy=[(1.0, 5.0, frozenset({"n3"}))],
                              grace_s=1.5)["valid"] is True
    # no spans (a real run, or a seed whose membership changed): the rule says nothing
    assert check_availability(unserved_in_span(), FACTS)["valid"] is True
