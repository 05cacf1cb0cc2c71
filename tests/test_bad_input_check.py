"""Issue 12 section 2: `check` and `analyze` on bad input: one line, exit 254, nothing
dropped silently. Subprocess runs from a temporary cwd with relative paths."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from checkers import edn
from checkers.history import HistoryError, TornTailError, read_jsonl
from checkers.readers import read_history_text
from harness.spec import TestSpec

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "checkers" / "data"
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def jepsen(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=ENV)


def error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 254, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert re.match(r"^ukehi-jepsen (check|analyze): error: ", lines[0]), lines[0]
    return lines[0]


# A history whose last op, a read of a value never written, is what makes it invalid.
OPS = [
    {"index": 0, "time": 1, "process": 0, "type": "invoke", "f": "write", "key": 0, "value": 1},
    {"index": 1, "time": 2, "process": 0, "type": "ok", "f": "write", "key": 0, "value": 1},
    {"index": 2, "time": 3, "process": 1, "type": "invoke", "f": "read", "key": 0},
    {"index": 3, "time": 4, "process": 1, "type": "ok", "f": "read", "key": 0, "value": 7},
]


def jsonl(ops: list[dict]) -> str:
    return "".join(json.dumps(op) + "\n" for op in ops)


def torn(ops: list[dict]) -> str:
    """The history with its last line cut in the middle, as a killed writer leaves it."""
    text = jsonl(ops)
    return text[: len(text) - 12]


def make_run(cwd: Path, history: bytes | str, *, closed: bool) -> Path:
    run = cwd / "results" / "register-none" / "20260101T000000.000Z"
    run.mkdir(parents=True)
    spec = TestSpec(name="register-none", workload="register", nodes=("n1", "n2", "n3"),
                    results_dir=str(cwd / "results"))
    (run / "test.json").write_text(spec.to_json())
    (run / "history.jsonl").write_bytes(history if isinstance(history, bytes) else history.encode())
    if closed:
        (run / "history.closed").write_text("closed\n")
    return run


# -- check -------------------------------------------------------------------------------

def test_check_reports_a_torn_last_line_instead_of_dropping_it(tmp_path):
    (tmp_path / "h.jsonl").write_text(torn(OPS))
    line = error_line(jepsen(tmp_path, "check", "h.jsonl"))
    assert "line 4" in line and "cut off" in line and "--ignore-torn-tail" in line
    done = jepsen(tmp_path, "check", "h.jsonl", "--ignore-torn-tail")
    assert done.returncode == 0, done.stdout + done.stderr  # valid without the invalid read
    assert "ignored the cut-off last line 4" in done.stdout
    # A whole last line without its newline is not torn: it is checked.
    (tmp_path / "whole.jsonl").write_text(jsonl(OPS).rstrip("\n"))
    assert jepsen(tmp_path, "check", "whole.jsonl").returncode == 1


def test_check_accepts_a_torn_tail_only_when_the_run_never_closed_its_history(tmp_path):
    crashed = make_run(tmp_path / "a", torn(OPS), closed=False)
    done = jepsen(tmp_path, "check", os.path.relpath(crashed / "history.jsonl", tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "harness stopped while writing" in done.stdout
    damaged = make_run(tmp_path / "b", torn(OPS), closed=True)
    assert "cut off" in error_line(jepsen(tmp_path, "check", os.path.relpath(damaged / "history.jsonl",
                                                                             tmp_path)))


def test_bad_initial_is_an_error_not_a_string(tmp_path):
    (tmp_path / "h.jsonl").write_text(jsonl(OPS))
    for bad in ("{bad", "[1,", '"open'):
        line = error_line(jepsen(tmp_path, "check", "h.jsonl", "--initial", bad))
        assert "--initial" in line and "not valid JSON" in line
    assert jepsen(tmp_path, "check", "h.jsonl", "--initial", "7").returncode == 1  # accepted, then judged


def test_forced_format_that_does_not_fit_says_what_the_file_looks_like(tmp_path):
    (tmp_path / "h.jsonl").write_text(jsonl(OPS))
    line = error_line(jepsen(tmp_path, "check", "h.jsonl", "--format", "porcupine-kv"))
    assert "does not look like porcupine-kv" in line and "looks like jsonl" in line
    line = error_line(jepsen(tmp_path, "check", str(DATA / "history-ok.edn"), "--format", "jsonl"))
    assert "does not look like jsonl" in line and "looks like edn" in line


KNOSSOS_LIST = """; Knossos-style data: one list of op maps, with comments
;; and a discarded op
({:process 0, :type :invoke, :f :write, :value 1} ; the write
 {:process 0, :type :ok, :f :write, :value 1}
 #_{:process 9, :type :invoke, :f :read, :value nil}
 {:process 1, :type :invoke, :f :read, :value nil}
 {:process 1, :type :ok, :f :read, :value READ})
