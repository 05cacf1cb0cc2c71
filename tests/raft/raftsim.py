"""A deterministic multi-node simulation bed for the Raft core.

Drives 3 to 7 RaftCore instances through an in-memory network that loses, delays, reorders
and duplicates messages and partitions nodes; crashes and restarts nodes keeping only what
the bed persisted (the bed *is* the durable store: a Ready's entries and hard state are
durable only once the bed handled that Ready). Every decision comes from one seeded RNG, so a
seed replays exactly.

After every step it checks the Raft safety properties (see `SafetyViolation` uses):
election safety, log matching, leader completeness, state machine safety, fencing-token
monotonicity, read linearizability, durable votes, and that acknowledged writes survive.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from dataclasses import dataclass, field

import msgpack

from ukehi.raft import (
    ConfChange,
    ConfChangeType,
    Entry,
    HardState,
    Message,
    RaftConfig,
    RaftCore,
    RaftError,
    Ready,
    Role,
    Snapshot,
    VoteResponse,
    message_from_dict,
    message_to_dict,
)

ALL_IDS = [f"n{i}" for i in range(1, 8)]


class SafetyViolation(AssertionError):
    pass


@dataclass
class Durable:
    """What survives a crash: exactly what the bed persisted from handled Readies."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    def base(self) -> int:
        return self.snapshot.meta.index if self.snapshot else 0

    def term_at(self, index: int) -> int | None:
        base = self.base()
        if index == base:
            return self.snapshot.meta.term if self.snapshot else 0
        k = index - base - 1
        if 0 <= k < len(self.entries):
            return self.entries[k].term
        return None


def _mix(h: int, e: Entry) -> int:
    return zlib.crc32(e.data, zlib.crc32(bytes([e.kind]) + e.term.to_bytes(8, "little"), h))


@dataclass
class SimNode:
    id: str
    core: RaftCore | None
    durable: Durable
    refuse_votes_until: int = 0
    sm_index: int = 0  # state machine: index applied and a hash chain over applied entries
    sm_hash: int = 0
    seen_leader_terms: set[int] = field(default_factory=set)
    founding: frozenset[str] | None = None

    @property
    def up(self) -> bool:
        return self.core is not None


@dataclass(frozen=True)
class SimOptions:
    voters: int = 3
    spare: int = 0  # extra node ids available for membership changes
    steps: int = 400
    loss: float = 0.05
    dup: float = 0.03
    reorder: float = 0.3
    # Relative weights of the actions (delivering messages weighs 40, ticking 15).
    crash: float = 0.5
    partition: float = 0.5
    propose: float = 10.0
    conf_change: float = 0.0
    transfer: float = 0.3
    read: float = 1.5
    drift: bool = True  # tick nodes individually sometimes (clock drift)
    crash_in_ready: float = 0.0  # chance to crash right after persisting a Ready
    corrupt_wal: float = 0.0  # cut a node's durable log on restart (TruncateToLastGood)
    wire_codec: bool = False  # round-trip every message through msgpack + validation
    raft: RaftConfig = field(default_factory=lambda: RaftConfig(election_tick=10))


