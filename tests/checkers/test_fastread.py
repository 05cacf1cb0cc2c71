"""Issue 17, reading: the compiled reader (checkers/_fastread.c, optional) must give exactly
what the pure-Python reader gives: the same Ops (field by field, types of nested values
too, dict order included), the same errors with the same messages, the same torn-tail
handling. And without it (not built, or UKEHI_PURE_PYTHON set) the Python reader is used."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import checkers.history as history
from checkers.history import HistoryError, Op, read_jsonl, read_jsonl_text

ROOT = Path(__file__).resolve().parents[2]

try:
    from checkers import _fastread  # type: ignore[attr-defined]
except ImportError as err:  # pragma: no cover - depends on the install
    _fastread = None
    NOT_BUILT = f"checkers._fastread is not built ({err}); `pip install -e .` builds it where gcc and Python's headers exist"
else:
    NOT_BUILT = ""

needs_extension = pytest.mark.skipif(_fastread is None, reason=NOT_BUILT or "built")


def compact(d: dict) -> str:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False) + "\n"


def typed(v: Any) -> Any:
    """A value with the type of every part spelled out (== alone takes (1,) for [1] and
    True for 1), dict order included."""
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, [typed(x) for x in v])
    if isinstance(v, dict):
        return ("dict", [(typed(k), typed(x)) for k, x in v.items()])
    return (type(v).__name__, v)


def op_fields(op: Op) -> tuple:
    assert type(op) is Op
    return tuple(typed(getattr(op, name)) for name in Op.__slots__)  # type: ignore[attr-defined]


def outcome(read: Callable[[], list[Op]]) -> tuple:
    try:
        ops = read()
    except Exception as err:  # noqa: BLE001 - the exception is what is compared
        return ("raised", type(err).__name__, str(err), getattr(err, "line_number", None))
    return ("ops", [op_fields(op) for op in ops])


def read_both(text: str, torn_tail: str = "ignore") -> tuple[tuple, tuple]:
    """read_jsonl_text with the compiled reader, and with the pure-Python reader."""
    saved = history._compiled
    try:
        history._compiled = _fastread
        compiled = outcome(lambda: read_jsonl_text(text, torn_tail=torn_tail))
        history._compiled = False
        pure = outcome(lambda: read_jsonl_text(text, torn_tail=torn_tail))
    finally:
        history._compiled = saved
    return compiled, pure


def assert_same(text: str) -> tuple:
    for torn_tail in ("ignore", "error"):
        compiled, pure = read_both(text, torn_tail)
        assert compiled == pure, text[:2000]
    return compiled


# -- generated harness-like histories --------------------------------------------------------

UNICODE = ["ключ", "値", "naïve", "emoji 🙂", "tab\tless", "Ω"]


def harness_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(14 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.randint(-5, 300)
    if kind == 2:
        return rng.choice([10**18 - 1, 10**18, -(10**18), 2**63, -(2**63) - 1, 10**40, -(10**40), 0])
    if kind == 3:
        return rng.choice(["x", "", "k1", "w0", *UNICODE])
    if kind == 4:
        return rng.choice([True, False])
    if kind == 5:
        return rng.randint(-(10**12), 10**12)
    if kind == 6:
        return [rng.randint(0, 9), rng.randint(0, 9)]  # a cas pair
    if kind == 7:
        return []
    if kind in (8, 9):  # txn / list-append micro-ops
        return [[rng.choice(["append", "r", "w"]), rng.randint(0, 5),
                 rng.choice([rng.randint(0, 99), None, [rng.randint(0, 9) for _ in range(rng.randrange(4))]])]
                for _ in range(rng.randrange(1, 4))]
    if kind == 10:
        return {"owner": rng.choice(["w0", "w1"]), "ttl_ms": rng.randint(0, 999), "held": [1, [2]]}
    if kind == 11:
        return [harness_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 12:
        return {rng.choice(["lag", "n2", "値"]): harness_value(rng, depth + 1) for _ in range(rng.randrange(3))}
    return [{"a": [1, {"b": []}]}, -0, [[[]]]]


def harness_line(rng: random.Random, i: int) -> dict:
    d: dict = {"index": i, "time": rng.choice([i * 1000, 0, 2**62, -1]),
               "process": rng.choice([0, 1, 17, -3, 10**20, "nemesis", "n-ü", ""]),
               "type": rng.choice(["invoke", "ok", "fail", "info"]),
               "f": rng.choice(["read", "write", "cas", "txn", "append", "start-partition", "", "größe"])}
    if rng.random() < 0.7:
        d["key"] = rng.choice(["k1", 3, -2, 0, [1, [2, 3]], "ключ", None, 10**25])
    if rng.random() < 0.8:
        d["value"] = harness_value(rng)
    if rng.random() < 0.2:
        d["error"] = rng.choice(["timeout", ["not-leader", "n2"], {"why": ["x"]}, None, 3, [[1]]])
    if rng.random() < 0.5:
        d["node"] = rng.choice(["n1", "10.0.0.2", "nœud"])
    if rng.random() < 0.1:
        d["leaders_after_resume"] = {"n1": 3, "n2": [1, 2]}
    if rng.random() < 0.05:
        d["lists"] = [[1], []]
    return d


def harness_history(seed: int, n: int) -> str:
    rng = random.Random(seed)
    return "".join(compact(harness_line(rng, i)) for i in range(n))


@needs_extension
@pytest.mark.parametrize("seed", range(6))
def test_compiled_reader_reads_harness_histories_exactly_as_python(seed, monkeypatch):
    text = harness_history(seed, 1500)
    calls: list[int] = []
    line_op = history._line_op
    monkeypatch.setattr(history, "_line_op", lambda line, n: calls.append(n) or line_op(line, n))
    compiled = assert_same(text)
    assert compiled[0] == "ops" and len(compiled[1]) == 1500
    # and it read them itself: only lines with an escape ("tab\tless") were handed back to Python
    escaped = [n for n, line in enumerate(text.split("\n"), 1) if "\\" in line]
    assert calls == escaped * 2 and len(escaped) < 100  # assert_same read it twice (both torn_tail modes)
    # the stream readers agree too
    for read in (lambda: read_jsonl(io.StringIO(text)), lambda: read_jsonl(text.splitlines(keepends=True))):
        saved = history._compiled
        try:
            history._compiled = _fastread
            got = outcome(read)
            history._compiled = False
            assert got == outcome(read)
        finally:
            history._compiled = saved


@needs_extension
def test_register_kv_and_list_append_shapes():
    lines = [
        {"index": 0, "time": 0, "process": 0, "type": "invoke", "f": "write", "key": "k1", "value": 3},
        {"index": 1, "time": 5, "process": 0, "type": "ok", "f": "write", "key": "k1", "value": 3, "node": "n1"},
        {"index": 2, "time": 6, "process": 1, "type": "invoke", "f": "cas", "key": 7, "value": [3, 4]},
        {"index": 3, "time": 9, "process": 1, "type": "fail", "f": "cas", "key": 7, "value": [3, 4],
         "error": "precondition"},
        {"index": 4, "time": 10, "process": 2, "type": "invoke", "f": "txn",
         "value": [["append", 1, 5], ["r", 2, None]]},
        {"index": 5, "time": 12, "process": 2, "type": "ok", "f": "txn",
         "value": [["append", 1, 5], ["r", 2, [1, 5]]]},
        {"index": 6, "time": 13, "process": "nemesis", "type": "info", "f": "start-partition",
         "value": {"n1": ["n2", "n3"]}, "leaders": {"n1": 3}},
        {"index": 7, "time": 14, "process": 3, "type": "info", "f": "read", "key": "k1",
         "error": ["timeout", 1000]},
    ]
    got = assert_same("".join(compact(d) for d in lines))
    assert got[0] == "ops"
    ops = got[1]
    assert ops[2][6] == ("tuple", [("int", 3), ("int", 4)])  # a cas pair: a tuple
    assert ops[5][6][0] == "tuple" and ops[5][6][1][1] == ("tuple", [("str", "r"), ("int", 2),
                                                                    ("tuple", [("int", 1), ("int", 5)])])
    assert ops[6][6][0] == "dict" and ops[6][6][1][0][1] == ("list", [("str", "n2"), ("str", "n3")])  # not frozen
    assert ops[7][7] == ("list", [("str", "timeout"), ("int", 1000)])  # the error is not frozen


ODD_LINES = [
    '{"index": 5, "time": 5, "process": 0, "type": "ok", "f": "read"}\n',  # spaces
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","value":1.5}\n',  # a float
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","value":1e5}\n',
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","value":-0}\n',
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","value":"a\\"b\\u00e9\\n"}\n',  # escapes
    '{"index":5,"time":5,"process":"p\\u0041","type":"ok","f":"r\\/d"}\n',
    '{"time":5,"index":5,"process":0,"type":"ok","f":"read"}\n',  # another order
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","node":"n1","key":3}\n',  # key after extras
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","value":1,"key":3}\n',
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","error":1,"value":3}\n',
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","key":1,"key":2}\n',  # a known field twice
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","index":6}\n',
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","n":1,"n":2,"m":3}\n',  # an extra twice
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","value":{"a":1,"a":[2]}}\n',
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read"}\r\n',  # CRLF
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read"} \n',
    '\n', '   \n', '\t\n',  # blank lines
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","value":%s}\n' % ("[" * 70 + "]" * 70),
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","value":%s}\n' % ("[" * 60 + "]" * 60),
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","value":%s}\n' % ("9" * 5000),  # past int()'s limit
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","value":%s}\n' % ("-" + "9" * 300),
    '{"index":%s,"time":5,"process":0,"type":"ok","f":"read"}\n' % ("1" * 19),
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","value":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]}\n',
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","value":"\x7f\u2028\u0085"}\n',
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","x\u00e9":"\U0001F642"}\n',
]


@needs_extension
@pytest.mark.parametrize("odd", ODD_LINES)
def test_odd_lines_read_as_python_reads_them(odd):
    text = harness_history(3, 40)
    for mixed in (text + odd + harness_history(4, 40), odd + text, text + odd):
        assert_same(mixed)
    assert_same(odd)


BAD_LINES = [
    '{"index":true,"time":0,"process":0,"type":"ok","f":"read"}\n',
    '{"index":1,"time":0,"process":0,"type":"done","f":"read"}\n',
    '{"index":1,"time":0,"process":1.5,"type":"ok","f":"read"}\n',
    '{"index":1,"time":0,"process":null,"type":"ok","f":"read"}\n',
    '{"index":1,"time":0,"process":0,"type":"ok"}\n',
    '{"index":1,"time":0,"process":0,"type":"ok","f":3}\n',
    '{"index":1,"time":"0","process":0,"type":"ok","f":"read"}\n',
    '{"index":1,"time":0,"process":0,"type":"ok","f":"read","value":[1,}\n',
    '{"index":1,"time":0,"process":0,"type":"ok","f":"read","value":[01]}\n',
    '{"index":1,"time":0,"process":0,"type":"ok","f":"read","value":01}\n',
    '{"index":1,"time":0,"process":0,"type":"ok","f":"read","value":-}\n',
    '{"index":1,"time":0,"process":0,"type":"ok","f":"read","value":"a\x01b"}\n',  # a control character
    '{"index":1,"time":0,"process":0,"type":"ok","f":"read"}}\n',
    '{"index":1,"time":0,"process":0,"type":"ok","f":"read"\n',
    '[1, 2]\n', 'null\n', '"x"\n', '{}\n', 'garbage\n',
]


@needs_extension
@pytest.mark.parametrize("bad", BAD_LINES)
def test_bad_lines_raise_the_same_error(bad):
    text = harness_history(5, 20)
    compiled = assert_same(text + bad + text)
    assert compiled[0] == "raised" and compiled[1] in ("HistoryError", "TornTailError")
    assert compiled[3] == 21, compiled


@needs_extension
@pytest.mark.parametrize("tail", ['{"index":20,"time":0,"proc', '{"index":20,"time":0,"process":0,"type":"ok","f":"read"}',
                                  '{"index":20,"time":0,"process":0,"type":"ok","f":"read","value":[1,2',
                                  '   ', '{"index":20,"time":0,"process":0,"type":"ok","f":"read","node":"n1"}'])
def test_torn_and_unterminated_tails_as_python(tail):
    text = harness_history(6, 20)
    for whole in (text + tail, text + "\n" + tail, tail):
        assert_same(whole)


@needs_extension
def test_lone_surrogates_go_to_python():
    line = '{"index":0,"time":0,"process":0,"type":"ok","f":"read","value":"\ud800"}\n'
    assert _fastread.read(line, Op, history._line_op) is None
    assert_same(line)


@needs_extension
def test_values_are_fresh_where_mutable_and_ops_are_frozen():
    line = compact({"index": 0, "time": 0, "process": 0, "type": "invoke", "f": "acquire", "key": [0],
                    "value": {"owner": "w0"}, "error": ["x"], "node": "n1"})
    ops = _fastread.read(line + line, Op, history._line_op)
    assert ops[0].value == ops[1].value and ops[0].value is not ops[1].value
    assert ops[0].error is not ops[1].error and ops[0].extra is not ops[1].extra
    with pytest.raises(AttributeError):
        ops[0].index = 3  # type: ignore[misc]
    assert ops[0] == Op(0, 0, 0, "invoke", "acquire", key=(0,), value={"owner": "w0"}, error=["x"])
    assert hash(Op(0, 0, 0, "ok", "read", key=(1,))) == hash(_fastread.read(compact(
        {"index": 0, "time": 0, "process": 0, "type": "ok", "f": "read", "key": [1]}), Op, history._line_op)[0])


@needs_extension
def test_a_class_without_op_slots_is_refused():
    class NoFields:
        pass

    class NotOp:
        __slots__ = ("index", "time", "process", "type", "f", "key", "value", "error")
        extra: dict = {}  # a class attribute, not a slot

    with pytest.raises(AttributeError):
        _fastread.read("", NoFields, history._line_op)
    with pytest.raises(TypeError, match="NotOp.extra is not an object slot"):
        _fastread.read("", NotOp, history._line_op)
    with pytest.raises(TypeError, match="must be the Op class"):
        _fastread.read("", Op(0, 0, 0, "ok", "read"), history._line_op)
    assert _fastread.read("", Op, history._line_op) == []


# -- any text: the two readers agree ---------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.text(max_size=6) | st.sampled_from(["k1", "n1", "é", "\\", '"']),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12)


@st.composite
def history_texts(draw: Any) -> str:
    lines = []
    for i in range(draw(st.integers(1, 6))):
        d: dict = {"index": draw(st.integers(-3, 10**20)), "time": draw(st.integers(-3, 10**6)),
                   "process": draw(st.integers(-1, 50) | st.text(max_size=5)),
                   "type": draw(st.sampled_from(["invoke", "ok", "fail", "info"])),
                   "f": draw(st.text(max_size=6))}
        for name in ("key", "value", "error"):
            if draw(st.booleans()):
                d[name] = draw(json_values)
        for name in draw(st.lists(st.sampled_from(["node", "x", "index", "value", "é"]), max_size=2)):
            d[name] = draw(json_values)
        line = json.dumps(d, separators=(",", ":"), ensure_ascii=draw(st.booleans()))
        if draw(st.integers(0, 4)) == 0:  # damage it: a character dropped, doubled or changed
            at = draw(st.integers(0, len(line)))
            what = draw(st.sampled_from(["drop", "double", "space", ".", "0", "]", "}", '"', "\\", "\n"]))
            if what == "drop":
                line = line[:at] + line[at + 1:]
            elif what == "double":
                line = line[:at] + line[at:at + 1] * 2 + line[at + 1:]
            else:
                line = line[:at] + (" " if what == "space" else what) + line[at:]
        lines.append(line)
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n", "\r\n"]))


@needs_extension
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history_texts())
def test_any_text_reads_the_same_either_way(text):
    assert_same(text)


# -- the fallback --------------------------------------------------------------------------

def test_the_python_reader_is_used_when_forced(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text(harness_history(8, 200))
    code = ("import sys, checkers.history as h; from checkers.readers import read_history; "
            "ops = read_history(sys.argv[1]).ops; "
            "print(h.compiled_reader() is None, 'checkers._fastread' in sys.modules, len(ops))")
    env = dict(os.environ, UKEHI_PURE_PYTHON="1")
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "False", "200"]
    env["UKEHI_PURE_PYTHON"] = "0"  # "0" does not force it
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=True)
    built = _fastread is not None
    assert done.stdout.split() == [str(not built), str(built), "200"]


def test_without_the_extension_the_python_fast_path_reads(monkeypatch):
    calls: list[int] = []
    python_path = history._read_canonical_python
    monkeypatch.setattr(history, "_compiled", False)
    monkeypatch.setattr(history, "_read_canonical_python", lambda text: calls.append(1) or python_path(text))
    text = harness_history(9, 100)
    ops = read_jsonl_text(text)
    assert calls == [1] and len(ops) == 100
    with pytest.raises(HistoryError, match="line 101: type must be one of"):
        read_jsonl_text(text + '{"index":1,"time":0,"process":0,"type":"done","f":"read"}\n')


@needs_extension
def test_the_extension_is_used_when_built(monkeypatch):
    monkeypatch.setattr(history, "_compiled", None)
    monkeypatch.delenv("UKEHI_PURE_PYTHON", raising=False)
    assert history.compiled_reader() is _fastread
    calls: list[int] = []
    monkeypatch.setattr(history, "_read_canonical_python", lambda text: calls.append(1))
    assert len(read_jsonl_text(harness_history(10, 50))) == 50 and calls == []


@needs_extension
def test_the_extension_imports_from_another_directory(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import checkers._fastread as m; print(m.__file__)"],
                          cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(done.stdout.strip()).name.startswith("_fastread")


def test_the_bench_times_the_compiled_and_the_pure_reader_side_by_side(monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_checker_reading", ROOT / "bench" / "checker.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setitem(bench.TARGET, "ops", 2000)
    monkeypatch.setattr(history, "_compiled", None)
    used = history.compiled_reader() is not None  # built, and UKEHI_PURE_PYTHON not set
    assert bench.main(["--reading-only", "--reps", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    if used:
        assert summary["read_compiled"] is True
    else:
        assert "not built" in summary["read_compiled"] or "UKEHI_PURE_PYTHON" in summary["read_compiled"]
    assert summary["read_100k_before_s"] > 0 and summary["read_python_speedup"] > 0
    assert any(line.startswith("before issue 17") for line in lines)
    assert any(line.startswith("pure Python") for line in lines) == used
