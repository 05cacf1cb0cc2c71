"""Sharded runs (issue 15): ``--shards S`` and ``--replication-factor R`` on `run` and `cluster up`.

A sharded run is an ordinary run whose nodes get ``--shards``/``--replication-factor`` through
the spec's node options (so ``test.json`` records them and a stored run is re-checked alike).
What this module decides, in one place:

- which settings can work: R <= the node count, the ``rebalance`` nemesis only with
  ``--shards`` (it moves shard replicas between nodes), a workload in SHARDED_WORKLOADS
  (register, kv: one key per operation, per-key linearizability checked as for an unsharded
  run; list-append, rw-register: transactions, each kept inside one shard, since a sharded
  node refuses a transaction across shards; fencing: a lock and its key, which the workload
  names so that they share a shard, ``lock/{fenced/K}`` placed by its hash tag ``fenced/K``,
  so the group that mints a token is the one that judges the fenced writes made with it),
  and only
  the nemeses that act on whole node processes or their network (partition, kill, pause,
  clock, packet); the others aim at one Raft group's leader, membership or WAL (group 0),
  which a sharded node does not have;
- when a sharded cluster is up: every shard has a leader (``every_shard_led``), not only
  some node that leads something;
- which nodes found a sharded cluster whose run has the ``rebalance`` nemesis
  (``rebalance_founders``): all but the last REBALANCE_SPARES, which start with ``--join`` as
  spares that its ``add-node`` ops add (while at least R founders are left);
- what a sharded workload is told: ``sharded_workload_options`` adds the workload option
  ``shards`` (the shard count) for the workloads in SHARDED_COUNTED_WORKLOADS, recorded in
  ``test.json`` with the other workload options: the transactional ones' generator draws
  each transaction's keys from one shard (workloads/txn.py); fencing judges token order and
  uniqueness per lock, since tokens are per Raft group (``term << 32 | seq`` of the lock's
  group) and two shards' groups hand out equal tokens.

The white-box checkers judge each Raft group of a sharded run as its own cluster
(``checkers.whitebox.check_sharded_nodes``, chosen in harness/analysis.py).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .spec import SpecError

__all__ = ["SHARDED_WORKLOADS", "SHARDED_TXN_WORKLOADS", "SHARDED_COUNTED_WORKLOADS", "SHARDED_NEMESIS_FAMILIES", "SHARDED_ONLY_NEMESES",
           "DEFAULT_SHARDED_NEMESES", "shard_options", "sharded_workload_options", "is_sharded", "every_shard_led",
           "rebalance_founders", "REBALANCE_SPARES"]

# Transactional workloads: each transaction's keys in one shard, given the shard count
# (the workload option "shards", set by sharded_workload_options).
SHARDED_TXN_WORKLOADS = ("list-append", "rw-register")
# fencing: a lock and its key in one shard (the lock's name has the key as its hash tag).
SHARDED_WORKLOADS = ("register", "kv", "fencing", *SHARDED_TXN_WORKLOADS)
# Workloads told the shard count (the workload option "shards").
SHARDED_COUNTED_WORKLOADS = (*SHARDED_TXN_WORKLOADS, "fencing")
SHARDED_NEMESIS_FAMILIES = ("partition", "kill", "pause", "clock", "packet", "rebalance")
# Nemeses that need a sharded cluster: they move shard replicas.
SHARDED_ONLY_NEMESES = ("rebalance",)
# No --nemesis on a sharded run: faults it supports (the default mix has group-0 disk faults).
DEFAULT_SHARDED_NEMESES = "partition,kill"


def _family(nemesis: str) -> str:
    return next((f for f in SHARDED_NEMESIS_FAMILIES if nemesis == f or nemesis.startswith(f + "-")), "")


def shard_options(shards: int | None, replication_factor: int | None, node_count: int, workload: str,
                  nemeses: Iterable[str]) -> dict[str, Any]:
    """The node options of ``--shards``/``--replication-factor`` (empty when unsharded);
    SpecError naming the setting to change when they cannot work."""
    if shards is None:
        if replication_factor is not None:
            raise SpecError("--replication-factor only applies to a sharded cluster: give --shards S too")
        needs = [n for n in nemeses if n in SHARDED_ONLY_NEMESES]
        if needs:
            raise SpecError(f"--nemesis {','.join(needs)} moves shard replicas: give --shards S (and "
                            "--replication-factor R below the node count, so a shard has a node to move to)")
        return {}
    from ukehi.shardmap import MAX_SHARDS

    if not 1 <= shards <= MAX_SHARDS:
        raise SpecError(f"--shards {shards}: give 1 to {MAX_SHARDS} (16 is usual)")
    rf = min(3, node_count) if replication_factor is None else replication_factor
    if not 1 <= rf <= node_count:
        raise SpecError(f"--replication-factor {rf}: give 1 to the node count ({node_count}); each shard's "
                        "group has that many members")
    if workload not in SHARDED_WORKLOADS:
        raise SpecError(f"--workload {workload} with --shards: a sharded cluster runs {', '.join(SHARDED_WORKLOADS)} "
                        "(one key per operation, a lock with its key, or transactions kept in one shard)")
    unsupported = [n for n in nemeses if not _family(n)]
    if unsupported:
        raise SpecError(f"--nemesis {','.join(unsupported)} with --shards: a sharded run supports the "
                        f"{', '.join(SHARDED_NEMESIS_FAMILIES)} families (whole nodes and their network); "
                        "the others act on one group's leader, membership or WAL")
    return {"shards": shards, "replication_factor": rf}


def sharded_workload_options(workload: str, node_options: Mapping[str, Any],
                             workload_options: Mapping[str, Any]) -> dict[str, Any]:
    """The workload options of a run with these node options: for a transactional or fencing
    workload on a sharded cluster, plus ``shards`` (the cluster's shard count), which makes a
    transactional generator keep each transaction in one shard and the fencing checker judge
    tokens per lock; otherwise unchanged. SpecError when the user's own ``shards`` workload
    option disagrees with ``--shards`` or comes without it."""
    out = dict(workload_options)
    given = out.get("shards")
    if not is_sharded(node_options) or workload not in SHARDED_COUNTED_WORKLOADS:
        if given is not None:
            raise SpecError("--workload-option shards: set by --shards for a sharded list-append, "
                            "rw-register or fencing run; give --shards S instead")
        return out
    shards = int(node_options["shards"])
    if given is not None and str(given) != str(shards):
        raise SpecError(f"--workload-option shards={given} disagrees with --shards {shards}; leave it out "
                        "(--shards sets it)")
    out["shards"] = shards
    return out


#: nodes a sharded run with the rebalance nemesis starts as spares (``--join``), for add-node
REBALANCE_SPARES = 1


def rebalance_founders(nodes: Iterable[str], node_options: Mapping[str, Any],
                       nemeses: Iterable[str]) -> list[str] | None:
    """The founders of a sharded run with the ``rebalance`` nemesis: every node but the last
    REBALANCE_SPARES, which start with ``--join`` as spares for its ``add-node`` ops; all of
    them (None: every node founds) when fewer than R founders would be left, when the run is
    not sharded, or without the rebalance nemesis. Five nodes with R = 3: four founders and
    one spare (the metadata group is three of the founders, so one founder can be removed)."""
    names = list(nodes)
    if not is_sharded(node_options) or "rebalance" not in set(nemeses):
        return None
    rf = int(node_options.get("replication_factor") or min(3, len(names)))
    founders = names[:len(names) - REBALANCE_SPARES]
    return founders if len(founders) >= max(1, rf) and len(founders) < len(names) else None


def is_sharded(node_options: Mapping[str, Any]) -> bool:
    return node_options.get("shards") not in (None, "")


def every_shard_led(statuses: Mapping[str, Mapping[str, Any] | None]) -> bool:
    """Whether the answering nodes show a leader for every shard of their map."""
    count = 0
    led: set[int] = set()
    for st in statuses.values():
        if not st or not isinstance(st.get("shards"), dict):
            continue
        count = max(count, int(st.get("shard_count") or 0))
        led |= {int(s) for s, g in st["shards"].items() if isinstance(g, dict) and g.get("role") == "leader"}
    return count > 0 and led >= set(range(count))
