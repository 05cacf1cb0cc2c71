"""Lock exclusion (checkers/locks.py): hand-made histories, and a simulated lock service
built on the real KV state machine, correct and with acquire mutated to grant every request."""

import random

import pytest

from checkers.history import Op
from checkers.locks import check_lock_exclusion
from ukehi.kv import KVStateMachine, encode_command, err, ok
from ukehi.wire import ErrorCode

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

    def release(self, process, owner, t0, t1, outcome="ok", token=None, key="L", error="not_lock_holder"):
        value = {"owner": owner} if token is None else {"owner": owner, "token": token}
        self.add(t0, process, "invoke", "release", key, value)
        if outcome == "ok":
            self.add(t1, process, "ok", "release", key, value)
        elif outcome == "refused":
            self.add(t1, process, "fail", "release", key, value, error=error)
        elif outcome == "info":
            self.add(t1, process, "info", "release", key, value, error="timeout")
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


# ---- releases ----

def test_a_holders_release_refused_inside_its_lease_is_invalid_with_or_without_token():
    for token in (5, None):
        h = H().acquire(0, "w0", 0, 10, token=5).release(0, "w0", 100, 110, "refused", token=token)
        result = check_lock_exclusion(h.sorted())
        assert result["valid"] is False and result["holder_refused_count"] == 1, result
        v = result["holder_refused"][0]
        assert (v["lock"], v["owner"], v["token"], v["held_token"]) == ("L", "w0", token, 5)
        assert v["acquired_ms"] == 10 and v["lease_until_ms"] == 498 and v["refused_ms"] == 110
        text = result["explanation"]
        assert "refused as not_lock_holder" in text and "'L'" in text and "'w0'" in text and "token 5" in text
        assert "498" in text and "110" in text


def test_a_refused_release_that_may_be_right_is_valid():
    base = lambda: H().acquire(0, "w0", 0, 10, token=5)  # noqa: E731
    cases = {
        "the lease may have ended": base().release(0, "w0", 480, 499, "refused", token=5),
        "another token than the holder's": base().release(0, "w0", 100, 110, "refused", token=4),
        "an unknown renewal in between": base().acquire(0, "w0", 50, 60, "info").release(1, "w0", 100, 110, "refused",
                                                                                        token=5),
        "an unknown renewal, then a release with the old token": base().acquire(0, "w0", 50, 60, "info")
        .release(1, "w0", 100, 110, "refused", token=5),
        "an unknown earlier release": base().release(0, "w0", 50, 60, "info", token=5).release(1, "w0", 100, 110,
                                                                                              "refused", token=5),
        "an ok earlier release": base().release(0, "w0", 50, 60, "ok", token=5).release(0, "w0", 100, 110, "refused",
                                                                                      token=5),
        "another error than not_lock_holder": base().release(0, "w0", 100, 110, "refused", token=5,
                                                             error="not_leader"),
        "no acquire completed before it": H().acquire(0, "w0", 0, 150, token=5).release(1, "w0", 100, 110,
                                                                                       "refused", token=5),
    }
    for what, h in cases.items():
        result = check_lock_exclusion(h.sorted())
        assert result["valid"] is True and result["holder_refused_count"] == 0, (what, result["explanation"])


def test_a_release_granted_to_an_owner_that_surely_did_not_hold_the_lock_is_invalid():
    cases = {
        "never acquired": H().acquire(0, "w0", 0, 10, token=5).release(1, "w1", 100, 110),
        "no acquire returned that token": H().acquire(0, "w0", 0, 10, token=5).release(0, "w0", 100, 110, token=7),
        "taken by another owner since": H().acquire(0, "w0", 0, 10, token=5).acquire(1, "w1", 600, 610, token=9)
        .release(0, "w0", 700, 710, token=5),
        "taken since, released without token": H().acquire(0, "w0", 0, 10, token=5)
        .acquire(1, "w1", 600, 610, token=9).release(0, "w0", 700, 710),
        "released twice": H().acquire(0, "w0", 0, 10, token=5).release(0, "w0", 100, 110, token=5)
        .release(0, "w0", 200, 210, token=5),
        "renewed with a new token since": H().acquire(0, "w0", 0, 10, token=5).acquire(0, "w0", 50, 60, token=8)
        .release(0, "w0", 100, 110, token=5),
    }
    for what, h in cases.items():
        result = check_lock_exclusion(h.sorted())
        assert result["valid"] is False and result["nonholder_released_count"] == 1, (what, result)
        v = result["nonholder_released"][0]
        assert v["lock"] == "L" and v["released_ms"] in (110, 210, 710), (what, v)
        assert "release(s) granted to an owner that surely did not hold the lock" in result["explanation"]
    assert "granted to 'w1' with token 9" in check_lock_exclusion(cases["taken by another owner since"].sorted())[
        "explanation"]


