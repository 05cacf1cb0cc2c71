"""Property: whatever bytes are damaged, replay never crashes, never invents an entry,
and each policy keeps what it promises."""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ukehi.storage import WAL, CorruptionPolicy, CorruptionRefusedError, scan_wal

from walfiles import as_tuples, build_v2_log, entry, seg_path, tree_digest

LAYOUT = [list(range(1, 9)), list(range(9, 17)), list(range(17, 25))]
ORIGINAL = {i: entry(i) for i in range(1, 25)}

damage = st.lists(st.one_of(
    st.tuples(st.just("flip"), st.integers(1, 3), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(1, 3), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("zeros"), st.integers(1, 3), st.integers(0, 10_000), st.integers(1, 300)),
    # copy a chunk of the file over another place in it (a misdirected write)
    st.tuples(st.just("copy"), st.integers(1, 3), st.integers(0, 10_000), st.integers(0, 10_000)),
    # lose a whole middle segment (the first one would look like compaction, which is legal)
    st.tuples(st.just("delete"), st.just(2), st.just(0), st.just(0)),
), min_size=1, max_size=4)


def apply(d, ops):
    for op, seg, at, arg in ops:
        path = seg_path(d, seg)
        if not os.path.exists(path):
            continue
        if op == "delete":
            os.remove(path)
            continue
        data = bytearray(open(path, "rb").read())
        if not data:
            continue
        at %= len(data)
        if op == "copy":
            src = arg % len(data)
            chunk = data[src : src + 64]
            data[at : at + len(chunk)] = chunk
        elif op == "flip":
            data[at] ^= arg
        elif op == "truncate":
            del data[at:]
        else:
            data[at : at + arg] = bytes(min(arg, len(data) - at))
        with open(path, "wb") as f:
            f.write(data)


def check_damaged_wal(d, ops, policy):
    build_v2_log(d, LAYOUT)
    apply(d, ops)
    before = tree_digest(d)
    try:
        scan = scan_wal(d, policy)
    except CorruptionRefusedError as err:
        assert policy is CorruptionPolicy.RefuseStart
        assert err.report.refused and tree_digest(d) == before
        return
    kept = as_tuples(scan.entries)
    # Nothing invented: every kept entry is the original entry at its index, in order.
    assert all(ORIGINAL.get(e[1]) == e for e in kept)
    assert [e[1] for e in kept] == sorted({e[1] for e in kept})
    if policy is not CorruptionPolicy.AlertAndContinue:
        assert kept == [ORIGINAL[i] for i in range(1, len(kept) + 1)]  # a prefix, no holes
    if scan.report.clean:
        assert not scan.report.recovering
    wal, replay = WAL.open(d, policy)
    wal.close()
    assert as_tuples(replay.entries) == kept
    if policy is CorruptionPolicy.TruncateToLastGood:
        again = scan_wal(d, policy)  # the cut is on disk: the next start is clean
        assert again.report.clean and as_tuples(again.entries) == kept


FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@settings(max_examples=int(os.environ.get("WAL_FUZZ_EXAMPLES", "150")), **FUZZ)
@given(ops=damage, policy=st.sampled_from(list(CorruptionPolicy)))
def test_damaged_wal_replays_within_policy(tmp_path_factory, ops, policy):
    check_damaged_wal(str(tmp_path_factory.mktemp("fuzz")), ops, policy)


@pytest.mark.slow
@settings(max_examples=1500, **FUZZ)
@given(ops=damage, policy=st.sampled_from(list(CorruptionPolicy)))
def test_damaged_wal_replays_within_policy_long(tmp_path_factory, ops, policy):
    check_damaged_wal(str(tmp_path_factory.mktemp("fuzzlong")), ops, policy)
