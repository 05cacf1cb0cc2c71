"""Leader-targeted fault families of the simulator's swarm.

Random partitions, kills and pauses almost never line up the moments some Raft bugs need
(README, "Why commit-old-term, forget-vote and accept-stale-term are not found"). The real
harness reaches those moments with leader-targeted nemeses (``nemeses/figure_eight.py``,
``nemeses/stale_append.py``, ``nemeses/targeted.py``) that read each node's status and act
when Raft is vulnerable. These are the simulator's counterparts, as *general* fault families:
any seed may draw them (swarm testing), every choice inside them is drawn from the step's
RNG, and each acts on what it observes of the simulated cluster (who leads and in which term,
each Raft message as it leaves its node: ``SimWorld.send_watch``), never on a bug's name.

- ``fall-after-append`` (figure 8): leaders fall one after another, each right after an
  append of its reached a drawn number of followers, from none up to exactly a majority with
  the leader. The round's moment is drawn: the leader's next append with entries, or its next
  append carrying entries of an earlier term (it is bringing a follower's log up to date).
  From that moment only that one append per drawn follower leaves the leader; everything
  else it sends is lost, as if it died mid-send, while what comes in still arrives (so
  acknowledgements may let it commit and apply). At once, or about a round trip later, it is
  power-cut or cut off, and the previous round's victim comes back. Two to four rounds, then
  the last victim comes back too. Divergent tails of different terms, an old-term entry
  copied to a majority by a later leader, and that leader gone before its own entry follows:
  Raft's figure 8.
- ``stale-leader`` (late appends of a deposed leader): the leader is cut off, and what it
  sends is held (queued, as its TCP connections keep unacknowledged bytes) instead of
  dropped. Once another node leads in a newer term and a follower acknowledges that
  leader's entries, the deposed leader's links heal and everything it queued is delivered
  late, that follower's queue first; half the time the new leader is power-cut right then
  and stays down for one to three election timeouts.
- ``vote-flip`` (a voter crashed after voting, back on the other side): the leader is cut
  off; when a voter of the others' next election grants its vote, it is power-cut at once,
  restarts soon after, and comes back cut off from the others but linked to the cut-off old
  leader, which campaigns with it, for one to three election timeouts.
- ``slow-leader-clock`` (a lease outliving its leader): the leader's clock rate drops to a
  drawn 0.02-0.5 (log-uniform; the real ``slow-leader`` nemesis uses 0.02; 0.85-0.95, within
  the lease's drift bound, on a seed with lease reads), and it is cut off
  from the other nodes both ways; clients stay attached to it (the simulator's client links
  are never cut). The others, on true clocks, time out, elect a leader and commit writes,
  while the old one counts its lease and its check-quorum in ticks of its slow clock, so it
  believes it leads, and its lease holds, for 1/rate times as long. After two to five
  election timeouts the links heal and its clock runs at the true rate again, its wall clock
  stepped forward to true time (as NTP would). This is the situation the ``clock`` family
  (a random node, rates 0.5-2) almost never lines up: slow clock, leader, cut off, and
  clients still reading from it, all at once.
- ``figure-eight`` (Raft's figure 8 end to end, section 5.4.2: the real ``figure-8``
  nemesis's situation, on any seed that draws it).
  (a) The leader's first append of a new entry reaches a drawn minority of followers (none
  of 3 voters; half the time the largest minority) and its side is cut off from the rest,
  at once or after 0.5-2 election timeouts in which only its appends with entries are
  lost on those links (a link dropping large packets: its heartbeats keep it leading
  while clients' writes pile up in its log alone).
  (b) When a node of the rest leads a later term and appends, that append reaches a drawn
  number of followers (never so many that the old side and the others lack a majority),
  everything else it sends is lost, and a moment later its side is cut off (its leader
  power-cut or not) while the old side (its leader power-cut at (b)'s start or not, and
  restarted) joins the others.
  (c) A leader of a still later term there (the old side has the longest logs) brings the
  others up to date. At its first append that carries only earlier-term entries and, once
  delivered, puts the last of them on a majority while its own first entry is not on one
  (nor on its way to one), an entry a node of the cut-off side (whose last term is later)
  lacks, that append leaves and everything the leader sends after it is lost (what comes
  in still arrives); 0.5-2.5 round trips later it is power-cut or cut off, alone or with
  the followers that have its own entries.
  (d) The cut-off side comes back (then or at once); the first leader of a later term is
  recorded with whether it lacks the entry; the fallen stay out 1-3 election timeouts.
  It reads roles, terms and logs (as the real nemesis reads ``status``) and each message
  as it leaves, never a commit index, so up to the fall it acts alike whether a leader
  commits old-term entries by counting or not. The difference needs a split catch-up: an
  append of old-term entries without the leader's no-op, i.e. a tail longer than
  ``max_entries_per_message`` (1 in a third of the seeds; with 8 or 64 the tail and the
  no-op mostly travel together and a counting leader commits nothing a correct one does
  not; the real nemesis's regression case sets ``--max-entries-per-message 1``).

Each family cuts links under its own owner (``SimWorld.set_cuts``), so a partition's heal
does not undo it, nor does it undo a partition; every step and what it saw is recorded in
the history (nemesis ops) and the fault log. At most one family instance runs at a time
(a step that draws another meanwhile does nothing); ``stop`` (the final heal) undoes it.
"""

