"""White-box resolution of indeterminate writes (checkers/whitebox/resolve.py): an info write
whose command no node ever held or applied is judged as failed, and nothing else is."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

from checkers.elle import check as elle_check
from checkers.history import Op
from checkers.linearizability import check_linearizability
from checkers.whitebox import read_cluster
from checkers.whitebox.resolve import resolve_info
from ukehi.kv import encode_command
from whitebox_nodes import HISTORY, LOG, NOOP, Node, healthy, put, term_entries, write_all


def resolve(tmp_path: Path, history: list[Op], workload: str = "register", expected=("n1", "n2", "n3")):
    return resolve_info(read_cluster(tmp_path / "nodes"), history, workload, expected)


def info_write(index: int, key: int, value: Any, process: int) -> list[Op]:
    return [Op(index, index * 10, process, "invoke", "write", key, value),
            Op(index + 1, index * 10 + 5, process, "info", "write", key, value, error="timeout")]


def ok_read(index: int, key: int, value: Any, process: int) -> list[Op]:
    return [Op(index, index * 10, process, "invoke", "read", key, None),
            Op(index + 1, index * 10 + 5, process, "ok", "read", key, value)]


# register/7 = 70 written by a client that timed out (process 7), then read by another
DIRTY = HISTORY + info_write(20, 7, 70, process=7) + ok_read(22, 7, 70, process=8)


def test_an_info_write_no_node_holds_or_applied_is_resolved(tmp_path):
    write_all(healthy(tmp_path))
    res = resolve(tmp_path, DIRTY)
    assert res.refused is None, res.refused
    assert list(res.resolved) == [21] and res.resolved[21].invoke == 20
    assert res.summary()["resolved"] == 1 and res.summary()["info_mutating"] == 1
    view = res.view(DIRTY)
    done = {op.index: op for op in view}[21]
    assert done.type == "fail" and "no node's log holds it" in done.extra["resolved"]
    assert [op.type for op in DIRTY if op.index == 21] == ["info"]  # the recorded history is left alone
    # the stale read now has no write to explain it
    assert check_linearizability(DIRTY, "kv")["valid"] is True
    assert check_linearizability(view, "kv")["valid"] is False


def test_an_entry_any_node_holds_uncommitted_is_not_resolved(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n3"].wal(term_entries(1, 7, [put("register/7", 70)], seq=7))  # past its commit index 6
    write_all(nodes)
    res = resolve(tmp_path, DIRTY)
    assert res.refused is None and not res.resolved
    assert res.kept == {"in some node's log": 1}


def test_an_entry_only_applied_lines_remember_is_not_resolved(tmp_path):
    """Index 7 was applied and compacted into every snapshot: no WAL holds it any more, the
    applied lines' CRC still names it."""
    seven = term_entries(1, 7, [put("register/7", 70)], seq=7)
    for name in ("n1", "n2", "n3"):
        node = Node(tmp_path, name).wal(LOG + seven).hard_state(1, 7).snapshot(7, 1)
        node.start().applied(LOG + seven).write_log()
    res = resolve(tmp_path, DIRTY)
    assert res.refused is None and not res.resolved
    assert res.kept == {"applied by some node": 1}


def test_a_compacted_index_nobody_logged_applying_resolves_nothing(tmp_path):
    """Index 7 is in every snapshot but no applied line names it: it could hold the write."""
    seven = term_entries(1, 7, [put("register/7", 70)], seq=7)
    for name in ("n1", "n2", "n3"):
        node = Node(tmp_path, name).wal(LOG + seven).hard_state(1, 7).snapshot(7, 1)
        node.start().applied(LOG).log("snapshot-installed", index=7).write_log()
    history = HISTORY + info_write(20, 8, 80, process=7)
    res = resolve(tmp_path, history)
    assert not res.resolved
    assert res.refused is not None and "index 7" in res.refused and "could hold any command" in res.refused


