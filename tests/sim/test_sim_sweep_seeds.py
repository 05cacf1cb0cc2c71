"""A seed of the correct-build sweeps whose verdict was triaged as real: it replays valid on the
fixed code and fails on the code before the fix.

3137 (fencing, afternoon sweep on c0d63c2): availability ``kind-never-served``, every
fenced-put unanswered. First filed as a false alarm (two of the unanswered fenced-puts took
effect, seen by the final reads), but it was the write stall of the in-window hold of append
rejections (withdrawn in 71f599d): on 45f3944 with only 71f599d applied the seed is valid with
13 fenced-puts ok, the first at 6.1 s, before the first fault (6.3 s), where the stalled code
timed out every one; the current code with that hold put back fails it again. The writes that
"took effect" did so late because replication had stalled: counting them as served would
have hidden the bug (tests/checkers/test_availability_late_effects.py).

(Sweep seed 4551, kv, stats unknown "delete never succeeded", was the same stall: 6 of 57
puts and 0 of 9 deletes ok on 45f3944, 28 puts and 4 deletes with 71f599d. It is not pinned
here: since the sim stopped applying damage that reads as a crash tail, its schedule no
longer reaches the stall with the hold put back.)
"""

from __future__ import annotations

from harness.sim.runner import SimSettings, run_seed

NEMESES_C0D63C2 = ("partition", "kill", "pause", "clock", "transfer", "snapshot", "membership",
                   "crash-after-vote", "crash-after-ack", "partition-in-flight", "damage")


def test_seed_3137_serves_fenced_puts():
    r = run_seed(3137, SimSettings(workload="fencing", nemeses=NEMESES_C0D63C2))
    assert r.checkers["availability"]["valid"] is True, r.checkers["availability"]["explanation"]
    ok = [o for o in r.history if o.is_client and o.f == "fenced-put" and o.type == "ok"]
    assert ok, "no fenced-put succeeded"
    assert r.valid is True, r.failing_checkers()