class Cluster:
    def __init__(self, seed: int, opts: SimOptions) -> None:
        self.seed = seed
        self.opts = opts
        self.rng = random.Random(seed)
        self.steps = 0
        self.calm = False  # set while settling: no more faults
        self.cfg = opts.raft
        founding = ALL_IDS[: opts.voters]
        self.spare_ids = ALL_IDS[opts.voters : opts.voters + opts.spare]
        self.nodes: dict[str, SimNode] = {}
        for nid in founding:
            core = RaftCore(
                nid, self.cfg, rng=self._node_rng(nid), initial_membership=set(founding)
            )
            self.nodes[nid] = SimNode(nid, core, Durable(), founding=frozenset(founding))
        self.net: list[Message] = []
        self.group: dict[str, int] = {}  # partition group per node (absent = 0)
        self.steps = 0
        self.log: list[str] = []  # event trace, for debugging a failing seed
        # Safety records.
        self.leader_of_term: dict[int, str] = {}
        self.entry_record: dict[tuple[int, int], tuple[int, bytes, int, int]] = {}
        self.chain: dict[int, int] = {}  # index -> hash chain value after applying it
        self.applied_entry: dict[int, tuple[int, bytes]] = {}
        self.commit_milestone: dict[int, tuple[int, int]] = {}  # term -> (commit idx, its term)
        self.proposals: dict[tuple[int, int], bytes] = {}
        self.acked: dict[int, tuple[int, bytes]] = {}
        self.max_acked = 0
        self.reads: dict[bytes, int] = {}  # ctx -> max acked index when the read began
        self.reads_done = 0
        self.proposal_seq = 0
        self.nodes_ever = set(founding)
        # What a schedule exercised; tests assert that the chaos really covers each feature.
        self.stats: Counter[str] = Counter()

    def _node_rng(self, nid: str) -> random.Random:
        return random.Random(f"{self.seed}/{nid}/{self.steps}")

    def fail(self, what: str) -> None:
        tail = "\n".join(self.log[-30:])
        raise SafetyViolation(f"seed {self.seed} step {self.steps}: {what}\nlast events:\n{tail}")

    # -- Ready handling (the bed is the durable store) -----------------------------------

    def process(self, node: SimNode) -> None:
        core = node.core
        while core is not None and core.has_ready():
            rd = core.ready()
            self._persist(node, rd)
            if (
                not self.calm
                and self.opts.crash_in_ready
                and self.rng.random() < self.opts.crash_in_ready
            ):
                self.crash(node)  # durable, but nothing sent or applied
                return
            self._check_votes_durable(node, rd)
            for m in rd.messages:
                self._send(m)
            self._apply(node, rd)
            core.advance(rd)
            if rd.snapshot_request is not None:
                self._take_snapshot(node, rd.snapshot_request)
            self._observe(node)
            core = node.core

    def _persist(self, node: SimNode, rd: Ready) -> None:
        d = node.durable
        if rd.snapshot is not None:
            self.stats["snapshot_installed"] += 1
            d.snapshot = rd.snapshot
            d.entries = []
            idx_s, _, hash_s = rd.snapshot.data.partition(b":")
            idx, h = int(idx_s), int(hash_s.split(b"|")[0])
            if idx != rd.snapshot.meta.index:
                self.fail(f"{node.id}: snapshot data is for {idx}, meta says {rd.snapshot.meta.index}")
            if self.chain.get(idx, h) != h:
                self.fail(f"{node.id}: installed snapshot at {idx} differs from the applied history")
            node.sm_index, node.sm_hash = idx, h
        if rd.entries:
            first = rd.entries[0].index
            base = d.base()
            if first <= base + len(d.entries):
                if rd.truncate_from != first and first <= base + len(d.entries) and rd.snapshot is None:
                    self.fail(
                        f"{node.id}: Ready overwrites stored entry {first} but truncate_from="
                        f"{rd.truncate_from}"
                    )
                del d.entries[first - base - 1 :]
            elif first != base + len(d.entries) + 1:
                self.fail(f"{node.id}: Ready entries start at {first}, stored log ends at {base + len(d.entries)}")
            prev_term = d.term_at(first - 1)
            prev_token = d.entries[-1].fencing_token if d.entries else 0
            for e in rd.entries:
                self._check_entry(node, e, prev_term, prev_token)
                prev_term, prev_token = e.term, e.fencing_token
            d.entries.extend(rd.entries)
        if rd.hard_state is not None:
            d.hard_state = rd.hard_state

    def _check_entry(self, node: SimNode, e: Entry, prev_term: int | None, prev_token: int) -> None:
        key = (e.index, e.term)
        rec = (int(e.kind), e.data, e.fencing_token, prev_term)
        old = self.entry_record.setdefault(key, rec)
        if old != rec:
            self.fail(f"log matching: {node.id} holds entry {key} = {rec}, elsewhere {old}")
        if e.fencing_token >> 32 != e.term:
            self.fail(f"entry {key} has fencing token of term {e.fencing_token >> 32}")
        if e.fencing_token <= prev_token:
            self.fail(f"{node.id}: fencing token not increasing at entry {e.index}")

    def _check_votes_durable(self, node: SimNode, rd: Ready) -> None:
        hs = node.durable.hard_state
        for m in rd.messages:
            if isinstance(m, VoteResponse) and m.granted and not m.pre_vote:
                if hs.term != m.term or hs.vote != m.dst:
                    self.fail(f"{node.id} sends a vote for {m.dst} in term {m.term} before persisting it")

    def _apply(self, node: SimNode, rd: Ready) -> None:
        for e in rd.committed_entries:
            if e.index != node.sm_index + 1:
                self.fail(f"{node.id} applies {e.index} after {node.sm_index}")
            node.sm_hash = _mix(node.sm_hash, e)
            node.sm_index = e.index
            prev = self.chain.setdefault(e.index, node.sm_hash)
            if prev != node.sm_hash:
                self.fail(
                    f"state machine safety: {node.id} applied {e.index} (term {e.term}, "
                    f"{e.data!r}) unlike {self.applied_entry.get(e.index)}"
                )
            self.applied_entry.setdefault(e.index, (e.term, e.data))
            data = self.proposals.pop((e.index, e.term), None)
            if e.kind == 2 and node.core is not None and node.core.role is Role.LEADER:
                self.stats["config_committed"] += 1
            if data is not None:
                self.stats["acked"] += 1
                self.acked[e.index] = (e.term, data)
                self.max_acked = max(self.max_acked, e.index)
        for rs in rd.read_states:
            floor = self.reads.pop(rs.ctx, None)
            if floor is None:
                self.fail(f"{node.id}: read state for unknown ctx {rs.ctx!r}")
            if rs.index < floor:
                self.fail(
                    f"stale read: {node.id} served read {rs.ctx!r} at index {rs.index} but "
                    f"index {floor} was acknowledged before the read began"
                )
            self.reads_done += 1
            self.stats["reads"] += 1
        for ctx in rd.dropped_reads:
            self.reads.pop(ctx, None)

    def _take_snapshot(self, node: SimNode, index: int) -> None:
        if node.sm_index != index:
            self.fail(f"{node.id}: snapshot requested at {index} but state machine is at {node.sm_index}")
        pad = b"|" + bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(200)))
        data = f"{index}:{node.sm_hash}".encode() + pad
        meta = node.core.report_snapshot_taken(index, data)
        if meta is not None:
            self.stats["snapshot_taken"] += 1
            d = node.durable
            keep = [e for e in d.entries if e.index > index]
            d.snapshot = Snapshot(meta, data)
            d.entries = keep

    def _observe(self, node: SimNode) -> None:
        core = node.core
        if core is None or core.role is not Role.LEADER:
            return
        term = core.term
        owner = self.leader_of_term.setdefault(term, node.id)
        if owner != node.id:
            self.fail(f"election safety: {owner} and {node.id} both lead term {term}")
        if term not in node.seen_leader_terms:
            node.seen_leader_terms.add(term)
            self.log.append(f"{node.id} leads term {term}")
            self.stats["elections"] += 1
            # Leader completeness: everything committed in earlier terms is in our log.
            for t, (idx, idx_term) in self.commit_milestone.items():
                if t < term and idx > core.log.snapshot.index and core.log.term(idx) != idx_term:
                    self.fail(
                        f"leader completeness: {node.id} leads term {term} without entry {idx} "
                        f"(term {idx_term}) committed in term {t}"
                    )
        c = core.log.committed
        m = self.commit_milestone.get(term)
        if m is None or c > m[0]:
            if c > core.log.snapshot.index:
                self.commit_milestone[term] = (c, core.log.term(c))

    # -- network -------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        if self.opts.wire_codec:
            raw = msgpack.packb(message_to_dict(m), use_bin_type=True)
            m = message_from_dict(msgpack.unpackb(raw, raw=False))
        self.net.append(m)

    def _connected(self, a: str, b: str) -> bool:
        return self.group.get(a, 0) == self.group.get(b, 0)

    def deliver_one(self, reliable: bool = False) -> None:
        if not self.net:
            return
        rng = self.rng
        k = 0 if reliable or rng.random() >= self.opts.reorder else rng.randrange(len(self.net))
        m = self.net.pop(k)
        if not reliable:
            if rng.random() < self.opts.loss:
                return
            if rng.random() < self.opts.dup:
                self.net.insert(rng.randrange(len(self.net) + 1), m)
        node = self.nodes.get(m.dst)
        if node is None or not node.up or not self._connected(m.src, m.dst):
            return
        node.core.step(m)
        self.process(node)

    # -- actions ---------------------------------------------------------------------------

    def tick_all(self) -> None:
        for node in list(self.nodes.values()):
            if node.up:
                node.core.tick()
                self.process(node)

    def leaders(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.up and n.core.role is Role.LEADER]

    def propose(self) -> None:
        for node in self.leaders():
            self.proposal_seq += 1
            data = f"v{self.proposal_seq}".encode()
            try:
                index, term = node.core.propose(data)
            except RaftError:
                continue
            self.proposals[(index, term)] = data
            self.process(node)

    def read(self) -> None:
        for node in self.leaders():
            ctx = f"r{self.steps}-{node.id}".encode()
            if ctx in self.reads:
                continue
            self.reads[ctx] = self.max_acked
            try:
                node.core.read_index(ctx)
            except RaftError:
                self.reads.pop(ctx)
                continue
            self.process(node)

    def crash(self, node: SimNode) -> None:
        self.log.append(f"crash {node.id}")
        node.core = None

    def restart(self, node: SimNode, corrupt: bool = False) -> None:
        d = node.durable
        refuse = node.refuse_votes_until
        if corrupt and d.entries and not any(self._recovering(n) for n in self.nodes.values()):
            # TruncateToLastGood: the tail of the WAL is gone; refuse votes until caught up.
            last = d.base() + len(d.entries)
            cut = self.rng.randrange(len(d.entries))
            del d.entries[cut:]
            refuse = last + 1
            self.stats["wal_cut"] += 1
            self.log.append(f"cut {node.id} WAL to {d.base() + cut}, refuse votes until {refuse}")
        self.log.append(f"restart {node.id}")
        node.refuse_votes_until = refuse
        node.core = RaftCore(
            node.id,
            self.cfg,
            rng=self._node_rng(node.id),
            hard_state=d.hard_state,
            entries=list(d.entries),
            snapshot=d.snapshot,
            # A founding member's first configuration is not in its log: pass it again.
            initial_membership=node.founding if d.snapshot is None else None,
            refuse_votes_until=refuse,
        )
        if d.snapshot is not None:
            idx_s, _, rest = d.snapshot.data.partition(b":")
            node.sm_index, node.sm_hash = int(idx_s), int(rest.split(b"|")[0])
        else:
            node.sm_index, node.sm_hash = 0, 0
        node.seen_leader_terms = set()
        self.process(node)

    def _recovering(self, node: SimNode) -> bool:
        if node.up:
            return node.core.recovering
        return node.durable.hard_state.commit < node.refuse_votes_until

    def conf_change(self) -> None:
        leaders = self.leaders()
        if not leaders:
            return
        leader = leaders[0]
        m = leader.core.membership
        rng = self.rng
        choice = rng.random()
        change = None
        if choice < 0.45 and self.spare_ids:
            nid = self.spare_ids[0]
            op = ConfChangeType.ADD_VOTER if rng.random() < 0.5 else ConfChangeType.ADD_LEARNER
            change = ConfChange(op, nid)
        elif choice < 0.65 and m.learners:
            change = ConfChange(ConfChangeType.ADD_VOTER, rng.choice(sorted(m.learners)))
        elif len(m.voters) > 3:
            change = ConfChange(ConfChangeType.REMOVE, rng.choice(sorted(m.voters)))
        if change is None:
            return
        try:
            leader.core.propose_conf_change([change])
        except (RaftError, ValueError):
            return
        self.log.append(f"{leader.id} proposes {change.op.value} {change.node}")
        if change.node in self.spare_ids:
            self.spare_ids.remove(change.node)
            self.nodes_ever.add(change.node)
            self.nodes[change.node] = SimNode(
                change.node,
                RaftCore(change.node, self.cfg, rng=self._node_rng(change.node)),
                Durable(),
            )
        self.process(leader)

    def transfer(self) -> None:
        for node in self.leaders():
            voters = sorted(v for v in node.core.membership.voters if v != node.id)
            if not voters:
                continue
            target = self.rng.choice(voters)
            try:
                node.core.transfer_leadership(target)
            except (RaftError, ValueError):
                continue
            self.log.append(f"{node.id} transfers to {target}")
            self.stats["transfers"] += 1
            self.process(node)

    def repartition(self) -> None:
        ids = sorted(self.nodes)
        if self.group or self.rng.random() < 0.3:
            self.group = {}
            self.log.append("heal")
            return
        self.group = {nid: self.rng.randrange(2) for nid in ids}
        self.log.append(f"partition {self.group}")

    def step(self) -> None:
        """One random action, weighted by the schedule's options."""
        self.steps += 1
        o = self.opts
        rng = self.rng
        up = [n for n in self.nodes.values() if n.up]
        down = [n for n in self.nodes.values() if not n.up]
        actions = (
            (40.0, "deliver"),
            (15.0, "tick"),
            (o.propose, "propose"),
            (o.read, "read"),
            (o.crash if up else 0.0, "crash"),
            (3.0 if down else 0.0, "restart"),
            (o.partition, "partition"),
            (o.conf_change, "conf_change"),
            (o.transfer, "transfer"),
        )
        x = rng.random() * sum(w for w, _ in actions)
        for weight, action in actions:
            x -= weight
            if x < 0:
                break
        if action == "deliver":
            for _ in range(rng.randrange(1, 6)):
                self.deliver_one()
        elif action == "tick":
            if o.drift and rng.random() < 0.3 and up:
                n = rng.choice(up)
                n.core.tick()
                self.process(n)
            else:
                self.tick_all()
        elif action == "propose":
            self.propose()
        elif action == "read":
            self.read()
        elif action == "crash":
            self.crash(rng.choice(up))
        elif action == "restart":
            self.restart(rng.choice(down), corrupt=rng.random() < o.corrupt_wal)
        elif action == "partition":
            self.repartition()
        elif action == "conf_change":
            self.conf_change()
        else:
            self.transfer()

    def run(self) -> None:
        for _ in range(self.opts.steps):
            self.step()

    # -- scripted scenarios: lossy network, proposals flowing, no crashes ------------------

    def busy_step(self) -> None:
        """Deliver (with the schedule's loss/dup/reorder), tick, or propose."""
        self.steps += 1
        x = self.rng.random()
        if x < 0.6:
            # Deliver in proportion to the backlog so delays stay bounded (a network that
            # carries less than the load would starve elections, which proves nothing).
            for _ in range(self.rng.randrange(1, 8) + len(self.net) // 3):
                self.deliver_one()
        elif x < 0.85:
            self.tick_all()
        else:
            self.propose()

    def run_until(self, cond, max_steps: int, what: str) -> None:
        for _ in range(max_steps):
            if cond():
                return
            self.busy_step()
        self.fail(f"{what} did not happen within {max_steps} steps")

    def leader(self) -> SimNode | None:
        leaders = self.leaders()
        return max(leaders, key=lambda n: n.core.term) if leaders else None

    def change_membership(self, change: ConfChange, max_steps: int = 3000) -> None:
        """Get `change` accepted by whoever leads, then wait until C_new is in force."""
        if change.op is not ConfChangeType.REMOVE and change.node not in self.nodes:
            self.nodes[change.node] = SimNode(
                change.node, RaftCore(change.node, self.cfg, rng=self._node_rng(change.node)),
                Durable(),
            )
            self.nodes_ever.add(change.node)

        def accepted() -> bool:
            leader = self.leader()
            if leader is None:
                return False
            try:
                leader.core.propose_conf_change([change])
            except RaftError:
                return False
            self.log.append(f"{leader.id} proposes {change.op.value} {change.node}")
            self.process(leader)
            return True

        self.run_until(accepted, max_steps, f"acceptance of {change}")

        def in_force() -> bool:
            leader = self.leader()
            if leader is None:
                return False
            mem = leader.core.membership
            done = (change.node in mem.voters) == (change.op is ConfChangeType.ADD_VOTER)
            return (
                done
                and not mem.joint
                and leader.core.log.committed >= leader.core.log.last_config_index()
            )

        self.run_until(in_force, max_steps, f"{change} taking effect")

    # -- the end: heal everything, demand progress, compare state ------------------------

    def settle(self, max_ticks: int = 400) -> SimNode:
        """Heal, restart everyone, deliver reliably; a leader must emerge and commit."""
        self.group = {}
        self.calm = True
        for node in self.nodes.values():
            if not node.up:
                self.restart(node)
        leader = None
        marker: tuple[int, int] | None = None
        for t in range(max_ticks):
            self._drain()
            self.tick_all()
            self._drain()
            leaders = self.leaders()
            if not leaders:
                continue
            leader = max(leaders, key=lambda n: n.core.term)
            if marker is None or leader.core.term != marker[1]:
                try:
                    marker = leader.core.propose(f"final-{t}".encode())
                except RaftError:
                    marker = None
                    continue
                self.proposals[marker] = f"final-{t}".encode()
                self.process(leader)
                continue
            members = leader.core.membership.all_nodes()
            if leader.core.membership.joint:
                continue
            if all(
                self.nodes[nid].up and self.nodes[nid].sm_index >= marker[0]
                for nid in members
            ):
                return leader
        self.fail(
            f"liveness: no leader committed and replicated a proposal within {max_ticks} ticks "
            f"of healing; status: {[(n.id, n.core.status()) for n in self.nodes.values() if n.up]}"
        )
        raise AssertionError("unreachable")

    def _drain(self) -> None:
        budget = 20_000
        while self.net and budget:
            budget -= 1
            self.deliver_one(reliable=True)

    def check_final(self, leader: SimNode) -> None:
        """Every acknowledged write is in the converged state machine."""
        final = leader.sm_index
        for index, (term, data) in self.acked.items():
            if index > final:
                self.fail(f"acknowledged entry {index} is beyond the final applied index {final}")
            got = self.applied_entry.get(index)
            if got != (term, data):
                self.fail(f"acknowledged entry {index} {(term, data)} lost; applied {got}")
        for nid in leader.core.membership.all_nodes():
            n = self.nodes[nid]
            if self.chain.get(n.sm_index) != n.sm_hash:
                self.fail(f"{nid} state machine diverged at {n.sm_index}")


def run_seed(seed: int, opts: SimOptions | None = None) -> Cluster:
    """One full schedule: chaos, then heal and check liveness and durability."""
    cluster = Cluster(seed, opts if opts is not None else options_for_seed(seed))
    cluster.run()
    leader = cluster.settle()
    cluster.check_final(leader)
    return cluster


def options_for_seed(seed: int) -> SimOptions:
    """Vary cluster size, fault rates and Raft tunables per seed (deterministically)."""
    r = random.Random(seed * 7919 + 17)
    if r.random() < 0.25:
        return _election_storm(r)
    voters = r.choice([3, 3, 4, 5, 5, 7])
    spare = 0 if voters == 7 else r.choice([0, 1, 2, 7 - voters])
    lease = r.random() < 0.15
    raft = RaftConfig(
        election_tick=r.choice([5, 10]),
        heartbeat_tick=1,
        pre_vote=lease or r.random() < 0.8,
        check_quorum=lease or r.random() < 0.8,
        max_inflight=r.choice([1, 2, 4, 256]),
        max_entries_per_message=r.choice([1, 3, 64]),
        compaction_threshold=r.choice([4, 8, 25, 10_000]),
        snapshot_chunk_size=r.choice([7, 32, 1 << 20]),
        lease_read=lease,
        lease_drift_margin=1,
    )
    return SimOptions(
        voters=voters,
        spare=spare,
        steps=r.choice([300, 500, 800]),
        loss=r.choice([0.0, 0.05, 0.15]),
        dup=r.choice([0.0, 0.03, 0.1]),
        reorder=r.choice([0.0, 0.3, 0.7]),
        crash=r.choice([0.0, 0.5, 1.5, 3.0]),
        partition=r.choice([0.0, 0.5, 1.5]),
        propose=r.choice([5.0, 10.0, 20.0]),
        conf_change=0.0 if spare == 0 and voters <= 3 else r.choice([0.0, 1.0, 2.5]),
        transfer=r.choice([0.0, 0.3, 1.0]),
        read=r.choice([0.0, 1.5, 5.0]),
        # Lease reads are only safe without clock drift: tick such clusters in lock step.
        drift=not lease,
        crash_in_ready=r.choice([0.0, 0.0, 0.01]),
        corrupt_wal=r.choice([0.0, 0.0, 0.3]),
        wire_codec=r.random() < 0.1,
        raft=raft,
    )


def _election_storm(r: random.Random) -> SimOptions:
    """Short timeouts, no pre-vote, single-entry messages, many crashes (some right after a
    Ready was persisted): the schedules where double votes and Figure-8 commits would show."""
    return SimOptions(
        voters=r.choice([3, 3, 5]),
        steps=r.choice([800, 1200]),
        loss=r.choice([0.05, 0.1]),
        dup=0.03,
        reorder=0.5,
        crash=r.choice([1.5, 3.0]),
        partition=r.choice([0.5, 1.0]),
        propose=10.0,
        transfer=0.3,
        read=1.5,
        drift=True,
        crash_in_ready=r.choice([0.02, 0.05]),
        raft=RaftConfig(
            election_tick=r.choice([3, 5]),
            pre_vote=False,
            check_quorum=r.random() < 0.5,
            max_inflight=r.choice([2, 4]),
            max_entries_per_message=1,
            compaction_threshold=r.choice([8, 10_000]),
            snapshot_chunk_size=16,
        ),
    )