def test_other_owners_ops_inside_the_lease_do_not_excuse_a_refused_release():
    # inside w0's lease a correct node refuses w1's acquire and release: whatever became of
    # them, w0 still held the lock, so its refused release is a violation all the same
    for other in (lambda h: h.acquire(1, "w1", 50, 60, "info"), lambda h: h.release(1, "w1", 50, 60, "info")):
        h = other(H().acquire(0, "w0", 0, 10, token=5)).release(0, "w0", 100, 110, "refused", token=5)
        result = check_lock_exclusion(h.sorted())
        assert result["valid"] is False and result["holder_refused_count"] == 1
    # a renewal by w0 itself changes the token, but not the owner: a release without one
    h = H().acquire(0, "w0", 0, 10, token=5).acquire(0, "w0", 50, 60, "info").release(0, "w0", 100, 110, "refused")
    assert check_lock_exclusion(h.sorted())["holder_refused_count"] == 1


def test_a_granted_release_that_may_be_right_is_valid():
    cases = {
        "the holder, after its lease ran out, nobody took it": H().acquire(0, "w0", 0, 10, token=5)
        .release(0, "w0", 900, 910, token=5),
        "another owner's grant concurrent with the release": H().acquire(0, "w0", 0, 10, token=5)
        .acquire(1, "w1", 600, 705, token=9).release(0, "w0", 700, 710, token=5),
        "an unknown acquire of that owner may have that token": H().acquire(0, "w0", 0, 10, "info")
        .release(0, "w0", 100, 110, token=7),
        "the earlier release was unknown": H().acquire(0, "w0", 0, 10, token=5).release(0, "w0", 100, 110, "info")
        .release(0, "w0", 200, 210, token=5),
        "re-acquired between two releases": H().acquire(0, "w0", 0, 10, token=5).release(0, "w0", 100, 110)
        .acquire(0, "w0", 150, 160, token=6).release(0, "w0", 200, 210, token=6),
    }
    for what, h in cases.items():
        result = check_lock_exclusion(h.sorted())
        assert result["valid"] is True and result["releases"] >= 1, (what, result["explanation"])


def test_an_acquire_refused_after_an_ok_release_is_refusal_of_a_free_lock():
    h = H().acquire(0, "w0", 0, 10, token=5).release(0, "w0", 50, 60, token=5).acquire(1, "w1", 100, 110, "held")
    result = check_lock_exclusion(h.sorted())
    assert result["valid"] is False and result["refused_free_count"] == 1
    # the release may take effect after the refusal: the lock may still have been held
    h = H().acquire(0, "w0", 0, 10, token=5).release(0, "w0", 50, 105, token=5).acquire(1, "w1", 100, 110, "held")
    assert check_lock_exclusion(h.sorted())["valid"] is True


def test_a_release_that_failed_does_not_end_the_lease():
    h = (H().acquire(0, "w0", 0, 10, token=5).release(0, "w0", 50, 60, "refused", token=5, error="not_leader")
         .acquire(1, "w1", 100, 110, token=9))
    result = check_lock_exclusion(h.sorted())
    assert result["valid"] is False and result["overlap_count"] == 1
    h = H().acquire(0, "w0", 0, 10, token=5).release(0, "w0", 50, 60, "info", token=5).acquire(1, "w1", 100, 110)
    assert check_lock_exclusion(h.sorted())["valid"] is True  # an unknown release may have freed it


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


# ---- releases on the real state machine: correct, and three one-line release bugs ----

