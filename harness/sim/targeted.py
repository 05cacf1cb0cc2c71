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
  drawn 0.02-0.5 (log-uniform; the real ``slow-leader`` nemesis uses 0.02), and it is cut off
  from the other nodes both ways; clients stay attached to it (the simulator's client links
  are never cut). The others, on true clocks, time out, elect a leader and commit writes,
  while the old one counts its lease and its check-quorum in ticks of its slow clock, so it
  believes it leads, and its lease holds, for 1/rate times as long. After two to five
  election timeouts the links heal and its clock runs at the true rate again, its wall clock
  stepped forward to true time (as NTP would). This is the situation the ``clock`` family
  (a random node, rates 0.5-2) almost never lines up: slow clock, leader, cut off, and
  clients still reading from it, all at once.

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

__all__ = ["FAMILIES", "Family", "FallAfterAppend", "SlowLeaderClock", "StaleLeader", "VoteFlip", "make_families"]


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

    def start(self) -> bool:
        lead = self.nem._leader()
        if lead is None:
            return False
        w = self.world
        lo, hi = self.RATES
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


FAMILIES: dict[str, type[Family]] = {c.name: c for c in (FallAfterAppend, StaleLeader, VoteFlip, SlowLeaderClock)}


def make_families(nemesis: "_Nemesis") -> dict[str, Family]:
    return {name: cls(nemesis) for name, cls in FAMILIES.items()}
