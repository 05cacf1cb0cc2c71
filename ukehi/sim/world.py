"""A simulated Ukehi cluster: the real node code over a simulated network, disk and clocks.

Every node is a real :class:`ukehi.node.UkehiNode` (Raft core, driver, KV state machine,
fencing, storage code) whose I/O interfaces (``ukehi.node.io``) are the simulated ones
below, on one :class:`~ukehi.sim.loop.VirtualLoop`. One ``random.Random`` per concern,
all derived from the seed, decides everything: message delays, loss, duplication,
election timeouts, torn writes, fsync latency.

Faults the world offers (the harness's sim runner schedules them):

- network: ``block(src, dst)`` per directed link (any partition shape, one-way included),
  ``heal()``; per owner (``set_cuts``), so one fault's heal leaves another's cut alone;
  ``hold``/``release`` a link (its messages queued, then delivered late, in order);
  per-message delay, loss, duplication. A peer link delivers in send order, as the real
  node's peer link (one TCP stream per direction) does: packet reordering on the wire
  (the ``packet`` nemesis's netem reorder) reaches the node as delay, never as an
  overtaken frame. Each message's delay is drawn as before and then held to no earlier
  than the link's previous delivery. (Until 2026-12-07 each message arrived after its own
  delay, so a window of 256 single-entry appends arrived shuffled, something no real
  link does; the core's rejections then kept a few seeds in probe/replicate loops.)
- process: ``crash`` (power cut: un-fsynced bytes lost, maybe a torn tail; the node's
  files, network and log go dead at once), ``restart`` (a new incarnation replays the
  disk), ``pause``/``resume`` (SIGSTOP: timers, disk and inbound messages held);
- clocks: per-node ``rate`` (timers run fast/slow: a lease without a drift bound breaks)
  and wall-clock ``offset`` (bumps and strobes);
- disk: ``damage`` (bit flip, zeroed or copied chunk) in a WAL segment's synced bytes.

Peer messages and the wire codec: a real node encodes every Raft message (msgpack frame)
and validates every frame it receives; per hop that is about a third of a seed's CPU. Here
the driver hands most messages over as the (immutable) objects the sender's core made, and
a random sample goes the real way, ``encode_message`` -> bytes -> ``decode_frame`` ->
``message_from_dict`` -> ``handle_peer_frame``: 1 in ``wire_every`` messages (each one
drawn, so no message type or peer is left out by a regular pattern), and every message in
an eighth of the seeds (``wire_every`` drawn from the seed when not set). The trade-off: a
codec bug that breaks, say, one field of one message type shows up in fewer messages per
seed (still every seed), and message-size limits are checked only on the sampled ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from ukehi import wire
from ukehi.config import NodeConfig
from ukehi.node import NodeIO, UkehiNode
from ukehi.node.driver import encode_message
from ukehi.node.io import DiskWork
from ukehi.raft.config import RaftConfig
from ukehi.raft.messages import AppendEntries, AppendResponse, Message, message_to_dict
from ukehi.nodelog import NodeLogger
from ukehi.storage import vfs

from .fs import SimFS
from .loop import VirtualLoop

__all__ = ["SimWorld", "WorldOptions", "WasteWatch", "EPOCH"]

EPOCH = 1_700_000_000.0  # the simulated wall clock starts here (2023-11-14)
_SEG_HEADER = 12
# The core's per-AppendEntries byte cap (RaftConfig's default; the node config has no knob).
_MAX_BYTES_PER_MESSAGE: int = RaftConfig.__dataclass_fields__["max_bytes_per_message"].default
_FSYNCING = frozenset(("persist", "snapshot-save", "compact", "sync", "open"))
# Decoded peer frames by their bytes: about half the frames a seed sends are byte-identical
# repeats (heartbeats and their answers), and decoding is a pure function of the bytes
# (frames and messages are immutable once made), so a repeat reuses the first decode.
_DECODE_CACHE_MAX = 4096


@dataclass
class WorldOptions:
    nodes: int = 3
    election_ms: tuple[int, int] = (1000, 2000)
    heartbeat_ms: int = 100
    snapshot_threshold: int = 10_000
    wal_segment_size: int = 64 * 1024 * 1024
    max_entries_per_message: int = 64
    max_inflight: int = 256
    read_mode: str = "readindex"
    corruption_policy: str = "truncate-to-last-good"
    unsafe_bug: str | None = None
    # network: seconds of one-way delay (uniform), probabilities per message
    delay: tuple[float, float] = (0.0005, 0.005)
    loss: float = 0.0
    duplicate: float = 0.0
    # client <-> node links
    client_delay: tuple[float, float] = (0.0002, 0.002)
    # disk: seconds an fsync-bearing persist takes (uniform)
    fsync: tuple[float, float] = (0.0005, 0.004)
    torn_probability: float = 0.3
    # Founding voters (the first ``founders`` nodes; None: all). The others start with
    # ``join`` and wait to be added (admin add_node), as the membership nemesis's spares.
    founders: int | None = None
    # 1 in this many peer messages goes through the wire codec (1: all, as between real
    # nodes); None: drawn from the seed (1 in an eighth of the seeds, else 8).
    wire_every: int | None = None


def _add_span(spans: list[list[float]], lo: int, hi: int, t: float) -> None:
    """Add entries lo..hi (sent first at ``t``) to ``spans``: sorted, disjoint
    ``[lo, hi, first time]`` lists (nearly always one: a leader sends in order)."""
    for s in spans:
        if lo <= s[1] + 1 and hi >= s[0] - 1:  # touches or overlaps: merge (the usual case)
            s[0] = min(s[0], lo)
            s[1] = max(s[1], hi)
            s[2] = min(s[2], t)
            break
    else:
        spans.append([lo, hi, t])
        spans.sort()
        return
    if len(spans) > 1:
        spans.sort()
        merged = [spans[0]]
        for s in spans[1:]:
            last = merged[-1]
            if s[0] <= last[1] + 1:
                last[1] = max(last[1], s[1])
                last[2] = min(last[2], s[2])
            else:
                merged.append(s)
        spans[:] = merged


def _overlap(spans: list[list[float]], lo: int, hi: int) -> list[float] | None:
    """The first span holding an index in lo..hi, or None."""
    for s in spans:
        if lo <= s[1] and hi >= s[0]:
            return s
    return None


class WasteWatch:
    """Wasted replication work, seen from the network (the harness's ``redundant-replication``
    checker, checkers/whitebox/wasted.py, judges what this records). Pure bookkeeping over
    the events the world reports (no RNG, no effect on any message), cheap per message.

    Three rules, each a fact of an efficient Raft leader that the simulator sees whole:

    - ``oversized``: an AppendEntries carries at most ``max_entries`` entries, and more than
      one entry only when their data is at most ``max_bytes`` bytes in all (the node's
      ``max_entries_per_message`` / ``max_bytes_per_message``);
    - ``unprompted``: leader L in term T sends follower F an entry it already sent F in T
      while nothing from F reached L since that earlier send (no answer, heartbeat answer,
      rejection, nothing): L learnt nothing that could call for a resend;
    - ``replicating``: L in term T sends F entry I a second time after F acknowledged to L
      an index newer than any F had acknowledged to L in T before (from then on L knows
      where F's log matches and streams to it), both sends after that acknowledgement, with
      no *reset* in between: F restarted or installed a snapshot, F rejected an append of
      L's (the rejection sent or received), or a message between L and F was lost (L's only
      signs that F may lack entries it was sent). A streaming leader sends each entry once
      and goes back only on a rejection; only a probing one retries on heartbeat answers,
      and the resend when an acknowledged probe turns into streaming (from the acknowledged
      index on) re-sends copies made *before* that acknowledgement, which this rule allows.
    """

    __slots__ = ("max_entries", "max_bytes", "clock", "pairs", "violations", "counts", "appends",
                 "entries_sent")

    #: violations kept per rule (the rest are counted)
    KEEP = 50

    def __init__(self, max_entries: int, max_bytes: int, clock: Callable[[], float] | None = None) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock or (lambda: 0.0)
        # (leader, follower) -> [term, spans sent since the leader last heard from the
        # follower, streaming since (time of the advancing ack, or None), spans sent since,
        # highest index the follower acknowledged to the leader in the term]
        # spans: sorted disjoint [first index, last index, time of the first send]
        self.pairs: dict[tuple[str, str], list[Any]] = {}
        self.violations: dict[str, list[dict[str, Any]]] = {"oversized": [], "unprompted": [], "replicating": []}
        self.counts: dict[str, int] = {"oversized": 0, "unprompted": 0, "replicating": 0}
        self.appends = 0  # AppendEntries with entries sent
        self.entries_sent = 0

    def _violation(self, rule: str, record: dict[str, Any]) -> None:
        self.counts[rule] += 1
        if len(self.violations[rule]) < self.KEEP:
            self.violations[rule].append(record)

    @staticmethod
    def _reset(pair: list[Any] | None) -> None:
        if pair is not None and pair[2] is not None:
            pair[2] = None
            pair[3] = []

    # ---- events the world reports
    def sent_append(self, leader: str, follower: str, term: int, prev: int, count: int, data_bytes: int) -> None:
        """Leader sent an AppendEntries (whatever then became of it)."""
        if count > self.max_entries or (count > 1 and data_bytes > self.max_bytes):
            self._violation("oversized", {
                "t": self.clock(), "leader": leader, "follower": follower, "term": term, "first": prev + 1,
                "last": prev + count, "entries": count, "bytes": data_bytes,
                "max_entries": self.max_entries, "max_bytes": self.max_bytes})
        if not count:
            return
        self.appends += 1
        self.entries_sent += count
        lo, hi = prev + 1, prev + count
        now = self.clock()
        pair = self.pairs.get((leader, follower))
        if pair is None or pair[0] != term:
            if pair is not None and pair[0] > term:
                return  # an older term's leader (the pair follows the newest)
            pair = self.pairs[(leader, follower)] = [term, [], None, [], 0]
        earlier = _overlap(pair[1], lo, hi)
        if earlier is not None:
            self._violation("unprompted", {
                "t": now, "leader": leader, "follower": follower, "term": term,
                "index": max(lo, int(earlier[0])), "first": lo, "last": hi, "earlier_t": earlier[2]})
        _add_span(pair[1], lo, hi, now)
        if pair[2] is not None:
            old = _overlap(pair[3], lo, hi)
            if old is not None:
                self._violation("replicating", {
                    "t": now, "leader": leader, "follower": follower, "term": term,
                    "index": max(lo, int(old[0])), "first": lo, "last": hi, "earlier_t": old[2],
                    "acked": pair[4], "acked_t": pair[2]})
            _add_span(pair[3], lo, hi, now)

    def delivered_response(self, follower: str, leader: str, term: int, success: bool, index: int) -> None:
        """An AppendResponse from ``follower`` reached ``leader``."""
        pair = self.pairs.get((leader, follower))
        if pair is None:
            return
        if not success:
            self._reset(pair)
        elif term == pair[0] and index > pair[4]:
            # Newer than anything F acknowledged to L in this term: L streams to F from now.
            pair[4] = index
            if pair[2] is None:
                pair[2] = self.clock()

    def heard(self, follower: str, leader: str) -> None:
        """Any message from ``follower`` reached ``leader``."""
        pair = self.pairs.get((leader, follower))
        if pair is not None and pair[1]:
            pair[1] = []

    def sent_rejection(self, follower: str, leader: str) -> None:
        self._reset(self.pairs.get((leader, follower)))

    def dropped(self, src: str, dst: str) -> None:
        """A message between src and dst was lost (loss, a cut, a dead end)."""
        pairs = self.pairs
        self._reset(pairs.get((src, dst)))
        self._reset(pairs.get((dst, src)))

    def lost_log(self, follower: str) -> None:
        """The follower restarted (its WAL may be cut) or installed a snapshot."""
        for (leader, f), pair in self.pairs.items():
            if f == follower:
                self._reset(pair)

    def summary(self) -> dict[str, Any]:
        return {"violations": {k: list(v) for k, v in self.violations.items()}, "counts": dict(self.counts),
                "appends": self.appends, "entries_sent": self.entries_sent,
                "max_entries": self.max_entries, "max_bytes": self.max_bytes}


class _Incarnation:
    """One process lifetime of a node: its clock, disk, network endpoint and log sink all
    die together at a crash, so nothing the dying process still does escapes."""

    def __init__(self, world: "SimWorld", handle: "_NodeHandle", number: int) -> None:
        self.world = world
        self.handle = handle
        self.number = number
        self.dead = False
        self.crashed = False  # powered off by a fault (not exited on its own)
        self.node: UkehiNode | None = None
        self.task: asyncio.Task[int] | None = None
        self.exit_code: int | None = None
        self._loop = world.loop  # the node reads its clock a dozen times per event: one look-up

    # ---- Clock
    def monotonic(self) -> float:
        h = self.handle
        return h.mono_base + h.rate * (self._loop._now - h.rate_since)

    def time(self) -> float:
        h = self.handle
        # EPOCH + offset + monotonic(), inlined: the same operations in the same order.
        return EPOCH + h.wall_offset + (h.mono_base + h.rate * (self._loop._now - h.rate_since))

    async def sleep(self, seconds: float) -> None:
        # The timer fires when this node's clock reaches the deadline, as a kernel timer on
        # CLOCK_MONOTONIC does: a rate change while it waits (set_clock wakes every sleeper)
        # moves the firing time, so a sleep begun under a slow clock does not overshoot, in the
        # node's own time, once its clock runs true again (that would look like a stall).
        handle = self.handle
        loop = self._loop
        # monotonic() inlined (the same arithmetic): every node timer comes through here.
        deadline = handle.mono_base + handle.rate * (loop._now - handle.rate_since) + max(0.0, seconds)
        while True:
            left = deadline - (handle.mono_base + handle.rate * (loop._now - handle.rate_since))
            if left <= 1e-9:
                break
            woken: asyncio.Future[None] = loop.create_future()
            handle.sleepers.add(woken)
            timer = loop.call_later(left / handle.rate, _wake, woken)
            try:
                await woken
            finally:
                # A timer that already fired has nothing left to cancel (nearly every sleep
                # ends so); one woken early (a rate change, a cancelled task) is cancelled.
                if timer._scheduled:
                    timer.cancel()
                handle.sleepers.discard(woken)
        if handle.paused:
            await handle.gate()

    # ---- Disk
    async def run(self, work: DiskWork) -> Any:
        handle = self.handle
        if handle.paused:
            await handle.gate()
        if self.dead:
            raise OSError(5, "simulated process is dead")
        result = work.fn()
        if work.kind in _FSYNCING:
            lo, hi = self.world.opts.fsync
            # asyncio.sleep(uniform(lo, hi)) inlined: the same future and timer, without
            # cancelling a timer that already fired (three Python calls per persist).
            delay = self.world.rng_disk.uniform(lo, hi)
            if delay <= 0:
                await asyncio.sleep(delay)  # (a yield, not a timer: as asyncio.sleep does)
            else:
                loop = self._loop
                done: asyncio.Future[None] = loop.create_future()
                timer = loop.call_later(delay, _wake, done)
                try:
                    await done
                finally:
                    if timer._scheduled:
                        timer.cancel()
            if handle.paused:
                await handle.gate()
        return result

    async def close(self, fn: Callable[[], None]) -> None:
        if self.dead:
            # A crashed process saves nothing; it only lets go of its descriptors.
            storage = self.node.storage if self.node is not None else None
            if storage is not None:
                try:
                    storage.close()
                except Exception:  # noqa: BLE001 - dead files may refuse anything
                    pass
            return
        fn()

    # ---- Network (the driver's outbound side)
    def send(self, peer: str, address: Any, frames: list[Any]) -> bool:  # frames or Messages
        for frame in frames:
            if self.dead:  # a watcher may power the node off between two frames
                break
            self.world._transmit(self.handle.name, peer, frame)
        return True

    def ensure(self, peer: str, address: Any) -> None:
        return None

    async def drop(self, peer: str) -> None:
        return None

    async def close_network(self) -> None:
        return None

    def linked_peers(self) -> list[str]:
        return []

    # ---- Listener
    async def start(self, host: str, port: int) -> tuple[str, int]:
        return host, port

    async def stop(self) -> None:
        return None

    connection_count = 0
    bad_frames = 0

    def counters(self) -> dict[str, Any]:
        return {}

    # ---- log sink
    def write(self, text: str) -> int:
        if not self.dead:
            self.handle.log.write(text)
        return len(text)

    def flush(self) -> None:
        pass


class _NetworkView:
    """The Network interface of one incarnation (close() must not clash with the Disk's)."""

    def __init__(self, inc: _Incarnation) -> None:
        self._inc = inc
        self.send = inc.send
        self.encode = inc.world.encode
        self.ensure = inc.ensure
        self.drop = inc.drop
        self.linked_peers = inc.linked_peers

    async def close(self) -> None:
        return None


def _wake(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


@dataclass
class _NodeHandle:
    name: str
    index: int
    prefix: str
    config: NodeConfig
    log: io.StringIO = field(default_factory=io.StringIO)
    up: bool = False
    paused: bool = False
    rate: float = 1.0
    rate_since: float = 0.0
    mono_base: float = 0.0
    wall_offset: float = 0.0
    incarnations: int = 0
    current: _Incarnation | None = None
    held: list[Callable[[], None]] = field(default_factory=list)
    resumed: asyncio.Event | None = None
    sleepers: set[asyncio.Future[None]] = field(default_factory=set)  # woken by a rate change

    async def gate(self) -> None:
        while self.paused and self.resumed is not None:
            await self.resumed.wait()


def sim_pid(index: int, incarnation: int) -> int:
    """The simulated pid of a node's incarnation: node logs carry it (`starting pid=...`), and
    the durable-cut checker maps log lines to incarnations by it."""
    return 1000 * (index + 1) + incarnation


class SimWorld:
    def __init__(self, seed: int, opts: WorldOptions) -> None:
        self.seed = seed
        self.opts = opts
        master = random.Random(seed)
        self.rng_net = random.Random(master.getrandbits(64))
        self.rng_disk = random.Random(master.getrandbits(64))
        self.rng_fault = random.Random(master.getrandbits(64))
        self.rng_core_seed = master.getrandbits(64)
        self.rng_codec = random.Random(master.getrandbits(64))
        if opts.wire_every is not None and opts.wire_every < 1:
            raise ValueError(f"wire_every must be 1 or more (1 = every message through the codec), "
                             f"not {opts.wire_every}")
        self.wire_every = opts.wire_every or self.rng_codec.choice((1, 8, 8, 8, 8, 8, 8, 8))
        self._codec_p = 1.0 / self.wire_every
        self.loop = VirtualLoop()
        self.fs = SimFS()
        self.fs.clock = self.loop.time
        # Wasted replication work (WasteWatch): fed by _transmit/_deliver, read by the harness.
        self.waste = WasteWatch(opts.max_entries_per_message, _MAX_BYTES_PER_MESSAGE,
                                                   self.loop.time)
        # Links (src, dst) that drop what they carry: the union of every owner's cut.
        # "partition" is the nemesis's partitions (``heal()`` clears it, as before); a
        # leader-targeted fault family keeps its own owner, so healing one never undoes
        # another's cut.
        self.blocked: set[tuple[str, str]] = set()
        self._cuts: dict[str, set[tuple[str, str]]] = {}
        # Links whose messages are held (queued, in order) instead of sent, as a TCP
        # connection's unacknowledged bytes are while the peer is unreachable; ``release``
        # delivers them late. Empty unless a fault holds a link.
        self.holding: dict[tuple[str, str], list[bytes | Message]] = {}
        # Extra delay per link (src, dst) while a "slow" fault holds it: every message sent
        # then arrives that much later, as over a congested TCP link (late, never lost).
        self.slow: dict[tuple[str, str], float] = {}
        # Per link (src, dst): when its last message is due, so the next is due no
        # earlier (a link is one ordered stream; see the module docstring).
        self._link_due: dict[tuple[str, str], float] = {}
        self.events: list[str] = []
        # The fault state each time it changes: (virtual time, nodes down or paused, links
        # (src, dst) cut or held, links slowed, nodes whose clock runs at another rate,
        # whether a fault trigger watches every message). The harness's liveness verdict
        # reads it (a majority up and connected must serve).
        self.health: list[tuple[float, frozenset[str], frozenset[tuple[str, str]],
                                frozenset[tuple[str, str]], frozenset[str], bool]] = []
        self.messages_sent = 0
        self.messages_delivered = 0
        self.messages_coded = 0  # sent through the wire codec (the rest as objects)
        self._decoded: dict[bytes, wire.Frame] = {}
        # (src, dst, message body) -> False to lose the message (else it goes on), called for
        # every peer message sent; set by the harness's fault triggers, None when no trigger
        # is armed (no decoding then).
        self.send_watch: Callable[[str, str, dict[str, Any]], bool | None] | None = None
        names = [f"n{i + 1}" for i in range(opts.nodes)]
        self.names = names
        addresses = {n: (f"10.0.0.{i + 1}", 7000) for i, n in enumerate(names)}
        self.addresses = addresses
        founders = names[:opts.founders] if opts.founders else names
        peers = {n: addresses[n] for n in founders}
        self.nodes: dict[str, _NodeHandle] = {}
        for i, n in enumerate(names):
            prefix = f"/sim/{n}"
            self.fs.register_node(prefix)
            cfg = NodeConfig(node_id=n, listen=addresses[n], peers=peers, data_dir=f"{prefix}/data",
                             join=n not in peers,
                             corruption_policy=opts.corruption_policy, read_mode=opts.read_mode,
                             snapshot_threshold=opts.snapshot_threshold, wal_segment_size=opts.wal_segment_size,
                             max_inflight=opts.max_inflight, max_entries_per_message=opts.max_entries_per_message,
                             election_timeout_ms=opts.election_ms, heartbeat_ms=opts.heartbeat_ms,
                             unsafe_bug=opts.unsafe_bug, insecure=True)
            self.nodes[n] = _NodeHandle(n, i, prefix, cfg)
        self.event(f"wire codec: 1 in {self.wire_every} peer messages")

    # ------------------------------------------------------------------ time & trace
    def now(self) -> float:
        return self.loop.time()

    def note_health(self) -> None:
        """Append the fault state to ``health`` when it changed."""
        state = (frozenset(n for n, h in self.nodes.items() if not h.up or h.paused),
                 frozenset(self.blocked) | frozenset(self.holding), frozenset(self.slow),
                 frozenset(n for n, h in self.nodes.items() if h.rate != 1.0), self.send_watch is not None)
        if not self.health or self.health[-1][1:] != state:
            self.health.append((self.loop.time(), *state))

    def event(self, text: str) -> None:
        self.events.append(f"{self.loop.time():.6f} {text}")

    def run_until(self, t: float) -> None:
        with vfs.use(self.fs):
            self.loop.run_until(t)

    def run(self, coro: Any) -> Any:
        with vfs.use(self.fs):
            return self.loop.run_until_complete(coro)

    def digest(self, extra: str = "") -> str:
        h = hashlib.sha256()
        for e in self.events:
            h.update(e.encode())
            h.update(b"\n")
        for n in self.names:
            h.update(self.nodes[n].log.getvalue().encode())
        h.update(extra.encode())
        return h.hexdigest()

    # ------------------------------------------------------------------ processes
    def start(self, name: str) -> None:
        h = self.nodes[name]
        if h.up:
            return
        h.incarnations += 1
        inc = _Incarnation(self, h, h.incarnations)
        h.current = inc
        h.up = True
        h.paused = False
        h.resumed = asyncio.Event()
        self.fs.revive(h.prefix)
        self.waste.lost_log(name)
        rng = random.Random(self.rng_core_seed ^ (h.index << 20) ^ h.incarnations)
        log = NodeLogger(name, h.config.log_level, stream=inc, clock=inc.time)  # type: ignore[arg-type]
        io_ = NodeIO(clock=inc, disk=inc, rng=rng, make_network=lambda node: _NetworkView(inc),
                     make_listener=lambda node: inc, signals=False, pid=sim_pid(h.index, h.incarnations))
        node = UkehiNode(h.config, log, io=io_)
        inc.node = node
        self.event(f"start {name} pid={node.pid}")
        self.note_health()

        async def main() -> None:
            code = await node.run()
            inc.exit_code = code
            if not inc.dead:
                # The node stopped on its own (fail-stop, refused start): the process exited.
                h.up = False
                inc.dead = True
                self.event(f"exited {name} code={code}")
                self.note_health()

        inc.task = self.loop.create_task(main(), name=f"node-{name}-{h.incarnations}")

    def crash(self, name: str) -> dict[str, int]:
        h = self.nodes[name]
        inc = h.current
        if not h.up or inc is None:
            return {}
        inc.dead = True
        inc.crashed = True
        h.up = False
        h.held.clear()
        for link in [k for k in self.holding if k[0] == name]:
            if self.holding[link]:
                self.waste.dropped(*link)
            self.holding[link] = []  # its unsent bytes die with the machine; the hold stays
        lost = self.fs.crash(h.prefix, self.rng_disk, self.opts.torn_probability)
        self.waste.lost_log(name)
        h.paused = False
        if h.resumed is not None:
            h.resumed.set()
        if inc.node is not None:
            inc.node.stop()
        self.event(f"crash {name} lost={lost}")
        self.note_health()
        return lost

    def restart(self, name: str) -> None:
        self.start(name)

    def wipe(self, name: str) -> None:
        """A stopped node's data dir is removed; it starts next as a new node (``join``)
        that waits to be added, as the membership nemesis does with a removed node."""
        import dataclasses

        h = self.nodes[name]
        assert not h.up, "wipe a stopped node"
        self.fs.wipe(f"{h.prefix}/data")
        h.config = dataclasses.replace(h.config, join=True)
        self.event(f"wipe {name}")

    def pause(self, name: str) -> None:
        h = self.nodes[name]
        if h.up and not h.paused:
            h.paused = True
            h.resumed = asyncio.Event()
            self.event(f"pause {name}")
            self.note_health()

    def resume(self, name: str) -> None:
        h = self.nodes[name]
        if h.paused:
            h.paused = False
            assert h.resumed is not None
            h.resumed.set()
            held, h.held = h.held, []
            for deliver in held:
                deliver()
            self.event(f"resume {name}")
            self.note_health()

    def set_clock(self, name: str, *, rate: float | None = None, bump: float = 0.0) -> None:
        h = self.nodes[name]
        if rate is not None and rate != h.rate:
            now = self.loop.time()
            h.mono_base += h.rate * (now - h.rate_since)
            h.rate_since = now
            h.rate = rate
            for woken in list(h.sleepers):
                _wake(woken)  # each sleeper recomputes its firing time at the new rate
        h.wall_offset += bump
        self.event(f"clock {name} rate={h.rate} offset={h.wall_offset:.3f}")
        self.note_health()

    def damage(self, name: str, kind: str) -> dict[str, Any] | None:
        """Damage a synced WAL segment of a node (stopped or not) past its header."""
        files = [p for p in self.fs.files(self.nodes[name].prefix) if p.endswith(".seg")]
        if not files:
            return None
        path = self.rng_fault.choice(files)
        out = self.fs.damage(path, kind, self.rng_fault, skip=_SEG_HEADER)
        self.event(f"damage {name} {out}")
        return out

    # ------------------------------------------------------------------ network
    def block(self, src: str, dst: str, owner: str = "partition") -> None:
        self._cuts.setdefault(owner, set()).add((src, dst))
        self.blocked.add((src, dst))
        self.note_health()

    def heal(self, owner: str = "partition") -> None:
        """Undo ``owner``'s cuts (a link another owner still cuts stays cut)."""
        self.set_cuts(owner, ())

    def set_cuts(self, owner: str, links: Any) -> None:
        """Make ``owner``'s cut exactly ``links`` (pairs (src, dst))."""
        links = set(links)
        if links:
            self._cuts[owner] = links
        else:
            self._cuts.pop(owner, None)
        self.blocked = set().union(*self._cuts.values()) if self._cuts else set()
        self.note_health()

    def hold(self, src: str, dst: str) -> None:
        """Queue what ``src`` sends ``dst`` from now on instead of sending it."""
        self.holding.setdefault((src, dst), [])
        self.note_health()

    def release(self, src: str, dst: str) -> int:
        """Stop holding the link and deliver what it queued, in order, each after a fresh
        network delay (late, never lost: a reconnected TCP stream retransmits it). Returns
        how many messages were queued."""
        queued = self.holding.pop((src, dst), None)
        self.note_health()
        if not queued:
            return 0
        lo, hi = self.opts.delay
        link = (src, dst)
        due = self._link_due
        for frame in queued:
            # In send order: each no earlier than the one before it (one stream).
            at = self.loop._now + lo + (hi - lo) * self.rng_net.random()
            prev = due.get(link, 0.0)
            if at < prev:
                at = prev
            due[link] = at
            self.loop.call_at(at, self._deliver, src, dst, frame)
        self.event(f"release {src}->{dst} {len(queued)}")
        return len(queued)

    def slow_link(self, src: str, dst: str, extra: float) -> None:
        self.slow[(src, dst)] = extra
        self.note_health()

    def unslow(self) -> None:
        self.slow.clear()
        self.note_health()

    def encode(self, m: Message) -> bytes | Message:
        """The Network's encoder for the driver: the frame for a sampled message, else the
        message object itself (see the module docstring)."""
        if self.wire_every == 1 or self.rng_codec.random() < self._codec_p:
            self.messages_coded += 1
            return encode_message(m)
        return m

    def decode(self, frame: bytes) -> wire.Frame:
        """A peer frame decoded (cached: decoding is a pure function of the bytes)."""
        cache = self._decoded
        decoded = cache.get(frame)
        if decoded is None:
            decoded = wire.decode_frame(frame)
            if len(cache) >= _DECODE_CACHE_MAX:
                cache.clear()
            cache[frame] = decoded
        return decoded

    def _waste_fields(self, frame: bytes | Message) -> tuple[str, Any]:
        """(message type, the message or its decoded body) for the WasteWatch."""
        if isinstance(frame, bytes):
            try:
                body = self.decode(frame).body
            except (ValueError, wire.ProtocolError):
                return "", None
            return body.get("type", ""), body
        return frame.type, frame

    def _waste_sent(self, src: str, dst: str, frame: bytes | Message) -> None:
        waste = self.waste
        kind = type(frame)
        if kind is AppendEntries:
            m: Any = frame
            entries = m.entries
            n = len(entries)
            # The data bytes (a heartbeat-like append has none; one entry needs no generator).
            size = 0 if not n else len(entries[0].data) if n == 1 else sum([len(e.data) for e in entries])
            waste.sent_append(src, dst, m.term, m.prev_index, n, size)
        elif kind is AppendResponse:
            if not frame.success:  # type: ignore[union-attr]
                waste.sent_rejection(src, dst)
        elif kind is bytes:
            t, body = self._waste_fields(frame)
            if t == "append_entries":
                entries = body.get("entries") or []
                waste.sent_append(src, dst, body.get("term", 0), body.get("prev_index", 0), len(entries),
                                  sum(len(e[3]) for e in entries if len(e) > 3 and isinstance(e[3], bytes)))
            elif t == "append_response" and not body.get("success"):
                waste.sent_rejection(src, dst)

    def _waste_delivered(self, src: str, dst: str, frame: bytes | Message) -> None:
        waste = self.waste
        waste.heard(src, dst)
        if type(frame) is bytes:
            t, body = self._waste_fields(frame)
            if t == "append_response":
                waste.delivered_response(src, dst, body.get("term", 0), bool(body.get("success")),
                                         body.get("index", 0))
            elif t == "install_snapshot":
                waste.lost_log(dst)
            return
        m: Any = frame
        t = m.type
        if t == "append_response":
            waste.delivered_response(src, dst, m.term, m.success, m.index)
        elif t == "install_snapshot":
            waste.lost_log(dst)

    def _transmit(self, src: str, dst: str, frame: bytes | Message) -> None:
        self.messages_sent += 1
        waste = self.waste
        kind = type(frame)
        if kind is AppendResponse:  # _waste_sent's commonest case, inline (one call per message)
            if not frame.success:  # type: ignore[union-attr]
                waste.sent_rejection(src, dst)
        elif kind is AppendEntries or kind is bytes:
            self._waste_sent(src, dst, frame)
        if self.send_watch is not None:
            # Fault triggers ("crash a voter right after it voted", "cut the leader off
            # while entries are in flight") see each Raft message as it leaves its node.
            if kind is bytes:
                try:
                    body = self.decode(frame).body  # type: ignore[arg-type]
                except (ValueError, wire.ProtocolError):
                    body = {}
            else:
                body = message_to_dict(frame)  # type: ignore[arg-type]
            if self.send_watch(src, dst, body) is False:
                waste.dropped(src, dst)
                return
        link = (src, dst)
        if self.holding:
            queue = self.holding.get(link)
            if queue is not None:
                queue.append(frame)
                return
        if self.blocked and link in self.blocked:
            waste.dropped(src, dst)
            return
        # One call per message hop: locals, and random.uniform / call_later inlined (the same
        # arithmetic, so the same draws and times).
        opts = self.opts
        rng = self.rng_net
        loss = opts.loss
        if loss and rng.random() < loss:
            waste.dropped(src, dst)
            return
        dup = opts.duplicate
        lo, hi = opts.delay
        if self.slow:
            extra = self.slow.get(link, 0.0)
            lo += extra  # the same draw, shifted: later, not lost
            hi += extra
        loop = self.loop
        due = self._link_due
        prev = due.get(link, 0.0)
        if not (dup and rng.random() < dup):  # one copy (nearly always)
            at = loop._now + (lo + (hi - lo) * rng.random())
            if at < prev:
                at = prev  # one ordered stream: never ahead of what was sent before it
            loop.call_at(at, self._deliver, src, dst, frame)
            due[link] = at
            return
        for _ in range(2):  # duplicated: two copies, each with its own delay, in order
            at = loop._now + (lo + (hi - lo) * rng.random())
            if at < prev:
                at = prev
            prev = at
            loop.call_at(at, self._deliver, src, dst, frame)
        due[link] = prev

    def _deliver(self, src: str, dst: str, frame: bytes | Message) -> None:
        h = self.nodes.get(dst)
        if h is None or not h.up or (inc := h.current) is None or (node := inc.node) is None:
            self.waste.dropped(src, dst)
            return
        if self.blocked and (src, dst) in self.blocked:
            self.waste.dropped(src, dst)
            return  # cut while in flight
        if h.paused:
            h.held.append(lambda: self._deliver(src, dst, frame))
            return
        self.messages_delivered += 1
        if node.phase != "running":
            self.waste.dropped(src, dst)  # a starting node ignores Raft traffic
        else:
            self._waste_delivered(src, dst, frame)
        if not isinstance(frame, bytes):
            node.handle_peer_message(frame)
            return
        try:
            node.handle_peer_frame(self.decode(frame), src)
        except (ValueError, wire.ProtocolError):
            pass

    # ------------------------------------------------------------------ clients
    async def request(self, name: str, msg_type: wire.MsgType, body: dict[str, Any],
                      timeout: float) -> tuple[wire.MsgType, dict[str, Any]] | None:
        """One client request to node ``name`` over a lossy, delayed link; None when no
        answer came back in ``timeout`` (the outcome is unknown)."""
        fut: asyncio.Future[Any] = self.loop.create_future()
        rng = self.rng_net
        lo, hi = self.opts.client_delay
        loss = self.opts.loss / 2

        def deliver() -> None:
            h = self.nodes[name]
            inc = h.current
            if not h.up or inc is None or inc.node is None:
                return  # nobody listening: the request is lost, the client times out
            if h.paused:
                h.held.append(deliver)
                return
            self.loop.create_task(serve(inc))

        async def serve(inc: _Incarnation) -> None:
            assert inc.node is not None
            reply = await inc.node.handle_request(wire.Frame(msg_type, 1, body, 0))
            if inc.dead or (loss and rng.random() < loss):
                return  # the process died first, or the reply was lost
            self.loop.call_later(rng.uniform(lo, hi), lambda: fut.done() or fut.set_result(reply))

        if not (loss and rng.random() < loss):
            self.loop.call_later(rng.uniform(lo, hi), deliver)
        # A timer instead of asyncio.wait_for (which costs a task and two callbacks a call).
        timer = self.loop.call_later(timeout, lambda: fut.done() or fut.set_result(None))
        try:
            return await fut
        finally:
            timer.cancel()

    # ------------------------------------------------------------------ the end
    async def stop_all(self) -> None:
        """Stop every running node gracefully (as the harness does at the end of a run)."""
        for n in self.names:
            h = self.nodes[n]
            if h.paused:
                self.resume(n)
        tasks = []
        for n in self.names:
            h = self.nodes[n]
            if h.up and h.current is not None and h.current.node is not None:
                h.current.node.stop()
                if h.current.task is not None:
                    tasks.append(h.current.task)
        for t in tasks:
            try:
                await t
            except BaseException:  # noqa: BLE001
                pass
        for n in self.names:
            self.nodes[n].up = False

    def export(self, target: str) -> None:
        """Write each node's ``node.log`` and data dir as the run store keeps them
        (``<target>/<node>/node.log``, ``<target>/<node>/data/...``)."""
        import os

        for n in self.names:
            h = self.nodes[n]
            d = os.path.join(target, n)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "node.log"), "w", encoding="utf-8") as f:
                f.write(h.log.getvalue())
            self.fs.export(f"{h.prefix}/data", os.path.join(d, "data"))