from __future__ import annotations

import abc
import random
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover - the runner imports this module
    from .runner import _Nemesis

__all__ = ["FAMILIES", "Family", "FallAfterAppend", "FigureEight", "SlowLeaderClock", "StaleLeader", "VoteFlip",
           "make_families"]


class Family(abc.ABC):
    """One leader-targeted fault family: armed by a nemesis step, driven by what it sees."""

    name = ""

    def __init__(self, nemesis: "_Nemesis") -> None:
        self.nem = nemesis
        self.world = nemesis.world
        self.active = False  # an instance is running (arming again is a no-op step)
        self.watching = False  # wants to see every Raft message sent (send_watch)
        self.rng = random.Random(0)
        self.generation = 0  # timers of an earlier instance find a newer one and do nothing

    # ---- helpers shared by the families
    def _el(self) -> tuple[float, float]:
        lo, hi = self.nem.opts["election_ms"]
        return lo / 1000.0, hi / 1000.0

    def _rtt(self) -> float:
        """About one replication round trip: two network hops and an fsync."""
        return 2 * self.world.opts.delay[1] + self.world.opts.fsync[1]

    def _term(self, node: str) -> int | None:
        h = self.world.nodes[node]
        core = h.current.node.core if h.up and h.current and h.current.node else None
        return None if core is None else core.term

    def _later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        gen = self.generation

        def run() -> None:
            if self.active and gen == self.generation and not self.nem.closed:
                fn(*args)

        self.world.loop.call_later(max(0.0, delay), run)

    def _record(self, f: str, value: dict[str, Any]) -> None:
        self.nem._record(f, {"family": self.name, **value})

    def _watch(self, on: bool) -> None:
        self.watching = on
        self.nem._rearm_watch()

    def _bring_back(self, node: str) -> None:
        """Restart ``node`` if a crash still keeps it down (one the nemesis has not undone
        yet: a step's undo may have restarted it already)."""
        if ("kill", node) in self.nem.active:
            self.nem._restart([node])

    # ---- the interface the nemesis calls
    def arm(self, rng: random.Random) -> None:
        # One family at a time: each already cuts the leader off or makes it fall for
        # seconds; stacked on one another (the same leader cut by two, a flip during a
        # churn) they left clusters without a quorum for most of a seed before this rule
        # (register seeds 29 and 328 unknown: almost nothing served; fencing seed 17 failed
        # availability: no fenced-put answered in the whole run).
        if self.nem.closed or any(f.active for f in self.nem.families.values()):
            return
        self.rng = rng
        self.generation += 1
        self.active = True
        if not self.start():
            self.active = False

    @abc.abstractmethod
    def start(self) -> bool:
        """Begin an instance (``self.rng`` is its own); False: nothing to act on now."""

    def on_send(self, src: str, dst: str, body: dict[str, Any]) -> bool | None:
        """Called for every Raft message as it leaves ``src``; False: it is lost."""
        return None

    def stop(self) -> None:
        """Undo everything (the final heal, or the family's own end)."""
        if not self.active:
            return
        self.active = False
        self.generation += 1
        self.watching = False
        self.world.set_cuts(self.name, ())
        for (src, dst) in list(self.world.holding):
            if self._holds(src, dst):
                self.world.release(src, dst)  # late, never lost
        self.finish()
        self.nem._rearm_watch()

    def _holds(self, src: str, dst: str) -> bool:
        return False

    def finish(self) -> None:
        return None


