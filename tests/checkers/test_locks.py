"""Lock exclusion (checkers/locks.py): hand-made histories, and a simulated lock service
built on the real KV state machine, correct and with acquire mutated to grant every request."""

import random

import pytest

from checkers.history import Op
from checkers.locks import check_lock_exclusion
from ukehi.kv import KVStateMachine, encode_command

MS = 1_000_000


class H:
    """A history builder: ``acquire(process, owner, t_invoke_ms, t_done_ms, outcome)``."""

    def __init__(self):
        self.ops = []

    def add(self, t_ms, process, type_, f, key="L", value=None, error=None):
        self.ops.append(Op(len(self.ops), int(t_ms * MS), process, type_, f, key=key, value=value, error=error))

    def acquire(self, process, owner, t0, t1, outcome="ok", token=None, ttl=500, key="L"):
        self.add(t0, process, "invoke", "acquire", key, {"owner": owner, "ttl_ms": ttl})
        if outcome == "ok":
            self.add(t1, process, "ok", "acquire", key, token if token is not None else len(self.ops))
        elif outcome == "held":
            self.add(t1, process, "fail", "acquire", key, {"owner": owner, "ttl_ms": ttl}, error="lock_held")
        elif outcome == "info":
            self.add(t1, process, "info", "acquire", key, {"owner": owner, "ttl_ms": ttl}, error="timeout")
        return self

    def sorted(self):
        ops = sorted(self.ops, key=lambda o: o.time)
        return [Op(i, o.time, o.process, o.type, o.f, key=o.key, value=o.value, error=o.error)
                for i, o in enumerate(ops)]


def test_overlapping_leases_of_two_owners_are_invalid():
    h = H().acquire(0, "w0", 0, 10).acquire(1, "w1", 100, 120)  # w1 granted 110 ms into w0's 500 ms lease
    result = check_lock_exclusion(h.sorted())
    assert result["valid"] is False and result["overlap_count"] == 1
    assert result["overlaps"][0]["owners"] == ["w0", "w1"] and "overlapping lease" in result["explanation"]


def test_sequential_leases_and_renewals_are_valid():
    h = (H().acquire(0, "w0", 0, 10).acquire(0, "w0", 200, 210)  # the holder renews: same owner
         .acquire(1, "w1", 300, 320, "held")  # refused while w0 holds it
         .acquire(1, "w1", 800, 820))  # after w0's renewed lease (200 + 500) ran out
    result = check_lock_exclusion(h.sorted())
    assert result["valid"] is True, result["explanation"]
    assert result["acquires"] == 3


def test_concurrent_acquires_may_be_ordered_either_way():
    # w1's acquire was invoked before w0's lease surely began, and completed after its end: it
    # may have taken effect before w0's, whose lease then starts after w1's ended... only if
    # w1's lease (from 0) ended before w0 took effect: 0 + 500 <= 900.
    h = H().acquire(0, "w0", 0, 900).acquire(1, "w1", 0, 20)
    assert check_lock_exclusion(h.sorted())["valid"] is True
    h = H().acquire(0, "w0", 0, 300).acquire(1, "w1", 0, 20)  # neither order fits
    assert check_lock_exclusion(h.sorted())["valid"] is False


def test_release_ends_the_lease_and_clock_slack_widens_the_bound():
    h = H().acquire(0, "w0", 0, 10)
    h.add(50, 0, "invoke", "release", "L", {"owner": "w0"})
    h.add(60, 0, "ok", "release", "L", {"owner": "w0"})
    h.acquire(1, "w1", 100, 120)
    assert check_lock_exclusion(h.sorted())["valid"] is True
    h = H().acquire(0, "w0", 0, 10).acquire(1, "w1", 470, 480)  # 20 ms short of the lease's end
    assert check_lock_exclusion(h.sorted())["valid"] is False
    assert check_lock_exclusion(h.sorted(), clock_slack_ms=50)["valid"] is True


