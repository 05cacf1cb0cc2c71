"""The shard map and its rebalancing plan: pure data and functions, no I/O.

Sharded Ukehi (issue 15) splits the key space into S shards, fixed when the cluster is made.
Each shard is its own Raft group; its members are the `replication_factor` nodes that the
consistent-hash partitioner ranks first for the shard's name. The map (shard -> members, with
an epoch) is itself replicated, in the metadata group, so every node and client agrees on it.
This module is the part of that which needs no network and no disk, in the etcd-raft spirit:
the caller owns the I/O and feeds the results back.

- `shard_of(key, shards)`: which shard holds a key (a stable hash, the same in every process,
  of the key's hash tag: a key with ``{tag}`` is placed by the tag alone, `hash_tag`).
- `ShardMap`: epoch, shard count, replication factor, the cluster's nodes, each shard's
  members and the replica moves in flight (`moves`: (shard, from, to), at most one per
  shard; `with_move` records one, `settled` sets a shard's members to its group's voters
  and clears its move, each in the next epoch), with a strict JSON form (`to_dict` /
  `from_dict`; "moves" only when there are some) for the metadata group's log.
- `plan(current, nodes)`: the moves that take the map to the placement of a new node set.
  Only shards whose member set changes move; with the partitioner's minimal movement, adding a
  node only moves replicas *to* it and removing one only moves its own replicas away.
- `move_steps(move)`: each move as Raft membership changes in the shard's group (add the new
  members as learners; once they have caught up, one joint change promotes them and removes the
  old ones), so the shard is always served by a quorum of one configuration.
- `next_moves(pending, in_flight, limit)`: throttling, at most `limit` moves at once, never
  two on one shard.
- The node set: `with_node` (a node added, its address recorded: the map is the address book of
  nodes added after the start), `draining` (a node leaving), each starting a rebalance;
  `rebalance_plan(map)` is `plan` from the members to the placement of the nodes but the leaving
  ones while it runs, and `rebalanced` ends it (the leaving nodes dropped). The founders (the
  nodes the cluster was made with) name the cluster through all of it (`same_cluster`).
- The metadata group's own members (`metadata_members`): the founders' bootstrap placement
  (`meta_members`) until a member leaves; then one replica at a time moves (`with_meta_move`,
  `meta_settled`, to `meta_target`) and the map records the group's voters (`meta`), so the
  map names the group that holds it.

Group ids: group 0 is the metadata group; shard s is Raft group s + 1. An unsharded cluster is
the single group 0, as before sharding existed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .partitioner import ConsistentHashPartitioner, stable_hash64
from .raft.confchange import ConfChange, ConfChangeType, enter_config, leave_joint
from .raft.types import Membership, check_node_id

__all__ = [
    "META_GROUP",
    "META_KEY",
    "meta_members",
    "MAX_SHARDS",
    "ShardMapError",
    "ShardMap",
    "ShardMove",
    "shard_of",
    "hash_tag",
    "group_of",
    "placement",
    "plan",
    "move_steps",
    "next_moves",
    "rebalance_plan",
    "request_keys",
]

META_GROUP = 0
# Where the metadata group's state machine holds the shard map (JSON of ShardMap.to_dict());
# a reserved key that no client request can reach (client keys route to shard groups only).
META_KEY = "\x00ukehi/shardmap"
_META_NAME = "ukehi-meta"  # the name the metadata group is placed by on the ring
MAX_SHARDS = 4096  # a map entry per shard travels in every map update; far more is a mistake
_SHARD_KEY = "ukehi-shard/"  # the name a shard is placed by on the ring


class ShardMapError(ValueError):
    """A shard map or a request about one that cannot be right; the message says what to fix."""


def _check_count(name: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ShardMapError(f"{name} must be a whole number in {lo} .. {hi}, got {value!r}")
    return value


def hash_tag(key: str | bytes) -> str | bytes:
    """The part of `key` that places it: Redis Cluster's hash tag rule. When the key has a
    ``{`` followed later by a ``}`` with at least one character between the first ``{`` and
    the first ``}`` after it, only those characters are hashed; otherwise the whole key.

    So keys that must live in one Raft group can say so: the lock ``lock/{fenced/0}`` and the
    key ``fenced/0`` are in one shard, and a fenced write is judged by the group that minted
    its token (tokens are per group: ``term << 32 | seq`` of that group's log). ``{}`` and a
    ``{`` with no ``}`` after it place the whole key, as in Redis."""
    opening, closing = ("{", "}") if isinstance(key, str) else (b"{", b"}")
    start = key.find(opening)  # type: ignore[arg-type]
    if start < 0:
        return key
    end = key.find(closing, start + 1)  # type: ignore[arg-type]
    if end <= start + 1:
        return key
    return key[start + 1:end]


def shard_of(key: str | bytes, shards: int) -> int:
    """The shard that holds `key`: a stable 64-bit hash of its hash tag (`hash_tag`: the
    whole key unless it has a ``{tag}``) modulo the (fixed) shard count."""
    _check_count("shards", shards, 1, MAX_SHARDS)
    return stable_hash64(hash_tag(key)) % shards


# Requests about one key (by wire type name) and about one lock: routed to its shard.
_KEYED_REQUESTS = frozenset({"get", "put", "cas", "delete", "fenced_put", "append"})
_LOCK_REQUESTS = frozenset({"acquire", "release"})


def request_keys(msg_type: str, body: Mapping[str, Any]) -> list[str] | None:
    """The keys a client request touches, by its wire type name (a lock's name for lock
    requests, every micro-op's key for a transaction), or None for a request about no key
    (status, admin verbs). Node and client route by this one rule."""
    if msg_type in _KEYED_REQUESTS:
        return [body["key"]]
    if msg_type in _LOCK_REQUESTS:
        return [body["lock"]]
    if msg_type == "txn":
        return [op[1] for op in body["ops"]]
    return None


def group_of(shard: int) -> int:
    """The Raft group id of a shard (group 0 is the metadata group)."""
    return shard + 1


def placement(nodes: Iterable[str], shards: int, replication_factor: int,
              vnodes: int = 150) -> tuple[tuple[str, ...], ...]:
    """Each shard's members for this node set, the partitioner's best first.

    Placement depends only on the set of names (not their order), so every node computes the
    same map from the same membership."""
    names = sorted(set(nodes))
    _check_count("shards", shards, 1, MAX_SHARDS)
    if not names:
        raise ShardMapError("a shard map needs at least one node")
    if not 1 <= replication_factor <= len(names):
        raise ShardMapError(f"replication factor {replication_factor} needs at least that many nodes; "
                            f"the cluster has {len(names)} ({', '.join(names)}): add nodes or lower it")
    ring = ConsistentHashPartitioner(vnodes=vnodes, replication_factor=replication_factor, nodes=names)
    return tuple(tuple(ring.get_nodes(f"{_SHARD_KEY}{s}")) for s in range(shards))


def meta_members(nodes: Iterable[str], replication_factor: int, vnodes: int = 150) -> tuple[str, ...]:
    """The metadata group's members: the `replication_factor` nodes the partitioner ranks
    first for the metadata group's name (the same on every node, from the same node set)."""
    names = sorted(set(nodes))
    if not names:
        raise ShardMapError("a metadata group needs at least one node")
    rf = min(max(1, replication_factor), len(names))
    ring = ConsistentHashPartitioner(vnodes=vnodes, replication_factor=rf, nodes=names)
    return tuple(ring.get_nodes(_META_NAME))


@dataclass(frozen=True)
class ShardMove:
    """One shard's change of members: `add` join the group, `remove` leave it."""

    shard: int
    old: tuple[str, ...]
    new: tuple[str, ...]

    @property
    def add(self) -> tuple[str, ...]:
        return tuple(n for n in self.new if n not in self.old)

    @property
    def remove(self) -> tuple[str, ...]:
        return tuple(n for n in self.old if n not in self.new)


@dataclass(frozen=True)
class ShardMap:
    """Which nodes serve which shard, at an epoch that grows with every change."""

    epoch: int
    replication_factor: int
    nodes: tuple[str, ...]
    members: tuple[tuple[str, ...], ...]  # members[s]: shard s's voters
    # Replica moves in flight: (shard, from, to), at most one per shard. The move's target
    # hosts the shard's group (as a joining learner) while it is listed here; the shard's
    # members change only when the move is done (a later epoch).
    moves: tuple[tuple[int, str, str], ...] = ()
    # Adding and removing nodes (all four absent from the JSON form while empty/false, so a
    # map of a cluster that never changed its node set reads as it always did):
    # - founders: the nodes the cluster was made with (the flags' --peers); with the shard
    #   count and the replication factor they name the cluster (`same_cluster`), since `nodes`
    #   changes. Empty means `nodes` (a map made by `initial`).
    # - addresses: (node, "HOST:PORT") of the nodes added after the start. The map is the
    #   address book for them: every node learns a new node's address from the committed map
    #   (founders' addresses come from every node's --peers).
    # - leaving: nodes being removed; placement leaves them out, and once they serve no shard
    #   the rebalance drops them from `nodes`.
    # - rebalancing: the node set changed and the shards are being moved to the partitioner's
    #   placement of `nodes` minus `leaving` (`rebalance_plan`); cleared when it is reached.
    founders: tuple[str, ...] = ()
    addresses: tuple[tuple[str, str], ...] = ()
    leaving: tuple[str, ...] = ()
    rebalancing: bool = False
    # The metadata group's voters, once they differ from the bootstrap placement (empty: the
    # partitioner's `meta_members` of the founders, what every node computes from its flags),
    # and its replica move in flight ((from, to), or empty). Both absent from the JSON form
    # while empty, as above.
    meta: tuple[str, ...] = ()
    meta_move: tuple[str, ...] = ()
    _index: Mapping[str, frozenset[int]] = field(default_factory=dict, repr=False, compare=False)
    _meta_cache: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_count("epoch", self.epoch, 1, (1 << 63) - 1)
        _check_count("shards", len(self.members), 1, MAX_SHARDS)
        known = set(self.nodes)
        if len(known) != len(self.nodes):
            raise ShardMapError(f"node names repeat in {list(self.nodes)}")
        _check_count("replication_factor", self.replication_factor, 1, max(1, len(self.nodes)))
        for name in self.nodes:
            try:
                check_node_id("shard map node", name)
            except (TypeError, ValueError) as exc:
                raise ShardMapError(str(exc)) from None
        index: dict[str, set[int]] = {n: set() for n in self.nodes}
        for s, group in enumerate(self.members):
            if not group or len(set(group)) != len(group):
                raise ShardMapError(f"shard {s}: members must be distinct and not empty, got {list(group)}")
            strangers = [n for n in group if n not in known]
            if strangers:
                raise ShardMapError(f"shard {s}: {strangers} are not nodes of the cluster {list(self.nodes)}")
            for n in group:
                index[n].add(s)
        seen: set[int] = set()
        for move in self.moves:
            if not (isinstance(move, tuple) and len(move) == 3):
                raise ShardMapError(f"a move is (shard, from, to), got {move!r}")
            shard, src, dst = move
            if not isinstance(shard, int) or isinstance(shard, bool) or not 0 <= shard < len(self.members):
                raise ShardMapError(f"move of shard {shard!r}: the map has shards 0 .. {len(self.members) - 1}")
            if shard in seen:
                raise ShardMapError(f"two moves of shard {shard} at once: at most one move per shard")
            seen.add(shard)
            if src not in self.members[shard] or dst in self.members[shard] or dst not in known:
                raise ShardMapError(f"move of shard {shard} from {src!r} to {dst!r}: the source must be a member "
                                    f"and the target a node of the cluster that is not one "
                                    f"(members {list(self.members[shard])})")
        if not self.founders:
            object.__setattr__(self, "founders", tuple(self.nodes))
        if len(set(self.founders)) != len(self.founders):
            raise ShardMapError(f"founder names repeat in {list(self.founders)}")
        object.__setattr__(self, "addresses", tuple(sorted(self.addresses)))
        for name, address in self.addresses:
            if name not in known:
                raise ShardMapError(f"address of {name!r}: not a node of the cluster {list(self.nodes)}")
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ShardMapError(f"address of {name!r}: {address!r} is not HOST:PORT")
        if len(dict(self.addresses)) != len(self.addresses):
            raise ShardMapError("a node has two addresses in the map")
        object.__setattr__(self, "leaving", tuple(sorted(set(self.leaving))))
        strangers = [n for n in self.leaving if n not in known]
        if strangers:
            raise ShardMapError(f"leaving nodes {strangers} are not nodes of the cluster {list(self.nodes)}")
        if len(self.nodes) - len(self.leaving) < self.replication_factor:
            raise ShardMapError(f"with {list(self.leaving)} leaving, {len(self.nodes) - len(self.leaving)} nodes "
                                f"remain for replication factor {self.replication_factor}")
        if len(set(self.meta)) != len(self.meta) or any(n not in known for n in self.meta):
            raise ShardMapError(f"metadata members {list(self.meta)} must be distinct nodes of the cluster "
                                f"{list(self.nodes)}")
        if self.meta_move:
            if len(self.meta_move) != 2:
                raise ShardMapError(f"a metadata move is (from, to), got {list(self.meta_move)}")
            src, dst = self.meta_move
            current = self.metadata_members
            if src not in current or dst in current or dst not in known:
                raise ShardMapError(f"metadata move from {src!r} to {dst!r}: the source must be a member "
                                    f"and the target a node of the cluster that is not one (members {list(current)})")
        object.__setattr__(self, "_index", {n: frozenset(v) for n, v in index.items()})

    @classmethod
    def initial(cls, nodes: Iterable[str], shards: int = 16, replication_factor: int = 3) -> "ShardMap":
        """The map of a new cluster: epoch 1, every shard placed by the partitioner."""
        names = tuple(sorted(set(nodes)))
        return cls(1, replication_factor, names, placement(names, shards, replication_factor))

    @property
    def shards(self) -> int:
        return len(self.members)

    def shard_for(self, key: str | bytes) -> int:
        return shard_of(key, self.shards)

    def owners(self, key: str | bytes) -> tuple[str, ...]:
        """The members of the shard holding `key`: where a client sends it."""
        return self.members[self.shard_for(key)]

    def shards_of(self, node: str) -> frozenset[int]:
        """The shards whose group `node` belongs to."""
        return self._index.get(node, frozenset())

    def owns(self, node: str, shard: int, epoch: int) -> bool:
        """Whether `node` may serve `shard` for a request made with map `epoch`: the request's
        map must not be newer than ours (then ours is stale: refresh first) and the node must be
        a member now. A request with an older epoch is still served when the node owns the
        shard; the answer carries our epoch so the client refreshes."""
        return epoch <= self.epoch and 0 <= shard < self.shards and shard in self.shards_of(node)

    def with_nodes(self, nodes: Iterable[str]) -> "ShardMap":
        """The next epoch's map with the same members per shard but a new node list: the first
        step of adding a node (it joins the cluster before any shard moves to it)."""
        names = tuple(sorted(set(nodes) | {n for group in self.members for n in group}))
        return self._next(nodes=names, addresses=tuple(a for a in self.addresses if a[0] in names),
                          leaving=tuple(n for n in self.leaving if n in names))

    def _next(self, **changes: Any) -> "ShardMap":
        """The next epoch's map with `changes` (fields of the dataclass)."""
        fields = {"epoch": self.epoch + 1, "replication_factor": self.replication_factor, "nodes": self.nodes,
                  "members": self.members, "moves": self.moves, "founders": self.founders,
                  "addresses": self.addresses, "leaving": self.leaving, "rebalancing": self.rebalancing,
                  "meta": self.meta, "meta_move": self.meta_move}
        fields.update(changes)
        return ShardMap(**fields)

    # ------------------------------------------------------------------ node set
    @property
    def target_nodes(self) -> tuple[str, ...]:
        """The nodes shards are placed on: the cluster's nodes but the leaving ones."""
        return tuple(n for n in self.nodes if n not in self.leaving)

    def address_of(self, node: str) -> str | None:
        """The address the map records for `node` (added nodes only; founders: --peers)."""
        return dict(self.addresses).get(node)

    def with_node(self, node: str, address: str | None = None) -> "ShardMap":
        """The next epoch's map with `node` in the node set (at `address`, when it is not a
        founder) and a rebalance started: placement now includes it. A leaving node that is
        added again stops leaving."""
        try:
            check_node_id("node", node)
        except (TypeError, ValueError) as exc:
            raise ShardMapError(str(exc)) from None
        addresses = dict(self.addresses)
        if address is not None and node not in self.founders:
            addresses[node] = address
        if node not in self.founders and node not in addresses:
            raise ShardMapError(f"{node} is not a founder: give its address")
        names = tuple(sorted(set(self.nodes) | {node}))
        return self._next(nodes=names, addresses=tuple(addresses.items()),
                          leaving=tuple(n for n in self.leaving if n != node), rebalancing=True)

    def draining(self, node: str) -> "ShardMap":
        """The next epoch's map with `node` leaving and a rebalance started: its replicas move
        to the placement of the other nodes, then it is dropped (`rebalanced`)."""
        if node not in self.nodes:
            raise ShardMapError(f"{node} is not a node of the cluster {list(self.nodes)}")
        return self._next(leaving=tuple(set(self.leaving) | {node}), rebalancing=True)

    def rebalanced(self) -> "ShardMap":
        """The next epoch's map once the rebalance is done (`rebalance_plan` is empty and no
        move is in flight): the leaving nodes are dropped, the rebalance cleared."""
        if self.moves or rebalance_plan(self) or self.meta_move or self.meta_leaving:
            raise ShardMapError(f"the rebalance is not done: {len(rebalance_plan(self))} shards still to move, "
                                f"{len(self.moves)} moves in flight, metadata members leaving "
                                f"{list(self.meta_leaving)}, metadata move {list(self.meta_move) or 'none'}")
        gone = set(self.leaving)
        return self._next(nodes=tuple(n for n in self.nodes if n not in gone),
                          addresses=tuple(a for a in self.addresses if a[0] not in gone), leaving=(),
                          rebalancing=False)

    def after(self, move: ShardMove) -> "ShardMap":
        """The next epoch's map once `move` has finished in its shard's group."""
        if self.members[move.shard] != move.old:
            raise ShardMapError(f"shard {move.shard} has members {list(self.members[move.shard])}, "
                                f"not {list(move.old)}: the move was planned on an older map")
        members = list(self.members)
        members[move.shard] = move.new
        return self._next(members=tuple(members), moves=tuple(m for m in self.moves if m[0] != move.shard))

    def without_node(self, node: str) -> "ShardMap":
        """The next epoch's map with `node` gone from the node list; it must serve no shard."""
        if self.shards_of(node):
            raise ShardMapError(f"{node} still serves shards {sorted(self.shards_of(node))}; move them first")
        if node in self.metadata_members:
            raise ShardMapError(f"{node} is a member of the metadata group; move its replica first")
        if node not in self.nodes:
            raise ShardMapError(f"{node} is not a node of the cluster {list(self.nodes)}")
        return self._next(nodes=tuple(n for n in self.nodes if n != node),
                          addresses=tuple(a for a in self.addresses if a[0] != node),
                          leaving=tuple(n for n in self.leaving if n != node))

    # ------------------------------------------------------------------ replica moves
    def move_of(self, shard: int) -> tuple[int, str, str] | None:
        """The move of `shard` in flight, if any."""
        return next((m for m in self.moves if m[0] == shard), None)

    def joining(self, node: str) -> frozenset[int]:
        """The shards `node` is the target of a move of (it hosts their groups as a learner)."""
        return frozenset(m[0] for m in self.moves if m[2] == node)

    def with_move(self, shard: int, src: str, dst: str) -> "ShardMap":
        """The next epoch's map with the move of one replica of `shard` from `src` to `dst`
        recorded as in flight (the members unchanged)."""
        if self.move_of(shard) is not None:
            raise ShardMapError(f"shard {shard} already has a move in flight: {self.move_of(shard)}")
        return self._next(moves=tuple(sorted(self.moves + ((shard, src, dst),))))

    def settled(self, shard: int, voters: Iterable[str]) -> "ShardMap":
        """The next epoch's map with `shard`'s members set to its group's `voters` (a move's
        end, or a repair), and no move of it in flight. A member that stays keeps its place;
        a new one takes the place of the one it replaced, else goes last."""
        want = set(voters)
        old = self.members[shard]
        new = [n for n in sorted(want) if n not in old]
        out = []
        for n in old:
            if n in want:
                out.append(n)
            elif new:
                out.append(new.pop(0))
        out += new
        members = list(self.members)
        members[shard] = tuple(out)
        return self._next(members=tuple(members), moves=tuple(m for m in self.moves if m[0] != shard))

    # ------------------------------------------------------------------ the metadata group
    @property
    def metadata_members(self) -> tuple[str, ...]:
        """The metadata group's voters: those a metadata move left (`meta`), else the
        bootstrap placement of the founders (what every node computes from its flags)."""
        if self.meta:
            return self.meta
        if not self._meta_cache:  # the ring is built once per map, not per call
            object.__setattr__(self, "_meta_cache", meta_members(self.founders, self.replication_factor))
        return self._meta_cache

    @property
    def meta_leaving(self) -> tuple[str, ...]:
        """The metadata members being removed: each one's replica must move before it goes."""
        return tuple(n for n in self.metadata_members if n in self.leaving)

    def meta_target(self, vnodes: int = 150) -> str | None:
        """Where a leaving metadata member's replica goes: the node the partitioner ranks first
        for the metadata group among the target nodes that are not members already (the same
        on every node); None when there is none."""
        current = set(self.metadata_members)
        ranked = meta_members(self.target_nodes, len(self.target_nodes), vnodes)
        return next((n for n in ranked if n not in current), None)

    def with_meta_move(self, src: str, dst: str) -> "ShardMap":
        """The next epoch's map with the move of the metadata group's replica from `src` to
        `dst` recorded as in flight (`dst` hosts the group as a joining learner meanwhile)."""
        if self.meta_move:
            raise ShardMapError(f"the metadata group already has a move in flight: {list(self.meta_move)}")
        return self._next(meta_move=(src, dst))

    def meta_settled(self, voters: Iterable[str]) -> "ShardMap":
        """The next epoch's map with the metadata members set to the group's `voters` and no
        metadata move in flight (a move's end, its undoing, or a repair)."""
        want = set(voters)
        old = self.metadata_members
        ordered = tuple(n for n in old if n in want) + tuple(sorted(want - set(old)))
        return self._next(meta=ordered, meta_move=())

    def same_cluster(self, other: "ShardMap", joining: str | None = None) -> bool:
        """Whether `other` is a map of the same cluster (shard count, replication factor and
        founding nodes): any epoch of one cluster's map passes, also after nodes were added
        or removed, another cluster's does not. `joining`: a node started with ``--join``
        leaves itself out of its founders, so a founder that rejoins fresh still computes its
        cluster's identity up to itself; that node is left out of both sides."""
        mine, theirs = set(self.founders), set(other.founders)
        if joining is not None:
            mine.discard(joining)
            theirs.discard(joining)
        return (self.shards, self.replication_factor, mine) == (other.shards, other.replication_factor, theirs)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epoch": self.epoch, "replication_factor": self.replication_factor,
                               "nodes": list(self.nodes), "members": [list(g) for g in self.members]}
        if self.moves:  # absent when none: a map without moves reads as it always did
            out["moves"] = [list(m) for m in self.moves]
        if set(self.founders) != set(self.nodes):
            out["founders"] = list(self.founders)
        if self.addresses:
            out["addresses"] = dict(self.addresses)
        if self.leaving:
            out["leaving"] = list(self.leaving)
        if self.rebalancing:
            out["rebalancing"] = True
        if self.meta:
            out["meta"] = list(self.meta)
        if self.meta_move:
            out["meta_move"] = list(self.meta_move)
        return out

    @classmethod
    def from_dict(cls, obj: Any) -> "ShardMap":
        """Parse the JSON form; anything else is a ShardMapError that names the field."""
        fields = {"epoch", "replication_factor", "nodes", "members"}
        optional = {"moves", "founders", "addresses", "leaving", "rebalancing", "meta", "meta_move"}
        if not isinstance(obj, dict) or not fields <= set(obj) or not set(obj) <= fields | optional:
            raise ShardMapError(f"a shard map is an object with exactly {sorted(fields)} (and {sorted(optional)})")
        extra: dict[str, Any] = {}
        for name in ("founders", "leaving", "meta", "meta_move"):
            value = obj.get(name, [])
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                raise ShardMapError(f"shard map field {name!r} must be a list of node names")
            extra[name] = tuple(value)
        addresses = obj.get("addresses", {})
        if not isinstance(addresses, dict) or not all(isinstance(a, str) for a in addresses.values()):
            raise ShardMapError("shard map field 'addresses' must map node names to HOST:PORT")
        extra["addresses"] = tuple(addresses.items())
        if not isinstance(obj.get("rebalancing", False), bool):
            raise ShardMapError("shard map field 'rebalancing' must be true or false")
        extra["rebalancing"] = obj.get("rebalancing", False)
        moves = obj.get("moves", [])
        if not isinstance(moves, list) or not all(
                isinstance(m, list) and len(m) == 3 and isinstance(m[0], int) and isinstance(m[1], str)
                and isinstance(m[2], str) for m in moves):
            raise ShardMapError("shard map field 'moves' must be a list of [shard, from, to]")
        if not isinstance(obj["nodes"], list) or not all(isinstance(n, str) for n in obj["nodes"]):
            raise ShardMapError("shard map field 'nodes' must be a list of node names")
        members = obj["members"]
        if not isinstance(members, list) or not all(
                isinstance(g, list) and all(isinstance(n, str) for n in g) for g in members):
            raise ShardMapError("shard map field 'members' must be a list (one per shard) of lists of node names")
        return cls(obj["epoch"], obj["replication_factor"], tuple(obj["nodes"]),
                   tuple(tuple(g) for g in members), tuple(sorted((m[0], m[1], m[2]) for m in moves)), **extra)


def plan(current: ShardMap, nodes: Iterable[str], vnodes: int = 150) -> list[ShardMove]:
    """The moves from `current` to the placement of `nodes`, in shard order.

    Only shards whose member *set* changes move. A member that stays keeps its place in the
    list (the group's membership is a set; order only says who the partitioner prefers)."""
    target = placement(nodes, current.shards, current.replication_factor, vnodes)
    moves = []
    for s, (old, new) in enumerate(zip(current.members, target)):
        if set(old) != set(new):
            moves.append(ShardMove(s, old, new))
    return moves


def move_steps(move: ShardMove) -> list[list[ConfChange]]:
    """The membership changes that carry out `move` in the shard's Raft group, in order.

    1. The incoming nodes join as learners (a learner-only change needs no joint phase). The
       caller waits until each has caught up, by log or snapshot, before the next step.
    2. One change promotes them and removes the outgoing nodes. When voters change this is a
       joint configuration C_old,new, which the group leaves by itself (`leave_joint`): every
       decision needs a majority of the old *and* the new voters, so no two configurations
       can each commit on their own.
    Every step is checked with the same functions the Raft core applies, so a plan that would be
    refused by the group is refused here first.
    """
    steps: list[list[ConfChange]] = []
    if move.add:
        steps.append([ConfChange(ConfChangeType.ADD_LEARNER, n) for n in move.add])
    swap = [ConfChange(ConfChangeType.ADD_VOTER, n) for n in move.add]
    swap += [ConfChange(ConfChangeType.REMOVE, n) for n in move.remove]
    if swap:
        steps.append(swap)
    membership = Membership(voters=frozenset(move.old))
    for step in steps:
        try:
            membership = enter_config(membership, step)
        except ValueError as exc:
            raise ShardMapError(f"shard {move.shard}: the move {list(move.old)} -> {list(move.new)} "
                                f"cannot be done as membership changes: {exc}") from None
        if membership.joint:
            membership = leave_joint(membership)
    if membership.voters != frozenset(move.new) or membership.learners:
        raise ShardMapError(f"shard {move.shard}: the steps end at {sorted(membership.voters)}, "
                            f"not {sorted(move.new)}")
    return steps


def next_moves(pending: Sequence[ShardMove], in_flight: Iterable[int], limit: int) -> list[ShardMove]:
    """Which pending moves to start now: at most `limit` in flight in all, one per shard, in the
    order given (the planner's shard order, so every node that plans picks the same ones)."""
    _check_count("limit", limit, 1, MAX_SHARDS)
    busy = set(in_flight)
    out = []
    for move in pending:
        if len(busy) >= limit:
            break
        if move.shard in busy:
            continue
        busy.add(move.shard)
        out.append(move)
    return out


def rebalance_plan(current: ShardMap, vnodes: int = 150) -> list[ShardMove]:
    """While `current` is rebalancing: the moves still to make, from its members to the
    partitioner's placement of its target nodes (`plan`), in shard order; [] otherwise. Computed
    afresh from every map, so a move that finished, failed or was undone, and a restart of any
    node, leave nothing to resume but the map itself."""
    if not current.rebalancing:
        return []
    return plan(current, current.target_nodes, vnodes)
