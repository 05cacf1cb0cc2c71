"""The bad-input checker (checkers/probes.py) on hand-made probes.jsonl records, its wiring
into `analyze` (harness/analysis.py), and the battery's own promises (harness/probes.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from checkers.probes import PROBES_FILE, check_probes, probes_checker, read_probes
from harness.probes import BATTERY, BAD_REQUEST, CLOSE, EXPECTED_AFTER, PROBE_PREFIX, RESERVED_KEY, SCALAR_VALUE
from ukehi import wire
from ukehi.node.driver import ADDRESS_KEY_PREFIX

NODES = ["n1", "n2", "n3"]


def closed(port: int = 1) -> dict[str, Any]:
    return {"outcome": "closed", "port": port, "reason": "unknown field 'x'"}


def refused(message: str = "keys starting with \\x00ukehi/ are reserved") -> dict[str, Any]:
    return {"outcome": "answered", "type": "error", "code": "bad_request", "message": message}


def battery(**changes: Any) -> list[dict[str, Any]]:
    """A correct battery's records on three nodes (n3 leads); ``changes``: probe name or
    "node/probe" -> the answer it got instead."""
    records: list[dict[str, Any]] = [
        {"kind": "start", "battery": 1, "nodes": NODES, "not_running": [], "leader": "n3", "counts_bad_frames": True,
         "bad_frames_before": {n: 0 for n in NODES}},
    ]
    for key, value in EXPECTED_AFTER.items():
        records.append({"kind": "setup", "node": "n3", "key": key, "put": value, "before": None,
                        "answer": {"outcome": "answered", "type": "ok"} if value is not None else None})
    closes = {n: 0 for n in NODES}
    for node in NODES:
        for i, p in enumerate(BATTERY):
            if p.leader_only and node != "n3":
                continue
            got = closed(i) if p.expect == CLOSE else refused()
            got = changes.get(f"{node}/{p.name}", changes.get(p.name, got))
            closes[node] += got["outcome"] == "closed"
            records.append({"kind": "probe", "probe": p.name, "level": p.level, "node": node, "what": p.what,
                            "expect": p.expect, "leader_only": p.leader_only, "answer": got, "ms": 3.0})
    for node in NODES:
        records.append({"kind": "alive", "node": node, "running": True, "status": True,
                        "bad_frames_after": closes[node]})
    for key, expected in EXPECTED_AFTER.items():
        records.append({"kind": "data", "key": key, "expected": expected, "node": "n3",
                        "read": {"outcome": "answered", "type": "ok", "value": expected}})
    records.append({"kind": "end", "seconds": 0.6})
    return records


def test_a_correct_battery_is_valid_with_its_probe_count():
    got = check_probes(battery())
    per_node = sum(1 for p in BATTERY if not p.leader_only)
    assert got["valid"] is True
    assert got["probes"] == 3 * per_node + sum(1 for p in BATTERY if p.leader_only)
    assert got["refused"] == got["probes"] and got["inconclusive"] == 0


@pytest.mark.parametrize("answer, words", [
    ({"outcome": "answered", "type": "ok", "value": 5}, "accepted: ok 5"),
    ({"outcome": "answered", "type": "error", "code": "not_leader", "message": "n1 is not the leader"},
     "not refused as bad input: error not_leader"),
    ({"outcome": "answered", "type": "error", "code": "internal", "message": "KeyError('ttl_ms')"},
     "error internal"),
    ({"outcome": "answered", "type": "error", "code": "bad_request"}, "without a message"),
    ({"outcome": "no-answer", "detail": "neither answered nor closed within 5 s"}, "hung"),
])
def test_a_probe_not_refused_makes_the_run_invalid_naming_probe_node_and_answer(answer, words):
    got = check_probes(battery(**{"n2/acquire-ttl-zero": answer}))
    assert got["valid"] is False
    problem = got["problems"][0]
    assert problem["probe"] == "acquire-ttl-zero" and problem["node"] == "n2" and problem["answer"] == answer
    assert words in problem["problem"]
    assert "acquire-ttl-zero node n2" in got["explanation"]


def test_a_refusal_of_another_kind_than_expected_still_counts_as_refused():
    # a schema violation answered bad_request instead of a close: refused, with a message
    got = check_probes(battery(**{"put-unknown-field": refused("put: unknown field 'ttl'")}))
    assert got["valid"] is True


def test_recovering_and_a_moved_leader_are_inconclusive_not_blamed():
    recovering = {"outcome": "answered", "type": "error", "code": "recovering", "message": "n1 is replaying"}
    moved = {"outcome": "answered", "type": "error", "code": "not_leader", "message": "the leader is n1"}
    got = check_probes(battery(**{"n1/put-reserved-key": recovering, "n3/append-to-scalar": moved}))
    assert got["valid"] is True and got["inconclusive"] == 2
    # not_leader to a stateless probe: the node validated nothing before routing it
    assert check_probes(battery(**{"n1/put-reserved-key": moved}))["valid"] is False


def test_a_probe_that_changed_data_is_invalid():
    records = battery()
    for r in records:
        if r["kind"] == "data" and r["key"] == "probe/scalar":
            r["read"]["value"] = ["p", "r", "PROBE-CHANGED"]
    got = check_probes(records)
    assert got["valid"] is False
    assert "'probe/scalar' holds" in got["problems"][0]["problem"] and got["problems"][0]["expected"] == SCALAR_VALUE


def test_a_node_killed_or_hung_by_the_battery_is_invalid_unless_down_on_purpose():
    records = battery()
    alive = next(r for r in records if r["kind"] == "alive" and r["node"] == "n2")
    alive.update(running=False, status=False)
    got = check_probes(records)
    assert got["valid"] is False and got["problems"][0] == {
        "node": "n2", "problem": "the node stopped during the bad-input battery"}
    assert check_probes(records, {"n2": "refused to start (corruption policy)"})["valid"] is True
    alive.update(running=True, status=False)
    assert "answered no status request" in check_probes(records)["problems"][0]["problem"]


def test_closing_without_counting_a_bad_frame_is_invalid():
    records = battery()
    alive = next(r for r in records if r["kind"] == "alive" and r["node"] == "n1")
    alive["bad_frames_after"] -= 1
    got = check_probes(records)
    assert got["valid"] is False and "hung up without logging why" in got["problems"][0]["problem"]
    # the simulator's transport bypasses the server's counter: not checked there
    records[0]["counts_bad_frames"] = False
    assert check_probes(records)["valid"] is True


def test_an_unfinished_or_failed_battery_is_unknown_and_no_file_is_unknown():
    assert check_probes(battery()[:-1])["valid"] == "unknown"
    assert check_probes(battery()[:-1] + [{"kind": "error", "error": "TimeoutError: "}])["valid"] == "unknown"
    assert check_probes(None)["valid"] == "unknown"
    nobody = {"outcome": "connect-failed", "message": "ConnectionRefusedError"}
    everything_failed = [dict(r, answer=nobody) if r["kind"] == "probe" else r for r in battery()]
    assert check_probes(everything_failed)["valid"] == "unknown"
    no_node = [r for r in battery() if r["kind"] in ("start", "end")]
    got = check_probes(no_node)
    assert (got["valid"], got["probes"], got["note"]) == (True, 0, "no node was running to probe")
    # a problem found before the battery stopped still stands
    assert check_probes(battery(**{"txn-empty": {"outcome": "answered", "type": "ok"}})[:-1])["valid"] is False


def test_probes_checker_reads_the_run_dir_a_torn_last_line_and_down_on_purpose(tmp_path: Path):
    records = battery(**{"n1/put-value-map": {"outcome": "answered", "type": "ok"}})
    text = "".join(json.dumps(r) + "\n" for r in records)
    (tmp_path / PROBES_FILE).write_text(text + '{"kind": "ali', encoding="utf-8")
    assert read_probes(tmp_path / PROBES_FILE) == records
    assert read_probes(tmp_path / "nothing.jsonl") is None
    got = probes_checker(tmp_path)([], {})
    assert got["valid"] is False and got["problems"][0]["probe"] == "put-value-map"
    alive = next(r for r in records if r["kind"] == "alive" and r["node"] == "n3")
    alive["running"] = False
    (tmp_path / PROBES_FILE).write_text("".join(json.dumps(r) + "\n" for r in battery()[:-1]) + json.dumps(alive)
                                        + "\n" + json.dumps({"kind": "end"}) + "\n", encoding="utf-8")
    assert probes_checker(tmp_path)([], {})["valid"] is False
    (tmp_path / "availability.json").write_text(json.dumps({"down_on_purpose": {"n3": "recovering"}}))
    assert probes_checker(tmp_path)([], {})["valid"] is True


def test_analyze_judges_bad_input_only_where_the_battery_ran(tmp_path: Path):
    from harness.analysis import check_run
    from harness.spec import TestSpec
    from harness.store import RunDir

    def stored(name: str, probes: list[dict[str, Any]] | None) -> RunDir:
        path = tmp_path / name
        path.mkdir()
        spec = TestSpec(name=name, workload="register", nodes=tuple(NODES), nemeses=(), time_limit=10.0,
                        results_dir=str(tmp_path))
        (path / "test.json").write_text(spec.to_json(run_id=f"ukj-{name}"), encoding="utf-8")
        (path / "history.jsonl").write_text("", encoding="utf-8")
        if probes is not None:
            (path / PROBES_FILE).write_text("".join(json.dumps(r) + "\n" for r in probes), encoding="utf-8")
        return RunDir(path)

    assert "bad-input" not in check_run(stored("old", None))["checkers"]
    assert check_run(stored("good", battery()))["checkers"]["bad-input"]["valid"] is True
    verdict = check_run(stored("bad", battery(**{"n1/acquire-ttl-zero": {"outcome": "answered", "type": "ok"}})))
    assert verdict["checkers"]["bad-input"]["valid"] is False and verdict["valid"] is False


def test_the_battery_covers_the_documented_cases_and_each_frame_is_refused_by_the_codec():
    names = {p.name for p in BATTERY}
    assert {"acquire-ttl-zero", "acquire-ttl-negative", "put-unknown-field", "put-missing-value", "txn-too-many-ops",
            "txn-unknown-micro-op", "unknown-request-type", "frame-length-zero", "frame-not-msgpack",
            "frame-truncated", "frame-over-size-limit", "put-reserved-key", "append-to-scalar"} <= names
    assert len(names) == len(BATTERY)
    for p in BATTERY:
        data = p.data if p.cut is None else p.data[:p.cut]
        if p.expect == CLOSE and p.name != "response-frame-from-client":
            # what the node's server does with the bytes: refuse them before any handler
            with pytest.raises(wire.ProtocolError):
                wire.decode_frame(data)
        else:
            frame = wire.decode_frame(data)  # well-formed: the node itself must refuse it
            assert p.expect == BAD_REQUEST or frame.type not in wire.CLIENT_REQUESTS, p.name
        assert all(k.startswith(PROBE_PREFIX) or k.startswith(ADDRESS_KEY_PREFIX) for k in p.keys), p.name
    assert RESERVED_KEY.startswith(ADDRESS_KEY_PREFIX)
    # the probes' keys are no workload's (checkers/whitebox/signatures.py names theirs)
    from checkers.whitebox.signatures import KEY_PREFIX

    assert not any(PROBE_PREFIX.startswith(prefix) for prefix in KEY_PREFIX.values())
