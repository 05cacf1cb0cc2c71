"""Consistent-hash partitioner: a ring of virtual nodes, looked up by bisection.

Each node owns `vnodes` points on a 64-bit ring; a point's position is a BLAKE2b hash of
the node name and the point number (never Python's `hash`, which is randomized per process:
every client and node must compute the same placement).

Load balance, a measured finding: with plain consistent hashing (one hash per key, the
owner is the next point clockwise) and 150 random points per node, a node's share of the
key space has a relative standard deviation of about sqrt((1 - 1/N) / vnodes), 7.3% for 5
nodes. Measured with this module (`probes=1`) over 100 sets of 5 node names and 100,000
keys each, the node furthest from the mean was more than 10% off in 55 of the 100 sets
(median worst deviation 10.4%, worst 28%). More points per node shrink that only as
1/sqrt(vnodes).

So keys are placed with *multi-probe* consistent hashing (Appleton & O'Reilly, 2015): a key
is hashed to `probes` positions, and the owner is the node whose point follows one of those
positions most closely. Long arcs no longer win proportionally more keys, and with the
default of 5 probes the same measurement gave a worst node within 10% in all 100 sets
(median worst deviation 3.8%, p90 6.1%, worst 8.6%; about 0.6 points of that is sampling
noise from 100,000 keys). The cost is 5 bisections per lookup instead of 1 (one BLAKE2b
call yields all probe positions). The properties that matter are kept exactly:

* adding a node only moves keys *to* the new node (its points can only shorten a probe's
  distance), never between old nodes;
* removing a node only moves the keys it owned;
* placement depends only on the set of node names, not on the order they were added.

`probes=1` is classic consistent hashing.

Replicas: `get_nodes(key, n)` ranks nodes by their score for the key, the shortest
clockwise distance from any of the key's probes to one of the node's points, and returns the
best `n` (the owner first). With `probes=1` that is exactly the Dynamo/Cassandra walk
clockwise from the key to the next distinct nodes. A node's score does not depend on the
other nodes, so adding a node only inserts it into replica lists and removing one only
deletes it from them; the other members keep their order.
"""

from __future__ import annotations

import bisect
import hashlib
import struct
from typing import Iterable

__all__ = [
    "ConsistentHashPartitioner",
    "PartitionerError",
    "EmptyRingError",
    "stable_hash64",
    "MAX_VNODES",
    "MAX_PROBES",
]

MAX_VNODES = 10_000  # points per node; bounds memory for a mistaken argument
MAX_PROBES = 8  # one 64-byte BLAKE2b digest yields 8 probe positions
_RING = 1 << 64
_U32 = struct.Struct(">I")


class PartitionerError(ValueError):
    """A bad argument or a request the current ring cannot satisfy."""


class EmptyRingError(PartitionerError):
    """A lookup on a ring with no nodes: add nodes first."""


def _key_bytes(key: str | bytes) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"key must be str or bytes, got {type(key).__name__}")


def stable_hash64(data: str | bytes) -> int:
    """64-bit BLAKE2b of `data` (str is UTF-8 encoded); identical in every process."""
    return int.from_bytes(hashlib.blake2b(_key_bytes(data), digest_size=8).digest(), "big")


def _vnode_position(node: bytes, i: int) -> int:
    # Length-prefixed name, so ("ab", 1) and ("a", ...) can never produce the same input.
    h = hashlib.blake2b(_U32.pack(len(node)) + node + _U32.pack(i), digest_size=8, person=b"ukehi-vnode")
    return int.from_bytes(h.digest(), "big")


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise PartitionerError(f"{name} must be an int in {lo} .. {hi}, got {value!r}")
    return value


