"""Names a user can give on the command line, mapped to what builds them."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Mapping, Sequence

from nemeses import (clock, disk, figure_eight, lazyfs, membership, packet, partition, process, schedules,
                     snapshot_lag, stale_append, targeted)
from nemeses import rebalance
from nemeses.context import FaultContext
from nemeses.package import NemesisPackage, Shading, one_at_a_time
from nemeses.targets import TARGETS
from workloads import fencing, kv, register
from workloads import list_append, rw_register
from workloads.base import Workload

WORKLOADS: dict[str, Callable[[Sequence[str], int, Mapping[str, Any]], Workload]] = {
    "register": register.make,
    "kv": kv.make,
    "fencing": fencing.make,
    "list-append": list_append.make,
    "rw-register": rw_register.make,
}

NEMESES: dict[str, Callable[[FaultContext], NemesisPackage]] = {
    "partition": partition.package,
    "kill": process.kill_package,
    # every node at once (a whole-cluster crash): what loses writes no node made durable
    "kill-all": partial(process.kill_package, targets=("all",)),
    # a power cut: kill nodes and drop the writes they never fsynced (LazyFS data dirs)
    "lazyfs": lazyfs.package,
    # the whole cluster loses power at once: a write every replica acknowledged unsynced is gone
    "lazyfs-all": partial(lazyfs.package, targets=("all",)),
    "pause": process.pause_package,
    "clock": clock.package,
    "packet": packet.package,
    "membership": membership.package,
    # the lease-read hazard: the leader's clock runs slow while it is cut off from its peers
    "slow-leader": clock.slow_leader_package,
    # disk: random mid-log or crash-like WAL damage of one node or a minority; the
    # disk-<target> variants are the CorruptionPolicy matrix's fault: mid-log damage
    # (bit flips, zeroed or copied chunks) of the same fixed victims all run long.
    "disk": disk.package,
    "disk-one": partial(disk.package, targets=("one",), kinds=disk.MID_LOG_KINDS),
    "disk-minority": partial(disk.package, targets=("minority",), kinds=disk.MID_LOG_KINDS),
    "disk-majority": partial(disk.package, targets=("majority",), kinds=disk.MID_LOG_KINDS),
    # targeted (nemeses/targeted.py): a voter crashes right after granting a vote while a
    # second candidate of the same term is still campaigning (3 nodes)
    "double-vote": targeted.double_vote_package,
    # targeted (nemeses/figure_eight.py): the Raft paper's figure 8 on 3 nodes; an old-term
    # entry is committed by counting replicas only under stop-and-wait replication
    "figure-8": figure_eight.figure_eight_package,
    # targeted (nemeses/stale_append.py): a paused old leader's append reaches a follower that
    # restarted holding a newer leader's acknowledged entries above its saved commit index
    "stale-append": stale_append.stale_append_package,
}

# Targets as in Jepsen's combined nemesis (nemeses/targets.py), one name per family and
# target: `kill-primaries` kills the current leader(s), `pause-minority-third` pauses fewer
# than a third of the nodes, `partition-primaries` cuts the leader(s) off from the rest. The
# plain family names (`kill`, `pause`, `partition`, `clock`) draw from a leader-heavy mix.
TARGETED_VARIANTS: dict[str, tuple[str, ...]] = {
    "kill": ("one", "minority", "majority", "minority-third", "primaries"),  # kill-all is above
    "pause": TARGETS,
    "clock": TARGETS,
    "disk": ("minority-third", "primaries", "all"),  # disk-one/minority/majority are above
}
# A partition "target" is the side that is cut off; a majority cut off from a minority is
# the halves topology.
PARTITION_VARIANTS = {"one": ("one",), "minority": ("minority",), "majority": ("halves",),
                      "minority-third": ("minority-third",), "primaries": (partition.PRIMARIES,)}
for _target in TARGETED_VARIANTS["kill"]:
    NEMESES[f"kill-{_target}"] = partial(process.kill_package, targets=(_target,))
for _target in TARGETED_VARIANTS["pause"]:
    NEMESES[f"pause-{_target}"] = partial(process.pause_package, targets=(_target,))
for _target in TARGETED_VARIANTS["clock"]:
    NEMESES[f"clock-{_target}"] = partial(clock.package, targets=(_target,))
for _target in TARGETED_VARIANTS["disk"]:
    NEMESES[f"disk-{_target}"] = partial(disk.package, targets=(_target,), kinds=disk.MID_LOG_KINDS)
for _target, _topologies in PARTITION_VARIANTS.items():
    NEMESES[f"partition-{_target}"] = partial(partition.package, topologies=_topologies)
NEMESES["lazyfs-primaries"] = partial(lazyfs.package, targets=("primaries",))
# Fast schedules (nemeses/schedules.py): partition and heal every few hundred ms; depose the
# leader once per election timeout (isolated with a minority, or killed); crash points right
# after the leader acknowledges writes (SIGKILL, or a power cut of every node on LazyFS).
NEMESES["flapping"] = schedules.flapping_package
NEMESES["leader-churn"] = schedules.leader_churn_package
NEMESES["crash-after-ack"] = schedules.crash_after_ack_package
NEMESES["lazyfs-after-ack"] = schedules.power_cut_after_ack_package
# nemeses/snapshot_lag.py: a follower killed until the leader compacts past it, then restarted,
# so InstallSnapshot and snapshot restore run (with a low snapshot_threshold, NEMESIS_NODE_OPTIONS)
NEMESES["snapshot-lag"] = snapshot_lag.snapshot_lag_package
# nemeses/rebalance.py: move a random shard's replica to a node outside it (sharded runs only)
NEMESES["rebalance"] = rebalance.package

# How each family shows on plots; known without a live run, so `analyze` can re-render.
SHADING: dict[str, Shading] = {
    "partition": partition.SHADING,
    "kill": process.KILL_SHADING,
    "kill-all": process.KILL_SHADING,
    "lazyfs": lazyfs.SHADING,
    "lazyfs-all": lazyfs.SHADING,
    "pause": process.PAUSE_SHADING,
    "clock": clock.SHADING,
    "packet": packet.SHADING,
    "membership": membership.SHADING,
    "slow-leader": clock.SLOW_LEADER_SHADING,
    "disk": disk.SHADING,
    "disk-one": disk.SHADING,
    "disk-minority": disk.SHADING,
    "disk-majority": disk.SHADING,
    "double-vote": targeted.SHADING,
    "figure-8": figure_eight.SHADING,
    "stale-append": stale_append.SHADING,
    "flapping": schedules.FLAP_SHADING,
    "leader-churn": schedules.CHURN_SHADING,
    "crash-after-ack": schedules.CRASH_SHADING,
    "lazyfs-after-ack": schedules.POWER_SHADING,
    "snapshot-lag": snapshot_lag.SHADING,
    "rebalance": rebalance.SHADING,
}
_FAMILY_SHADING = {"kill": process.KILL_SHADING, "pause": process.PAUSE_SHADING, "clock": clock.SHADING,
                   "disk": disk.SHADING, "partition": partition.SHADING, "lazyfs": lazyfs.SHADING}
for _name in NEMESES:
    _family = _name.split("-", 1)[0]
    if _name not in SHADING and _family in _FAMILY_SHADING:
        SHADING[_name] = _FAMILY_SHADING[_family]


def _variants(family: str) -> frozenset[str]:
    return frozenset(n for n in NEMESES if n == family or n.startswith(family + "-"))


# Nemeses that perform the same ops: at most one of each group per run.
EXCLUSIVE_NEMESES = tuple(_variants(f) for f in ("disk", "kill", "lazyfs", "pause", "clock", "partition"))

# Faults that act in the kernel's network stack: they need namespaces (root).
NEEDS_NETWORK_FAULTS = frozenset({"packet", "slow-leader", "double-vote", "figure-8", "stale-append",
                                  "flapping", "leader-churn"}
                                 | _variants("partition"))
# Node options a schedule needs to reach what it targets, applied unless the user gave them.
NEMESIS_NODE_OPTIONS: dict[str, dict[str, Any]] = {"snapshot-lag": snapshot_lag.NODE_OPTIONS}
# Faults that move a node's clock: its processes must run under libfaketime.
NEEDS_FAKE_CLOCK = frozenset({"slow-leader"} | _variants("clock"))


def needs_fake_clock(nemeses: Sequence[str]) -> bool:
    """Whether a run with these nemeses must start its nodes under libfaketime."""
    return any(name in NEEDS_FAKE_CLOCK for name in nemeses)


def parse_nemeses(text: str) -> tuple[str, ...]:
    """``"partition,kill"`` -> ("partition", "kill"); ``"none"`` or "" -> ()."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if names in ((), ("none",)):
        return ()
    if "none" in names:
        raise ValueError("--nemesis none cannot be combined with other faults")
    unknown = [n for n in names if n not in NEMESES]
    if unknown:
        import difflib  # only on this error path

        close = {n: difflib.get_close_matches(n, NEMESES, n=1) for n in unknown}
        hints = [f"{n!r} -> {m[0]!r}" for n, m in close.items() if m]
        raise ValueError(f"unknown nemesis {', '.join(unknown)}"
                         + (f" (did you mean {', '.join(hints)}?)" if hints else "")
                         + f"; choose from {', '.join(NEMESES)} (comma-separated) or none")
    mixed = [n for n in names if n in MIXES]
    if mixed and len(names) > 1:
        raise ValueError(f"--nemesis {text!r}: {mixed[0]} is a mix of faults already; give it alone")
    if len(set(names)) != len(names):
        raise ValueError(f"--nemesis {text!r} names a fault twice")
    for group in EXCLUSIVE_NEMESES:
        clash = [n for n in names if n in group]
        if len(clash) > 1:
            raise ValueError(f"--nemesis {text!r}: {' and '.join(clash)} are variants of one fault; "
                             f"give only one of them")
    return names


