"""The fast path of AppendEntries decoding (issue 17) accepts exactly what the full check
accepts and builds the same entries; anything else goes to the full check and its error."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import pytest

from ukehi.raft.confchange import encode_membership
from ukehi.raft.messages import (
    AppendEntries,
    MessageError,
    _entry_fast,
    entry_from_list,
    message_from_dict,
    message_to_dict,
)
from ukehi.raft.types import U64_MAX, Entry, EntryKind, Membership

field = st.one_of(
    st.integers(min_value=-2, max_value=U64_MAX + 2), st.booleans(), st.binary(max_size=8),
    st.text(max_size=3), st.none(), st.floats(allow_nan=False),
)
entry_like = st.one_of(
    st.lists(field, min_size=4, max_size=6),
    st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(-1, 3), st.binary(max_size=4), st.integers(0, 5)),
    st.builds(lambda t, i, k, d, f: [t, i, k, d, f], st.integers(0, U64_MAX), st.integers(0, U64_MAX),
              st.integers(-1, 3), st.one_of(st.binary(max_size=8), st.text(max_size=2)),
              st.one_of(st.integers(-1, U64_MAX + 1), st.booleans())),
)


@settings(max_examples=600, deadline=None)
@given(entry_like)
def test_fast_path_agrees_with_the_full_check(obj):
    fast = _entry_fast(obj)
    try:
        full = entry_from_list(obj)
    except MessageError:
        assert fast is None  # refused by the full check: never accepted by the fast path
        return
    assert fast is None or fast == full
    assert fast is None or (type(fast.kind) is EntryKind and fast.kind is full.kind)


def test_fast_path_takes_the_common_entries_and_leaves_config_and_odd_types_to_the_full_check():
    assert _entry_fast([3, 7, 0, b"cmd", (3 << 32) | 1]) == Entry(3, 7, EntryKind.NORMAL, b"cmd", (3 << 32) | 1)
    assert _entry_fast([3, 7, 1, b"", 0]).kind is EntryKind.NOOP
    config = encode_membership(Membership(voters=frozenset({"n1", "n2", "n3"})))
    assert _entry_fast([3, 7, 2, config, 0]) is None  # membership decoded by the full check
    assert entry_from_list([3, 7, 2, config, 0]).kind is EntryKind.CONFIG
    assert _entry_fast([True, 7, 0, b"", 0]) is None and _entry_fast((3, 7, 0, b"", 0)) is None
    assert _entry_fast([3, 7, 0, bytearray(b"x"), 0]) is None


def test_a_bad_entry_in_an_append_still_gets_the_full_checks_error():
    ok = Entry(2, 5, EntryKind.NORMAL, b"a", 0)
    d = message_to_dict(AppendEntries(0, 2, "n1", "n2", 4, 2, (ok, ok), 4))
    d["entries"][1] = [2, 6, 0, "not bytes", 0]
    with pytest.raises(MessageError, match=r"append_entries.entries\[1\] data must be bytes"):
        message_from_dict(d)
    d["entries"][1] = [2, 6, 0, b"b", 0]
    m = message_from_dict(d)
    assert [e.index for e in m.entries] == [5, 6] and m.entries[1].data == b"b"
