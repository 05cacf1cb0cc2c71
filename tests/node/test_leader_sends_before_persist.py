"""The leader replicates while its own WAL write and fsync run (Raft thesis §10.2.1); a
follower's ack and a candidate's vote still wait for their persist; and the core counts
the leader's own copy toward commit only once the driver's persist is done (advance)."""

from __future__ import annotations

import io
import os
import random
import sys

from ukehi import wire
from ukehi.node.driver import Driver
from ukehi.nodelog import NodeLogger
from ukehi.raft import RaftConfig, RaftCore
from ukehi.raft.messages import AppendEntries, AppendResponse, VoteRequest, VoteResponse, message_from_dict
from ukehi.raft.types import Entry, EntryKind, Role

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "raft"))
from raftnet import Net  # noqa: E402

IDS = ["n1", "n2", "n3"]


class RecordingNetwork:
    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    def send(self, peer: str, address: tuple[str, int] | None, frames: list[bytes]) -> bool:
        for f in frames:
            self.sent.append((peer, message_from_dict(wire.decode_frame(f).body)))
        return True

    def ensure(self, peer: str, address: tuple[str, int]) -> None:
        return None

    async def drop(self, peer: str) -> None:
        return None

    async def close(self) -> None:
        return None

    def linked_peers(self) -> list[str]:
        return []


class FixedClock:
    def monotonic(self) -> float:
        return 0.0

    def time(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        return None


def driver_for(core: RaftCore) -> tuple[Driver, RecordingNetwork]:
    d = Driver(core.id, bug=None, fsync=True, founders={n: ("127.0.0.1", 1 + i) for i, n in enumerate(IDS)},
               log=NodeLogger(core.id, "error", stream=io.StringIO()), clock=FixedClock(), wake=lambda: None)
    d.core = core
    net = RecordingNetwork()
    d.network = net
    return d, net


def run_until_persist(d: Driver):
    """Start one Ready-loop cycle; stop at its first persist (the fsync not yet done)."""
    gen = d.cycle()
    work = next(gen)
    assert work.kind == "persist"
    return gen


def finish(gen) -> None:
    """The persist is done: let the cycle go on to the end (storage is not touched here)."""
    try:
        while True:
            gen.send(None)
    except StopIteration:
        pass


def test_the_leader_sends_its_appends_before_its_own_persist_and_commits_after_it():
    net = Net(IDS)
    net.elect("n1")
    leader = net["n1"]
    d, sent = driver_for(leader)
    index, _ = leader.propose(b"x")
    gen = run_until_persist(d)
    appends = [(peer, m) for peer, m in sent.sent if isinstance(m, AppendEntries)]
    # Both followers already have the new entry while the leader's fsync is in progress ...
    assert sorted(peer for peer, m in appends if any(e.index == index for e in m.entries)) == ["n2", "n3"]
    # ... and nothing is committed on the leader's own word before its copy is durable.
    assert leader.log.committed < index and leader.log.stable < index
    finish(gen)
    assert leader.log.stable == index
    assert leader.log.committed < index  # durable on the leader alone: 1 of 3 is no quorum
    leader.step(AppendResponse(0, leader.term, "n2", "n1", True, index))
    assert leader.log.committed == index  # the leader's durable copy + n2's


def test_a_follower_acks_only_after_its_persist():
    net = Net(IDS)
    net.elect("n1")
    follower = net["n2"]
    last = follower.log.last_index()
    entry = Entry(follower.term, last + 1, EntryKind.NORMAL, b"y", 0)
    follower.step(AppendEntries(0, follower.term, "n1", "n2", last, follower.log.term(last), (entry,), 0))
    d, sent = driver_for(follower)
    gen = run_until_persist(d)
    assert sent.sent == []  # the ack promises a durable copy: not before the fsync
    finish(gen)
    acks = [m for _, m in sent.sent if isinstance(m, AppendResponse)]
    assert acks and acks[-1].success and acks[-1].index == last + 1


def test_a_candidate_sends_its_vote_requests_only_after_saving_its_vote():
    core = RaftCore("n1", RaftConfig(election_tick=10), rng=random.Random(3), initial_membership=IDS)
    while core.role is not Role.PRE_CANDIDATE:
        core.tick()
    while core.has_ready():
        core.advance(core.ready())
    core.step(VoteResponse(0, core.term + 1, "n2", "n1", True, True))  # pre-vote granted
    assert core.role is Role.CANDIDATE
    d, sent = driver_for(core)
    gen = run_until_persist(d)
    # A vote request out before the new term and the self-vote are durable could win an
    # election the node forgets after a crash: nothing goes out before the persist.
    assert sent.sent == []
    finish(gen)
    assert {peer for peer, m in sent.sent if isinstance(m, VoteRequest) and not m.pre_vote} == {"n2", "n3"}


def test_a_single_voter_commits_its_own_entries_only_once_they_are_durable():
    n1 = RaftCore("n1", RaftConfig(election_tick=10), rng=random.Random(1), initial_membership=["n1"])
    while n1.log.applied < 1:
        n1.tick()
        while n1.has_ready():
            n1.advance(n1.ready())
    index, _ = n1.propose(b"a")
    rd = n1.ready()
    assert [e.index for e in rd.entries] == [index]
    assert rd.committed_entries == () and n1.log.committed < index  # not durable yet
    n1.advance(rd)  # the driver persisted rd.entries
    assert n1.log.committed == index
    assert [e.index for e in n1.ready().committed_entries] == [index]


class _Placed:
    def __init__(self) -> None:
        self.result: object = None
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, value: object) -> None:
        self._done, self.result = True, value

    def set_exception(self, exc: BaseException) -> None:
        self._done, self.result = True, exc


def test_the_leader_applies_the_command_it_validated_without_decoding_it_again(monkeypatch):
    import asyncio

    from ukehi import kv as kv_module
    from ukehi.kv import encode_command
    from ukehi.node.inputs import Propose

    calls = []
    real = kv_module.decode_command
    monkeypatch.setattr(kv_module, "decode_command", lambda data: calls.append(data) or real(data))

    async def scenario() -> None:
        n1 = RaftCore("n1", RaftConfig(election_tick=10), rng=random.Random(1), initial_membership=["n1"])
        while n1.log.applied < 1:
            n1.tick()
            while n1.has_ready():
                n1.advance(n1.ready())
        d, _ = driver_for(n1)
        d.applied = n1.log.applied  # the no-op, applied above without the driver
        kept = {"op": "put", "key": "k", "value": "v1"}
        d.push(Propose(encode_command(kept), _Placed(), 1e9, kept))
        n1.propose(encode_command({"op": "put", "key": "k2", "value": "v2"}))  # bytes only
        for _ in range(3):
            finish(d.cycle())
        assert d.kv.read("k") == "v1" and d.kv.read("k2") == "v2"
        # Only the entry proposed without its command was decoded at apply.
        assert calls == [encode_command({"op": "put", "key": "k2", "value": "v2"})]
        assert d.decoded == {}  # nothing kept once applied

    asyncio.run(scenario())
