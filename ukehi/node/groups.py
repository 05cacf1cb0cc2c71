"""A sharded node: one process hosting every Raft group it is a member of (issue 15).

With ``--shards S`` the key space is split into S shards (``ukehi.shardmap``); shard s is Raft
group s + 1, whose founders are the ``--replication-factor`` nodes the consistent-hash
partitioner ranks first for it. Every node computes the same founding map (epoch 1) from the
same ``--peers``; after that the map changes only through the metadata group.

The metadata group, Raft group 0, has the R nodes the partitioner ranks first for
``ukehi-meta``. It holds the map in its state machine (``shardmap.META_KEY``): its leader
writes the founding map there if the group holds none (create-if-absent), and every member
checks that the committed map is of its own cluster; a member started with other
``--shards``/``--replication-factor``/``--peers`` logs ``shard-map-mismatch`` and stops with
exit code 254 instead of serving shards the cluster placed elsewhere.

The map changes (replica moves, ``move_replica``):

- a change is a compare-and-set on the map's whole JSON from epoch E to E + 1, committed in
  the metadata group by its leader (``map_cas``); of two changes made from one epoch exactly
  one commits. Only committed maps are ever routed by;
- metadata members read the map from their replica; every other node asks them (``map_get``)
  every second, and at once when a client request carries a newer epoch (the request waits up
  to a second for it) or a Raft message names a group the node does not host. Node-to-node
  calls travel over the peer links as RAFT frames whose body has ``ukehi_rpc`` (a node
  certificate may make no client request but status). The newest map is kept in
  ``DATA_DIR/shardmap.json``, so a restart hosts the groups it gives at once;
- a node hosts the groups of the shards it is a member of and of the moves it is the target
  of (as a joiner: no configuration until the group's leader sends one). A group the map no
  longer gives it is stopped; its directory is set aside (``retired-group-<id>.<n>``) only
  when its own log shows its removal, so a map that turns out stale can never cost a voter
  its log. A founder whose directory was set aside rejoins as a joiner;
- a move runs on the shard's leader (:meth:`ShardedNode._move`): record the move in the map,
  add the target as a learner, wait for it to catch up, one joint change (target in, source
  out), then the map takes the group's voters. At most one move per shard;
- on every shard leader a reconciler keeps the map equal to the group's voters: a move whose
  mover stopped (a restart, lost leadership) is finished in the map if the group changed, and
  undone (learner removed, record cleared) if it did not.

Adding and removing nodes (admin ``add_node``/``remove_node`` on any node):

- a new node starts with ``--join`` and the cluster's ``--shards``, ``--replication-factor``
  and founders' ``--peers``; it hosts nothing and learns the map from the metadata members
  (they answer it at the address its hello gave). ``add_node ID ADDRESS`` first asks it for its
  map at that address (it must run, with this cluster's flags), then commits a map with it in
  the node set, its address recorded (the map is the address book for nodes added after the
  start: every node reaches them at the address the committed map gives) and ``rebalancing``
  set. ``remove_node ID`` marks the node ``leaving`` and sets ``rebalancing``;
- while the map is rebalancing, the partitioner's plan (``shardmap.rebalance_plan``: the
  members -> the placement of the nodes but the leaving ones) says which replicas move; the
  leaders of the first shards of the plan start them through the move above (the same
  ``--max-moves`` cap, recorded in the map), one replica per move. Nothing else is kept: every
  round plans from the newest map, so restarts of any node, the mover included, resume it;
- a leaving node that is a metadata member first has its metadata replica moved, by the
  metadata group's leader, with the same steps as a shard replica (``_meta_move``: record
  the move in the map, add the target as a learner, catch up, one joint change, the map takes
  the group's voters as ``meta``); the target is the node the partitioner ranks first for the
  metadata group among those staying. The metadata members are the map's (its ``meta``, else
  the founders' bootstrap placement); a node hosts group 0 while the committed map it knows
  names it there (or as a metadata move's target), and every node asks the members of the
  newest map it knows (and the flags' bootstrap members) for the map, members included (a
  member that missed its own removal reads a stale replica);
- when the plan is empty and no move is in flight, the metadata leader commits the end of the
  rebalance: leaving nodes (which by then serve no shard) are dropped with their addresses.
- a node started with ``--join`` leaves itself out of its founders (so a spare that lists
  itself in ``--peers`` computes the cluster's identity); a founder that was removed and
  rejoins fresh with ``--join`` does too, and the cluster compares identities up to the
  joining node (``ShardMap.same_cluster(joining=...)``), so it can be added back. A ``--join``
  node hosts every group as a joiner (no configuration of its own);

One process, one listener, one outbound transport, many groups:

- each hosted group is a :class:`GroupReplica`, the unsharded node's class
  (``ukehi.node.server.UkehiNode``) with its own driver, Raft core, state machine, Ready
  loop and data directory ``DATA_DIR/group-<id>/``, but the host's listener and peer links;
- peer frames carry their group id (``g``), and the host hands each to its group;
- client requests are routed by key: the host computes the key's shard; a shard the map does
  not make it a member of (a joining replica included), or a request made with a newer map
  epoch than its own (``e``) that it cannot learn in time, is refused with ``wrong_shard``
  and the host's epoch, and nothing is done. ``shard_map`` returns the map and
  every member's address, which is how a client (``ukehi.client``) learns where to go;
- one tick loop ticks every group (not one timer per group);
- fail-stop is per process: a group that stops itself (a Raft invariant, a crash, a refused
  start) stops the whole node with that group's exit code, as an unsharded node would.

Group log lines carry ``group=<id>``; the node-level lines (``starting``, ``listening``,
connections) do not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import random
import sys
from typing import Any, Callable

from ukehi import wire
from ukehi.bugs import canonical_bug
from ukehi.config import NodeConfig, format_address, parse_address
from ukehi.kv import CommandError, KVStateMachine, encode_command, to_response
from ukehi.nodelog import NodeLogger
from ukehi.raft.config import RaftConfig
from ukehi.raft.confchange import ConfChange, ConfChangeType
from ukehi.raft.messages import MessageError, message_from_dict
from ukehi.raft.types import NotLeader, Role
from ukehi.shardmap import (META_GROUP, META_KEY, ShardMap, ShardMapError, ShardMove, group_of, meta_members,
                            next_moves, rebalance_plan, request_keys)
from ukehi.storage.datadir import DataDir, GroupStorage
from ukehi.storage.errors import StorageError
from ukehi.transport import PeerTransport

from .admin import node_id_refusal
from .api import _PLAIN_WRITES, Reply, err, partial
from .io import NodeIO, ThreadDisk
from .server import (EXIT_START_FAILED, UkehiNode, listen_or_explain, raft_config, report_loop_errors, stop_on_signals,
                     tcp_endpoints, tick_every)

# The node's --shards/--peers/--replication-factor give another map than the one the cluster
# committed in its metadata group: a configuration error, as a bad flag is (nodecli's 254).
EXIT_MAP_MISMATCH = 254
_MAP_CHECK_S = 0.2
# Where a node keeps the newest committed map it has seen (so a restart hosts the groups that
# map gives before it can reach the metadata group); written whole, fsynced, renamed.
MAP_FILE = "shardmap.json"
_MAP_POLL_S = 1.0  # a node outside the metadata group asks a member for the map this often
_RECONCILE_S = 0.5  # a shard leader compares its group's voters with the map this often
#: How long a move_replica request waits for a reconciler repair of its shard to end (a
#: repair gives itself 10 s) before it is refused as busy.
_REPAIR_WAIT_S = 15.0
_RPC_TIMEOUT_S = 2.0
MOVE_TIMEOUT_S = 20.0  # a replica move that has not finished by then is undone (or left to repair)
# Recording a move in the map needs the metadata group's quorum: without it, give up soon
# (nothing was done yet) rather than hold the shard's move slot.
_RECORD_TIMEOUT_S = 5.0
_CATCH_UP_STALL_S = 8.0  # a learner whose log has not grown for this long is not coming
# A RAFT frame whose body has this key is a node-to-node metadata call (map_get, map_cas,
# reply), not a Raft message: it travels over the authenticated peer links, which is the
# only channel a node certificate may use for anything but status.
RPC_KEY = "ukehi_rpc"

__all__ = ["ShardedNode", "GroupReplica", "GroupLogger"]

_KEYED = frozenset({wire.MsgType.GET, wire.MsgType.PUT, wire.MsgType.CAS, wire.MsgType.DELETE,
                    wire.MsgType.FENCED_PUT, wire.MsgType.APPEND})  # the server's callback path
# Requests about one group, named by the frame's group id.
_PER_GROUP = frozenset({wire.MsgType.TRANSFER_LEADER, wire.MsgType.SNAPSHOT, wire.MsgType.CHECKSUM})


class GroupLogger(NodeLogger):
    """The node's logger with ``group=<id>`` on every line (same stream, same node name)."""

    def __init__(self, base: NodeLogger, group: int) -> None:
        super().__init__(base.node, "debug", base.stream, base.clock)
        self.threshold = base.threshold
        self.group = group

    def log(self, level: str, event: str, **fields: Any) -> None:
        # A caller's own `group` field wins (a line about another group's message): passing
        # both raised TypeError, which turned a misrouted peer message into a "bad raft
        # message" that closed the whole peer connection.
        super().log(level, event, **{"group": self.group, **fields})


class _SharedNetwork:
    """The host's one PeerTransport as a group's Network. Links are shared by every group, so
    a group never drops or closes one (the host closes them at shutdown)."""

    def __init__(self, transport: PeerTransport) -> None:
        self._transport = transport

    def send(self, peer: str, address: tuple[str, int] | None, frames: list[bytes]) -> bool:
        return self._transport.send(peer, address, frames)

    def ensure(self, peer: str, address: tuple[str, int]) -> Any:
        return self._transport.ensure(peer, address)

    async def drop(self, peer: str) -> None:
        return None

    async def close(self) -> None:
        return None

    def linked_peers(self) -> list[str]:
        return self._transport.linked_peers()