class FallAfterAppend(Family):
    """Figure 8: leaders cut off or power-cut right after their newest entries reached a
    drawn number of followers (none up to exactly a majority with the leader)."""

    name = "fall-after-append"

    def start(self) -> bool:
        self.rounds = self.rng.randint(2, 4)
        self.victim: tuple[str, str] | None = None  # (node, "crash" | "cut") of the last round
        self.leader: str | None = None  # the leader falling this round (None: waiting for one)
        self.pending: set[str] = set()  # followers still to get the round's one append
        self._record("start-fall-after-append", {"rounds": self.rounds})
        self._next_round()
        self._watch(True)
        return True

    def _next_round(self) -> None:
        # The round's moment: the leader's next append with entries, or its next append that
        # carries entries of an earlier term than its own (it is bringing a follower's log up
        # to date: Raft's figure 8 is a leader counting such entries as committed).
        self.moment = self.rng.choice(["entries", "earlier-term"])
        self._later(6 * self._el()[1], self._give_up, self.rounds)

    def _give_up(self, rounds_then: int) -> None:
        # No leader sent such an append for six election timeouts: end (a quiet cluster).
        if self.rounds == rounds_then and self.leader is None:
            self._end("no append at the moment drawn")

    def on_send(self, src: str, dst: str, body: dict[str, Any]) -> bool | None:
        if self.leader is not None:
            if src != self.leader:
                return None
            # The falling leader: only the round's one append per reached follower leaves it
            # (the one that triggered the round, or the first with entries to another reached
            # follower); everything else it sends is lost, as if it died mid-send. What comes
            # in still arrives, so acknowledgements may let it commit before it falls.
            if dst in self.pending and body.get("type") == "append_entries" and body.get("entries"):
                self.pending.discard(dst)
                return None
            return False
        if body.get("type") != "append_entries" or not body.get("entries"):
            return None
        if self.moment == "earlier-term" and all(e[0] >= body.get("term", 0) for e in body["entries"]):
            return None
        lead = self.nem._leader()
        if src != lead or (self.victim is not None and self.victim[0] == src):
            return None
        w = self.world
        others = [n for n in w.names if n != src]
        # Followers the append reaches: 0 .. exactly a majority with the leader.
        k = self.rng.randint(0, len(w.names) // 2)
        rest = [n for n in others if n != dst]
        reached = ([dst] + self.rng.sample(rest, min(k - 1, len(rest)))) if k > 0 else []
        self.leader = src
        self.pending = set(reached)
        entries = body["entries"]
        delay = self.rng.choice([0.0, self.rng.uniform(0.5, 2.0) * self._rtt()])
        how = self.rng.choice(["crash", "cut"])
        self._record("fall-spread", {"node": src, "term": body.get("term"), "moment": self.moment,
                                     "reached": sorted(reached), "entries": [[e[0], e[1]] for e in entries],
                                     "then": how, "after_s": round(delay, 6)})
        self._later(delay, self._fell, src, how)
        return self.on_send(src, dst, body)

    def _victim_links(self) -> set[tuple[str, str]]:
        if self.victim is None or self.victim[1] != "cut":
            return set()
        n = self.victim[0]
        return {(a, b) for a in self.world.names for b in self.world.names if a != b and n in (a, b)}

    def _fell(self, node: str, how: str) -> None:
        w = self.world
        # The previous victim comes back as this one falls.
        if self.victim is not None:
            back = self.victim[0]
            self._bring_back(back)
            self._record("fall-back", {"node": back})
        self.victim = None
        if how == "crash" and w.nodes[node].up:
            self.nem._crash([node], "fall-after-append", False)
            self.victim = (node, "crash")
            w.set_cuts(self.name, ())
        else:
            self.victim = (node, "cut")
            w.set_cuts(self.name, self._victim_links())
            self._record("fall-cut", {"node": node, "term": self._term(node)})
        self.leader = None
        self.pending = set()
        self.rounds -= 1
        if self.rounds <= 0:
            self._watch(False)
            self._later(self.rng.uniform(1.0, 2.0) * self._el()[1], self._end, "rounds done")
        else:
            self._next_round()

    def _end(self, why: str) -> None:
        self._record("stop-fall-after-append", {"why": why})
        self.stop()

    def finish(self) -> None:
        if self.victim is not None:
            self._bring_back(self.victim[0])
            self.victim = None


class StaleLeader(Family):
    """A deposed leader's queued appends delivered late, after a newer leader's entries were
    acknowledged (sometimes with that new leader power-cut right then)."""

    name = "stale-leader"

    def start(self) -> bool:
        lead = self.nem._leader()
        if lead is None:
            return False
        w = self.world
        self.old = lead
        self.old_term = self._term(lead) or 0
        self.fired = False
        self.crashed: str | None = None
        others = [n for n in w.names if n != lead]
        w.set_cuts(self.name, {(n, lead) for n in others})
        for n in others:
            w.hold(lead, n)
        self._record("start-stale-leader", {"node": lead, "term": self.old_term})
        self._watch(True)
        self._later(self.rng.uniform(3.0, 6.0) * self._el()[1], self._deliver, None, None, "no newer leader's ack")
        return True

    def _holds(self, src: str, dst: str) -> bool:
        return src == self.old

    def on_send(self, src: str, dst: str, body: dict[str, Any]) -> bool | None:
        if (self.fired or body.get("type") != "append_response" or not body.get("success")
                or src == self.old or dst == self.old or body.get("term", 0) <= self.old_term):
            return
        self.fired = True
        self._watch(False)
        # After this ack has gone out (the watch runs inside the send).
        self.world.loop.call_soon(self._deliver, src, dst, "newer leader's entries acknowledged")
        return None

    def _deliver(self, follower: str | None, new_leader: str | None, why: str) -> None:
        if not self.active or self.nem.closed:
            return
        w = self.world
        queued = {}
        if follower is not None:
            queued[follower] = w.release(self.old, follower)
        for n in w.names:
            if n != self.old and (self.old, n) in w.holding:
                queued[n] = w.release(self.old, n)
        w.set_cuts(self.name, ())
        crash = new_leader is not None and self.rng.random() < 0.5
        self._record("stale-leader-deliver", {"node": self.old, "term": self.old_term, "why": why,
                                              "first_to": follower, "new_leader": new_leader,
                                              "queued": queued, "crash_new_leader": crash})
        if crash and new_leader is not None:
            down = self.rng.uniform(1.0, 3.0) * self._el()[1]
            self._later(self.rng.uniform(0.0, 1.0) * self._rtt(), self._crash_new, new_leader, down)
        else:
            self._end()

    def _crash_new(self, node: str, down: float) -> None:
        self.crashed = node
        self.nem._crash([node], "stale-leader", False)
        self._later(down, self._end)

    def _end(self) -> None:
        self.stop()

    def finish(self) -> None:
        # The crashed new leader (if any) comes back with the end of the family.
        if self.crashed is not None:
            self._bring_back(self.crashed)
        self._record("stop-stale-leader", {"node": self.old})


class VoteFlip(Family):
    """The leader is cut off; a voter of the next election is power-cut right after it
    grants its vote and comes back linked only to the cut-off old leader."""

    name = "vote-flip"

    def start(self) -> bool:
        lead = self.nem._leader()
        if lead is None:
            return False
        self.old = lead
        self.old_term = self._term(lead) or 0
        self.voter: str | None = None
        w = self.world
        w.set_cuts(self.name, self._isolating({lead}))
        self._record("start-vote-flip", {"node": lead, "term": self.old_term})
        self._watch(True)
        self._later(self.rng.uniform(3.0, 6.0) * self._el()[1], self._end, "no vote granted")
        return True

    def _isolating(self, group: set[str]) -> set[tuple[str, str]]:
        """Links cutting ``group`` off from the rest, both ways."""
        names = self.world.names
        return {(a, b) for a in names for b in names if a != b and ((a in group) != (b in group))}

    def on_send(self, src: str, dst: str, body: dict[str, Any]) -> bool | None:
        if (self.voter is not None or body.get("type") != "vote_response" or not body.get("granted")
                or body.get("pre_vote") or self.old in (src, dst)):
            return
        self.voter = src
        self._watch(False)
        self.world.loop.call_soon(self._crash_voter, src, dst, body.get("term"))
        return None

    def _crash_voter(self, voter: str, candidate: str, term: Any) -> None:
        if not self.world.nodes[voter].up:
            self._end("voter already down")
            return
        self.nem._crash([voter], "vote-flip", False)
        self._record("vote-flip-crash", {"node": voter, "voted_for": candidate, "term": term,
                                         "old_leader": self.old, "old_term": self.old_term})
        el_lo = self._el()[0]
        back = self.rng.uniform(0.5, 1.5) * self.nem.opts["quick_restart"] * el_lo
        self._later(back, self._flip, voter)

    def _flip(self, voter: str) -> None:
        self.world.set_cuts(self.name, self._isolating({self.old, voter}))
        self._bring_back(voter)
        hold = self.rng.uniform(1.0, 3.0) * self._el()[1]
        self._record("vote-flip-rejoin", {"node": voter, "with": self.old, "for_s": round(hold, 4)})
        self._later(hold, self._end, "held")

    def _end(self, why: str) -> None:
        self._record("stop-vote-flip", {"why": why})
        self.stop()

    def finish(self) -> None:
        if self.voter is not None:
            self._bring_back(self.voter)


class SlowLeaderClock(Family):
    """The leader's clock runs slow while it is cut off from the other nodes (clients still
    reach it): the real ``slow-leader`` nemesis's situation, on any seed that draws it."""

    name = "slow-leader-clock"
    RATES = (0.02, 0.5)  # the clock rate is drawn log-uniformly between these
    # With lease reads (a swarm seed that drew them, harness/sim/runner.py _draw_read_mode)
    # the rate stays within the lease's drift bound: the lease is election_tick - 2 of the
    # leader's ticks (8 of 10), so above 0.8 it lapses before any follower on a true clock can
    # time out. A correct lease then holds, and a stale read is the lease code's fault (a
    # lease that ignores its acks, its stalls or its margin), not the clock's.
    LEASE_RATES = (0.85, 0.95)

    def start(self) -> bool:
        lead = self.nem._leader()
        if lead is None:
            return False
        w = self.world
        lo, hi = self.LEASE_RATES if w.opts.read_mode == "lease" else self.RATES
        rate = round(lo * (hi / lo) ** self.rng.random(), 4)
        hold = round(self.rng.uniform(2.0, 5.0) * self._el()[1], 4)
        self.old = lead
        self.rate = rate
        self.since = w.now()
        self.why = "final heal"
        # Clock first, as the real nemesis does: every tick the leader counts from here on
        # (its lease, its check-quorum, its heartbeats) takes 1/rate times as long.
        self.nem.note_skew()
        w.set_clock(lead, rate=rate)
        w.set_cuts(self.name, {(a, b) for a in w.names for b in w.names if a != b and lead in (a, b)})
        self._record("start-slow-leader-clock", {"node": lead, "term": self._term(lead), "rate": rate,
                                                 "for_s": hold})
        self._later(hold, self._end, "held")
        return True

    def _end(self, why: str) -> None:
        self.why = why
        self.stop()

    def finish(self) -> None:
        self._record("stop-slow-leader-clock", {"node": self.old, "why": self.why})
        # Back to the true rate, and the wall clock stepped forward by the lag this family
        # made (as NTP would step it), measured first (note_skew) so the lock checker's slack
        # covers it. The monotonic clock keeps the lag: only its differences matter. If a
        # ``clock`` fault changed this node's rate meanwhile, its own undo resets it.
        w = self.world
        h = w.nodes[self.old]
        if h.rate != self.rate:
            return
        self.nem.note_skew()
        w.set_clock(self.old, rate=1.0, bump=(1.0 - self.rate) * (w.now() - self.since))
        self.nem.note_skew()


class FigureEight(Family):
    """Raft's figure 8 as a fault pattern: a cut-off leader's tail, a later term's leader
    writing alone, the old side winning again and copying its old-term tail to a majority,
    and that leader falling before its own entry follows, with the later term's side back."""

    name = "figure-eight"

    def start(self) -> bool:
        lead = self.nem._leader()
        core = self._core(lead) if lead is not None else None
        if lead is None or core is None or core.membership.joint:
            return False
        voters = sorted(core.membership.voters)
        if lead not in voters or len(voters) < 3:
            return False
        self.voters = voters
        self.majority = len(voters) // 2 + 1
        self.old = lead
        self.old_term = core.term
        self.armed_at = core.log.last_index()
        self.side_a: set[str] = set()  # (a) the old leader's side, once it is cut off
        self.side_b: set[str] = set()
        self.phase = "await-append"
        self.new: str | None = None  # (b) the later term's leader
        self.new_term = 0
        self.side_new: set[str] = set()  # it and the followers its first entries reached
        self.pending: set[str] = set()
        self.mute: set[str] = set()  # nodes whose every send is lost (died mid-send)
        self.crashed: set[str] = set()
        self.leader: str | None = None  # (c) the old side's leader of a later term
        self.leader_term = 0
        self.index = 0  # the old-term entry copied to a majority, and its term
        self.entry_term = 0
        self.fallen: set[str] = set()  # (c) cut off with the falling leader
        # Links whose sends this family loses (held, nothing queued: a muted node's sends are
        # dropped before the hold) or impairs (black hole: marked slow by 0 s), so the fault
        # state the liveness verdict reads (SimWorld.health) shows them.
        self.held: set[tuple[str, str]] = set()
        self.marked: set[tuple[str, str]] = set()
        self.new_logs: dict[str, Any] = {}  # the cut-off side's logs as it was cut off
        self.sent: dict[tuple[str, int], dict[str, int]] = {}  # (leader, term) -> follower -> last index sent
        self.let_through: tuple[str, str] | None = None
        self.old_crash = self.rng.random() < 0.5  # (b) the old leader also power-cut meanwhile
        self._record("start-figure-eight", {"node": lead, "term": self.old_term, "old_leader_crash": self.old_crash})
        self._watch(True)
        self._phase_timeout("await-append", 6.0)
        return True

    def _cut_old_side(self, dst: str, body: dict[str, Any]) -> None:
        # (a) The leader's append of a new entry reaches a drawn number of followers, a
        # minority with it (none of 3 voters); the others' appends are lost from here on.
        # Either the leader's side is cut off from the rest at once, or first, for a drawn
        # 0.5-2 election timeouts, only the leader's appends with entries are lost on its
        # links to the rest while its heartbeats and everything else still pass (a link that
        # drops large packets: a path-MTU black hole), so it keeps leading and appending
        # what clients write, and nobody else has that tail. Clients still reach it.
        w = self.world
        others = [v for v in self.voters if v != self.old]
        # Half the time the largest minority (the paper's S1 and S2 of five): then no node
        # outside it can win the old side's next election, since none has its tail.
        most = (len(self.voters) - 1) // 2 - 1
        k = most if self.rng.random() < 0.5 else self.rng.randint(0, most)
        rest = [n for n in others if n != dst]
        reached = ([dst] + self.rng.sample(rest, min(k - 1, len(rest)))) if k > 0 else []
        self.side_a = {self.old, *reached}
        self.side_b = {n for n in w.names if n not in self.side_a}
        hole = self.rng.choice([0.0, round(self.rng.uniform(0.5, 2.0) * self._el()[1], 4)])
        self._record("figure-eight-old-side-cut", {"node": self.old, "term": self.old_term,
                                                   "side": sorted(self.side_a), "black_hole_s": hole,
                                                   "entries": [[e[0], e[1]] for e in body["entries"]]})
        if hole:
            self.phase = "black-hole"
            for n in sorted(self.side_b):
                if (self.old, n) not in w.slow:
                    w.slow_link(self.old, n, 0.0)
                    self.marked.add((self.old, n))
            self._later(hole, self._full_cut)
        else:
            self._full_cut()

    def _unmark(self) -> None:
        w = self.world
        for link in sorted(self.marked):
            if w.slow.get(link) == 0.0:
                del w.slow[link]
        self.marked = set()
        w.note_health()

    def _hold_out(self, node: str, spare: Any = ()) -> None:
        """Mark ``node``'s links to the others (but ``spare``) as losing what it sends."""
        w = self.world
        if not self.active or self.nem.closed:
            return
        for n in w.names:
            if n != node and n not in spare and (node, n) not in w.holding:
                w.hold(node, n)
                self.held.add((node, n))

    def _release_out(self, node: str) -> None:
        for link in sorted(self.held):
            if link[0] == node:
                self.held.discard(link)
                self.world.release(*link)  # nothing queued: its sends were dropped

    def _holds(self, src: str, dst: str) -> bool:
        return (src, dst) in self.held

    def _full_cut(self) -> None:
        self._unmark()
        self.world.set_cuts(self.name, self._isolating(self.side_a))
        self.phase = "old-tail"
        self._phase_timeout("old-tail", self.rng.uniform(3.0, 6.0))

    # ---- what the family reads of the simulated nodes (logs and roles, never commit state)
    def _core(self, node: str) -> Any:
        h = self.world.nodes[node]
        return h.current.node.core if h.up and h.current and h.current.node else None

    def _log_term(self, node: str, index: int) -> int | None:
        core = self._core(node)
        return None if core is None else core.log.term(index)

    @staticmethod
    def _lacks(log: Any, index: int, entry_term: int) -> bool:
        """``log`` has a later last term than ``entry_term`` and not that entry at ``index``
        (as a candidate it could win and overwrite it)."""
        held = log.term(index)
        if held is None and index < log.first_index():
            return False  # compacted there: it had that index committed
        return held != entry_term and log.last_term() > entry_term

    def _isolating(self, group: set[str]) -> set[tuple[str, str]]:
        names = self.world.names
        return {(a, b) for a in names for b in names if a != b and ((a in group) != (b in group))}

    def _phase_timeout(self, phase: str, timeouts: float) -> None:
        self._later(timeouts * self._el()[1], self._timed_out, phase)

    def _timed_out(self, phase: str) -> None:
        if self.phase == phase:
            self._end(f"nothing seen in phase {phase}")

    def on_send(self, src: str, dst: str, body: dict[str, Any]) -> bool | None:
        t = body.get("type")
        if self.phase == "new-writes" and src == self.new:
            # (b) The later term's leader dies mid-send: only its first append with entries to
            # each drawn follower leaves it.
            if dst in self.pending and t == "append_entries" and body.get("entries"):
                self.pending.discard(dst)
                self.world.loop.call_soon(self._hold_out, src, set(self.pending))
                return None
            return False
        if self.phase == "old-side-back" and t == "append_entries" and body.get("entries"):
            self._maybe_fall(src, dst, body)
            if self.let_through == (src, dst):
                self.let_through = None
                return None  # the append that makes the majority leaves; what follows is lost
        if self.phase == "old-side-back" and t == "append_response" and not body.get("success"):
            # A rejection: what that leader sent this follower before it did not land.
            self.sent.get((dst, int(body.get("term", 0))), {}).pop(src, None)
        if src in self.mute:
            return False
        if self.phase == "await-append":
            # The leader's first append of an entry it appended since the family armed: the
            # first time that entry leaves it (every send since is watched).
            if (src == self.old and t == "append_entries" and body.get("entries")
                    and body.get("term") == self.old_term and body["entries"][-1][1] > self.armed_at):
                self._cut_old_side(dst, body)
                return self.on_send(src, dst, body)
        elif self.phase == "black-hole":
            if src == self.old and dst not in self.side_a and t == "append_entries" and body.get("entries"):
                return False
        elif self.phase == "old-tail":
            if (t == "append_entries" and body.get("entries") and src in self.side_b
                    and body.get("term", 0) > self.old_term):
                self._new_leader(src, dst, body)
                return self.on_send(src, dst, body)
        elif self.phase == "fallen":
            if t == "append_entries" and body.get("term", 0) > self.leader_term and src != self.leader:
                # (d) Someone leads a later term: does its log lack the old-term entry?
                held = self._log_term(src, self.index)
                self.phase = "after"
                self._record("figure-eight-elected", {"node": src, "term": body.get("term"),
                                                      "index": self.index, "entry_term": self.entry_term,
                                                      "its_term_there": held, "lacks_entry": held != self.entry_term})
        return None

    def _new_leader(self, src: str, dst: str, body: dict[str, Any]) -> None:
        # (b) A node of the other side leads a later term and appends: its entries reach a
        # drawn number of followers, few enough that the old side with the rest is a majority.
        w = self.world
        self.new, self.new_term = src, int(body.get("term", 0))
        spare = len(self.voters) - 1 - self.majority  # followers it may reach (0 with 3 voters)
        followers = [n for n in sorted(self.side_b) if n != src]
        rest = [n for n in followers if n != dst]
        r = self.rng.randint(0, max(0, spare))
        reached = ([dst] + self.rng.sample(rest, min(r - 1, len(rest)))) if r > 0 else []
        self.side_new = {src, *reached}
        self.pending = set(reached)
        self.phase = "new-writes"
        w.loop.call_soon(self._hold_out, src, set(reached))
        delay = self.rng.uniform(0.0, 2.0) * self._rtt()
        old = self._core(self.old)
        others = [c.log.last_index() for c in map(self._core, sorted(self.side_b - {src})) if c is not None]
        tail = old.log.last_index() - max(others) if old is not None and others else None
        self._record("figure-eight-new-leader", {"node": src, "term": self.new_term, "reached": sorted(reached),
                                                 "old_leader_tail": tail, "then_after_s": round(delay, 6)})
        if self.old_crash and w.nodes[self.old].up:
            w.loop.call_soon(self._crash, self.old)
        self._later(delay, self._new_falls)

    def _crash(self, node: str) -> None:
        if self.active and not self.nem.closed and self.world.nodes[node].up:
            self.nem._crash([node], self.name, False)
            self.crashed.add(node)

    def _new_falls(self) -> None:
        # (b -> c) The later term's side is cut off (its leader power-cut or not) and the old
        # side (its leader restarted if it was cut) joins the rest.
        w = self.world
        self.mute.add(self.new)  # type: ignore[arg-type]
        for n in self.side_new:
            core = self._core(n)
            if core is not None:
                self.new_logs[n] = core.log  # frozen by a crash; a cut leader only appends
        how = self.rng.choice(["crash", "cut"])
        if how == "crash":
            self._crash(self.new)  # type: ignore[arg-type]
        w.set_cuts(self.name, self._isolating(self.side_new))
        if self.old in self.crashed:
            self.crashed.discard(self.old)
            self._bring_back(self.old)
        self.phase = "old-side-back"
        self._record("figure-eight-old-side-back", {"cut_off": sorted(self.side_new), "new_leader": how,
                                                     "old_leader": self.old})
        self._phase_timeout("old-side-back", self.rng.uniform(4.0, 8.0))

    def _maybe_fall(self, leader: str, follower: str, body: dict[str, Any]) -> None:
        # (c) An append of a leader of a later term than the cut-off side's that carries only
        # entries of earlier terms: once its follower has them, is the last of them on a
        # majority while the leader's own first entry is not (nor on its way to one), and
        # does a node of the cut-off side (with a later last term) lack it?
        if leader in self.side_new or leader not in self.voters:
            return
        core = self._core(leader)
        term = int(body.get("term", 0))
        if core is None or core.term != term or term <= self.new_term:
            return
        sent = self.sent.setdefault((leader, term), {})
        index, entry_term = int(body["entries"][-1][1]), int(body["entries"][-1][0])
        if (leader, follower) not in self.world.blocked:  # a cut link delivers nothing
            sent[follower] = max(sent.get(follower, 0), index)
        if entry_term >= term:
            return
        own = core.log.last_index()
        while own > index and core.log.term(own - 1) == term:
            own -= 1
        holders = [v for v in self.voters if v == follower or self._log_term(v, index) == entry_term]
        own_holders = [v for v in self.voters if self._log_term(v, own) == term or sent.get(v, 0) >= own]
        lacking = sorted(n for n, log in self.new_logs.items() if self._lacks(log, index, entry_term))
        if len(holders) < self.majority or len(own_holders) >= self.majority or not lacking:
            return
        self.phase = "fallen"
        self.leader, self.leader_term = leader, term
        self.index, self.entry_term = index, entry_term
        # This append leaves; everything the leader sends after it is lost, while what comes
        # in still arrives (the follower's acknowledgement may reach it, and it does with it
        # what it does). It is power-cut or cut off a drawn moment later (about a round trip),
        # and the cut-off side comes back at once or then.
        self.mute.add(leader)
        self.let_through = (leader, follower)
        self.world.loop.call_soon(self._hold_out, leader)  # after this append has left
        after = self.rng.uniform(0.5, 2.5) * self._rtt()
        how = self.rng.choice(["crash", "cut"])
        back_first = self.rng.random() < 0.5
        # Alone, or with the followers that have (or are being sent) its own entries, as a
        # rack losing power takes a leader and its neighbours (with 5 or more voters those
        # followers would otherwise outvote the cut-off side's candidates).
        falling = {leader} | (set(own_holders) if self.rng.random() < 0.5 else set())
        self._record("figure-eight-fall", {"node": leader, "term": term, "index": index, "entry_term": entry_term,
                                           "to": follower, "holders": sorted(holders), "own_index": own,
                                           "own_holders": sorted(own_holders), "lacking": lacking,
                                           "cut_off_side": sorted(self.side_new), "then": how,
                                           "with": sorted(falling - {leader}), "after_s": round(after, 6)})
        if back_first:
            self._new_side_back()
        self._later(after, self._leader_falls, sorted(falling), how, not back_first)

    def _new_side_back(self) -> None:
        # (d) The later term's side comes back (its leader restarted if it was power-cut);
        # the fallen leader (and whoever fell with it) stays cut off if that is how it fell.
        for n in sorted(self.side_new):
            self.mute.discard(n)
            self._release_out(n)
            if n in self.crashed:
                self.crashed.discard(n)
                self._bring_back(n)
        self.side_new = set()
        self.world.set_cuts(self.name, self._isolating(self.fallen) if self.fallen else ())
        self._record("figure-eight-new-side-back", {"new_leader": self.new})

    def _leader_falls(self, falling: list[str], how: str, then_back: bool) -> None:
        if how == "crash":
            for n in falling:
                self._crash(n)
        else:
            self.fallen = set(falling)
            self.world.set_cuts(self.name, self._isolating(self.side_new) | self._isolating(self.fallen))
        self._record("figure-eight-leader-down", {"nodes": falling, "how": how})
        if then_back:
            self._new_side_back()
        self._later(self.rng.uniform(1.0, 3.0) * self._el()[1], self._end, "held")

    def _end(self, why: str) -> None:
        self._record("stop-figure-eight", {"why": why, "phase": self.phase})
        self.stop()

    def finish(self) -> None:
        for n in sorted(self.crashed):
            self._bring_back(n)
        self.crashed = set()
        self.mute = set()
        self.held = set()
        self._unmark()


FAMILIES: dict[str, type[Family]] = {c.name: c for c in (FallAfterAppend, StaleLeader, VoteFlip, SlowLeaderClock,
                                                             FigureEight)}


def make_families(nemesis: "_Nemesis") -> dict[str, Family]:
    return {name: cls(nemesis) for name, cls in FAMILIES.items()}
