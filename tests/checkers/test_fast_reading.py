"""Issue 17, reading: lines as our HistoryWriter writes them are read by one regular
expression over the whole text; every other line goes through the general path. Either way
the ops must be exactly those Op.from_dict builds from json.loads of each line."""

from __future__ import annotations

import io
import json
import random

import pytest

from checkers.history import HistoryError, Op, TornTailError, _read_canonical, read_jsonl, read_jsonl_text


def compact(d: dict) -> str:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False) + "\n"


def reference(text: str) -> list[Op]:
    return [Op.from_dict(json.loads(line), n) for n, line in enumerate(text.split("\n"), 1) if line.strip()]


def same_ops(got: list[Op], want: list[Op]) -> None:
    assert got == want
    for a, b in zip(got, want):  # what == leaves out (extra) or cannot see (tuple vs list)
        assert a.extra == b.extra and type(a) is Op
        for field in ("key", "value", "error"):
            assert type(getattr(a, field)) is type(getattr(b, field)), (field, a, b)


def harness_like_history(rng: random.Random, n: int) -> str:
    lines = []
    for i in range(n):
        d: dict = {"index": i, "time": i * 1000, "process": rng.choice([0, 1, 17, "nemesis"]),
                   "type": rng.choice(["invoke", "ok", "fail", "info"]),
                   "f": rng.choice(["read", "write", "cas", "txn", "start-partition"])}
        if rng.random() < 0.7:
            d["key"] = rng.choice(["k1", 3, -2, 0, [1, [2, 3]], "ключ"])
        if rng.random() < 0.8:
            d["value"] = rng.choice([None, 1, -7, "x", True, [1, 2], [None, 2], [[1], 2],
                                     [["append", 3, 5], ["r", 3, [1, 5]]], {"owner": "w0", "ttl_ms": 500},
                                     {"lag": {"n2": 28}, "leaders": {"n1": 3}}, [{"a": [1]}], []])
        if rng.random() < 0.2:
            d["error"] = rng.choice(["timeout", ["not-leader", "n2"], {"why": "x"}, None])
        if rng.random() < 0.5:
            d["node"] = rng.choice(["n1", "10.0.0.2"])
        if rng.random() < 0.1:
            d["leaders_after_resume"] = {"n1": 3}
        lines.append(compact(d))
    return "".join(lines)


def test_canonical_lines_read_fast_and_exactly_as_from_dict():
    text = harness_like_history(random.Random(17), 2000)
    fast = _read_canonical(text)
    assert fast is not None, "compact lines in our order must take the fast path"
    same_ops(fast, reference(text))
    same_ops(read_jsonl_text(text), reference(text))
    same_ops(read_jsonl(io.StringIO(text)), reference(text))


def test_mutable_values_are_not_shared_between_ops():
    line = compact({"index": 0, "time": 0, "process": 0, "type": "invoke", "f": "acquire", "key": 0,
                    "value": {"owner": "w0"}, "error": ["x"], "node": "n1"})
    ops = _read_canonical(line + line.replace('"index":0', '"index":1'))
    assert ops is not None
    assert ops[0].value == ops[1].value and ops[0].value is not ops[1].value
    assert ops[0].error is not ops[1].error and ops[0].extra is not ops[1].extra


@pytest.mark.parametrize("odd", [
    '{"index": 5, "time": 5, "process": 0, "type": "ok", "f": "read"}\n',  # spaces
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","value":1.5}\n',  # a float
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","value":"a\\"b"}\n',  # an escape
    '{"time":5,"index":5,"process":0,"type":"ok","f":"read"}\n',  # another order
    '{"index":5,"time":5,"process":0,"type":"ok","f":"read","node":"n1","key":3}\n',  # key after extras
    '\n',  # a blank line
])
def test_any_other_line_reads_as_the_general_path_reads_it(odd):
    text = harness_like_history(random.Random(3), 50)
    mixed = text + odd + text.replace('"index":', '"index":1000')
    same_ops(read_jsonl_text(mixed), reference(mixed))


def test_bad_and_torn_lines_keep_their_errors():
    text = harness_like_history(random.Random(5), 20)
    with pytest.raises(HistoryError, match="line 21: index must be an integer"):
        read_jsonl_text(text + '{"index":true,"time":0,"process":0,"type":"ok","f":"read"}\n')
    with pytest.raises(HistoryError, match="line 21: not valid JSON"):
        read_jsonl_text(text + '{"index":1,"time":0,"process":0,"type":"ok","f":"read","value":[1,}\n' + text)
    torn = text + '{"index":20,"time":0,"proc'
    with pytest.raises(TornTailError, match="line 21"):
        read_jsonl_text(torn, torn_tail="error")
    assert len(read_jsonl_text(torn)) == 20
    whole_without_newline = text + '{"index":20,"time":0,"process":0,"type":"ok","f":"read"}'
    assert len(read_jsonl_text(whole_without_newline, torn_tail="error")) == 21


