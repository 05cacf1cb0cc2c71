"""White-box checkers: judge what the nodes persisted and logged, not only what clients saw.

Read a run's ``nodes/<node>/`` directories (:func:`read_cluster`), then run each
property over the parsed data; every function is pure over :class:`NodeData`.

=====================  ==============================================================
checker                property
=====================  ==============================================================
election-safety        at most one leader per term
log-matching           same index and term -> same entry and prefix; committed entries agree
state-machine-safety   no index applied two ways; WAL's committed entries = what was
                       applied; no node forgets what it applied (or its commit) across
                       a restart
durability             acknowledged writes are committed on a majority at the end
log-order              terms never go backwards, fencing tokens strictly increase
node-health            no unexpected error- or fatal-level node log events
config-agreement       members that applied the same log report the same configuration
                       (the membership nemesis's per-member views after each change)
catch-up               a node a fault brought back reaches what the cluster had committed
                       within the nemesis's bound while no other fault is active (liveness;
                       the ``catch_up`` records of the snapshot-lag nemesis, checked
                       against the node's own log)
replica-agreement      replicas that applied the same consistency-check entry hold the
                       same state (digests the nodes log; harness/consistency.py)
wal-retention          after a node logged a compaction to index C (snapshot taken or
                       installed), no WAL segment wholly at or below C that compact_to must
                       remove is left on disk (retention.py; needs the node directories)
=====================  ==============================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .applied import check_state_machine_safety
from .catchup import check_catch_up
from .config import check_config_agreement
from .digests import check_replica_agreement, replica_agreement_checker
from .durability import check_durability
from .election import check_election_safety
from .health import EXPECTED, check_node_health
from .logs import check_log_matching, check_log_order
from .nodedata import NodeData, mark_damaged, read_cluster, read_node
from .ownership import check_shard_ownership
from .retention import check_cluster_retention

__all__ = ["EXPECTED", "NodeData", "check_catch_up", "check_durability", "check_election_safety", "check_log_matching",
           "check_config_agreement", "check_log_order", "check_node_health", "check_state_machine_safety",
           "check_replica_agreement", "check_whitebox", "replica_agreement_checker",
           "check_sharded_nodes", "read_cluster", "read_node", "sharded_whitebox_checkers", "whitebox_checkers",
           "NAMES", "SHARDED_NAMES"]


def check_whitebox(cluster: Mapping[str, NodeData], history: Iterable[Any], workload: str,
                   node_dirs: Mapping[str, str | Path] | None = None) -> dict[str, dict[str, Any]]:
    """Every white-box checker over one cluster's node data: {checker name: result}.

    ``node_dirs`` ({node: its ``nodes/<node>`` directory}) adds wal-retention, which reads
    the WAL's segment files themselves (NodeData keeps only their entries)."""
    history = list(history)
    mark_damaged(cluster, damaged_restarts(history))
    checks = {
        "election-safety": lambda: check_election_safety(cluster),
        "log-matching": lambda: check_log_matching(cluster),
        "state-machine-safety": lambda: check_state_machine_safety(cluster),
        "durability": lambda: check_durability(cluster, history, workload),
        "log-order": lambda: check_log_order(cluster),
        "node-health": lambda: check_node_health(cluster),
        "config-agreement": lambda: check_config_agreement(history),
        "catch-up": lambda: check_catch_up(cluster, history),
        "replica-agreement": lambda: check_replica_agreement(
            {name: [e for p in node.processes for e in p.events] for name, node in cluster.items()}),
    }
    if node_dirs is not None:
        checks["wal-retention"] = lambda: check_cluster_retention(cluster, node_dirs, history)
    out: dict[str, dict[str, Any]] = {}
    for name, check in checks.items():
        try:
            out[name] = check()
        except Exception as err:  # noqa: BLE001 - a checker crash is an unknown verdict, not a pass
            out[name] = {"valid": "unknown", "error": f"{type(err).__name__}: {err}"}
    return out


def damaged_restarts(history: Iterable[Any]) -> list[tuple[str, int]]:
    """(node, pid) of every restart the disk nemesis made after damaging that node's WAL."""
    from checkers.policy import corruption_faults

    out = []
    for _index, node, record in corruption_faults(history):
        try:
            out.append((node, int(record["pid"])))
        except (TypeError, ValueError):
            continue
    return out


def check_run_nodes(run_dir: str | Path, nodes: Iterable[str], history: Iterable[Any],
                    workload: str) -> dict[str, dict[str, Any]]:
    """Read ``<run_dir>/nodes/`` (the NODES named, plus any other node directory there) and check."""
    base = Path(run_dir) / "nodes"
    names = list(dict.fromkeys([*nodes, *(sorted(p.name for p in base.iterdir() if p.is_dir())
                                          if base.is_dir() else [])]))
    return check_whitebox(read_cluster(base, names), history, workload, {n: base / n for n in names})


NAMES = ("election-safety", "log-matching", "state-machine-safety", "durability", "log-order", "node-health",
         "config-agreement", "catch-up", "replica-agreement", "wal-retention")


#: the checkers a sharded run gets per Raft group (the rest judge the whole node or history)
PER_GROUP = ("election-safety", "log-matching", "state-machine-safety", "durability", "log-order", "wal-retention")
SHARDED_NAMES = (*PER_GROUP, "node-health", "replica-agreement", "shard-ownership")