class _HostListener:
    """A group listens through its host's server: starting it is learning the host's address."""

    def __init__(self, host: "ShardedNode") -> None:
        self._host = host

    async def start(self, host: str, port: int) -> tuple[str, int]:
        assert self._host.bound_address is not None
        return self._host.bound_address

    async def stop(self) -> None:
        return None

    @property
    def connection_count(self) -> int:
        return int(self._host.listener.connection_count)

    @property
    def bad_frames(self) -> int:
        return int(self._host.listener.bad_frames)

    def counters(self) -> dict[str, Any]:
        return dict(self._host.listener.counters())


# Planted bugs of replica moves whose effect lives in a moved-in replica's state machine
# (ukehi/bugs.py). The correct build never makes a _MovedInKV.
_MOVED_IN_BUGS = frozenset({"serve-before-install", "drop-during-move"})


class _MovedInKV(KVStateMachine):
    """The state machine of a replica that joined its group by a move, on a node started with
    ``serve-before-install`` or ``drop-during-move``: it skips the commands the group
    committed before this node was in it (serve-before-install: the shard's data is taken as
    installed once the log positions are there), or those that reach it while the move is in
    flight (drop-during-move: entries from its addition on, while it is a learner at that
    index or while the map this node knows still has the move to it in flight; the writes
    of the move are taken as covered by the copy it joined with). A skipped entry still
    advances the applied index, as a no-op would, so the replica goes on as if it had them.
    Only the state machine is wrong: the log, the commit and what the node reports applying
    are the group's."""

    def __init__(self, replica: "GroupReplica", bug: str) -> None:
        super().__init__()
        self._replica = replica
        self._bug = bug

    def _skips(self, index: int) -> bool:
        core = self._replica.core
        if core is None:
            return False  # start-up (WAL replay before the core exists): applied as is
        at = core.log.membership_at(index)
        me = self._replica.config.node_id
        if self._bug == "serve-before-install":
            return me not in at.all_nodes()
        # Entries from before it joined are the copy it joins with, and are applied.
        shard = self._replica.shard
        move = self._replica.host.shard_map.move_of(shard) if shard is not None else None
        return me in at.learners or (me in at.all_nodes() and move is not None and move[2] == me)

    def apply(self, index: int, fencing_token: int, command: bytes,
              decoded: dict[str, Any] | None = None) -> Any:
        if len(command) and self._skips(index):
            return super().apply(index, fencing_token, b"")
        return super().apply(index, fencing_token, command, decoded=decoded)

    def restore(self, data: bytes) -> None:
        super().restore(data)
        core = self._replica.core
        if (self._bug == "serve-before-install" and core is not None
                and self._replica.config.node_id not in core.log.snapshot.membership.voters):
            # The snapshot that brings a joining replica the shard: its position is taken, not
            # its contents.
            self._data, self._fences, self._locks = {}, {}, {}


class GroupReplica(UkehiNode):
    """This node's member of one shard's Raft group, inside a :class:`ShardedNode`."""

    hosted = True

    def __init__(self, host: "ShardedNode", group_id: int, members: tuple[str, ...], shard: int | None,
                 join: bool = False) -> None:
        self.group_id = group_id
        self.shard = shard  # None: the metadata group
        self.host = host
        cfg = host.config
        # The group's founders are its members: its initial configuration. A replica that
        # joins a group later (a replica move's target) starts with no configuration at all
        # (join) and learns it from the group's leader, as a learner, by log or snapshot.
        book = host.address_book()
        group_cfg = dataclasses.replace(cfg, peers={m: book[m] for m in members if m in book}, join=join)
        io = NodeIO(clock=host.io.clock, disk=ThreadDisk(), rng=random.Random(),
                    make_network=lambda _node: _SharedNetwork(host.transport),
                    make_listener=lambda _node: _HostListener(host), signals=False, pid=host.pid)
        super().__init__(group_cfg, GroupLogger(host.log, self.group_id), io=io)
        # Every node of the cluster listens at its --peers address (or, added later, at the
        # address the map records): a member added by a move is reachable from the start,
        # whatever the group's founders were.
        self.driver.addresses.update(book)
        if join and shard is not None and self.bug in _MOVED_IN_BUGS:
            bug = self.bug
            self.driver.kv = _MovedInKV(self, bug)
            self.driver.new_state_machine = lambda: _MovedInKV(self, bug)  # type: ignore[method-assign]

    def removed(self) -> bool:
        """Whether this replica has applied a configuration that no longer has this node."""
        core = self.core
        if core is None:
            return False
        nodes = core.membership.all_nodes()
        return bool(nodes) and self.config.node_id not in nodes

    def _announce(self, loop: asyncio.AbstractEventLoop) -> None:
        self.log.info("group-starting", shard="metadata" if self.shard is None else self.shard,
                      members="" if self.config.join else ",".join(sorted(self.config.peers)),
                      join=self.config.join,
                      data_dir=os.path.join(self.config.data_dir, f"group-{self.group_id}"))

    def _open_storage(self) -> GroupStorage:
        return DataDir(self.config.data_dir).open_group(
            self.group_id, self.config.corruption_policy, unsafe_skip_crc=self.bug == "no-crc-check",
            segment_size=self.config.wal_segment_size)

    def _raft_config(self) -> RaftConfig:
        return dataclasses.replace(raft_config(self.config, self.bug), group_id=self.group_id)

    async def _tick_loop(self) -> None:
        # The host ticks every group from one timer; this task only has to stay alive.
        await asyncio.get_running_loop().create_future()


class _MoveFailed(Exception):
    """A replica move cannot go on; the message says at which step and why."""


