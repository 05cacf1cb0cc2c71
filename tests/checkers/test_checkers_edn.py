"""The EDN reader: the forms Jepsen and Porcupine histories use, and clear errors."""

import pytest

from checkers.edn import EdnError, Keyword, Symbol, iter_forms, read_all, read_one


def test_scalars_and_collections():
    form = read_one('{:type :ok, :f :cas, :value [1 -2], :n nil, :t true, :s "a\\"b\\n", '
                    ':x 1.5, :big 12N, :set #{1 2}, :list (a b/c), :ch \\space}')
    assert form[Keyword("type")] == "ok" and isinstance(form[Keyword("type")], Keyword)
    assert form[Keyword("value")] == (1, -2)
    assert form[Keyword("n")] is None and form[Keyword("t")] is True
    assert form[Keyword("s")] == 'a"b\n'
    assert form[Keyword("x")] == 1.5 and form[Keyword("big")] == 12
    assert form[Keyword("set")] == frozenset({1, 2})
    assert form[Keyword("list")] == (Symbol("a"), Symbol("b/c"))
    assert form[Keyword("ch")] == " "


def test_comments_commas_and_discard():
    assert read_all("; a comment\n1, 2 #_ 3 4 ; trailing\n") == [1, 2, 4]
    assert read_one("[1 #_[2 3] 4]") == (1, 4)


def test_records_and_string_tags_read_as_their_value():
    assert read_one('#jepsen.history.Op{:index 0}') == {Keyword("index"): 0}
    assert read_one('#inst "2024-01-01T00:00:00Z"') == "2024-01-01T00:00:00Z"


def test_unknown_tag_is_rejected_with_its_line():
    with pytest.raises(EdnError, match=r"line 2: tagged literal #foo"):
        read_all("1\n#foo 3")


@pytest.mark.parametrize("text, line, message", [
    ("[1 2", 1, "missing ']'"),
    ("{:a 1\n :b}", 1, "even number"),
    ("1\n2\n)", 3, "unexpected ')'"),
    ('"abc', 1, "unterminated string"),
    ("12abc", 1, "not a number"),
    ("\n\n:", 3, "keyword needs a name"),
    ('"\\q"', 1, "unknown escape"),
])
def test_errors_name_the_line(text, line, message):
    with pytest.raises(EdnError) as err:
        read_all(text)
    assert err.value.line_number == line
    assert message in str(err.value)


def test_iter_forms_unwraps_a_history_vector_with_each_element_line():
    text = "[{:a 1}\n {:a 2}\n\n {:a 3}]"
    assert [line for _, line in iter_forms(text, unwrap_vector=True)] == [1, 2, 4]
    assert [line for _, line in iter_forms("{:a 1}\n{:a 2}", unwrap_vector=True)] == [1, 2]
    with pytest.raises(EdnError, match="after the history vector"):
        list(iter_forms("[1] 2", unwrap_vector=True))