def check_sharded_nodes(run_dir: str | Path, nodes: Iterable[str], history: Iterable[Any], workload: str,
                        shards: int) -> dict[str, dict[str, Any]]:
    """The white-box checkers over a sharded run: each of ``PER_GROUP`` on every Raft group
    (the metadata group 0 and each shard's group, read as its own cluster from every node's
    ``data/group-<id>`` and the events the node tagged with that group), durability with
    only the client ops whose key is in that shard; node-health and replica-agreement once
    over the whole node logs; shard-ownership over every shard group's log (its keys are
    its shard's). A checker's verdict merges its groups': the explanation names
    the first failing group, ``groups`` gives every group's verdict."""
    from checkers.results import merge_valid
    from checkers.shard_availability import shard_of_key, workload_key_name
    from ukehi.shardmap import group_of

    from .nodedata import read_log

    base = Path(run_dir) / "nodes"
    names = list(dict.fromkeys([*nodes, *(sorted(p.name for p in base.iterdir() if p.is_dir())
                                          if base.is_dir() else [])]))
    history = list(history)
    logs = {n: read_log(base / n / "node.log") for n in names}
    damaged = damaged_restarts(history)
    key_name = workload_key_name(workload)
    per_group: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in PER_GROUP}
    clusters: dict[int, dict[str, NodeData]] = {}
    for gid in [0, *(group_of(s) for s in range(shards))]:
        cluster = {n: read_node(n, base / n, group_id=gid, events=logs[n]) for n in names}
        cluster = {n: d for n, d in cluster.items() if d.processes or d.has_data}  # its members, ever
        if not cluster:
            continue
        mark_damaged(cluster, damaged)
        clusters[gid] = cluster
        ops = [op for op in history
               if not op.is_client or (gid > 0 and shard_of_key(op.key, shards, key_name) == gid - 1)]
        checks = {
            "election-safety": lambda: check_election_safety(cluster),
            "log-matching": lambda: check_log_matching(cluster),
            "state-machine-safety": lambda: check_state_machine_safety(cluster),
            "durability": lambda: check_durability(cluster, ops, workload),
            "log-order": lambda: check_log_order(cluster),
            "wal-retention": lambda: check_cluster_retention(cluster, {n: base / n for n in cluster}, history,
                                                             group=gid),
        }
        for name, check in checks.items():
            try:
                per_group[name][gid] = check()
            except Exception as err:  # noqa: BLE001 - a checker crash is an unknown verdict, not a pass
                per_group[name][gid] = {"valid": "unknown", "error": f"{type(err).__name__}: {err}"}
    out: dict[str, dict[str, Any]] = {}
    for name, results in per_group.items():
        merged: dict[str, Any] = {"valid": merge_valid(r.get("valid", "unknown") for r in results.values()),
                                  "groups": {str(g): r.get("valid", "unknown") for g, r in sorted(results.items())}}
        bad = [(g, r) for g, r in sorted(results.items()) if r.get("valid") is not True]
        if bad:
            g, r = next(((g, r) for g, r in bad if r.get("valid") is False), bad[0])
            what = "the metadata group 0" if g == 0 else f"group {g} (shard {g - 1})"
            merged["explanation"] = f"{what}: {r.get('explanation') or r.get('error') or r.get('valid')}"
            merged["failing_groups"] = {str(g): r for g, r in bad[:5]}
        else:
            merged["explanation"] = f"every one of {len(results)} Raft groups passed"
        out[name] = merged
    whole = {n: read_node(n, base / n, events=logs[n]) for n in names}
    for name, check in (("node-health", lambda: check_node_health(whole)),
                        ("replica-agreement", lambda: check_replica_agreement(logs)),
                        ("shard-ownership", lambda: check_shard_ownership(clusters, shards))):
        try:
            out[name] = check()
        except Exception as err:  # noqa: BLE001
            out[name] = {"valid": "unknown", "error": f"{type(err).__name__}: {err}"}
    return out


def _read_once(run_dir: str | Path, names: Iterable[str],
               check_all: Callable[[Iterable[Any]], dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """``{name: check(history, options)}`` for each of NAMES; ``check_all(history)`` (which
    reads the node files) runs once, on the first call, and every checker judges that one
    reading. A run without any ``nodes/`` directory (a history checked on its own) gets none."""
    if not (Path(run_dir) / "nodes").is_dir():
        return {}
    cache: dict[str, dict[str, Any]] = {}

    def make(name: str) -> Any:
        def check(history: Iterable[Any], options: Any = None) -> dict[str, Any]:
            if not cache:
                cache.update(check_all(history))
            return dict(cache[name])
        return check

    return {name: make(name) for name in names}


def sharded_whitebox_checkers(run_dir: str | Path, nodes: Iterable[str], workload: str,
                              shards: int) -> dict[str, Any]:
    """:func:`check_sharded_nodes` in the harness's shape (read once, on the first call)."""
    return _read_once(run_dir, SHARDED_NAMES,
                      lambda history: check_sharded_nodes(run_dir, nodes, history, workload, shards))


def whitebox_checkers(run_dir: str | Path, nodes: Iterable[str], workload: str) -> dict[str, Any]:
    """The white-box checkers in the harness's shape, ``{name: check(history, options)}``
    (the node files read once, on the first call)."""
    return _read_once(run_dir, NAMES, lambda history: check_run_nodes(run_dir, nodes, history, workload))