def test_other_locks_and_failed_acquires_do_not_conflict():
    h = H().acquire(0, "w0", 0, 10, key="A").acquire(1, "w1", 20, 30, key="B")
    h.add(40, 2, "invoke", "acquire", "A", {"owner": "w2", "ttl_ms": 500})
    h.add(50, 2, "fail", "acquire", "A", {"owner": "w2", "ttl_ms": 500}, error="unavailable")
    assert check_lock_exclusion(h.sorted())["valid"] is True


def test_refusing_a_free_lock_is_invalid_but_an_unknown_acquire_may_hold_it():
    h = H().acquire(0, "w0", 0, 10).acquire(1, "w1", 2000, 2010, "held")  # w0's lease ended long ago
    result = check_lock_exclusion(h.sorted())
    assert result["valid"] is False and result["refused_free_count"] == 1
    h = H().acquire(0, "w0", 0, 10, "info").acquire(1, "w1", 2000, 2010, "held")  # w0's may apply late
    assert check_lock_exclusion(h.sorted())["valid"] is True


def test_ttl_must_be_known():
    h = H()
    h.add(0, 0, "invoke", "acquire", "L", None)
    h.add(1, 0, "ok", "acquire", "L", 5)
    with pytest.raises(ValueError, match="no ttl_ms"):
        check_lock_exclusion(h.ops)
    assert check_lock_exclusion(h.ops, ttl_ms=500)["valid"] is True


# ---- a lock service on the real state machine, driven by simulated clients ----

def simulate(sm: KVStateMachine, seed: int, workers=4, locks=2, ops=300, ttl=50):
    """Workers acquire locks through one leader that applies each command at a moment inside
    the op's interval (its linearization point; in log order) and stamps it with the time
    then, in whole milliseconds as a node does."""
    rng = random.Random(seed)
    h = H()
    now, index, last_applied = 0.0, 0, 0.0
    for _ in range(ops):
        now += rng.uniform(0, 15)
        worker, lock = rng.randrange(workers), f"lock{rng.randrange(locks)}"
        start = now
        applied = last_applied = max(last_applied, start + rng.uniform(0, 5))  # log order is time order
        done = applied + rng.uniform(0, 5)
        index += 1
        result = sm.apply(index, index << 8, encode_command(
            {"op": "acquire", "lock": lock, "owner": f"w{worker}", "ttl_ms": ttl, "now_ms": int(applied)}))
        outcome = "ok" if result["ok"] else ("held" if result["error"] == "lock_held" else "fail")
        h.acquire(index, f"w{worker}", start, done, outcome, token=result.get("value"), ttl=ttl, key=lock)
    return h.sorted()


@pytest.mark.parametrize("seed", range(5))
def test_the_real_state_machine_excludes(seed):
    result = check_lock_exclusion(simulate(KVStateMachine(), seed))
    assert result["valid"] is True, result["explanation"]
    assert result["acquires"] > 20


class GrantsEveryAcquire(KVStateMachine):
    """The broken lock: acquire never sees the current holder (a one-line mutation of lock_info)."""

    def lock_info(self, name, now_ms=None):
        return None


@pytest.mark.parametrize("seed", range(5))
def test_a_lock_that_grants_every_acquire_is_caught(seed):
    result = check_lock_exclusion(simulate(GrantsEveryAcquire(), seed))
    assert result["valid"] is False and result["overlap_count"] > 0


class NeverExpires(KVStateMachine):
    """Another broken lock: a lease never runs out, so free locks are refused forever."""

    def lock_info(self, name, now_ms=None):
        return self._locks.get(name)


def test_a_lock_that_never_expires_is_caught_refusing_free_locks():
    result = check_lock_exclusion(simulate(NeverExpires(), 1))
    assert result["valid"] is False and result["refused_free_count"] > 0


def test_the_fencing_checker_alone_passes_the_broken_lock():
    """Why this checker exists: tokens stay unique and ordered when every acquire is granted."""
    from checkers.fencing import check_fencing

    history = simulate(GrantsEveryAcquire(), 0)
    fencing = check_fencing(history, linearizability={"valid": True, "explanation": ""})
    assert fencing["valid"] is True
    assert check_lock_exclusion(history)["valid"] is False