class ConsistentHashPartitioner:
    """Maps keys to nodes on a consistent-hash ring with virtual nodes."""

    def __init__(
        self,
        vnodes: int = 150,
        replication_factor: int = 3,
        probes: int = 5,
        nodes: Iterable[str] = (),
    ) -> None:
        self.vnodes = _check_int("vnodes", vnodes, 1, MAX_VNODES)
        self.replication_factor = _check_int("replication_factor", replication_factor, 1, 1 << 16)
        self.probes = _check_int("probes", probes, 1, MAX_PROBES)
        self._nodes: set[str] = set()
        self._points: list[int] = []  # sorted positions
        self._owners: list[str] = []  # owner of _points[i]
        for node in nodes:
            self.add_node(node)

    # ------------------------------------------------------------------ membership
    @property
    def nodes(self) -> tuple[str, ...]:
        """The nodes on the ring, sorted."""
        return tuple(sorted(self._nodes))

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node: object) -> bool:
        return node in self._nodes

    def add_node(self, node: str) -> None:
        """Put `node`'s virtual nodes on the ring. Raises PartitionerError if already there."""
        if not isinstance(node, str) or not node:
            raise PartitionerError(f"node name must be a non-empty str, got {node!r}")
        if node in self._nodes:
            raise PartitionerError(f"node {node!r} is already on the ring")
        name = node.encode("utf-8")
        ring = list(zip(self._points, self._owners))
        ring.extend((_vnode_position(name, i), node) for i in range(self.vnodes))
        # Ties (a 64-bit collision) are broken by name so placement never depends on order.
        ring.sort()
        self._nodes.add(node)
        self._points = [p for p, _ in ring]
        self._owners = [n for _, n in ring]

    def remove_node(self, node: str) -> None:
        """Take `node` off the ring. Raises PartitionerError if it is not there."""
        if node not in self._nodes:
            raise PartitionerError(
                f"node {node!r} is not on the ring; nodes are: {', '.join(self.nodes) or 'none'}"
            )
        self._nodes.discard(node)
        keep = [(p, n) for p, n in zip(self._points, self._owners) if n != node]
        self._points = [p for p, _ in keep]
        self._owners = [n for _, n in keep]

    # ------------------------------------------------------------------ lookup
    def _ranked(self, key: str | bytes, want: int) -> list[str]:
        """The `want` nodes with the smallest score for `key`, best first.

        A node's score is the shortest clockwise distance from any of the key's probe
        positions to one of that node's points. Each probe walks the ring only until it has
        met `want` distinct nodes: a node not met by a probe is farther from it than `want`
        nodes that were met, so it cannot belong to the top `want` through that probe.
        Because a node's score never depends on the other nodes' points, adding a node can
        only insert it into a key's ranking and removing one only deletes it: replica sets
        change minimally.
        """
        digest = hashlib.blake2b(
            _key_bytes(key), digest_size=8 * self.probes, person=b"ukehi-key"
        ).digest()
        points, owners = self._points, self._owners
        size = len(points)
        best: dict[str, int] = {}
        for j in range(0, 8 * self.probes, 8):
            pos = int.from_bytes(digest[j : j + 8], "big")
            idx = bisect.bisect_left(points, pos)
            met: set[str] = set()
            # At most one lap: every node has points, so `want` distinct ones are met in it.
            for step in range(size):
                i = (idx + step) % size
                owner = owners[i]
                if owner in met:
                    continue
                met.add(owner)
                dist = (points[i] - pos) % _RING
                if dist < best.get(owner, _RING):
                    best[owner] = dist
                if len(met) == want:
                    break
        # Ties (only on a 64-bit collision) go by name, so the result is a pure function.
        return sorted(best, key=lambda node: (best[node], node))[:want]

    def get_node(self, key: str | bytes) -> str:
        """The node that owns `key`. Raises EmptyRingError on an empty ring."""
        if not self._points:
            raise EmptyRingError("the ring has no nodes; add_node() before looking up keys")
        return self._ranked(key, 1)[0]

    def get_nodes(self, key: str | bytes, n: int | None = None) -> list[str]:
        """`n` distinct nodes for `key` (default: replication_factor), owner first.

        Raises PartitionerError when n < 1 or n exceeds the number of nodes, EmptyRingError
        on an empty ring.
        """
        want = self.replication_factor if n is None else n
        if not isinstance(want, int) or isinstance(want, bool) or want < 1:
            raise PartitionerError(f"n must be an int >= 1, got {want!r}")
        if not self._nodes:
            raise EmptyRingError("the ring has no nodes; add_node() before looking up keys")
        if want > len(self._nodes):
            raise PartitionerError(
                f"asked for {want} distinct nodes but the ring has only {len(self._nodes)}; "
                "add nodes or lower the replication factor"
            )
        return self._ranked(key, want)

    def __repr__(self) -> str:
        return (
            f"ConsistentHashPartitioner(vnodes={self.vnodes}, "
            f"replication_factor={self.replication_factor}, probes={self.probes}, "
            f"nodes={list(self.nodes)!r})"
        )
