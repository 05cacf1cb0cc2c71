"""A small results dir with one of everything the browser shows, written by hand and with
the store and check code (no cluster is started): valid, invalid, unknown, crashed,
incomplete and running runs, a --test-count series, a matrix and a regress table."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from checkers.results import merge_valid
from harness.analysis import check_run
from harness.spec import TestSpec
from harness.store import RunDir

S = 1_000_000_000
# How long the apps under test count a run as live: the "running" run was written when the
# session's store was built and stays live all session; the crashed and incomplete ones were
# last written 10 hours "ago".
LIVE = 1800.0


def history_lines(stale: bool = False, torn: bool = False) -> list[dict[str, Any]]:
    """A register history over keys 1 and 2 with one partition window (1.0-3.0 s);
    ``stale``: a read of key 1 returns a value no write ever wrote (invalid)."""
    ops: list[dict[str, Any]] = []

    def op(t: float, process: Any, type_: str, f: str, key: Any = None, value: Any = None, **more: Any) -> None:
        d = {"index": len(ops), "time": int(t * S), "process": process, "type": type_, "f": f}
        if key is not None:
            d["key"] = key
        if value is not None:
            d["value"] = value
        d.update(more)
        ops.append(d)

    op(0.10, 0, "invoke", "write", 1, 3)
    op(0.15, 0, "ok", "write", 1, 3)
    op(0.20, 1, "invoke", "read", 1)
    op(0.25, 1, "ok", "read", 1, 3)
    op(1.00, "nemesis", "invoke", "start-partition", value="halves")
    op(1.01, "nemesis", "info", "start-partition", value={"n1": ["n2", "n3"]})
    op(1.50, 2, "invoke", "write", 2, 1)
    op(1.60, 2, "fail", "write", 2, 1, error="not-leader")
    op(2.00, 0, "invoke", "cas", 1, [3, 4])
    op(2.40, 0, "info", "cas", 1, [3, 4], error="timeout")
    op(3.00, "nemesis", "invoke", "stop-partition")
    op(3.01, "nemesis", "info", "stop-partition")
    op(3.50, 3, "invoke", "write", 1, 2)
    op(3.60, 3, "ok", "write", 1, 2)
    op(4.00, 1, "invoke", "read", 1)
    op(4.10, 1, "ok", "read", 1, 0 if stale else 2)
    op(4.20, 1, "invoke", "read", 2)
    op(4.30, 1, "ok", "read", 2, None)
    if torn:
        op(4.40, 1, "invoke", "read", 2)
    return ops


def write_run(root: Path, name: str, stamp: str, *, seed: int = 0, stale: bool = False, check: bool = True,
              closed: bool = True, torn: bool = False, age_s: float = 36000.0, nemeses: tuple[str, ...] = ("partition",),
              workload: str = "register", results: dict[str, Any] | None = None) -> Path:
    path = root / name / stamp
    path.mkdir(parents=True)
    written = time.time() - age_s  # when the history was last written, as the files will say
    spec = TestSpec(name=name, workload=workload, nodes=("n1", "n2", "n3"), nemeses=nemeses, seed=seed,
                    time_limit=4.0, results_dir=str(root))
    (path / "test.json").write_text(spec.to_json(run_id=f"ukj-test-{seed}"), encoding="utf-8")
    lines = [json.dumps(op) for op in history_lines(stale=stale, torn=torn)]
    text = "\n".join(lines) + "\n"
    if torn:
        text = "\n".join(lines[:-1]) + "\n" + lines[-1][:20]
    (path / "history.jsonl").write_text(text, encoding="utf-8")
    node = path / "nodes" / "n1"
    node.mkdir(parents=True)
    (node / "node.log").write_text(_node_log(written), encoding="utf-8")
    (path / "run.log").write_text("2026-01-01 00:00:00,000 INFO ukehi_jepsen.run: cluster up\n", encoding="utf-8")
    if closed:
        RunDir(path).mark_history_closed()
    if check:
        verdict = check_run(RunDir(path), time_limit=10.0)
        # These runs have no node data, so the white-box checkers can only say "unknown"; keep
        # the checkers that decided (the linearizability verdict among them), so that the
        # valid run is valid whatever white-box checkers this version has.
        decided = {n: r for n, r in verdict["checkers"].items() if r.get("valid") in (True, False)}
        assert "linearizable" in decided, verdict
        verdict.update(checkers=decided, valid=merge_valid(r["valid"] for r in decided.values()))
        RunDir(path).write_json("results.json", verdict)
    if results is not None:
        RunDir(path).write_json("results.json", results)
    _age(path, written)
    return path


def _node_log(written: float) -> str:
    """Lines stamped so that, lined up by the history's mtime (``written``), they fall
    before, inside and after the partition window (1.0-3.0 s of test time)."""
    origin = written - 4.3  # the last op is at 4.3 s

    def ts(t: float) -> str:
        now = origin + t
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"

    return "\n".join([
        f"ts={ts(0.05)} level=info node=n1 event=became-leader term=1",
        f"ts={ts(2.00)} level=info node=n1 event=peer-disconnected peer=n2",
        f"ts={ts(3.50)} level=info node=n1 event=peer-connected peer=n2",
    ]) + "\n"


def _age(path: Path, when: float) -> None:
    for dirpath, _, files in os.walk(path):
        for f in files:
            os.utime(Path(dirpath) / f, (when, when))


def build_store(root: Path) -> dict[str, str]:
    """Fill ``root``; returns role -> run id (``test/stamp``) or group id."""
    ids: dict[str, str] = {}
    write_run(root, "register-partition", "20260101T100000.000Z", age_s=72000)
    ids["valid"] = "register-partition/20260101T100000.000Z"
    write_run(root, "register-stale", "20260101T110000.000Z", stale=True, nemeses=("partition", "kill"))
    ids["invalid"] = "register-stale/20260101T110000.000Z"
    write_run(root, "register-budget", "20260101T120000.000Z", check=False,
              results={"valid": "unknown", "ops": 8, "checkers": {
                  "linearizable": {"valid": "unknown", "explanation": "time limit of 10 s reached before a verdict"},
                  "stats": {"valid": True}}})
    ids["unknown"] = "register-budget/20260101T120000.000Z"
    write_run(root, "register-crash", "20260101T130000.000Z", check=False, closed=False, torn=True)
    ids["crashed"] = "register-crash/20260101T130000.000Z"
    write_run(root, "register-unjudged", "20260101T140000.000Z", check=False, closed=True)
    ids["incomplete"] = "register-unjudged/20260101T140000.000Z"
    write_run(root, "kv-live", "20260101T150000.000Z", check=False, closed=False, age_s=0, workload="kv",
              nemeses=("partition",))
    ids["running"] = "kv-live/20260101T150000.000Z"
    # a --test-count 3 series: seeds 5, 6, 7, the middle one invalid
    base = write_run(root, "register-series", "20260102T100000.000Z", seed=5)
    for seed, stamp, stale in ((6, "20260102T100100.000Z", True), (7, "20260102T100200.000Z", False)):
        write_run(root, "register-series", stamp, seed=seed, stale=stale)
    ids["test-count"] = "test-count/register-series/20260102T100000.000Z"
    ids["series-first"] = f"register-series/{base.name}"
    _matrix(root, ids)
    _regress(root, ids)
    return ids


def _matrix(root: Path, ids: dict[str, str]) -> None:
    from harness.matrix import Cell, merge_repeats, write_matrix

    valid_dir = str(root / ids["valid"])
    invalid_dir = str(root / ids["invalid"])
    cells = [
        merge_repeats([Cell("alert-and-continue", "majority", "invalid", ["linearizable"], "lost data", invalid_dir),
                       Cell("alert-and-continue", "majority", "valid", ["linearizable"], "fine", valid_dir)]),
        merge_repeats([Cell("alert-and-continue", "one", "valid", ["linearizable"], "fine", valid_dir)]),
        merge_repeats([Cell("refuse-start", "majority", "unavailable", ["availability"], "refused", valid_dir)]),
        merge_repeats([Cell("refuse-start", "one", "valid", ["linearizable"], "fine",
                            "/elsewhere/results/gone/20250101T000000.000Z")]),
    ]
    path = write_matrix(str(root), cells, "ukehi-jepsen matrix --runs 2", 5)
    ids["matrix"] = f"matrix/{path.name}"


def _regress(root: Path, ids: dict[str, str]) -> None:
    def row(bug: str, outcome: str, ok: bool, caught: list[str], run: str) -> dict[str, Any]:
        return {"bug": bug, "workload": "register", "nemeses": "partition", "seed": 11, "time_limit": 20.0,
                "outcome": outcome, "ok": ok, "caught_by": caught, "first_violation_s": 4.1 if caught else None,
                "run_dir": str(root / run), "wall_s": 30.0, "detail": ""}

    path = root / "regress" / "20260103T100000.000Z"
    path.mkdir(parents=True)
    data = {"quick": True,
            "summary": {"ok": False, "bugs": 2, "detected": 1, "escaped": ["ack-before-commit"],
                        "escaped_known_findings": [], "correct_runs": 1, "false_alarms": 0,
                        "median_first_violation_s": 4.1},
            "rows": [row("(correct build)", "valid", True, [], ids["valid"]),
                     row("stale-read", "detected", True, ["linearizable"], ids["invalid"]),
                     row("ack-before-commit", "escaped", False, [], ids["valid"])],
            "cases": []}
    (path / "regress.json").write_text(json.dumps(data), encoding="utf-8")
    ids["regress"] = f"regress/{path.name}"


def add_traps(root: Path, outside: Path) -> None:
    """Things the server must never serve: symlinks out of the dir, a dot file."""
    outside.mkdir(exist_ok=True)
    (outside / "secret.txt").write_text("SECRET-OUTSIDE\n", encoding="utf-8")
    # the outside dir looks like a run, so a symlinked "run" would be listed if links were followed
    (outside / "test.json").write_text('{"name": "SECRET-OUTSIDE", "workload": "register"}', encoding="utf-8")
    (outside / "history.jsonl").write_text("", encoding="utf-8")
    run = root / "register-partition" / "20260101T100000.000Z"
    os.symlink(outside / "secret.txt", run / "leak.txt")
    os.symlink(outside, run / "leakdir")
    os.symlink(outside, root / "outside-test")
    os.symlink(outside, root / "register-partition" / "20991231T000000.000Z")
    (run / ".hidden").write_text("SECRET-HIDDEN\n", encoding="utf-8")
