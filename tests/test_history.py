import io

import pytest

from checkers.history import HistoryError, HistoryWriter, Op, load_jsonl, read_jsonl


def test_writer_round_trip(tmp_path):
    path = tmp_path / "history.jsonl"
    with HistoryWriter(str(path)) as w:
        w.append(10, 0, "invoke", "write", key="k1", value=3)
        w.append(20, 0, "ok", "write", key="k1", value=3)
        w.append(30, 1, "invoke", "cas", key="k1", value=[3, 4])
        w.append(40, 1, "info", "cas", key="k1", value=[3, 4], error="timeout")
        w.append(50, "nemesis", "info", "start-partition", value={"n1": ["n2"]})
    ops = load_jsonl(str(path))
    assert [op.index for op in ops] == [0, 1, 2, 3, 4]
    assert ops[2].value == (3, 4)  # arrays read back as hashable tuples
    assert ops[3].error == "timeout"
    assert not ops[4].is_client and ops[0].is_client


def test_torn_last_line_is_ignored_but_bad_middle_line_is_not():
    good = '{"index":0,"time":1,"process":0,"type":"invoke","f":"read"}\n'
    assert len(read_jsonl(io.StringIO(good + '{"index":1,"ti'))) == 1
    with pytest.raises(HistoryError, match="line 2"):
        read_jsonl(io.StringIO(good + '{"index":1,"ti\n' + good))


@pytest.mark.parametrize("line, message", [
    ('{"index":0,"time":1,"process":0,"type":"done","f":"read"}', "type must be"),
    ('{"index":0,"process":0,"type":"ok","f":"read"}', "missing field"),
    ('{"index":"0","time":1,"process":0,"type":"ok","f":"read"}', "index must be"),
    ('[1,2]', "expected a JSON object"),
])
def test_bad_lines_name_the_problem(line, message):
    with pytest.raises(HistoryError, match=message):
        read_jsonl(io.StringIO(line + "\n"))


def test_extra_fields_survive():
    op = Op.from_dict({"index": 0, "time": 1, "process": 0, "type": "ok", "f": "read", "node": "n1"})
    assert op.extra == {"node": "n1"}
    assert op.to_dict()["node"] == "n1"