#: What `run` does without --nemesis (README, "Default faults"): the mix that covers the
#: fault classes the planted bugs need, as far as this machine allows. Leader-heavy
#: partitions, kills and pauses (stale reads, early acknowledgements, lost leader tails),
#: WAL damage of one node or a minority (replay without CRC checks), the slow-clock leader
#: (lease reads without a drift bound) and, on LazyFS, power cuts of every node right after
#: the leader acknowledges writes, dropping what was never fsynced (acknowledging before
#: fsync). The cut waits for an acknowledgement: in a mix that often leaves the cluster
#: without a quorum, a cut at a random moment mostly finds nothing acknowledged to lose. The fencing workload gets pauses (a stalled lock
#: holder) with kills and partitions.
MIX_MEMBERS = ("partition", "kill", "pause", "disk-minority", "slow-leader")
DEFAULT_NEMESES_FENCING = ("partition", "kill", "pause")


def _mix(members: Sequence[str], name: str) -> Callable[[FaultContext], NemesisPackage]:
    def build(ctx: FaultContext) -> NemesisPackage:
        return one_at_a_time(name, [NEMESES[m](ctx) for m in members])
    return build


# The default mixes: the members take turns, one fault open at a time (nemeses/package.py
# one_at_a_time). `lazyfs-mix` adds the power cut after an acknowledgement (data dirs on
# LazyFS); `mix-loopback` is what a run without root can do (no partitions, no clock).
MIXES = {"mix": MIX_MEMBERS, "lazyfs-mix": MIX_MEMBERS + ("lazyfs-after-ack",),
         "mix-loopback": ("kill", "pause", "disk-minority")}