class ShardedNode:
    """One node process of a sharded cluster: the listener, the peer links, the shard map and
    a :class:`GroupReplica` per hosted shard. Serves as the server's ``FrameHandler``."""

    def __init__(self, config: NodeConfig, log: NodeLogger | None = None) -> None:
        if config.shards is None:
            raise ValueError("a ShardedNode needs config.shards; an unsharded node is a UkehiNode")
        self.config = config
        self.io = NodeIO()
        self.clock = self.io.clock
        self.log = log or NodeLogger(config.node_id, config.log_level)
        self.pid = os.getpid()
        self.bug = canonical_bug(config.unsafe_bug)
        # The map the flags give (epoch 1): each group's founders, and what the metadata group
        # must hold at epoch 1. The map routed by is the newest committed one this node knows.
        # The founders: --peers, without this node when it joins (a joining node may list
        # itself there, as an unsharded one does). Their addresses are fixed by the flags; a node
        # added later is reached at the address the map records (the map is the address book).
        self.founder_peers = {n: a for n, a in config.peers.items() if not (config.join and n == config.node_id)}
        # A --join node is not a founder of its own map; compared with the cluster's maps up to itself.
        self._joining_self = config.node_id if config.join else None
        self._heard: dict[str, tuple[str, int]] = {}  # peers' hello addresses, for nodes the map lacks
        self._plan_cache: tuple[ShardMap, list[ShardMove]] | None = None
        self.initial_map = ShardMap.initial(self.founder_peers, config.shards, config.replication_factor)
        self.shard_map = self._load_map() or self.initial_map
        self.bound_address: tuple[str, int] | None = None
        self.started_at = self.clock.time()
        self._stop = asyncio.Event()
        self._stopping = False
        self.tls, self.listener, self.transport = tcp_endpoints(self, config, self.log, self._on_unreachable)
        self.replicas: dict[int, GroupReplica] = {}
        for s in sorted(self._wanted(self.shard_map)):
            self.replicas[group_of(s)] = self._make_replica(s)
        # The metadata group (group 0) replicates the shard map; its members keep it and check
        # that the map this node computed from its own flags is the one the cluster committed.
        # Its members are the map's (`meta_members`): the founders' placement until one moves.
        if self._hosts_meta(self.shard_map):
            self.replicas[META_GROUP] = self._make_meta_replica()
        self.map_committed = False  # this node saw its map committed in the metadata group
        self._exit_code: int | None = None  # set when the node stops itself (a map mismatch)
        self._tasks: dict[int, asyncio.Task[int]] = {}
        self._retiring: set[int] = set()  # groups being stopped on purpose (not a failure)
        self._move_locks: dict[int, asyncio.Lock] = {}
        self._meta_lock = asyncio.Lock()  # the metadata group's replica move or repair, one at a time
        self._moving: dict[int, dict[str, Any]] = {}  # shard -> the move this node runs
        self._repairing: set[int] = set()  # shards the reconciler is repairing (it holds the move lock)
        self._rpc_ids = itertools.count(1)
        self._rpc_waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._meta_leader: str | None = None  # a guess: where map changes go first
        self._map_wanted = asyncio.Event()
        self._map_changed = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        # no-epoch-check (planted bug): shard -> (the epoch that took it from this node, the
        # state machine its removed replica left behind). Empty in the correct build.
        self._former: dict[int, tuple[int, KVStateMachine]] = {}

    # ------------------------------------------------------------------ the map
    @property
    def meta_members(self) -> tuple[str, ...]:
        """The metadata group's members by the newest committed map this node knows (the
        flags' bootstrap placement until a metadata replica moves)."""
        return self.shard_map.metadata_members

    def _same_cluster(self, smap: ShardMap) -> bool:
        return smap.same_cluster(self.initial_map, joining=self._joining_self)

    def _hosts_meta(self, smap: ShardMap) -> bool:
        """Whether this node hosts the metadata group under `smap`: a member, or the target of
        the metadata group's move (a joining learner)."""
        me = self.config.node_id
        return me in smap.metadata_members or (bool(smap.meta_move) and smap.meta_move[1] == me)

    def _make_meta_replica(self) -> GroupReplica:
        """This node's replica of the metadata group: a bootstrap member by the flags that never
        left it starts from the bootstrap configuration; any other joins (no configuration
        until the group's leader sends one), as a shard replica does."""
        me = self.config.node_id
        boot = self.initial_map.metadata_members
        join = self.config.join or me not in boot or self._retired_before(META_GROUP)
        members = boot if not join else tuple(sorted(set(self.shard_map.metadata_members) | {me}))
        return GroupReplica(self, META_GROUP, members, None, join=join)

    def _map_path(self) -> str:
        return os.path.join(self.config.data_dir, MAP_FILE)

    def _load_map(self) -> ShardMap | None:
        try:
            with open(self._map_path(), encoding="utf-8") as f:
                saved = ShardMap.from_dict(json.load(f))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, ShardMapError) as e:
            self.log.warning("shard-map-unreadable", path=self._map_path(), error=str(e))
            return None
        if not self._same_cluster(saved):
            # Another cluster's map (other flags): the metadata group decides (a member stops on
            # a mismatch); this node starts from its flags' map.
            self.log.warning("shard-map-ignored", path=self._map_path(), epoch=saved.epoch,
                             detail="the saved map is not of this node's --shards/--replication-factor/--peers")
            return None
        return saved

    def _save_map(self, smap: ShardMap) -> None:
        path = self._map_path()
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(smap.to_dict(), f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(self.config.data_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def adopt(self, smap: ShardMap, source: str) -> bool:
        """Route by `smap` from now on if it is newer than ours (only committed maps reach
        here: read from the metadata group's state machine, directly or through a member)."""
        if smap.epoch <= self.shard_map.epoch:
            return False
        if not self._same_cluster(smap):
            self.log.warning("shard-map-ignored", epoch=smap.epoch, source=source,
                             detail="not a map of this node's cluster")
            return False
        old = self.shard_map
        self.shard_map = smap
        try:
            self._save_map(smap)
        except OSError as e:
            self.log.warning("shard-map-save-failed", error=str(e))
        changed = [s for s in range(smap.shards) if smap.members[s] != old.members[s]]
        self.log.info("shard-map-changed", epoch=smap.epoch, previous=old.epoch, source=source,
                      changed=",".join(f"{s}:{'+'.join(smap.members[s])}" for s in changed) or "none",
                      moves=";".join(f"{s}:{a}->{b}" for s, a, b in smap.moves) or "none",
                      metadata_members=",".join(smap.metadata_members),
                      metadata_move="->".join(smap.meta_move) or "none")
        self._map_changed.set()
        self._map_changed = asyncio.Event()
        book = self.address_book()
        for r in list(self.replicas.values()):
            for node, addr in book.items():
                if node != self.config.node_id and r.driver.addresses.get(node) != addr:
                    r.driver.addresses[node] = addr
        self._sync_hosting()
        return True

    # ------------------------------------------------------------------ address book
    def address_of(self, node: str) -> tuple[str, int] | None:
        """Where `node` listens: a founder at its --peers address, an added node at the
        address the committed map records; else what it said in its hello (a node not in the
        map yet, e.g. one about to be added, so that it can be answered)."""
        if node in self.founder_peers:
            return self.founder_peers[node]
        if node == self.config.node_id:
            return self.config.advertise_address
        recorded = self.shard_map.address_of(node)
        if recorded is not None:
            try:
                return parse_address(recorded)
            except ValueError:
                return None
        return self._heard.get(node)

    def address_book(self) -> dict[str, tuple[str, int]]:
        """Every node of the map (and every founder) with its address."""
        book: dict[str, tuple[str, int]] = dict(self.founder_peers)
        for node in self.shard_map.nodes:
            addr = self.address_of(node)
            if addr is not None:
                book[node] = addr
        return book

    def _wanted(self, smap: ShardMap) -> set[int]:
        """The shards whose groups this node hosts under `smap`: those it is a member of, and
        those it is the target of a move of (it joins their group as a learner)."""
        me = self.config.node_id
        return set(smap.shards_of(me)) | set(smap.joining(me))

    def _retired_before(self, gid: int) -> bool:
        prefix = f"retired-group-{gid}."
        try:
            return any(name.startswith(prefix) for name in os.listdir(self.config.data_dir))
        except OSError:
            return False

    def _make_replica(self, shard: int) -> GroupReplica:
        """This node's replica of `shard`'s group. A founder of the group (a member in the
        flags' map) that never left it starts from the founders' configuration; any other
        replica joins: no configuration until the group's leader sends one (so an empty data
        directory can never make up a membership and vote in it)."""
        gid = group_of(shard)
        me = self.config.node_id
        founders = self.initial_map.members[shard]
        join = me not in founders or self._retired_before(gid)
        members = founders if not join else tuple(sorted(set(self.shard_map.members[shard]) | {me}))
        return GroupReplica(self, gid, members, shard, join=join)

    def _start_group(self, gid: int, replica: GroupReplica) -> None:
        task = asyncio.get_running_loop().create_task(replica.run(), name=f"group-{gid}")
        self._tasks[gid] = task
        task.add_done_callback(lambda t, g=gid, r=replica: self._group_ended(g, r, t))

    def _group_ended(self, gid: int, replica: GroupReplica, task: asyncio.Task[int]) -> None:
        if self._stopping or (gid in self._retiring and self.replicas.get(gid) is not replica):
            return
        # A group that ended on its own (a fail-stop, a refused start) ends the process with
        # its code: the group already logged why.
        if task.cancelled() or task.exception() is not None:
            code = EXIT_START_FAILED
        else:
            code = task.result() or EXIT_START_FAILED  # stopped although nobody asked it to
        if self._exit_code is None:
            self._exit_code = code
        self._stop.set()

    def _sync_hosting(self) -> None:
        """Start the groups the map gives this node and stop the ones it no longer does."""
        if self.bound_address is None or self._stopping:
            return  # before run(): the constructor placed them; run() starts them
        wanted = self._wanted(self.shard_map)
        for gid, r in list(self.replicas.items()):
            if r.shard is not None and r.shard not in wanted:
                self._stop_group(gid, r)
        meta = self.replicas.get(META_GROUP)
        if meta is not None and not self._hosts_meta(self.shard_map):
            self._stop_group(META_GROUP, meta)  # a metadata move took this node's replica away
        elif meta is None and self._hosts_meta(self.shard_map) and META_GROUP not in self._retiring:
            meta = self.replicas[META_GROUP] = self._make_meta_replica()
            self.log.info("group-hosted", group=META_GROUP, shard="metadata", epoch=self.shard_map.epoch,
                          join=meta.config.join)
            self._start_group(META_GROUP, meta)
        for shard in sorted(wanted):
            gid = group_of(shard)
            if gid in self.replicas or gid in self._retiring:
                continue
            replica = self._make_replica(shard)
            self.replicas[gid] = replica
            self._former.pop(shard, None)
            self.log.info("group-hosted", group=gid, shard=shard, epoch=self.shard_map.epoch,
                          join=replica.config.join)
            self._start_group(gid, replica)

    def _stop_group(self, gid: int, replica: GroupReplica) -> None:
        """Stop hosting a group the map no longer gives this node. Its data directory is set
        aside (``retired-group-<id>.<n>``) only when the replica itself applied a configuration
        without this node; otherwise (a removal it never heard of) the data stays, so a map
        that turns out stale can never cost a voter its log."""
        self._retiring.add(gid)
        del self.replicas[gid]
        removed = replica.removed()
        if self.bug == "no-epoch-check" and replica.shard is not None:
            self._former[replica.shard] = (self.shard_map.epoch, replica.kv)
        self.log.info("group-stopping", group=gid, shard=replica.shard, epoch=self.shard_map.epoch,
                      removed=removed)
        replica.stop()

        async def finish() -> None:
            task = self._tasks.pop(gid, None)
            try:
                if task is not None:
                    await task
            except (asyncio.CancelledError, Exception):
                pass
            try:
                if removed or replica.removed():
                    src = os.path.join(self.config.data_dir, f"group-{gid}")
                    n = sum(1 for name in os.listdir(self.config.data_dir)
                            if name.startswith(f"retired-group-{gid}."))
                    dst = os.path.join(self.config.data_dir, f"retired-group-{gid}.{n + 1}")
                    if os.path.isdir(src):
                        os.rename(src, dst)
                        self.log.info("group-retired", group=gid, to=os.path.basename(dst))
            finally:
                self._retiring.discard(gid)
                self._sync_hosting()

        self._spawn(finish(), f"stop-group-{gid}")

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # ------------------------------------------------------------------ lifecycle
    @property
    def phase(self) -> str:
        """starting -> replaying -> running -> stopping, over all hosted groups."""
        if self._stopping:
            return "stopping"
        if self.bound_address is None:
            return "starting"
        if all(r.phase == "running" for r in self.replicas.values()):
            return "running"
        return "replaying"

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop_on_signals(loop, self._stop)
        report_loop_errors(loop, self.log)
        cfg = self.config
        hosted = sorted(r.shard for r in self.replicas.values() if r.shard is not None)
        self.log.info(
            "starting", pid=self.pid, listen=format_address(cfg.listen), data_dir=cfg.data_dir,
            peers=",".join(f"{k}={format_address(v)}" for k, v in cfg.peers.items()),
            policy=cfg.corruption_policy, read_mode=cfg.read_mode, join=cfg.join,
            election_ms=f"{cfg.election_timeout_ms[0]}:{cfg.election_timeout_ms[1]}",
            heartbeat_ms=cfg.heartbeat_ms, tick_ms=cfg.tick_ms, unsafe_bug=self.bug, fsync=cfg.fsync,
            tls="off" if self.tls is None else f"mutual ({self.tls.identity})",
            shards=self.shard_map.shards, replication_factor=self.shard_map.replication_factor,
            epoch=self.shard_map.epoch, hosted_shards=",".join(map(str, hosted)) or "none",
            metadata_members=",".join(self.meta_members),
        )
        if self.tls is None:
            self.log.warning("insecure", detail="--insecure: plain TCP, no authentication; anyone who can reach "
                             f"{format_address(cfg.listen)} can forge Raft messages and requests")
        if self.bug is not None:
            self.log.warning("unsafe-bug", bug=self.bug, detail="THIS NODE IS INCORRECT ON PURPOSE; "
                             "for harness self-tests only")
        self.bound_address = await listen_or_explain(self.listener, cfg, self.log)
        if self.bound_address is None:
            return EXIT_START_FAILED
        self.log.info("listening", address=format_address(self.bound_address))
        try:
            # Made once here: the groups open their directories in parallel threads, and two
            # of them making a new data directory at once could see it half-made.
            await asyncio.to_thread(DataDir, cfg.data_dir)
        except (StorageError, OSError):
            pass  # each group reports it when it opens its own directory
        for gid, r in list(self.replicas.items()):
            self._start_group(gid, r)
        ticker = loop.create_task(self._tick_loop(), name="tick")
        helpers = [loop.create_task(self._map_loop(), name="shard-map"),
                   loop.create_task(self._reconcile_loop(), name="reconcile")]
        stop_wait = loop.create_task(self._stop.wait())
        code = 0
        try:
            done, _ = await asyncio.wait([stop_wait, ticker], return_when=asyncio.FIRST_COMPLETED)
            if self._exit_code is not None:
                code = self._exit_code
            if ticker in done and ticker.exception() is not None:
                self.log.fatal("fatal", task="tick", error=repr(ticker.exception()))
                code = EXIT_START_FAILED
        finally:
            self._stopping = True
            for r in self.replicas.values():
                r.stop()
            for t in list(self._background) + helpers:
                t.cancel()
            for gid, task in list(self._tasks.items()):
                try:
                    result = await task
                except (asyncio.CancelledError, Exception):
                    result = EXIT_START_FAILED
                code = code or result
            ticker.cancel()
            stop_wait.cancel()
            await self.listener.stop()
            await self.transport.close()
            self.log.info("shutdown", groups=len(self._tasks), code=code)
        return code

    async def _tick_loop(self) -> None:
        def tick() -> None:
            for r in list(self.replicas.values()):
                if r.phase == "running":
                    r.driver.tick()
        await tick_every(self.clock, self.config.tick_ms / 1000.0, tick)

    def _mismatch(self, committed: ShardMap) -> str:
        """Why the committed map cannot be this node's cluster ('' when it is)."""
        mine = self.initial_map
        if self._same_cluster(committed) and (committed.epoch > 1 or committed == mine):
            return ""
        return (f"the cluster's map (epoch {committed.epoch}, {committed.shards} shards, replication factor "
                f"{committed.replication_factor}, founders {','.join(committed.founders)}) is not the one this "
                f"node's flags give ({mine.shards} shards, replication factor "
                f"{mine.replication_factor}, nodes {','.join(mine.nodes)})")

    def _committed_map(self) -> ShardMap | None:
        """The map in this node's replica of the metadata group (applied: committed)."""
        meta = self.replicas.get(META_GROUP)
        if meta is None or meta.phase != "running":
            return None
        held = meta.kv.read(META_KEY)
        if held is None:
            return None
        try:
            return ShardMap.from_dict(json.loads(held))
        except (ShardMapError, ValueError, TypeError):
            return None

    def _meta_replica(self) -> GroupReplica | None:
        """This node's running replica of the metadata group, unless it has applied its own
        removal (then it reads a map that no longer changes: it asks the members instead)."""
        meta = self.replicas.get(META_GROUP)
        if meta is None or meta.phase != "running" or meta.core is None or meta.removed():
            return None
        return meta

    async def _map_loop(self) -> None:
        """Keep this node's map the newest committed one.

        A metadata-group member first publishes the flags' map if the group holds none yet (a
        create-if-absent, so two leaders of two terms cannot both write one; a bootstrap member
        only) and checks that the committed map is of this node's cluster (a node whose flags
        give another one stops with 254); then it reads the map from its own replica of the
        group, and as the group's leader ends a finished rebalance and moves or repairs the
        group's own replicas (`_meta_round`). Every node, members included, asks the metadata
        members (``map_get`` over the peer links) every second, and at once when something
        shows its map is old (a request or a Raft message for a group it does not host): a
        member that missed its own removal would otherwise read a stale replica for ever."""
        loop = asyncio.get_running_loop()
        polled = float("-inf")
        while True:
            meta = self.replicas.get(META_GROUP)
            if meta is None or meta.removed():
                try:
                    async with asyncio.timeout(_MAP_POLL_S):
                        await self._map_wanted.wait()
                except TimeoutError:
                    pass
                self._map_wanted.clear()
                polled = loop.time()
                await self._fetch_map()
                continue
            await self.clock.sleep(_MAP_CHECK_S)
            if loop.time() - polled >= _MAP_POLL_S or self._map_wanted.is_set():
                self._map_wanted.clear()
                polled = loop.time()
                self._spawn(self._fetch_map(), "map-fetch")
            if self._meta_replica() is not meta:
                continue
            assert meta.core is not None
            if not self.map_committed:
                held = meta.kv.read(META_KEY)
                if held is None:
                    if meta.core.lead == self.config.node_id and not meta.config.join:
                        await meta._write({"op": "cas", "key": META_KEY, "expected": None,
                                           "new": json.dumps(self.initial_map.to_dict(), sort_keys=True)})
                    continue
                try:
                    committed = ShardMap.from_dict(json.loads(held))
                except (ShardMapError, ValueError, TypeError) as e:
                    why = f"the metadata group holds no readable map: {e}"
                else:
                    why = self._mismatch(committed)
                if why:
                    self.log.error("shard-map-mismatch", detail=why)
                    print(f"ukehi node: stopped: {why}; restart it with the cluster's --shards, "
                          "--replication-factor and --peers", file=sys.stderr)
                    self._exit_code = EXIT_MAP_MISMATCH
                    self._stop.set()
                    return
                self.map_committed = True
                self.log.info("shard-map-committed", epoch=committed.epoch, shards=committed.shards)
                self.adopt(committed, "metadata")
                continue
            committed = self._committed_map()
            if committed is not None:
                self.adopt(committed, "metadata")
                if meta.core.role is Role.LEADER:
                    await self._meta_round(meta, committed)

    async def _meta_round(self, meta: GroupReplica, committed: ShardMap) -> None:
        """On the metadata group's leader, with the map its replica holds: end a finished
        rebalance; else repair the group's membership in the map (a metadata move whose
        mover stopped is finished if the group changed, undone if not); else start moving
        the replica of a leaving metadata member (`_meta_move`, in the background)."""
        core = meta.core
        if core is None or self._meta_lock.locked() or core.membership.joint:
            return
        voters = set(core.membership.voters)
        if committed.meta_move or core.membership.learners or set(committed.metadata_members) != voters:
            self._spawn(self._meta_repair(meta), "meta-repair")
            return
        if not committed.rebalancing:
            return
        if committed.meta_leaving:
            src, dst = committed.meta_leaving[0], committed.meta_target()
            if dst is not None:
                self._spawn(self._run_meta_move(meta, src, dst), "meta-move")
            return
        if not committed.moves and not self._plan(committed):
            await self._finish_rebalance(committed)

    async def _fetch_map(self) -> None:
        """Ask every metadata member for its map at once; adopt any newer answer."""
        async def ask(member: str) -> None:
            ans = await self._rpc(member, "map_get", {}, _RPC_TIMEOUT_S)
            if ans is not None and isinstance(ans.get("map"), dict):
                try:  # at once: a member that does not answer must not hold up the others
                    self.adopt(ShardMap.from_dict(ans["map"]), f"metadata member {member}")
                except ShardMapError:
                    pass

        # The members by the newest map this node knows, and the flags' bootstrap members (a
        # hint that outlives a stale map: a moved-away member still answers with what it knows).
        asked = dict.fromkeys([*self.meta_members, *self.initial_map.metadata_members])
        await asyncio.gather(*(ask(m) for m in asked if m != self.config.node_id))

    async def _learn_map(self, epoch: int, timeout: float) -> None:
        """Wait (up to `timeout`) until this node knows a map of at least `epoch`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.shard_map.epoch < epoch and loop.time() < deadline:
            self._map_wanted.set()
            changed = self._map_changed
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await changed.wait()
            except TimeoutError:
                return

    def _on_unreachable(self, peer: str) -> None:
        for r in list(self.replicas.values()):
            if peer in r.config.peers or peer in (r.core.membership.all_nodes() if r.core else ()):
                r._on_unreachable(peer)

    # ------------------------------------------------------------------ node-to-node calls
    def _send_rpc(self, peer: str, body: dict[str, Any], address: tuple[str, int] | None = None) -> bool:
        address = address or self.address_of(peer)
        if address is None:
            return False
        frame = wire.encode_frame(wire.MsgType.RAFT, 0, {"src": self.config.node_id, "dst": peer, **body})
        return bool(self.transport.send(peer, address, [frame]))

    async def _rpc(self, peer: str, kind: str, payload: dict[str, Any], timeout: float,
                   address: tuple[str, int] | None = None) -> dict[str, Any] | None:
        """One call to `peer` (at `address`, default its address) over the peer links; None
        when no answer came in time."""
        rid = next(self._rpc_ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._rpc_waiting[rid] = fut
        try:
            if not self._send_rpc(peer, {RPC_KEY: kind, "id": rid, **payload}, address):
                return None
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            return None
        finally:
            self._rpc_waiting.pop(rid, None)

    def _on_rpc(self, body: dict[str, Any], peer: str | None) -> None:
        kind, rid, src = body.get(RPC_KEY), body.get("id"), body.get("src")
        if not isinstance(rid, int) or not isinstance(src, str):
            raise ValueError("a node call needs an integer id and its sender")
        if kind == "reply":
            fut = self._rpc_waiting.get(rid)
            if fut is not None and not fut.done():
                fut.set_result(body)
            return
        if kind == "map_get":
            self._send_rpc(src, {RPC_KEY: "reply", "id": rid, "map": self.shard_map.to_dict()})
            return
        if kind == "map_cas":
            async def answer() -> None:
                out = await self._serve_map_cas(body)
                self._send_rpc(src, {RPC_KEY: "reply", "id": rid, **out})
            self._spawn(answer(), "map-cas")
            return
        raise ValueError(f"unknown node call {kind!r}")

    async def _serve_map_cas(self, body: dict[str, Any]) -> dict[str, Any]:
        """On the metadata group's leader: replace the map of epoch `expected` by `new` (of
        the next epoch), a compare-and-set in the group's log on the map's whole JSON, so of
        two changes made from one epoch exactly one commits."""
        meta = self.replicas.get(META_GROUP)
        if meta is None or meta.core is None or meta.phase != "running":
            return {"ok": False, "leader": None}
        if meta.core.role is not Role.LEADER:
            return {"ok": False, "leader": meta.core.lead}
        held_text = meta.kv.read(META_KEY)
        if held_text is None:
            return {"ok": False, "retry": "the metadata group has not committed a map yet"}
        try:
            held = ShardMap.from_dict(json.loads(held_text))
            new = ShardMap.from_dict(body.get("new"))
        except (ShardMapError, ValueError, TypeError) as e:
            return {"ok": False, "error": f"bad map: {e}"}
        if held.epoch != body.get("expected") or new.epoch != held.epoch + 1 or not new.same_cluster(held):
            return {"ok": False, "map": held.to_dict()}
        msg_type, answer = await meta._write({"op": "cas", "key": META_KEY, "expected": held_text,
                                              "new": json.dumps(new.to_dict(), sort_keys=True)})
        if msg_type is wire.MsgType.OK:
            self.adopt(new, "metadata")
            return {"ok": True}
        current = self._committed_map()
        return {"ok": False, "error": answer.get("code"), "map": current.to_dict() if current else None}

    async def _map_cas(self, expected: ShardMap, new: ShardMap, deadline: float) -> bool:
        """Commit `new` in place of `expected` (epoch E -> E + 1) through the metadata group's
        leader; True once it is committed, False when another change won (or no answer in
        time: then the map may or may not have changed, and a later read tells)."""
        payload = {"expected": expected.epoch, "new": new.to_dict()}
        loop = asyncio.get_running_loop()
        order = list(self.meta_members)
        turn = 0
        while loop.time() < deadline:
            if self._meta_leader in order:
                target = self._meta_leader
            else:
                target = order[turn % len(order)]
                turn += 1
            if target == self.config.node_id:
                ans: dict[str, Any] | None = await self._serve_map_cas(payload)
            else:
                ans = await self._rpc(target, "map_cas", payload, min(_RPC_TIMEOUT_S, deadline - loop.time()))
            if ans is None or not ans.get("ok"):
                self.log.info("map-cas-retry", target=target, expected=expected.epoch,
                              answer="none" if ans is None else str({k: v for k, v in ans.items() if k != "map"}))
            if ans is None:
                if self._meta_leader == target:
                    self._meta_leader = None
                    turn = order.index(target) + 1  # the next member after the silent one
                continue
            if ans.get("ok"):
                self._meta_leader = target
                self.adopt(new, "metadata")
                return True
            if "retry" in ans:
                await asyncio.sleep(0.1)
                continue
            if "leader" in ans:
                hint = ans["leader"]
                self._meta_leader = hint if hint != target and hint in order else None
                if hint is None or hint == target:
                    await asyncio.sleep(0.1)  # an election in the metadata group: let it finish
                continue
            held = ans.get("map")
            if isinstance(held, dict):
                try:
                    held_map = ShardMap.from_dict(held)
                except ShardMapError:
                    return False
                self.adopt(held_map, "metadata")
                if held_map == new:
                    return True  # an earlier try of ours committed (its answer was lost)
                if held_map.epoch >= expected.epoch:
                    return False  # someone else changed the map first
                await asyncio.sleep(0.05)  # the leader has not applied epoch E yet
                continue
            return False
        return False

    # ------------------------------------------------------------------ peers
    def peer_hello(self, peer: str, address: str) -> None:
        if peer not in self.founder_peers and self.shard_map.address_of(peer) is None:
            try:
                self._heard[peer] = parse_address(address)
            except ValueError:
                pass
        for r in list(self.replicas.values()):
            r.peer_hello(peer, address)

    def handle_peer_frame(self, frame: wire.Frame, peer: str | None) -> None:
        if RPC_KEY in frame.body:
            self._on_rpc(frame.body, peer)
            return
        try:
            msg = message_from_dict(frame.body)
        except MessageError as e:
            raise ValueError(str(e)) from None
        replica = self.replicas.get(msg.group_id)
        if replica is None:
            # A group this node does not host (yet, or any more): a newer map may say why.
            self.log.debug("misrouted-message", src=msg.src, dst=msg.dst, group=msg.group_id)
            self._map_wanted.set()
            return
        replica.handle_peer_message(msg)

    # ------------------------------------------------------------------ clients
    def _wrong_shard(self, shard: int, epoch: int, why: str) -> Reply:
        owners = ",".join(self.shard_map.members[shard])
        return err(wire.ErrorCode.WRONG_SHARD,
                   f"node {self.config.node_id} {why} (shard {shard} is served by {owners} at epoch "
                   f"{self.shard_map.epoch}); nothing was done: refresh the shard map (shard_map)",
                   epoch=self.shard_map.epoch)

    def route(self, frame: wire.Frame) -> tuple[GroupReplica | None, Reply | None]:
        """The hosted group that serves a keyed request, or the refusal to send (a request
        about no key: (None, None)). A node serves a shard only while the committed map it
        knows names it a member: a replica that is still joining (a move's target) or that
        a move took away refuses, with the node's epoch."""
        keys = request_keys(frame.type.value, frame.body)
        if keys is None:
            return None, None
        smap = self.shard_map
        shards = sorted({smap.shard_for(k) for k in keys})
        if len(shards) > 1:
            return None, err(wire.ErrorCode.BAD_REQUEST,
                             f"the transaction's keys are in shards {shards}: transactions across shards are "
                             "not supported; keep one transaction's keys in one shard")
        shard = shards[0]
        gid = group_of(shard)
        if frame.epoch > smap.epoch:
            self._map_wanted.set()
            return None, self._wrong_shard(shard, frame.epoch,
                                           f"has shard map epoch {smap.epoch}, older than the request's {frame.epoch}")
        if frame.group not in (0, gid):
            return None, self._wrong_shard(shard, frame.epoch,
                                           f"holds key {keys[0]!r} in shard {shard} (group {gid}), not in group "
                                           f"{frame.group}")
        replica = self.replicas.get(gid)
        if replica is None or self.config.node_id not in smap.members[shard]:
            former = self._former.get(shard)
            if (self.bug == "no-epoch-check" and former is not None and frame.epoch < former[0]
                    and (frame.type in _PLAIN_WRITES or frame.type is wire.MsgType.GET)):
                # Planted bug: the request was routed by a map older than the one that took
                # the shard from this node, and that is all it checks: it is served from the
                # copy the removed replica left, writes applied and acknowledged there (an
                # answer, not a refusal), so the client keeps coming back.
                return None, self._serve_former_copy(former[1], frame)
            own = [r for r in self.replicas.values() if r.shard is not None]
            if self.bug == "no-shard-check" and own:
                # Planted bug: no ownership check; the key is served by a group of another shard.
                return min(own, key=lambda r: r.group_id), None
            return None, self._wrong_shard(shard, frame.epoch, f"does not serve shard {shard}")
        return replica, None

    @staticmethod
    def _serve_former_copy(kv: KVStateMachine, frame: wire.Frame) -> Reply:
        """no-epoch-check: serve a read or apply a write on a former owner's leftover copy."""
        if frame.type is wire.MsgType.GET:
            return wire.MsgType.OK, wire.ok_body(kv.read(frame.body["key"]))
        try:
            data = encode_command({"op": frame.type.value, **frame.body})
        except CommandError as e:
            return err(wire.ErrorCode.BAD_REQUEST, str(e))
        return to_response(kv.apply(kv.last_applied + 1, int(kv.last_token) + 1, data))

    def start_request(self, frame: wire.Frame, done: Callable[[wire.MsgType, dict[str, Any]], None]) -> bool:
        """The server's callback path: keyed requests go to their group's callback path (a
        request made with a newer map than ours takes the slow path, which learns it first)."""
        if frame.type not in _KEYED or frame.epoch > self.shard_map.epoch:
            return False
        replica, refusal = self.route(frame)
        if refusal is not None:
            done(*refusal)
            return True
        assert replica is not None
        return bool(replica.start_request(dataclasses.replace(frame, group=replica.group_id), done))

    async def handle_request(self, frame: wire.Frame) -> Reply:
        t = frame.type
        if t is wire.MsgType.STATUS:
            return wire.MsgType.OK, wire.ok_body(self.status())
        if t is wire.MsgType.SHARD_MAP:
            return wire.MsgType.OK, wire.ok_body(self.shard_map_body())
        if frame.epoch > self.shard_map.epoch:
            # The client routed by a newer map than ours: learn it before deciding.
            await self._learn_map(frame.epoch, 1.0)
        replica, refusal = self.route(frame)
        if refusal is not None:
            return refusal
        if replica is not None:
            return await replica.handle_request(dataclasses.replace(frame, group=replica.group_id))
        if t is wire.MsgType.MOVE_REPLICA:
            return await self._move_request(frame)
        if t in _PER_GROUP:
            target = self.replicas.get(frame.group)
            if target is None:
                return err(wire.ErrorCode.BAD_REQUEST,
                           f"{t.value} on a sharded node names one of its groups in the frame's group id; "
                           f"node {self.config.node_id} hosts groups {sorted(self.replicas)}, not {frame.group}")
            return await target.handle_request(frame)
        if t is wire.MsgType.ADD_NODE:
            return await self._add_node_request(frame.body["node"], frame.body["address"])
        if t is wire.MsgType.REMOVE_NODE:
            return await self._remove_node_request(frame.body["node"])
        return err(wire.ErrorCode.BAD_REQUEST, f"request type {t.value} is not served by a node")

    # ------------------------------------------------------------------ replica moves
    async def _confirm_lead(self, r: GroupReplica) -> bool:
        """Whether `r` still leads its group, confirmed by a quorum (a ReadIndex): what it
        then reads of its configuration is at least what the group has committed."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        r.driver.add_read(fut)
        try:
            async with asyncio.timeout(3.0):
                return bool(await fut)
        except (NotLeader, TimeoutError):
            return False

    async def _move_request(self, frame: wire.Frame, repair_deadline: float | None = None) -> Reply:
        body = frame.body
        shard, src, dst = body["shard"], body["from"], body["to"]
        smap = self.shard_map
        if not 0 <= shard < smap.shards:
            return err(wire.ErrorCode.BAD_REQUEST, f"shard {shard}: the cluster has shards 0 .. {smap.shards - 1}")
        unknown = [n for n in (src, dst) if n not in smap.nodes]
        if unknown or src == dst:
            return err(wire.ErrorCode.BAD_REQUEST, f"move of shard {shard} from {src} to {dst}: name two different "
                       f"nodes of the cluster ({', '.join(smap.nodes)})")
        if dst in smap.leaving:
            return err(wire.ErrorCode.BAD_REQUEST, f"move of shard {shard} to {dst}: {dst} is being removed from "
                       "the cluster (remove_node); move it to another node; nothing was done")
        r = self.replicas.get(group_of(shard))
        if r is None or r.core is None or r.phase != "running":
            return err(wire.ErrorCode.NOT_LEADER, f"node {self.config.node_id} does not host shard {shard}'s group; "
                       "move_replica goes to the shard's leader; nothing was done")
        if r.core.role is not Role.LEADER:
            return r._not_leader("move_replica")
        lock = self._move_locks.setdefault(shard, asyncio.Lock())
        if lock.locked() and shard in self._repairing:
            # The reconciler is making group and map agree (after an interrupted move): a
            # short, bounded repair, not a move. Wait for it rather than refuse, then look
            # again (leadership or the map may have changed meanwhile).
            clock = self.clock
            deadline = repair_deadline if repair_deadline is not None else clock.monotonic() + _REPAIR_WAIT_S
            while shard in self._repairing and clock.monotonic() < deadline:
                await clock.sleep(0.05)
            if shard not in self._repairing:
                return await self._move_request(frame, deadline)
        if lock.locked():
            what = (f"the move {self._moving[shard]}" if shard in self._moving
                    else "a repair of the group against the map" if shard in self._repairing
                    else "a rebalance move")
            return err(wire.ErrorCode.CAS_FAILED, f"shard {shard} is busy with {what}; one move per shard at a "
                       "time; nothing was done; try again when it is over")
        # The move goes on when the client goes away (a timeout, a cut connection): stopping
        # it half-way is safe (the reconciler finishes or undoes it) but wastes the work.
        task = self._spawn(self._run_move(r, shard, src, dst, lock), f"move-{shard}")
        return await asyncio.shield(task)

    async def _run_move(self, r: GroupReplica, shard: int, src: str, dst: str, lock: asyncio.Lock) -> Reply:
        async with lock:
            self._moving[shard] = {"from": src, "to": dst, "step": "starting", "since": self.clock.time()}
            try:
                return await self._move(r, shard, src, dst)
            finally:
                self._moving.pop(shard, None)

    def _step(self, shard: int, step: str) -> None:
        self._moving[shard]["step"] = step
        move = self._moving[shard]
        self.log.info("move-step", shard=shard, step=step, src=move["from"], dst=move["to"])

    async def _move(self, r: GroupReplica, shard: int, src: str, dst: str) -> Reply:
        """Move shard `shard`'s replica from `src` to `dst`, on the shard's leader:

        1. record the move in the map (epoch E -> E + 1; `dst` starts hosting the group as a
           joining replica, with no configuration of its own);
        2. add `dst` as a learner; wait until it has caught up (log or snapshot);
        3. one joint change promotes `dst` and removes `src` (C_old,new needs a majority of
           both; the group then leaves it by itself), so at every point one configuration's
           quorum serves the shard, inside its one Raft group;
        4. the map takes the group's new voters (E + 1 -> E + 2); `src` stops hosting it.

        A leader that is `src` hands leadership to another voter first and answers not_leader
        (the client goes on there). Failure before step 3 undoes the learner and the map's
        record; after it, the map follows the group (the reconciler sees to it as well)."""
        me = self.config.node_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MOVE_TIMEOUT_S
        core = r.core
        assert core is not None
        await self._learn_map(self.shard_map.epoch + 1, 0.0)
        smap = self.shard_map
        members = smap.members[shard]
        if src not in members or dst in members:
            return err(wire.ErrorCode.BAD_REQUEST, f"shard {shard}'s members are {','.join(members)} at epoch "
                       f"{smap.epoch}: {src} must be one and {dst} must not; nothing was done")
        if smap.move_of(shard) is not None:
            return err(wire.ErrorCode.CAS_FAILED, f"shard {shard} has a move in flight in the map "
                       f"({smap.move_of(shard)}); one move per shard at a time; nothing was done")
        limit = self.config.max_moves
        if len(smap.moves) >= limit:
            # Exact, not a guess: the move is recorded by a compare-and-set from this very map,
            # so two movers that both saw room cannot both record theirs.
            return err(wire.ErrorCode.CAS_FAILED, f"{len(smap.moves)} replica moves are in flight at epoch "
                       f"{smap.epoch} ({', '.join(f'shard {m[0]} {m[1]}->{m[2]}' for m in smap.moves)}); at "
                       f"most {limit} at once (--max-moves); retry when one finishes; nothing was done")
        m = core.membership
        if m.joint or m.learners or set(m.voters) != set(members):
            return err(wire.ErrorCode.UNAVAILABLE, f"shard {shard}'s group has voters {sorted(m.voters)}, learners "
                       f"{sorted(m.learners)}, joint={m.joint}, the map {list(members)}: the leader settles them "
                       "first; retry shortly; nothing was done")
        if src == me:
            st = core.status()
            others = [(pr.match, n) for n, pr in st.progress.items() if n in m.voters and n != me]
            if not others:
                return err(wire.ErrorCode.BAD_REQUEST, f"{me} is shard {shard}'s only voter; nothing was done")
            target = max(others)[1]
            answer = await r._transfer(target)
            if answer[0] is not wire.MsgType.OK:
                return answer
            self.log.info("move-leader-moved", shard=shard, src=src, to=target)
            return r._not_leader("move_replica (this node is the one moved away; leadership was handed on)")
        self._step(shard, "record")
        if not await self._confirm_lead(r):
            return r._not_leader("move_replica")
        intent = smap.with_move(shard, src, dst)
        if not await self._map_cas(smap, intent, min(deadline, loop.time() + _RECORD_TIMEOUT_S)):
            if self.shard_map.move_of(shard) == (shard, src, dst):
                # Recorded after all (the answer was late): the reconciler undoes the record.
                return partial(f"the move of shard {shard} was recorded in the map but not started; "
                               "the shard's leader clears it")
            return err(wire.ErrorCode.CAS_FAILED, f"the shard map could not go from epoch {smap.epoch} to the "
                       f"next (changed meanwhile, or the metadata group has no quorum); nothing was done; retry")
        self.log.info("move-started", shard=shard, src=src, dst=dst, epoch=self.shard_map.epoch)
        try:
            self._step(shard, "learner")
            bad = await r._conf_change([ConfChange(ConfChangeType.ADD_LEARNER, dst)], deadline)
            if bad is not None:
                raise _MoveFailed(f"adding {dst} as a learner: {bad[1].get('message', bad[1])}")
            self._step(shard, "catch-up")
            await self._catch_up(r, dst, deadline)
            self._step(shard, "joint")
            bad = await r._conf_change([ConfChange(ConfChangeType.ADD_VOTER, dst),
                                        ConfChange(ConfChangeType.REMOVE, src)], deadline)
            if bad is not None and dst not in core.membership.all_voters():
                raise _MoveFailed(f"the joint change {src} -> {dst}: {bad[1].get('message', bad[1])}")
        except _MoveFailed as e:
            self.log.warning("move-failed", shard=shard, src=src, dst=dst, reason=str(e))
            self._step(shard, "undo")
            await self._undo_learner(r, dst, loop.time() + 10.0)
            settled = await self._settle(r, shard, loop.time() + 10.0)
            if settled is not None and dst not in settled.members[shard]:
                # Definite, and not one a client retries elsewhere: the move was undone.
                return err(wire.ErrorCode.REFUSED, f"move of shard {shard} from {src} to {dst} failed and was "
                           f"undone (map epoch {settled.epoch}): {e}")
            return partial(f"move of shard {shard} from {src} to {dst}: {e}; the shard's leader settles the map")
        self._step(shard, "settle")
        settled = await self._settle(r, shard, loop.time() + 15.0)
        if settled is None:
            return partial(f"shard {shard}'s group moved to {sorted(core.membership.voters)}, but the map was not "
                           "updated in time; the shard's leader settles it")
        self.log.info("move-done", shard=shard, src=src, dst=dst, epoch=settled.epoch,
                      members=",".join(settled.members[shard]))
        return wire.MsgType.OK, wire.ok_body({"shard": shard, "epoch": settled.epoch,
                                             "members": list(settled.members[shard])})

    async def _catch_up(self, r: GroupReplica, dst: str, deadline: float) -> None:
        """Wait, as `r`'s group leader, until the learner `dst` has caught up (log or snapshot);
        _MoveFailed when leadership is lost, the deadline passes or its log stops growing."""
        loop = asyncio.get_running_loop()
        core = r.core
        assert core is not None
        last_match, progress_at = -1, loop.time()
        while True:
            st = core.status()
            pr = st.progress.get(dst)
            if st.role is not Role.LEADER:
                raise _MoveFailed("leadership lost while the learner caught up")
            match = pr.match if pr is not None else 0
            if match > 0 and match >= st.commit - 1:
                return
            if match != last_match:
                last_match, progress_at = match, loop.time()
            stalled = loop.time() - progress_at > _CATCH_UP_STALL_S
            if loop.time() > deadline or stalled:
                raise _MoveFailed(f"{dst} did not catch up ({'no progress for' if stalled else 'in'} "
                                  f"{_CATCH_UP_STALL_S if stalled else MOVE_TIMEOUT_S:.0f} s: match {match}, "
                                  f"commit {st.commit})")
            await r._wait_progress(0.05)

    # ------------------------------------------------------------------ the metadata group's replicas
    async def _run_meta_move(self, meta: GroupReplica, src: str, dst: str) -> None:
        async with self._meta_lock:
            self._moving[-1] = {"from": src, "to": dst, "step": "starting", "since": self.clock.time(),
                                "group": META_GROUP}
            try:
                done = await self._meta_move(meta, src, dst)
                self.log.info("meta-move-done" if done else "meta-move-not-done", src=src, dst=dst,
                              epoch=self.shard_map.epoch, members=",".join(self.meta_members))
            except Exception as e:  # noqa: BLE001 - the next round repairs or retries from the map
                self.log.warning("meta-move-failed", src=src, dst=dst, error=repr(e))
            finally:
                self._moving.pop(-1, None)

    async def _meta_move(self, meta: GroupReplica, src: str, dst: str) -> bool:
        """Move the metadata group's replica from `src` to `dst`, on the group's leader, by the
        steps of a shard replica's move (`_move`): record it in the map (`dst` starts hosting
        the group as a joiner), add `dst` as a learner, wait for it to catch up, one joint
        change (`dst` in, `src` out), then the map's ``meta`` takes the group's voters. A
        leader that is `src` hands leadership on first (the next leader moves it). The map
        lives in this very group, so each map change is a write in it; a failure before the
        joint change undoes the learner and the record. True once the map shows the move."""
        me = self.config.node_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MOVE_TIMEOUT_S
        core = meta.core
        assert core is not None
        smap = self.shard_map
        if src not in smap.metadata_members or dst in smap.metadata_members or smap.meta_move:
            return False
        if src == me:
            st = core.status()
            others = [(pr.match, n) for n, pr in st.progress.items() if n in core.membership.voters and n != me]
            if others:
                await meta._transfer(max(others)[1])
            return False
        self._step(-1, "record")
        if not await self._confirm_lead(meta):
            return False
        if not await self._map_cas(smap, smap.with_meta_move(src, dst), min(deadline, loop.time() + _RECORD_TIMEOUT_S)):
            return False
        self.log.info("meta-move-started", src=src, dst=dst, epoch=self.shard_map.epoch)
        try:
            self._step(-1, "learner")
            bad = await meta._conf_change([ConfChange(ConfChangeType.ADD_LEARNER, dst)], deadline)
            if bad is not None:
                raise _MoveFailed(f"adding {dst} as a learner: {bad[1].get('message', bad[1])}")
            self._step(-1, "catch-up")
            await self._catch_up(meta, dst, deadline)
            self._step(-1, "joint")
            bad = await meta._conf_change([ConfChange(ConfChangeType.ADD_VOTER, dst),
                                           ConfChange(ConfChangeType.REMOVE, src)], deadline)
            if bad is not None and dst not in core.membership.all_voters():
                raise _MoveFailed(f"the joint change {src} -> {dst}: {bad[1].get('message', bad[1])}")
        except _MoveFailed as e:
            self.log.warning("meta-move-failed", src=src, dst=dst, reason=str(e))
            self._step(-1, "undo")
            await self._undo_learner(meta, dst, loop.time() + 10.0)
            await self._meta_settle(meta, loop.time() + 10.0)
            return False
        self._step(-1, "settle")
        settled = await self._meta_settle(meta, loop.time() + 15.0)
        return settled is not None and dst in settled.metadata_members

    async def _meta_settle(self, meta: GroupReplica, deadline: float) -> ShardMap | None:
        """Make the map's metadata members the group's voters (and clear its move), as the
        group's confirmed leader; the map that holds them, or None."""
        loop = asyncio.get_running_loop()
        core = meta.core
        while loop.time() < deadline and core is not None:
            if core.role is not Role.LEADER:
                return None
            if core.membership.joint:
                await meta._wait_progress(0.05)
                continue
            if not await self._confirm_lead(meta):
                return None
            voters = set(core.membership.voters)
            smap = self.shard_map
            if set(smap.metadata_members) == voters and not smap.meta_move:
                return smap
            if await self._map_cas(smap, smap.meta_settled(voters), deadline):
                return self.shard_map
            await self._learn_map(smap.epoch + 1, 0.5)
        return None

    async def _meta_repair(self, meta: GroupReplica) -> None:
        """The metadata group's reconciler: stray learners removed, the map's members set to the
        group's voters (a metadata move whose mover stopped: finished or undone)."""
        async with self._meta_lock:
            core = meta.core
            if core is None or core.role is not Role.LEADER:
                return
            deadline = asyncio.get_running_loop().time() + 10.0
            self.log.info("meta-reconcile", epoch=self.shard_map.epoch, map_members=",".join(self.meta_members),
                          voters=",".join(sorted(core.membership.voters)),
                          learners=",".join(sorted(core.membership.learners)) or "none",
                          move="->".join(self.shard_map.meta_move) or "none")
            try:
                for node in sorted(core.membership.learners):
                    await self._undo_learner(meta, node, deadline)
                await self._meta_settle(meta, deadline)
            except Exception as e:  # noqa: BLE001 - retried next round
                self.log.warning("meta-reconcile-failed", error=repr(e))

    async def _undo_learner(self, r: GroupReplica, node: str, deadline: float) -> None:
        core = r.core
        if core is None or core.role is not Role.LEADER:
            return
        while core.membership.joint and asyncio.get_running_loop().time() < deadline:
            await r._wait_progress(0.05)
        if node in core.membership.learners:
            bad = await r._conf_change([ConfChange(ConfChangeType.REMOVE, node)], deadline)
            self.log.info("learner-removed", group=r.group_id, node=node, ok=bad is None)

    async def _settle(self, r: GroupReplica, shard: int, deadline: float) -> ShardMap | None:
        """Make the map's members of `shard` the group's voters (and clear its move), as its
        confirmed leader; the map that holds them, or None (not the leader, or no time)."""
        loop = asyncio.get_running_loop()
        core = r.core
        while loop.time() < deadline and core is not None:
            if core.role is not Role.LEADER:
                return None
            if core.membership.joint:
                await r._wait_progress(0.05)
                continue
            if not await self._confirm_lead(r):
                return None
            voters = set(core.membership.voters)
            smap = self.shard_map
            if set(smap.members[shard]) == voters and smap.move_of(shard) is None:
                return smap
            if await self._map_cas(smap, smap.settled(shard, voters), deadline):
                return self.shard_map
            await self._learn_map(smap.epoch + 1, 0.5)
        return None

    async def _reconcile_loop(self) -> None:
        """On every shard leader, keep the map consistent with the group: a move whose mover
        stopped (a restart, lost leadership) is finished in the map if the group made the
        change, else undone (its learner removed); a map whose members are not the group's
        voters is corrected. Never while this node runs a move of that shard.

        While the map is rebalancing (a node added or being removed), the shard leaders also
        start the moves the partitioner's plan still needs (`_rebalance_step`)."""
        while True:
            await self.clock.sleep(_RECONCILE_S)
            self._rebalance_step()
            for r in list(self.replicas.values()):
                shard = r.shard
                core = r.core
                if shard is None or core is None or r.phase != "running" or core.role is not Role.LEADER:
                    continue
                lock = self._move_locks.setdefault(shard, asyncio.Lock())
                if lock.locked() or core.membership.joint:
                    continue
                smap = self.shard_map
                stray = set(core.membership.learners)
                if not stray and smap.move_of(shard) is None and set(smap.members[shard]) == set(
                        core.membership.voters):
                    continue
                try:
                    async with lock:
                        self._repairing.add(shard)
                        self.log.info("shard-reconcile", shard=shard, epoch=smap.epoch,
                                      map_members=",".join(smap.members[shard]),
                                      voters=",".join(sorted(core.membership.voters)),
                                      learners=",".join(sorted(stray)) or "none",
                                      move=smap.move_of(shard))
                        deadline = asyncio.get_running_loop().time() + 10.0
                        for node in sorted(stray):
                            await self._undo_learner(r, node, deadline)
                        await self._settle(r, shard, deadline)
                except Exception as e:  # noqa: BLE001 - a failed repair is retried next round
                    self.log.warning("shard-reconcile-failed", shard=shard, error=repr(e))
                finally:
                    self._repairing.discard(shard)

    # ------------------------------------------------------------------ adding and removing nodes
    def _plan(self, smap: ShardMap) -> list[ShardMove]:
        """`rebalance_plan(smap)`, computed once per map (a few ms: it builds the ring)."""
        cached = self._plan_cache
        if cached is None or cached[0] is not smap:
            cached = self._plan_cache = (smap, rebalance_plan(smap))
        return cached[1]

    def _rebalance_step(self) -> None:
        """Start, on this node, the rebalance moves it should run now: the moves the plan
        (`rebalance_plan`: the map's members -> the partitioner's placement of the target
        nodes) still needs, throttled to --max-moves in flight with the planner's shard order
        (`next_moves`, so every node picks the same ones), of the shards this node leads and
        whose group agrees with the map. One replica per move (the first the plan removes, to
        the first it adds); a shard that needs more moves again. Nothing here is remembered:
        the next round plans from the next map, so a move that failed, a mover that restarted
        and a leadership that moved all come down to the map."""
        smap = self.shard_map
        if not smap.rebalancing:
            return
        pending = self._plan(smap)
        for move in next_moves(pending, [m[0] for m in smap.moves], self.config.max_moves):
            r = self.replicas.get(group_of(move.shard))
            core = r.core if r is not None else None
            if r is None or core is None or r.phase != "running" or core.role is not Role.LEADER:
                continue
            lock = self._move_locks.setdefault(move.shard, asyncio.Lock())
            m = core.membership
            if lock.locked() or m.joint or m.learners or set(m.voters) != set(smap.members[move.shard]):
                continue  # a move runs, or the reconciler first makes map and group agree
            src, dst = move.remove[0], move.add[0]
            self.log.info("rebalance-move", shard=move.shard, src=src, dst=dst, epoch=smap.epoch,
                          pending=len(pending), in_flight=len(smap.moves))

            async def run(r: GroupReplica = r, move: ShardMove = move, src: str = src, dst: str = dst,
                          lock: asyncio.Lock = lock) -> None:
                msg_type, body = await self._run_move(r, move.shard, src, dst, lock)
                if msg_type is not wire.MsgType.OK:
                    self.log.info("rebalance-move-not-done", shard=move.shard, src=src, dst=dst,
                                  code=body.get("code"), reason=body.get("message"))
            self._spawn(run(), f"rebalance-{move.shard}")

    async def _finish_rebalance(self, smap: ShardMap) -> None:
        """On the metadata leader: the plan is empty and no move is in flight, so the
        rebalance is done; the leaving nodes are dropped from the map."""
        loop = asyncio.get_running_loop()
        try:
            done = smap.rebalanced()
        except ShardMapError as e:  # cannot happen after the caller's checks; never stop the map loop
            self.log.warning("rebalance-not-finished", epoch=smap.epoch, error=str(e))
            return
        if await self._map_cas(smap, done, loop.time() + _RPC_TIMEOUT_S):
            self.log.info("rebalance-done", epoch=self.shard_map.epoch, nodes=",".join(self.shard_map.nodes),
                          removed=",".join(smap.leaving) or "none")

    def _rebalance_answer(self, smap: ShardMap, **extra: Any) -> Reply:
        pending = self._plan(smap)
        return wire.MsgType.OK, wire.ok_body({
            **extra, "epoch": smap.epoch, "nodes": list(smap.nodes), "leaving": list(smap.leaving),
            "rebalancing": smap.rebalancing, "max_moves": self.config.max_moves,
            "planned": [[m.shard, list(m.remove), list(m.add)] for m in pending],
            "replicas_to_move": sum(len(m.add) for m in pending)})

    async def _change_node_set(self, change: Callable[[ShardMap], ShardMap | None], what: str) -> Reply:
        """Commit `change(map)` (None: nothing to change) in the metadata group, from the newest
        map this node can learn, retried while another change wins; the answer has the plan."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        if self.config.node_id not in self.meta_members:
            await self._fetch_map()
        while True:
            smap = self.shard_map
            try:
                new = change(smap)
            except ShardMapError as e:
                return err(wire.ErrorCode.BAD_REQUEST, f"{what}: {e}; nothing was done")
            if new is None:
                return self._rebalance_answer(smap, already=True)
            if await self._map_cas(smap, new, deadline):
                self.log.info("node-set-changed", change=what, epoch=self.shard_map.epoch,
                              nodes=",".join(new.nodes), leaving=",".join(new.leaving) or "none",
                              replicas_to_move=sum(len(m.add) for m in rebalance_plan(new)))
                return self._rebalance_answer(self.shard_map)
            if loop.time() >= deadline:
                return partial(f"{what}: the shard map could not be changed in time (is the metadata group "
                               f"{','.join(self.meta_members)} up, with a quorum?); it may or may not have "
                               "changed: asking again is harmless")
            await self._learn_map(smap.epoch + 1, 0.5)

    async def _add_node_request(self, node: str, address: str) -> Reply:
        """Admin add_node on a sharded cluster: record `node` (at `address`) in the map's node
        set, which starts a rebalance to the partitioner's placement of the new set. The node
        must be running already (``ukehi node --join`` with this cluster's flags): it is asked
        for its map first, over the peer links, at that address."""
        smap = self.shard_map
        refused = node_id_refusal("add_node", node, new_member=True)  # the unsharded admin's rule: ukehi/node/admin.py
        if refused is not None:
            return refused
        try:
            addr = parse_address(address)
        except (TypeError, ValueError) as e:
            return err(wire.ErrorCode.BAD_REQUEST, f"add_node {node} {address}: {e}; nothing was done")
        founder = self.founder_peers.get(node)
        if founder is not None and founder != addr:
            return err(wire.ErrorCode.BAD_REQUEST, f"{node} is a founder of the cluster, at "
                       f"{format_address(founder)} by --peers; a founder's address cannot change; nothing was done")
        start = (f"start it first: ukehi node --id {node} --listen {address} --join --shards {smap.shards} "
                 f"--replication-factor {smap.replication_factor} --peers "
                 + ",".join(f"{n}={format_address(a)}" for n, a in sorted(self.founder_peers.items())))
        ans = None
        for _ in range(3):  # a link just opened (or backing off after a refused connect) gets a moment
            ans = await self._rpc(node, "map_get", {}, _RPC_TIMEOUT_S / 2, address=addr)
            if ans is not None:
                break
        if ans is None:
            return err(wire.ErrorCode.REFUSED, f"node {node} does not answer at {address} over the peer links; "
                       f"{start} (with this cluster's TLS CA, or --insecure like the others); nothing was done")
        try:
            theirs = ShardMap.from_dict(ans.get("map"))
        except ShardMapError as e:
            return err(wire.ErrorCode.BAD_REQUEST, f"node {node} at {address} answered with no readable map ({e}); "
                       "nothing was done")
        if not theirs.same_cluster(self.initial_map, joining=node):
            return err(wire.ErrorCode.BAD_REQUEST, f"node {node} at {address} runs another cluster's flags "
                       f"({theirs.shards} shards, replication factor {theirs.replication_factor}, founders "
                       f"{','.join(theirs.founders)}); {start}; nothing was done")

        def change(smap: ShardMap) -> ShardMap | None:
            recorded = None if node in self.founder_peers else address
            if node in smap.target_nodes and smap.address_of(node) == recorded:
                return None
            return smap.with_node(node, recorded)

        return await self._change_node_set(change, f"add_node {node}")

    async def _remove_node_request(self, node: str) -> Reply:
        """Admin remove_node on a sharded cluster: mark `node` leaving, which starts a rebalance
        that moves its replicas to the partitioner's placement of the other nodes (and, when it
        is a metadata member, its metadata replica to another node: `_meta_move`); once it
        serves no shard and no metadata replica, the metadata leader drops it from the map
        (`rebalanced`)."""
        smap = self.shard_map
        if node not in smap.nodes:
            return err(wire.ErrorCode.BAD_REQUEST, f"{node} is not a node of the cluster; nodes: "
                       f"{','.join(smap.nodes)}; nothing was done")

        def change(smap: ShardMap) -> ShardMap | None:
            if node in smap.leaving:
                return None
            if len(smap.target_nodes) - 1 < smap.replication_factor:
                raise ShardMapError(f"removing {node} would leave {len(smap.target_nodes) - 1} nodes for replication "
                                    f"factor {smap.replication_factor}: add a node first")
            return smap.draining(node)

        return await self._change_node_set(change, f"remove_node {node}")

    # ------------------------------------------------------------------ status
    def shard_map_body(self) -> dict[str, Any]:
        """The map and where every node of it listens: what a client routes by."""
        return {"map": self.shard_map.to_dict(),
                "addresses": {n: format_address(a) for n, a in self.address_book().items()},
                "committed": self.map_committed, "metadata_members": list(self.meta_members)}
    def _group_summary(self, r: GroupReplica) -> dict[str, Any]:
        st = r.status()
        out = {k: st.get(k) for k in ("role", "term", "leader", "leader_address", "commit_index", "applied_index",
                                      "members", "learners", "recovering", "pending_proposals", "bad_peer_messages")}
        out["group"] = r.group_id
        return out

    def status(self) -> dict[str, Any]:
        cfg = self.config
        listener = self.listener
        shards: dict[str, Any] = {}
        roles, terms = [], [0]
        for gid, r in sorted(self.replicas.items()):
            if r.shard is None:
                continue
            shards[str(r.shard)] = summary = self._group_summary(r)
            summary["member"] = cfg.node_id in self.shard_map.members[r.shard]  # False: joining
            roles.append(summary["role"])
            terms.append(int(summary.get("term") or 0))
        meta = self.replicas.get(META_GROUP)
        corrupt = {("metadata" if r.shard is None else str(r.shard)): r.corruption for r in self.replicas.values()
                   if r.corruption and not r.corruption.get("clean", True)}
        return {
            "id": cfg.node_id,
            "address": format_address(cfg.advertise_address),
            "phase": self.phase,
            "clock": self.clock.time(),
            "pid": self.pid,
            "read_mode": cfg.read_mode,
            "corruption_policy": cfg.corruption_policy,
            "corruption": corrupt or None,
            "connections": listener.connection_count,
            "bad_frames": listener.bad_frames,
            **listener.counters(),
            "unsafe_bug": self.bug,
            "fsync": cfg.fsync,
            "election_timeout_ms": list(cfg.election_timeout_ms),
            "heartbeat_ms": cfg.heartbeat_ms,
            # The node as a whole: "leader" when it leads any of its groups (what a nemesis
            # that targets leaders looks for); per-group facts are under "shards".
            "role": "leader" if "leader" in roles else ("follower" if roles else "none"),
            "term": max(terms),
            "leader": None,
            "leader_address": None,
            "members": list(self.shard_map.nodes),
            "recovering": self.phase != "running" or any(s["recovering"] for s in shards.values()),
            "pending_proposals": sum(int(s["pending_proposals"] or 0) for s in shards.values()),
            "bad_peer_messages": sum(int(s["bad_peer_messages"] or 0) for s in shards.values()),
            "commit_index": sum(int(s["commit_index"] or 0) for s in shards.values()),
            "applied_index": sum(int(s["applied_index"] or 0) for s in shards.values()),
            "sharded": True,
            "epoch": self.shard_map.epoch,
            # Replica moves: those the map records as in flight (any node may run them), and
            # the ones this node runs now as a shard's leader, with the step they are at.
            "moves": [{"shard": s, "from": a, "to": b} for s, a, b in self.shard_map.moves],
            # Adding and removing nodes: the node set, the nodes being removed, and while a
            # rebalance runs the replica moves its plan still needs.
            "nodes": list(self.shard_map.nodes),
            "leaving": list(self.shard_map.leaving),
            "rebalancing": self.shard_map.rebalancing,
            "rebalance_pending": [[m.shard, list(m.remove), list(m.add)] for m in self._plan(self.shard_map)],
            "moving": {str(s): dict(m) for s, m in sorted(self._moving.items())},
            "shard_count": self.shard_map.shards,
            "replication_factor": self.shard_map.replication_factor,
            "shards": shards,
            # The metadata group: its members, this node's view of it when it is one, and
            # whether this node saw its own map committed there.
            "metadata_members": list(self.meta_members),
            "metadata_move": list(self.shard_map.meta_move) or None,
            "metadata": self._group_summary(meta) if meta is not None else None,
            "shard_map_committed": self.map_committed,
        }