def test_a_node_that_reported_a_policy_cut_resolves_nothing(tmp_path):
    nodes = healthy(tmp_path)
    nodes["n2"].start(entries=6, term=1, commit=6).log(
        "corruption-report", level="warning", kind="crc-mismatch", action="cut", index=7)
    write_all(nodes)
    res = resolve(tmp_path, DIRTY)
    assert not res.resolved and res.refused is not None and "n2" in res.refused and "cut" in res.refused


def test_a_repeated_value_is_not_resolved(tmp_path):
    write_all(healthy(tmp_path))
    history = DIRTY + info_write(30, 7, 70, process=9)  # a second client wrote 70 to key 7 too
    res = resolve(tmp_path, history)
    assert res.refused is None and not res.resolved
    assert res.kept == {"another op writes the same (repeated value)": 2}


def test_a_node_without_files_resolves_nothing(tmp_path):
    write_all(healthy(tmp_path))
    res = resolve(tmp_path, DIRTY, expected=("n1", "n2", "n3", "n4"))
    assert not res.resolved and "n4" in (res.refused or "")


def test_a_lost_acknowledged_write_resolves_nothing(tmp_path):
    """An acknowledged write found nowhere: the node data is incomplete (or the matching is
    wrong), so absence proves nothing."""
    write_all(healthy(tmp_path))
    history = DIRTY + [Op(30, 300, 5, "invoke", "write", 9, 90), Op(31, 305, 5, "ok", "write", 9, 90)]
    res = resolve(tmp_path, history)
    assert not res.resolved and "acknowledged put register/9 90" in (res.refused or "")


def test_a_command_encoding_the_checker_does_not_rebuild_resolves_nothing(tmp_path):
    nodes = healthy(tmp_path)
    # the fields in another order than the client sends them: the same signature, other bytes
    odd = b"\x00" + encode_command({"op": "put", "value": 90, "key": "register/9"})
    for node in nodes.values():
        node.wal(term_entries(1, 7, [odd], seq=7)).hard_state(1, 7)
    write_all(nodes)
    res = resolve(tmp_path, DIRTY)
    assert not res.resolved and "rebuild" in (res.refused or "")


# -- rw-register ---------------------------------------------------------------------------

def txn_command(*mops: tuple[str, int, Any]) -> bytes:
    return b"\x00" + encode_command({"op": "txn", "ops": [[f, f"rw/{k}", v] for f, k, v in mops]})


RW_LOG = term_entries(1, 1, [NOOP, txn_command(("w", 1, 10), ("w", 2, 20))])


def rw_cluster(tmp_path: Path, holder: str | None = None) -> None:
    """Three nodes that committed and applied RW_LOG; HOLDER also holds the dirty write
    (w 3 30) uncommitted at index 3."""
    for name in ("n1", "n2", "n3"):
        node = Node(tmp_path, name).wal(RW_LOG).hard_state(1, 2, "n1")
        if name == holder:
            node.wal(term_entries(1, 3, [txn_command(("w", 3, 30))], seq=3))
        node.start().applied(RW_LOG).write_log()


def rw_history() -> list[Op]:
    """T0 writes keys 1 and 2 (ok); T2 writes key 3 and times out; T4 reads key 3 as 30."""
    def txn(i: int, process: int, kind: str, sent: list, seen: list, **extra: Any) -> list[Op]:
        return [Op(i, i * 10, process, "invoke", "txn", value=tuple(tuple(m) for m in sent)),
                Op(i + 1, i * 10 + 5, process, kind, "txn", value=tuple(tuple(m) for m in seen), extra=extra)]
    return (txn(0, 0, "ok", [("w", 1, 10), ("w", 2, 20)], [("w", 1, 10), ("w", 2, 20)], raft_index=2)
            + txn(2, 1, "info", [("w", 3, 30)], [("w", 3, 30)])
            + txn(4, 2, "ok", [("r", 3, None), ("r", 1, None)], [("r", 3, 30), ("r", 1, 10)]))


