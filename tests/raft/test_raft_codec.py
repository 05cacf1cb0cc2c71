"""Wire and WAL codecs of the Raft core: round trips, and bad input named clearly."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ukehi.raft import (
    AppendEntries,
    AppendResponse,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Membership,
    MessageError,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
    decode_membership,
    encode_membership,
    entry_from_wal,
    entry_to_wal_command,
    message_from_dict,
    message_to_dict,
)

M = Membership(voters=frozenset({"n1", "n2", "n4"}), outgoing=frozenset({"n1", "n2", "n3"}),
               learners=frozenset({"n9"}))
CONF = encode_membership(M)

SAMPLES = [
    VoteRequest(3, 7, "n1", "n2", True, 10, 6, False),
    VoteResponse(0, 7, "n2", "n1", False, True),
    AppendEntries(0, 5, "n1", "n2", 3, 4, (Entry(4, 4, EntryKind.NORMAL, b"x", 1 << 34),
                                           Entry(5, 5, EntryKind.CONFIG, CONF, (5 << 32) | 1)), 3),
    AppendResponse(0, 5, "n2", "n1", False, 3, 2, 1),
    Heartbeat(0, 5, "n1", "n2", 3, b"ctx", 17),
    HeartbeatResponse(0, 5, "n2", "n1", b"ctx", 17),
    InstallSnapshot(0, 5, "n1", "n3", 100, 4, M, 8, 20, b"chunk"),
    SnapshotResponse(0, 5, "n3", "n1", 100, 13),
    TimeoutNow(0, 5, "n1", "n2"),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.type)
def test_every_message_type_round_trips_through_msgpack(msg):
    wire = msgpack.packb(message_to_dict(msg), use_bin_type=True)
    back = message_from_dict(msgpack.unpackb(wire, raw=False))
    assert back == msg
    assert type(back) is type(msg)


def _dict(msg, **changes):
    d = message_to_dict(msg)
    d.update(changes)
    return d


@pytest.mark.parametrize(
    "bad, complaint",
    [
        ("not a dict", "must be a dict"),
        ({"type": "nope"}, "unknown Raft message type"),
        (_dict(SAMPLES[0], term=True), "term must be an int"),
        (_dict(SAMPLES[0], term=-1), "term must be in"),
        (_dict(SAMPLES[0], term=1 << 64), "term must be in"),
        (_dict(SAMPLES[0], src=""), "src must be a non-empty"),
        (_dict(SAMPLES[0], src=3), "src must be a node id"),
        (_dict(SAMPLES[0], pre_vote=1), "pre_vote must be a bool"),
        (_dict(SAMPLES[0], extra=1), "unexpected fields \\['extra'\\]"),
        ({k: v for k, v in message_to_dict(SAMPLES[1]).items() if k != "granted"}, "missing fields \\['granted'\\]"),
        (_dict(SAMPLES[4], ctx="text"), "ctx must be bytes"),
        (_dict(SAMPLES[4], ctx=b"x" * 5000), "more than 4096"),
        (_dict(SAMPLES[2], entries=[[4, 9, 0, b"x", 1]]), "contiguous"),
        (_dict(SAMPLES[2], entries=[[9, 4, 0, b"x", 1]]), "outside"),
        (_dict(SAMPLES[2], entries=[[4, 4, 7, b"x", 1]]), "kind must be"),
        (_dict(SAMPLES[2], entries=[[4, 4, 0, "x", 1]]), "data must be bytes"),
        (_dict(SAMPLES[2], entries=[[4, 4, 0, b"x"]]), "must be a list \\[term"),
        (_dict(SAMPLES[2], entries=[[4, 4, 2, b"{bad", 1]]), "bad config entry"),
        (_dict(SAMPLES[2], entries="x"), "must be a list of entries"),
        (_dict(SAMPLES[6], total_size=10), "runs past total_size"),
        (_dict(SAMPLES[6], membership={"voters": []}), "membership must be a dict"),
        (_dict(SAMPLES[6], membership={"voters": ["a"], "outgoing": [], "learners": ["a"]}),
         "both voter and learner"),
    ],
)
def test_bad_messages_are_refused_with_the_field_named(bad, complaint):
    with pytest.raises(MessageError, match=complaint):
        message_from_dict(bad)


def test_message_to_dict_refuses_non_messages():
    with pytest.raises(TypeError):
        message_to_dict({"type": "heartbeat"})


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "group_id", "term", "src", "dst", "commit",
                                        "ctx", "lease_tick", "entries", "x"]),
                       st.one_of(st.integers(), st.binary(), st.text(), st.none(),
                                 st.lists(st.integers(), max_size=3)), max_size=9))
def test_arbitrary_dicts_raise_only_message_error(d):
    try:
        message_from_dict(d)
    except MessageError:
        pass


@pytest.mark.parametrize("kind, data", [(EntryKind.NORMAL, b"put k v"), (EntryKind.NOOP, b""),
                                        (EntryKind.CONFIG, CONF)])
def test_wal_command_folds_the_kind_into_one_leading_byte(kind, data):
    e = Entry(7, 42, kind, data, (7 << 32) | 3)
    cmd = entry_to_wal_command(e)
    assert cmd[0] == kind.value and cmd[1:] == data
    assert entry_from_wal(7, 42, cmd, (7 << 32) | 3) == e


@pytest.mark.parametrize(
    "cmd, complaint",
    [(b"", "empty command"), (b"\x09abc", "unknown kind byte 9"), (b"\x02not json", "JSON")],
)
def test_bad_wal_commands_are_refused(cmd, complaint):
    with pytest.raises(ValueError, match=complaint):
        entry_from_wal(1, 1, cmd, 0)


def test_wal_entry_numbers_are_range_checked():
    with pytest.raises(ValueError, match="fencing_token"):
        entry_from_wal(1, 1, b"\x00", 1 << 64)
    with pytest.raises(TypeError):
        entry_from_wal(1, 1, "text", 0)


def test_membership_encoding_is_canonical_and_validated():
    assert decode_membership(CONF) == M
    assert encode_membership(decode_membership(CONF)) == CONF
    with pytest.raises(ValueError, match="exactly voters, outgoing, learners"):
        decode_membership(b'{"voters": []}')
    with pytest.raises(ValueError, match="more than"):
        decode_membership(b" " * 70_000)
    with pytest.raises(ValueError, match="non-empty"):
        decode_membership(b'{"voters": [""], "outgoing": [], "learners": []}')
