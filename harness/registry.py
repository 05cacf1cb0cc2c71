"""Names a user can give on the command line, mapped to what builds them."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Mapping, Sequence

from nemeses import (clock, disk, figure_eight, lazyfs, membership, packet, partition, process, stale_append,
                     targeted)
from nemeses.context import FaultContext
from nemeses.package import NemesisPackage, Shading
from workloads import fencing, kv, register
from workloads.base import Workload

WORKLOADS: dict[str, Callable[[Sequence[str], int, Mapping[str, Any]], Workload]] = {
    "register": register.make,
    "kv": kv.make,
    "fencing": fencing.make,
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
}

# Nemeses that perform the same ops: at most one of each group per run.
EXCLUSIVE_NEMESES = (frozenset({"disk", "disk-one", "disk-minority", "disk-majority"}),
                     frozenset({"kill", "kill-all"}), frozenset({"lazyfs", "lazyfs-all"}))

# Faults that act in the kernel's network stack: they need namespaces (root).
NEEDS_NETWORK_FAULTS = frozenset({"partition", "packet", "slow-leader", "double-vote",
                                  "figure-8", "stale-append"})
# Faults that move a node's clock: its processes must run under libfaketime.
NEEDS_FAKE_CLOCK = frozenset({"clock", "slow-leader"})


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
        raise ValueError(f"unknown nemesis {', '.join(unknown)}; choose from "
                         f"{', '.join(NEMESES)} (comma-separated) or none")
    if len(set(names)) != len(names):
        raise ValueError(f"--nemesis {text!r} names a fault twice")
    for group in EXCLUSIVE_NEMESES:
        clash = [n for n in names if n in group]
        if len(clash) > 1:
            raise ValueError(f"--nemesis {text!r}: {' and '.join(clash)} are variants of one fault; "
                             f"give only one of them")
    return names
