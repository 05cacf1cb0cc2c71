"""kind-never-served does not count a write whose client gave up (timeout) as served because
a later read shows it took effect.

Considered after sim seed 3137 (fencing, c0d63c2): all 10 fenced-puts unanswered while acquires
and reads succeeded, two of the timed-out ones read back in the final phase, and the run was
first filed as a false alarm. It was not: the same seed on that code with only the withdrawal of
the in-window rejection hold (71f599d) serves 13 fenced-puts, the first before any fault, where
the stalled code timed out every one (tests/sim/test_sim_sweep_seeds.py). A write that takes
effect only after its client stopped waiting is what stalled replication looks like, so the
excuse would have passed that broken build.
"""

from __future__ import annotations

from checkers.availability import check_availability
from checkers.history import Op

S = 1_000_000_000


def _history() -> list[Op]:
    ops: list[Op] = []

    def add(t: float, process: int, type_: str, f: str, value=None, error=None) -> None:
        ops.append(Op(index=len(ops), time=int(t * S), process=process, type=type_, f=f, key="k",
                      value=value, error=error))

    for i in range(3):
        add(1 + i * 0.1, i, "invoke", "acquire")
        add(1.05 + i * 0.1, i, "ok", "acquire", value=(1 << 32) | (i + 1))
    for i in range(10):  # 10 fenced-puts: 5 time out, 5 refused as "not served now"
        t = 2 + i
        add(t, 10 + i, "invoke", "fenced-put", value=[40 + i, (1 << 32) | 1])
        if i % 2:
            add(t + 0.5, 10 + i, "fail", "fenced-put", value=[40 + i, (1 << 32) | 1], error="not_leader")
        else:
            add(t + 1, 10 + i, "info", "fenced-put", value=[40 + i, (1 << 32) | 1], error="timeout")
    for i, seen in enumerate((40, 44)):  # two of the timed-out writes did take effect
        add(20 + i, 30 + i, "invoke", "read")
        add(20.1 + i, 30 + i, "ok", "read", value=seen)
    return ops


def test_timed_out_writes_read_back_later_do_not_make_the_kind_served():
    h = _history()
    read_back = {o.value for o in h if o.f == "read" and o.type == "ok"}
    timed_out = {o.value[0] for o in h if o.f == "fenced-put" and o.type == "info"}
    assert read_back <= timed_out  # the premise: only unanswered writes were read back
    result = check_availability(h, {})
    assert result["valid"] is False
    [violation] = result["violations"]
    assert violation["rule"] == "kind-never-served" and violation["f"] == "fenced-put"


def test_one_answered_fenced_put_makes_the_kind_served():
    # The contrast: one fenced-put with an ok answer and the rule has nothing to say.
    h = _history()
    i = next(k for k, o in enumerate(h) if o.f == "fenced-put" and o.type == "info")
    o = h[i]
    h[i] = Op(index=o.index, time=o.time, process=o.process, type="ok", f=o.f, key=o.key, value=o.value)
    assert check_availability(h, {})["valid"] is True