for _name, _members in MIXES.items():
    NEMESES[_name] = _mix(_members, _name)
    SHADING[_name] = Shading(_name, start=tuple(f for m in _members for f in SHADING[m].start),
                             stop=tuple(f for m in _members for f in SHADING[m].stop),
                             instant=tuple(f for m in _members for f in SHADING[m].instant))
NEEDS_NETWORK_FAULTS = NEEDS_NETWORK_FAULTS | {"mix", "lazyfs-mix"}
NEEDS_FAKE_CLOCK = NEEDS_FAKE_CLOCK | {"mix", "lazyfs-mix"}
#: seconds between fault ops when the default mix is used: six families in a 20 s run
DEFAULT_NEMESIS_INTERVAL = 1.0


def default_nemeses(workload: str, backend: str, *, root: bool | None = None,
                    fuse: bool | None = None) -> tuple[str, ...]:
    """The default fault mix for a workload on a backend, dropping what this machine cannot do:
    network faults need root (namespaces) or a container/host backend, LazyFS needs the local
    backend, root and FUSE."""
    import os

    if root is None:
        root = os.geteuid() == 0
    if workload == "fencing":
        names = DEFAULT_NEMESES_FENCING
        if backend == "local" and not root:
            names = tuple(n for n in names if n not in NEEDS_NETWORK_FAULTS)
        return names
    if backend == "local" and not root:
        return ("mix-loopback",)
    if backend == "ssh":  # hosts may lack libfaketime: the members without the clock fault
        return tuple(n for n in MIX_MEMBERS if n not in NEEDS_FAKE_CLOCK)
    if fuse is None:
        from .lazyfs.mount import fuse_support

        fuse = backend == "local" and fuse_support()[0]
    return ("lazyfs-mix",) if fuse and backend == "local" else ("mix",)


def damages_wal(nemeses: Sequence[str]) -> bool:
    """Whether a run's faults include WAL damage (the disk family, alone or in a mix): the
    corruption-policy checker then reads the node logs."""
    def disk(name: str) -> bool:
        return name == "disk" or name.startswith("disk-")

    return any(disk(n) or any(disk(m) for m in MIXES.get(n, ())) for n in nemeses)


def wal_policy_checker(nemeses: Sequence[str], logs: Mapping[str, Any], policy: str) -> Any:
    """The corruption-policy checker for a run with these faults (see :func:`damages_wal`).

    A disk nemesis named on its own that damaged nothing leaves the verdict unknown (the run
    was too short to test what was asked); a mix that happened not to draw WAL damage has
    nothing to judge and passes."""
    from checkers.policy import policy_checker

    inner = policy_checker(logs, policy)
    if not any(n in MIXES for n in nemeses):
        return inner

    def check(history: Sequence[Any], options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        result = inner(history, options)
        if result.get("valid") == "unknown" and not result.get("nodes"):
            return {**result, "valid": True, "explanation": "the mix damaged no WAL in this run: nothing to judge"}
        return result

    return check
