"""Contracts of the Raft core that neither the other unit tests nor the harness pinned.

Each test here was written against a mutant that survived the unit tests in a fresh mutation
sample (`ukehi-jepsen mutate --seed 6`): a behaviour the core promises but nothing checked.
"""

from __future__ import annotations

import dataclasses

import msgpack

from raftnet import Net
from ukehi.raft import (
    AppendEntries,
    Heartbeat,
    HeartbeatResponse,
    RaftConfig,
    Role,
    VoteRequest,
    VoteResponse,
    message_from_dict,
    message_to_dict,
)
from ukehi.raft import messages as raft_messages

N3 = ["n1", "n2", "n3"]


def test_a_node_at_a_higher_term_refuses_a_stale_pre_vote_and_names_its_term():
    # A pre-candidate left behind (e.g. by a partition) asks at a term below ours: it must
    # hear our term, or it keeps asking for votes it can never get.
    net = Net(N3)
    net.elect("n1")
    net.tick("n1")
    net.deliver()
    n2 = net["n2"]
    assert n2.term == 1
    net.queue.clear()
    n2.step(VoteRequest(0, 0, "n3", "n2", True, 0, 0))  # a pre-vote at term 0 < 1
    net.flush("n2")
    answers = [m for m in net.queue if isinstance(m, VoteResponse) and m.dst == "n3"]
    assert answers == [VoteResponse(0, 1, "n2", "n3", True, False)]
    assert n2.term == 1 and n2.lead == "n1"  # nothing else changed


def test_ready_alone_carries_the_appends_of_a_proposal():
    # The driver calls has_ready() first, which flushes; but ready()'s own contract is to
    # collect all pending work, so a caller that skips has_ready() must not lose the sends.
    net = Net(N3)
    net.elect("n1")
    net.tick("n1")
    net.deliver()
    n1 = net["n1"]
    index, _ = n1.propose(b"x")
    rd = n1.ready()
    appends = [m for m in rd.messages if isinstance(m, AppendEntries)]
    assert sorted(m.dst for m in appends) == ["n2", "n3"]
    assert all(any(e.index == index for e in m.entries) for m in appends)
    n1.advance(rd)


def test_heartbeats_acknowledged_at_tick_zero_confirm_the_lease():
    # A node's tick counter starts at 0: an ack of a heartbeat sent at tick 0 is a real ack
    # (only -1 means "never acknowledged"). n2, restarted, takes over by transfer before it
    # ticks once, so its first ReadIndex round goes out at tick 0.
    cfg = RaftConfig(election_tick=10, lease_read=True, lease_drift_margin=2)
    net = Net(N3, cfg)
    net.tick_all(cfg.election_tick)  # lease nodes vote for nobody right after start
    net.elect("n1")
    net.tick("n1")
    net.deliver()
    net.restart("n2")
    net.tick("n1")  # a heartbeat: the restarted n2 learns its leader and the commit index
    net.deliver()
    assert net["n2"].ticks == 0 and net["n2"].lead == "n1"
    net["n1"].transfer_leadership("n2")
    net.flush("n1")
    net.deliver()
    n2 = net["n2"]
    assert n2.role is Role.LEADER and n2.ticks == 0
    net.deliver()
    n2.read_index(b"first")  # no ack yet: a ReadIndex round of heartbeats at tick 0
    net.flush("n2")
    rounds = [m for m in net.queue if isinstance(m, Heartbeat) and m.src == "n2"]
    assert rounds and all(m.lease_tick == 0 for m in rounds)
    net.deliver()
    assert [r.ctx for r in net.reads["n2"]] == [b"first"]
    net.queue.clear()
    n2.read_index(b"second")  # the acks of tick 0 hold the lease: answered at once
    net.flush("n2")
    assert [r.ctx for r in net.reads["n2"]] == [b"first", b"second"]
    assert not [m for m in net.queue if isinstance(m, Heartbeat)]


def _required(cls: type) -> dict:
    """Values for the fields of CLS that have no default (group, term, nodes, flags)."""
    values = {"group_id": 3, "term": 7, "src": "n1", "dst": "n2"}
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        if f.name in values:
            out[f.name] = values[f.name]
        elif f.type in ("bool",):
            out[f.name] = True
        elif f.type in ("int",):
            out[f.name] = 1
        elif f.type in ("bytes",):
            out[f.name] = b"x"
        else:
            return {}
    return out


def test_every_message_built_with_its_defaults_crosses_the_wire_unchanged():
    # Defaults are what a message carries when its sender leaves a field out; each must be a
    # value the receiving side accepts (e.g. a tick or an index may not be negative).
    checked = []
    for cls in raft_messages._FIELDS:
        fields = _required(cls)
        if not fields:
            continue
        msg = cls(**fields)
        wire = msgpack.packb(message_to_dict(msg), use_bin_type=True)
        assert message_from_dict(msgpack.unpackb(wire, raw=False)) == msg, cls.__name__
        checked.append(cls)
    assert Heartbeat in checked and HeartbeatResponse in checked and VoteResponse in checked
