"""The Elle checker against the brute-force serializability reference on random tiny
histories: what Elle reports must be real (soundness, always), and where the version
order is fully known it must miss nothing (completeness)."""

import random
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkers.elle import check
from checkers.elle.bruteforce import serializable
from checkers.elle.txn import history_of


def random_history(seed: int, model: str):
    """A random execution in some serial order (the one the database took), with
    intervals that real time mostly respects, then maybe one corrupted read or a
    reordered pair: valid and invalid histories both come out."""
    rng = random.Random(seed)
    n = rng.randint(1, 5)
    keys = ["x", "y"]
    values = Counter()
    txns = []
    for _ in range(n):
        mops = []
        for _ in range(rng.randint(1, 3)):
            k = rng.choice(keys)
            if rng.random() < 0.5:
                mops.append(["r", k, None])
            else:
                values[k] += 1
                mops.append(["append" if model == "list-append" else "w", k, values[k]])
        kind = rng.choices(["ok", "info", "fail"], [8, 1, 1])[0]
        txns.append({"mops": mops, "kind": kind})
    order = list(range(n))
    rng.shuffle(order)
    state = {}
    raft = {}
    for pos, i in enumerate(order):
        t = txns[i]
        applies = t["kind"] == "ok" or (t["kind"] == "info" and rng.random() < 0.5)
        local = dict(state)
        for m in t["mops"]:
            f, k, v = m
            if f == "append":
                local[k] = local.get(k, ()) + (v,)
            elif f == "w":
                local[k] = v
            else:
                m[2] = local.get(k, () if model == "list-append" else None)
        if applies:
            state = local
            if t["kind"] == "ok":
                raft[i] = pos + 1
    # corruption
    reads = [m for t in txns if t["kind"] == "ok" for m in t["mops"] if m[0] == "r"]
    roll = rng.random()
    if reads and roll < 0.5:
        m = rng.choice(reads)
        if model == "list-append":
            v = m[2]
            choice = rng.randrange(4)
            if choice == 0 and v:
                m[2] = v[:-1]
            elif choice == 1 and len(v) > 1:
                m[2] = v[1:] + v[:1]
            elif choice == 2:
                m[2] = v + (rng.randint(1, 3),)
            else:
                m[2] = ()
        else:
            m[2] = rng.choice([None, 1, 2, 3])
    # intervals: position in the serial order, widened at random
    specs = []
    for pos, i in enumerate(order):
        start = 4 * pos - rng.randint(0, 6)
        end = 4 * pos + 1 + rng.randint(0, 6)
        t = txns[i]
        specs.append((i, t["kind"], [tuple(m) for m in t["mops"]], start, end))
    specs.sort(key=lambda s: s[0])
    if model == "rw-register" and rng.random() < 0.2 and len(raft) > 1:  # a log that lies
        a, b = rng.sample(sorted(raft), 2)
        raft[a], raft[b] = raft[b], raft[a]
    return history_of(specs, raft if model == "rw-register" else None), txns


def complete(model, txns):
    """Whether the checker's version order is exact, so its verdict must match."""
    if any(t["kind"] == "info" for t in txns):
        return False
    if model == "rw-register":
        return True  # every ok write reports its log index
    seen = {(m[1], e) for t in txns if t["kind"] == "ok" for m in t["mops"] if m[0] == "r"
            for e in (m[2] or ())}
    unseen = Counter(m[1] for t in txns if t["kind"] == "ok" for m in t["mops"]
                     if m[0] == "append" and (m[1], m[2]) not in seen)
    return all(c <= 1 for c in unseen.values())


def compare(seed, model):
    history, txns = random_history(seed, model)
    result = check(history, model)
    elle_serializable = "serializable" not in set(result["not"]) | set(result["also_not"])
    elle_strict = result["valid"] is not False
    bf_serializable = serializable(history)
    bf_strict = serializable(history, strict=True)
    detail = f"seed {seed}: {result['explanation']}\n" + "\n".join(map(str, history))
    if not elle_serializable:
        assert not bf_serializable, "Elle reported a non-serializable anomaly that is not one\n" + detail
    if not elle_strict:
        assert not bf_strict, "Elle reported a strict-serializability anomaly that is not one\n" + detail
    if complete(model, txns):
        assert elle_serializable == bf_serializable, "serializable verdicts differ\n" + detail
        assert elle_strict == bf_strict, "strict verdicts differ\n" + detail
    return bf_strict


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2 ** 32))
def test_list_append_matches_brute_force(seed):
    compare(seed, "list-append")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2 ** 32))
def test_rw_register_matches_brute_force(seed):
    compare(seed, "rw-register")


def test_generator_makes_both_verdicts():
    """The random histories are not all valid or all invalid (else the comparison is idle)."""
    for model in ("list-append", "rw-register"):
        verdicts = Counter(compare(seed, model) for seed in range(300))
        assert verdicts[True] > 30 and verdicts[False] > 30, (model, verdicts)