def test_rw_register_dirty_read_is_invalid_only_with_resolution(tmp_path):
    rw_cluster(tmp_path)
    history = rw_history()
    assert elle_check(history, "rw-register")["valid"] is True  # T2 may have committed
    res = resolve(tmp_path, history, "rw-register")
    assert list(res.resolved) == [3], (res.refused, res.kept)
    result = elle_check(res.view(history), "rw-register")
    assert result["valid"] is False and result["anomaly_types"] == ["G1a"]
    g1a = result["anomalies"]["G1a"][0]
    assert g1a["resolved"] is True and g1a["writer"] == "T2"
    assert "never reached any node's log" in g1a["explanation"]
    assert result["txns"]["resolved"] == 1


def test_rw_register_write_a_node_holds_stays_indeterminate(tmp_path):
    rw_cluster(tmp_path, holder="n3")
    history = rw_history()
    res = resolve(tmp_path, history, "rw-register")
    assert not res.resolved and res.kept == {"in some node's log": 1}
    assert elle_check(res.view(history), "rw-register")["valid"] is True


# -- the harness: analyze judges the resolved view ----------------------------------------

def stored_run(tmp_path: Path, workload: str, history: list[Op]) -> Path:
    from harness.spec import TestSpec

    spec = TestSpec(name="resolve", workload=workload, nodes=("n1", "n2", "n3"), nemeses=("partition",),
                    time_limit=10.0, results_dir=str(tmp_path))
    (tmp_path / "test.json").write_text(spec.to_json(run_id="ukj-resolve"), encoding="utf-8")
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(op.to_dict()) + "\n" for op in history),
                                            encoding="utf-8")
    return tmp_path


def test_analysis_judges_the_resolved_view_and_says_so(tmp_path, monkeypatch):
    from harness.analysis import NO_RESOLVE_ENV, check_run
    from harness.store import RunDir

    rw_cluster(tmp_path)
    path = stored_run(tmp_path, "rw-register", rw_history())
    recorded = (path / "history.jsonl").read_text()
    verdict = check_run(RunDir(path))
    elle = verdict["checkers"]["elle"]
    assert elle["valid"] is False and elle["valid_without_resolution"] is True
    assert elle["explanation"].startswith("only with the 1 info write(s) that no node's log or state machine")
    assert "T2, an info transaction whose writes never reached" in elle["explanation"]
    assert verdict["resolution"]["resolved"] == 1 and verdict["resolution"]["used_by"] == ["elle"]
    assert verdict["checkers"]["durability"]["valid"] is True
    assert (path / "history.jsonl").read_text() == recorded
    assert json.loads((path / "results.json").read_text())["resolution"]["ops"] == [2]
    monkeypatch.setenv(NO_RESOLVE_ENV, "1")
    verdict = check_run(RunDir(path))
    assert verdict["checkers"]["elle"]["valid"] is True and "resolution" not in verdict


def test_analysis_names_the_resolved_write_a_failing_key_read(tmp_path):
    from harness.analysis import check_run
    from harness.store import RunDir

    write_all(healthy(tmp_path))
    verdict = check_run(RunDir(stored_run(tmp_path, "register", DIRTY)))
    lin = verdict["checkers"]["linearizable"]
    assert lin["valid"] is False and lin["valid_without_resolution"] is True
    assert "op index 20 (write 70, info; read by op index 23)" in lin["explanation"]
    assert lin["failures"][0]["resolved_ops"] == [20]


def test_crc_of_a_rebuilt_command_is_the_nodes(tmp_path):
    """The signature -> command bytes rebuild the applied lines are matched with."""
    from checkers.whitebox.signatures import signature_crc

    cmd = txn_command(("w", 3, 30), ("r", 1, None))
    assert signature_crc(("txn", (("w", "rw/3", "30"), ("r", "rw/1", None)))) == zlib.crc32(cmd)
    assert signature_crc(("txn", (("w", "rw/3", "31"), ("r", "rw/1", None)))) != zlib.crc32(cmd)
