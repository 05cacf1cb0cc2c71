"""Readers for each format, on small hand-written files, and their errors' line numbers."""

from pathlib import Path

import pytest

from checkers.history import HistoryError
from checkers.mapping import KNOSSOS, PORCUPINE_ETCD, PROJECT, to_operations
from checkers.model import UNKNOWN
from checkers.readers import detect_format, read_history, read_history_text

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name, fmt", [
    ("register-ok.jsonl", "jsonl"), ("history-ok.edn", "edn"), ("history-bad.edn", "edn"),
    ("read-initial-zero.edn", "edn"), ("etcd-ok.log", "jepsen-log"), ("kv-ok.txt", "porcupine-kv"),
])
def test_format_is_detected(name, fmt):
    assert read_history(str(DATA / name)).format == fmt


def test_undetectable_format_names_the_line():
    with pytest.raises(HistoryError, match="line 2: cannot tell the format"):
        detect_format("\nhello world\n")
    with pytest.raises(HistoryError, match="no history"):
        detect_format("; only a comment\n")


def test_edn_history_reads_with_knossos_conventions():
    loaded = read_history(str(DATA / "history-ok.edn"))
    assert loaded.conventions == KNOSSOS
    nemesis = [op for op in loaded.ops if not op.is_client]
    assert [op.f for op in nemesis] == ["start"]
    assert loaded.ops[5].value == (1, 2) and loaded.ops[5].f == "cas" and loaded.ops[5].type == "invoke"
    assert loaded.ops[8].error == "timed-out"  # #_ discarded the form before it
    ops = to_operations(loaded.ops, "cas-register", loaded.conventions)
    # the failed cas is dropped, the nil read has an unknown output, the info cas is pending
    assert [op.input[0] for op in ops] == [1, 0, 2, 0]
    assert ops[1].output is UNKNOWN
    assert ops[2].pending and ops[2].output is UNKNOWN
    assert ops[3].output == 3


def test_jepsen_log_reads_with_porcupines_conventions():
    loaded = read_history(str(DATA / "etcd-ok.log"))
    assert loaded.conventions == PORCUPINE_ETCD
    assert len(loaded.ops) == 10  # the jepsen.core line is skipped
    assert loaded.ops[0].index == 1  # op index = line - 1
    ops = to_operations(loaded.ops, "cas-register", loaded.conventions)
    cas = [op for op in ops if op.input[0] == 2]
    assert len(cas) == 1 and cas[0].output is False and not cas[0].pending  # returned false
    write3 = [op for op in ops if op.input[:3] == (1, None, 3)][0]
    assert write3.pending
    # the same events under the project's rules drop the failed cas instead
    assert not any(op.input[0] == 2 for op in to_operations(loaded.ops, "cas-register", PROJECT))


def test_porcupine_kv_lines():
    loaded = read_history(str(DATA / "kv-ok.txt"))
    ops = to_operations(loaded.ops, "porcupine-kv", loaded.conventions)
    assert {op.input[1] for op in ops} == {"a", "b"}
    assert [op.output for op in ops if op.input[0] == 0] == ["x", "", "xy"]


@pytest.mark.parametrize("name, fmt, line, message", [
    ("bad-line.jsonl", "auto", 3, "not valid JSON"),
    ("bad.edn", "auto", 4, "unexpected '}'"),
    ("bad.log", "auto", 3, "process must be an integer"),
])
def test_bad_line_is_named(name, fmt, line, message):
    with pytest.raises(HistoryError) as err:
        read_history(str(DATA / name), fmt)
    assert err.value.line_number == line
    assert message in str(err.value)


def test_edn_op_map_problems():
    with pytest.raises(HistoryError, match="line 2: op map is missing :f"):
        read_history_text("{:process 0 :type :invoke :f :read}\n{:process 0 :type :ok}", "edn")
    with pytest.raises(HistoryError, match=":type must be"):
        read_history_text("{:process 0 :type :done :f :read}", "edn")
    with pytest.raises(HistoryError, match="line 1: expected an op map"):
        read_history_text("[1 2]", "edn")


def test_porcupine_kv_rejects_other_ops():
    with pytest.raises(HistoryError, match="get/put/append"):
        read_history_text('{:process 0, :type :invoke, :f :cas, :key "a", :value [1 2]}', "porcupine-kv")


def test_a_log_without_op_lines_is_an_error():
    with pytest.raises(HistoryError, match="no 'INFO jepsen.util"):
        read_history_text("INFO  jepsen.core - hello\n", "jepsen-log")


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown format"):
        read_history_text("", "yaml")


def test_knossos_bare_tab_separated_lines():
    loaded = read_history(str(DATA / "knossos-bare.log"))
    assert loaded.format == "jepsen-log" and loaded.conventions == KNOSSOS
    nemesis = [op for op in loaded.ops if not op.is_client]
    assert nemesis[0].value == "Cut off {:n4 #{:n3}}"
    info = [op for op in loaded.ops if op.type == "info" and op.is_client]
    assert info[0].value == (0, 3) and info[0].error == "indeterminate:"
    assert [op.error for op in loaded.ops if op.type == "fail"] == ["timeout"]
    ops = to_operations(loaded.ops, "cas-register", loaded.conventions)
    assert ops[-1].output is UNKNOWN  # a nil read is a read of unknown value here


def test_a_bad_bare_line_is_named():
    with pytest.raises(HistoryError, match="line 2: expected '<process> :<type> :<f> <value>'"):
        read_history_text("0\t:invoke\t:read\tnil\n0 ok read 1\n", "jepsen-log")