"""


def test_edn_history_as_one_top_level_list_with_comments(tmp_path):
    (tmp_path / "good.edn").write_text(KNOSSOS_LIST.replace("READ", "1"))
    (tmp_path / "bad.edn").write_text(KNOSSOS_LIST.replace("READ", "2"))
    done = jepsen(tmp_path, "check", "good.edn")
    assert done.returncode == 0 and "(edn," in done.stdout, done.stdout + done.stderr
    assert jepsen(tmp_path, "check", "bad.edn").returncode == 1
    good = KNOSSOS_LIST.replace("READ", "1")
    ops = read_history_text(good, "edn").ops
    assert [(op.process, op.type, op.f) for op in ops] == [
        (0, "invoke", "write"), (0, "ok", "write"), (1, "invoke", "read"), (1, "ok", "read")]
    vector = "[" + good.split("(", 1)[1].rsplit(")", 1)[0] + "]"
    assert read_history_text(vector, "edn").ops == ops
    with pytest.raises(edn.EdnError, match="missing '\\)'"):
        list(edn.iter_forms("({:process 0}", unwrap_vector=True))


def test_library_reader_can_refuse_a_torn_tail():
    with pytest.raises(TornTailError, match="line 4"):
        read_jsonl(torn(OPS).splitlines(keepends=True), torn_tail="error")
    assert len(read_jsonl(torn(OPS).splitlines(keepends=True))) == 3
    with pytest.raises(HistoryError):
        read_history_text(torn(OPS), "jsonl")


# -- analyze -------------------------------------------------------------------------------

@pytest.mark.parametrize("history, test_json, words", [
    (os.urandom(64) + b"\xff\xfe", None, ["history.jsonl is not UTF-8 text"]),
    (jsonl(OPS[:2]) + "{not json\n" + jsonl(OPS[2:]), None, ["history.jsonl: line 3: not valid JSON"]),
    (jsonl(OPS[:2]) + '{"index": 2}\n', None, ["history.jsonl: line 3: missing field"]),
    (jsonl(OPS), '{"name": "register-none", "workload":', ["test.json: line 1: not valid JSON"]),
    (jsonl(OPS), '{"name": "x", "workload": "bank", "nodes": ["n1"]}', ["unknown workload 'bank'"]),
    (jsonl(OPS), '[1, 2]', ["test.json: expected a JSON object"]),
])
def test_analyze_gives_the_same_one_line_errors_as_check(tmp_path, history, test_json, words):
    run = make_run(tmp_path, history, closed=True)
    if test_json is not None:
        (run / "test.json").write_text(test_json)
    line = error_line(jepsen(tmp_path, "analyze", os.path.relpath(run, tmp_path)))
    for word in words:
        assert word in line, line


def test_analyze_and_a_torn_tail(tmp_path):
    closed = make_run(tmp_path / "a", torn(OPS), closed=True)
    assert "cut off" in error_line(jepsen(tmp_path, "analyze", os.path.relpath(closed, tmp_path)))
    done = jepsen(tmp_path, "analyze", os.path.relpath(closed, tmp_path), "--ignore-torn-tail")
    assert done.returncode in (0, 2) and "ignored the cut-off last line 4" in done.stderr, done.stdout + done.stderr
    crashed = make_run(tmp_path / "b", torn(OPS), closed=False)
    done = jepsen(tmp_path, "analyze", os.path.relpath(crashed, tmp_path))
    assert done.returncode in (0, 2) and "harness stopped while writing" in done.stderr, done.stdout + done.stderr
    assert "ignored the cut-off" in json.loads((crashed / "results.json").read_text())["history_note"]
    whole = make_run(tmp_path / "c", jsonl(OPS), closed=True)
    assert jepsen(tmp_path, "analyze", os.path.relpath(whole, tmp_path)).returncode == 1
