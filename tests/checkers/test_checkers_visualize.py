"""The counterexample: text and the self-contained HTML page."""

import re

from checkers.checker import check_operations_verbose
from checkers.counterexample import build, summary, to_dict
from checkers.history import Op
from checkers.linearizability import analyze
from checkers.model import CheckResult, Operation
from checkers.models import READ, WRITE, make_model
from checkers.visualize import render, visualize

R = make_model("cas-register")


def stale_read():
    # w1 then w2 complete; a later read sees 1: the read cannot follow w2
    return [Operation(0, (WRITE, "k", 1, None), 0, None, 10, 0),
            Operation(1, (WRITE, "k", 2, None), 20, None, 30, 2),
            Operation(2, (READ, "k", None, None), 40, 1, 50, 4)]


def test_counterexample_names_the_prefix_the_op_and_the_state():
    result, info = check_operations_verbose(R, stale_read())
    assert result is CheckResult.ILLEGAL
    cx = build(R, info.partitions[0])
    assert cx.prefix == [0, 1] and cx.state == 2 and cx.blocked == 2
    assert [(c.position, c.legal) for c in cx.candidates] == [(2, False)]
    d = to_dict(R, cx)
    assert d["key"] == "k" and d["state"] == "2" and d["blocked_index"] == 4
    text = summary(R, cx)
    assert "key 'k'" in text and "could not linearize: k: read -> 1" in text and "state 2" in text


def test_page_is_self_contained_and_highlights_the_failure(tmp_path):
    result, info = check_operations_verbose(R, stale_read())
    path = tmp_path / "cx.html"
    visualize(R, info, str(path), title="stale read")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "NOT linearizable" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # no network assets
    assert "<script" not in page
    assert page.count("<rect") == 3                      # one bar per operation
    assert 'fill="#ff8182"' in page                      # the failing op in red
    assert "#1 k: write 1" in page and "#2 k: write 2" in page   # the linearization order
    assert "cannot be linearized; met state 2" in page


def test_page_for_a_valid_history_and_escaping():
    ops = [Operation(0, (WRITE, "<k>", "<evil>", None), 0, None, 10),
           Operation(1, (READ, "<k>", None, None), 20, "<evil>", 30)]
    result, info = check_operations_verbose(R, ops)
    page = render(R, info)
    assert result is CheckResult.OK and "linearizable" in page and "NOT" not in page
    assert "<evil>" not in page and "&lt;evil&gt;" in page


def test_analyze_reports_every_quickly_found_failing_key():
    h = []
    for n, key in enumerate(["a", "b", "c"]):
        base = n * 4
        h += [Op(base, base, n, "invoke", "write", key=key, value=1),
              Op(base + 1, base + 1, n, "ok", "write", key=key, value=1),
              Op(base + 2, base + 2, n, "invoke", "read", key=key),
              Op(base + 3, base + 3, n, "ok", "read", key=key, value=0 if key != "b" else 1)]
    analysis = analyze(h, "cas-register")
    assert analysis.result["valid"] is False
    assert sorted(f["key"] for f in analysis.result["failures"]) == ["a", "c"]
    assert "not linearizable" in analysis.result["explanation"]