def simulate_releases(sm: KVStateMachine, seed: int, workers=4, locks=2, ops=400, ttl=50):
    """As :func:`simulate`, and a worker holding a token releases it now and then, with the
    token or without (as the fencing workload does); it keeps a token whose release failed."""
    rng = random.Random(seed)
    h = H()
    tokens: dict[tuple[int, str], int] = {}
    now, index, last_applied = 0.0, 0, 0.0
    for _ in range(ops):
        now += rng.uniform(0, 15)
        worker, lock = rng.randrange(workers), f"lock{rng.randrange(locks)}"
        start = now
        applied = last_applied = max(last_applied, start + rng.uniform(0, 5))
        done = applied + rng.uniform(0, 5)
        index += 1
        owner = f"w{worker}"
        held = tokens.get((worker, lock))
        if held is not None and rng.random() < 0.4:
            token = held if rng.random() < 0.5 else None
            cmd = {"op": "release", "lock": lock, "owner": owner, "now_ms": int(applied)}
            if token is not None:
                cmd["token"] = token
            result = sm.apply(index, index << 8, encode_command(cmd))
            if result["ok"]:
                del tokens[(worker, lock)]
            h.release(index, owner, start, done, "ok" if result["ok"] else "refused", token=token, key=lock,
                      error=result.get("error"))
            continue
        result = sm.apply(index, index << 8, encode_command(
            {"op": "acquire", "lock": lock, "owner": owner, "ttl_ms": ttl, "now_ms": int(applied)}))
        if result["ok"]:
            tokens[(worker, lock)] = result["value"]
        outcome = "ok" if result["ok"] else ("held" if result["error"] == "lock_held" else "fail")
        h.acquire(index, owner, start, done, outcome, token=result.get("value"), ttl=ttl, key=lock)
    return h.sorted()


@pytest.mark.parametrize("seed", range(5))
def test_the_real_state_machine_releases_correctly(seed):
    history = simulate_releases(KVStateMachine(), seed)
    result = check_lock_exclusion(history)
    assert result["valid"] is True, result["explanation"]
    refused = sum(1 for o in history if o.f == "release" and o.type == "fail")
    assert result["releases"] > 20 and refused > 0  # both answers occur, and are judged right


class RefusesTokenedReleases(KVStateMachine):
    """ukehi/kv.py's release with its token check's ``and`` turned into ``or`` (the mutant
    ``kv.py:441:16:and_or``): every release that carries a token is refused."""

    def _execute(self, cmd, token):
        if cmd["op"] == "release" and "token" in cmd:
            self._clock_ms = max(self._clock_ms, cmd["now_ms"])
            return err(ErrorCode.NOT_LOCK_HOLDER, "not held with that token")
        return super()._execute(cmd, token)


class ReleaseKeepsTheLock(KVStateMachine):
    """release answers ok but never deletes the lock (its ``del`` dropped)."""

    def _execute(self, cmd, token):
        kept = self._locks.get(cmd.get("lock"))
        result = super()._execute(cmd, token)
        if cmd["op"] == "release" and kept is not None:
            self._locks[cmd["lock"]] = kept
        return result


class ReleasesForAnyone(KVStateMachine):
    """release frees the lock whoever asks (the owner and token checks gone)."""

    def _execute(self, cmd, token):
        if cmd["op"] == "release" and cmd["lock"] in self._locks:
            self._clock_ms = max(self._clock_ms, cmd["now_ms"])
            del self._locks[cmd["lock"]]
            return ok()
        return super()._execute(cmd, token)


@pytest.mark.parametrize("broken, rule", [(RefusesTokenedReleases, "holder_refused_count"),
                                          (ReleaseKeepsTheLock, "refused_free_count"),
                                          (ReleasesForAnyone, "nonholder_released_count")])
def test_release_bugs_of_the_state_machine_are_caught(broken, rule):
    caught = [check_lock_exclusion(simulate_releases(broken(), seed)) for seed in range(5)]
    assert all(r["valid"] is False and r[rule] > 0 for r in caught), [r["explanation"] for r in caught]


def test_the_clock_slack_follows_the_runs_clock_faults():
    """Real runs pass no slack: the lock rules allow for what the run's clock faults did."""
    from checkers.locks import DEFAULT_SLACK_MS, clock_slack_from_history

    def nemesis(f: str, value: dict) -> Op:
        return Op(index=0, time=0, process="nemesis", type="info", f=f, value=value)

    assert clock_slack_from_history([], 500) == DEFAULT_SLACK_MS
    bumped = [nemesis("bump-clock", {"nodes": ["n1"], "offsets": {"n1": 0.25, "n2": 0.0, "n3": -0.05}})]
    assert clock_slack_from_history(bumped, 500) == DEFAULT_SLACK_MS + 500.0  # twice the largest offset
    rated = bumped + [nemesis("skew-clock-rate", {"rate": 2.0, "offsets": {"n1": 0.0}})]
    assert clock_slack_from_history(rated, 500) == DEFAULT_SLACK_MS + 500.0 + 500.0  # plus the whole TTL
    reset = [nemesis("reset-clock", {"offsets": {"n1": 0.0}, "rate": 1.0})]
    assert clock_slack_from_history(reset, 500) == DEFAULT_SLACK_MS
