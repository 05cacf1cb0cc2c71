"""Sharded runs (issue 15): ``--shards S`` and ``--replication-factor R`` on `run` and `cluster up`.

A sharded run is an ordinary run whose nodes get ``--shards``/``--replication-factor`` through
the spec's node options (so ``test.json`` records them and a stored run is re-checked alike).
What this module decides, in one place:

- which settings can work: R <= the node count, the ``rebalance`` nemesis only with
  ``--shards`` (it moves shard replicas between nodes), a workload whose operations each touch
  one key (register, kv: per-key linearizability is checked as for an unsharded run; the
  transactional and fencing workloads span keys, which may sit in different shards), and only
  the nemeses that act on whole node processes or their network (partition, kill, pause,
  clock, packet); the others aim at one Raft group's leader, membership or WAL (group 0),
  which a sharded node does not have;
- when a sharded cluster is up: every shard has a leader (``every_shard_led``), not only
  some node that leads something.

The white-box checkers judge each Raft group of a sharded run as its own cluster
(``checkers.whitebox.check_sharded_nodes``, chosen in harness/analysis.py).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .spec import SpecError

__all__ = ["SHARDED_WORKLOADS", "SHARDED_NEMESIS_FAMILIES", "SHARDED_ONLY_NEMESES", "DEFAULT_SHARDED_NEMESES",
           "shard_options", "is_sharded", "every_shard_led"]

SHARDED_WORKLOADS = ("register", "kv")
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
                        "(one key per operation); transactions and fencing span keys in several shards")
    unsupported = [n for n in nemeses if not _family(n)]
    if unsupported:
        raise SpecError(f"--nemesis {','.join(unsupported)} with --shards: a sharded run supports the "
                        f"{', '.join(SHARDED_NEMESIS_FAMILIES)} families (whole nodes and their network); "
                        "the others act on one group's leader, membership or WAL")
    return {"shards": shards, "replication_factor": rf}


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
