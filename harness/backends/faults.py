"""Command lines for the kernel-level network faults, run inside a node's namespace.

Pure functions from a fault description to argv lists, so the exact rules can be
read and tested without root; the backend runs them with ``ip netns exec``.

- drops: iptables DROP rules in the node's own chains ``UKJ-IN`` (jumped to from
  INPUT) and ``UKJ-OUT`` (from OUTPUT), so healing flushes exactly those;
- shaping with tc netem on the node's ``eth0`` egress, where the kernel has sch_netem.
  For every destination it is the root qdisc; for chosen destinations an HTB root
  whose default class passes traffic untouched, a second class with the netem under
  it, and one u32 filter per destination address steering only those packets into
  it. (HTB rather than prio: minimal VM kernels may build HTB in but not prio.)
- shaping without sch_netem: the node's outgoing packets (all, or to chosen
  destinations) go through chain ``UKJ-SHAPE`` to nfqueue 0, where
  :mod:`harness.backends.delayer` holds, drops or reorders them; duplicates come from
  iptables TEE rules in the mangle chain ``UKJ-DUP`` (a clone sent to the destination).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Sequence

from harness.backends.base import DIRECTIONS

NODE_DEV = "eth0"
# Far above any veth's real throughput: the HTB classes must shape nothing themselves.
_HTB_RATE = "100gbit"


def _check_ipv4(address: str) -> str:
    try:
        return str(ipaddress.IPv4Address(address))
    except ValueError:
        raise ValueError(f"not an IPv4 address: {address!r} (give node addresses, e.g. node.address)") from None


# The node's own chains, created once per namespace by CHAINS_RESTORE (iptables-restore --noflush).
DROP_IN, DROP_OUT, SHAPE, DUP = "UKJ-IN", "UKJ-OUT", "UKJ-SHAPE", "UKJ-DUP"
CHAINS_RESTORE = f"""*filter
:{DROP_IN} - [0:0]
:{DROP_OUT} - [0:0]
:{SHAPE} - [0:0]
-A INPUT -j {DROP_IN}
-A OUTPUT -j {DROP_OUT}
-A OUTPUT -j {SHAPE}
COMMIT
*mangle
:{DUP} - [0:0]
-A POSTROUTING -j {DUP}
COMMIT
"""
NFQUEUE_NUM = 0


def drop_commands(peers: Sequence[str], direction: str) -> list[list[str]]:
    """iptables commands that drop traffic from (in), to (out) or both ways with PEERS."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of in/out/both, got {direction!r}")
    cmds: list[list[str]] = []
    for peer in peers:
        addr = _check_ipv4(peer)
        if direction in ("in", "both"):
            cmds.append(["iptables", "-w", "-A", DROP_IN, "-s", addr, "-j", "DROP"])
        if direction in ("out", "both"):
            cmds.append(["iptables", "-w", "-A", DROP_OUT, "-d", addr, "-j", "DROP"])
    return cmds


def heal_commands() -> list[list[str]]:
    return [["iptables", "-w", "-F", DROP_IN], ["iptables", "-w", "-F", DROP_OUT]]


@dataclass(frozen=True)
class Netem:
    """One netem setting; percentages are 0..100."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    duplicate_pct: float = 0.0
    reorder_pct: float = 0.0

    def __post_init__(self) -> None:
        for name in ("loss_pct", "duplicate_pct", "reorder_pct"):
            v = getattr(self, name)
            if not 0.0 <= v <= 100.0:
                raise ValueError(f"{name} must be between 0 and 100, got {v}")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError("delay_ms and jitter_ms must not be negative")
        if self.jitter_ms and not self.delay_ms:
            raise ValueError("jitter needs a delay: give delay_ms > 0 with jitter_ms")
        if self.reorder_pct and not self.delay_ms:
            # netem reorders by sending some packets at once while the rest wait out the delay.
            raise ValueError("reordering needs a delay: give delay_ms > 0 with reorder_pct")

    def args(self) -> list[str]:
        out = ["netem"]
        if self.delay_ms:
            out += ["delay", f"{self.delay_ms:g}ms"]
            if self.jitter_ms:
                out += [f"{self.jitter_ms:g}ms"]
        if self.loss_pct:
            out += ["loss", f"{self.loss_pct:g}%"]
        if self.duplicate_pct:
            out += ["duplicate", f"{self.duplicate_pct:g}%"]
        if self.reorder_pct:
            out += ["reorder", f"{self.reorder_pct:g}%"]
        return out


def netem_commands(netem: Netem, to: Sequence[str] | None = None, dev: str = NODE_DEV) -> list[list[str]]:
    """tc commands that shape DEV's egress (everything, or only packets to the addresses TO).

    Run after :func:`clear_netem_command` so they replace any earlier shaping.
    """
    if to is None:
        return [["tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", *netem.args()]]
    if not to:
        raise ValueError("to=[] shapes nothing: give addresses, or to=None for every destination")
    cmds = [["tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1"],
            ["tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", _HTB_RATE],
            ["tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:2", "htb", "rate", _HTB_RATE],
            ["tc", "qdisc", "add", "dev", dev, "parent", "1:2", "handle", "20:", *netem.args()]]
    for addr in to:
        cmds.append(["tc", "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1",
                     "u32", "match", "ip", "dst", f"{_check_ipv4(addr)}/32", "flowid", "1:2"])
    return cmds


def clear_netem_command(dev: str = NODE_DEV) -> list[str]:
    """Deleting the root qdisc removes netem, HTB classes and filters at once."""
    return ["tc", "qdisc", "del", "dev", dev, "root"]


def needs_delayer(netem: Netem) -> bool:
    return bool(netem.delay_ms or netem.loss_pct or netem.reorder_pct)


def delayer_args(netem: Netem) -> list[str]:
    return ["--queue", str(NFQUEUE_NUM), "--delay-ms", f"{netem.delay_ms:g}", "--jitter-ms", f"{netem.jitter_ms:g}",
            "--loss-pct", f"{netem.loss_pct:g}", "--reorder-pct", f"{netem.reorder_pct:g}"]


def queue_commands(to: Sequence[str] | None, dev: str = NODE_DEV) -> list[list[str]]:
    """Send DEV's outgoing packets (all, or those to TO) to the delayer's queue.

    --queue-bypass: should the delayer die, packets pass instead of vanishing.
    """
    target = ["-j", "NFQUEUE", "--queue-num", str(NFQUEUE_NUM), "--queue-bypass"]
    if to is None:
        return [["iptables", "-w", "-A", SHAPE, "-o", dev, *target]]
    if not to:
        raise ValueError("to=[] shapes nothing: give addresses, or to=None for every destination")
    return [["iptables", "-w", "-A", SHAPE, "-o", dev, "-d", _check_ipv4(a), *target] for a in to]


def duplicate_commands(pct: float, destinations: Sequence[str], dev: str = NODE_DEV) -> list[list[str]]:
    """Clone PCT percent of the packets to each destination (TEE sends the clone to it directly)."""
    prob = f"{pct / 100.0:.6f}"
    return [["iptables", "-w", "-t", "mangle", "-A", DUP, "-o", dev, "-d", _check_ipv4(a), "-m", "statistic",
             "--mode", "random", "--probability", prob, "-j", "TEE", "--gateway", _check_ipv4(a)]
            for a in destinations]


def clear_shaping_commands() -> list[list[str]]:
    return [["iptables", "-w", "-F", SHAPE], ["iptables", "-w", "-t", "mangle", "-F", DUP]]