@pytest.mark.parametrize("value", ["[01]", "[1,01]", "[1,]", "[-]", "01", "-01"])
def test_integers_json_refuses_are_refused_by_the_fast_path_too(value):
    """Integers and arrays of integers are read with int(), which would take "01"; the line
    must still fail as json.loads fails it, naming the line."""
    text = harness_like_history(random.Random(7), 10)
    bad = '{"index":10,"time":0,"process":0,"type":"ok","f":"read","value":%s}\n' % value
    with pytest.raises(HistoryError, match="line 11: not valid JSON"):
        read_jsonl_text(text + bad + text)


def test_integer_values_read_exactly_as_json_reads_them():
    values = [0, -0, 7, -7, 10**30, -(10**30), [], [0], [1, -2], [10**20, 3, -4, 5], [[1], 2], [1, None]]
    text = "".join(compact({"index": i, "time": i, "process": i % 3, "type": "ok", "f": "cas", "key": i % 2,
                            "value": v}) for i, v in enumerate(values * 3))
    fast = _read_canonical(text)
    assert fast is not None
    same_ops(fast, reference(text))


def test_ops_read_fast_are_frozen_and_hash_as_ops():
    ops = _read_canonical(compact({"index": 0, "time": 0, "process": 0, "type": "ok", "f": "read", "key": [1]}))
    assert ops is not None
    op = ops[0]
    with pytest.raises(AttributeError):
        op.index = 3  # type: ignore[misc]
    assert hash(op) == hash(Op(0, 0, 0, "ok", "read", key=(1,)))


# -- Porcupine's kv files ------------------------------------------------------------------

def kv_text(rng: random.Random, n: int) -> str:
    lines = []
    for i in range(n):
        f = rng.choice(["get", "put", "append"])
        value = "nil" if f == "get" and rng.random() < 0.5 else f'"x {i} {rng.randint(0, 9)} y"'
        lines.append(f'{{:process {rng.randint(0, 60)}, :type :{rng.choice(["invoke", "ok"])}, :f :{f}, '
                     f':key "{rng.randint(0, 9)}", :value {value}}}\n')
    return "".join(lines)


@pytest.mark.parametrize("tail", ["", "\n", '{:process 3, :type :ok, :f :get, :key "1", :value "a\\"b"}\n',
                                  '{:process 3 :type :ok :f :get :key "1" :value nil}\n'])
def test_porcupine_kv_lines_read_as_the_edn_reader_reads_them(tail):
    from checkers.readers import _read_porcupine_kv_lines, read_edn_lines, read_porcupine_kv

    text = kv_text(random.Random(11), 300)
    assert _read_porcupine_kv_lines(text) is not None  # Porcupine's own line shape: the fast path
    for whole in (text, text.rstrip("\n"), text + tail + kv_text(random.Random(12), 20)):
        got, want = read_porcupine_kv(whole), read_edn_lines(whole)
        same_ops(got, want)
        assert [(op.index, op.time) for op in got] == [(op.index, op.time) for op in want]


def test_porcupine_kv_bad_lines_keep_their_errors():
    from checkers.readers import read_porcupine_kv

    text = kv_text(random.Random(13), 10)
    with pytest.raises(HistoryError, match="line 11"):
        read_porcupine_kv(text + '{:process 3, :type :ok, :f :cas, :key "1", :value nil}\n')


@pytest.mark.parametrize("enabled", [True, False])
def test_reading_pauses_garbage_collection_and_restores_it(enabled, monkeypatch):
    """Both paths build their ops with the cyclic collector off, and leave it as they found
    it, after an error too."""
    import gc

    import checkers.history as history

    seen: list[bool] = []
    freeze = history._freeze

    def spy(value):
        seen.append(gc.isenabled())
        return freeze(value)

    monkeypatch.setattr(history, "_freeze", spy)
    text = compact({"index": 0, "time": 0, "process": 0, "type": "invoke", "f": "write", "key": [1, 2],
                    "value": [3]})
    spaced = '{"index": 0, "time": 0, "process": 0, "type": "invoke", "f": "write", "key": [1, 2]}\n'
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        assert read_jsonl_text(text)[0].key == (1, 2)  # the fast path
        assert read_jsonl(io.StringIO(spaced))[0].key == (1, 2)  # the general path
        assert seen and not any(seen)
        assert gc.isenabled() is enabled
        with pytest.raises(TornTailError):
            read_jsonl(io.StringIO(spaced + '{"index": 1, "ti'), torn_tail="error")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
