"""detect_format looks at the lines of a 64 KiB prefix first (splitting a whole large history
into lines cost more than reading it): the answer, and the line an error names, must be
those of looking at every line."""

from __future__ import annotations

import pytest

from checkers import readers
from checkers.history import HistoryError
from checkers.readers import detect_format

JSONL = '{"index":0,"time":0,"process":0,"type":"invoke","f":"read"}\n'
LOG = "INFO  jepsen.util - 1 :invoke :read nil\n"
KV = '{:process 0, :type :invoke, :f :get, :key "1", :value nil}\n'


def _every_line(text: str, filename: str = "") -> str:
    """The reference: detect_format over every line of the text, without the prefix."""
    found = readers._detect_in_lines(text.splitlines(), filename, stop_at_end=True)
    assert found is not None
    return found


@pytest.mark.parametrize("before", ["", "\n" * 70_000, "; comment\r\n" * 9_000, " " * 70_000 + "\n",
                                    "\n" * 65_535 + "\r"])
@pytest.mark.parametrize("first", [JSONL, LOG, KV])
def test_the_prefix_finds_what_every_line_finds(before, first):
    text = before + first * 2_000  # longer than the prefix
    assert len(text) > readers._DETECT_PREFIX
    assert detect_format(text) == _every_line(text)


def test_a_first_line_longer_than_the_prefix_is_still_read_whole():
    line = '{"index":0,"time":0,"process":0,"type":"ok","f":"read","value":"' + "x" * 70_000 + '"}\n'
    assert detect_format(line * 2) == "jsonl"
    # a long EDN map: whether it looks like Porcupine's kv is judged on the whole line
    kv = '{:process 0, :type :invoke, :f :get, :key "' + "k" * 70_000 + '", :value nil}\n'
    assert detect_format(kv * 2) == _every_line(kv * 2) == "porcupine-kv"


def test_errors_name_the_same_line():
    text = "\n" * 40_000 + "; c\n" * 100 + "what is this\n" + JSONL * 3_000
    with pytest.raises(HistoryError) as prefixed:
        detect_format(text)
    with pytest.raises(HistoryError) as whole:
        _every_line(text)
    assert prefixed.value.line_number == whole.value.line_number == 40_101
    with pytest.raises(HistoryError, match="no history in it"):
        detect_format("\n" * 100_000)
