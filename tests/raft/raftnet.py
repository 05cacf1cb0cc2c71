"""A tiny hand-driven network for interaction-script tests of the Raft core.

Unlike the randomized bed (raftsim.py) nothing happens unless the test says so: tick a node,
deliver the queued messages (optionally dropping some), look at what came out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ukehi.raft import (
    Entry,
    HardState,
    Message,
    RaftConfig,
    RaftCore,
    Ready,
    Role,
    Snapshot,
)


@dataclass
class Store:
    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None


class Net:
    def __init__(
        self,
        ids: Iterable[str],
        cfg: RaftConfig | None = None,
        *,
        seed: int = 1,
        members: Iterable[str] | None = None,
    ) -> None:
        self.ids = list(ids)
        self.cfg = cfg or RaftConfig(election_tick=10)
        members = set(members if members is not None else self.ids)
        self.cores: dict[str, RaftCore] = {}
        self.stores: dict[str, Store] = {}
        self.applied: dict[str, list[Entry]] = {}
        self.reads: dict[str, list] = {}
        self.readies: dict[str, list[Ready]] = {}
        self.queue: list[Message] = []
        self.sent: list[Message] = []  # everything ever sent, for assertions
        self.cut: set[frozenset[str]] = set()
        self.seed = seed
        for nid in self.ids:
            self.add(nid, RaftCore(nid, self.cfg, rng=self._rng(nid), initial_membership=members))

    def _rng(self, nid: str) -> random.Random:
        return random.Random(f"{self.seed}-{nid}")

    def add(self, nid: str, core: RaftCore) -> None:
        self.cores[nid] = core
        self.stores.setdefault(nid, Store())
        self.applied.setdefault(nid, [])
        self.reads.setdefault(nid, [])
        self.readies.setdefault(nid, [])
        if nid not in self.ids:
            self.ids.append(nid)

    def __getitem__(self, nid: str) -> RaftCore:
        return self.cores[nid]

    # -- driving ---------------------------------------------------------------------

    def flush(self, nid: str) -> list[Ready]:
        """Handle every pending Ready of `nid` like a driver would."""
        core = self.cores[nid]
        out = []
        while core.has_ready():
            rd = core.ready()
            st = self.stores[nid]
            if rd.snapshot is not None:
                st.snapshot, st.entries = rd.snapshot, []
            if rd.entries:
                base = st.snapshot.meta.index if st.snapshot else 0
                del st.entries[rd.entries[0].index - base - 1 :]
                st.entries.extend(rd.entries)
            if rd.hard_state is not None:
                st.hard_state = rd.hard_state
            self.queue.extend(rd.messages)
            self.sent.extend(rd.messages)
            self.applied[nid].extend(rd.committed_entries)
            self.reads[nid].extend(rd.read_states)
            core.advance(rd)
            out.append(rd)
        self.readies[nid].extend(out)
        return out

    def flush_all(self) -> None:
        for nid in self.ids:
            self.flush(nid)

    def tick(self, nid: str, n: int = 1) -> None:
        for _ in range(n):
            self.cores[nid].tick()
            self.flush(nid)

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for nid in self.ids:
                self.tick(nid)

    def timeout(self, nid: str) -> None:
        """Tick `nid` until its election timer fires (it campaigns)."""
        self.tick(nid, self.cores[nid].randomized_timeout)

    def deliver(
        self,
        drop: Callable[[Message], bool] = lambda m: False,
        max_rounds: int = 10_000,
    ) -> list[Message]:
        """Deliver queued messages (and their consequences) until the network is quiet."""
        delivered = []
        rounds = 0
        while self.queue and rounds < max_rounds:
            rounds += 1
            m = self.queue.pop(0)
            if frozenset((m.src, m.dst)) in self.cut or drop(m) or m.dst not in self.cores:
                continue
            delivered.append(m)
            self.cores[m.dst].step(m)
            self.flush(m.dst)
        return delivered

    def isolate(self, nid: str) -> None:
        for other in self.ids:
            if other != nid:
                self.cut.add(frozenset((nid, other)))

    def heal(self) -> None:
        self.cut.clear()

    def expire_lease(self, nid: str) -> None:
        """Let an election timeout pass on `nid` without its own timer firing (it has not
        heard from its leader for that long, so it no longer honours the leader's lease)."""
        core = self.cores[nid]
        core.election_elapsed = max(core.election_elapsed, core.cfg.election_tick)

    def elect(self, nid: str) -> None:
        for other in self.ids:
            if other != nid and frozenset((nid, other)) not in self.cut:
                if self.cores[other].role is not Role.LEADER:
                    self.expire_lease(other)
        self.timeout(nid)
        self.deliver()
        assert self.cores[nid].role is Role.LEADER, self.cores[nid].status()

    def restart(self, nid: str, **kwargs) -> RaftCore:
        st = self.stores[nid]
        members = kwargs.pop("initial_membership", None)
        if st.snapshot is None and members is None:
            members = set(self.cores[nid].log.snapshot.membership.all_voters()) or None
        core = RaftCore(
            nid,
            kwargs.pop("cfg", self.cfg),
            rng=self._rng(nid + "r"),
            hard_state=st.hard_state,
            entries=list(st.entries),
            snapshot=st.snapshot,
            initial_membership=members if st.snapshot is None else None,
            **kwargs,
        )
        self.cores[nid] = core
        self.applied[nid] = []
        return core

    def leaders(self) -> list[str]:
        return [n for n, c in self.cores.items() if c.role is Role.LEADER]

    def sent_of(self, cls: type, **fields) -> list[Message]:
        return [
            m for m in self.sent
            if isinstance(m, cls) and all(getattr(m, k) == v for k, v in fields.items())
        ]
