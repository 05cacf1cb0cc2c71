"""Command lines for the kernel-level network faults, run inside a node's namespace.

Pure functions from a fault description to argv lists, so the exact rules can be
read and tested without root; the backend runs them with ``ip netns exec``.

- drops: iptables DROP rules in the node's own INPUT/OUTPUT chains (the namespace
  is the run's own, so healing may flush those chains entirely);
- shaping: tc netem on the node's ``eth0`` egress. For every destination it is the
  root qdisc; for chosen destinations an HTB root whose default class passes traffic
  untouched, a second class with the netem under it, and one u32 filter per
  destination address steering only those packets into it. (HTB rather than prio:
  some kernels, e.g. minimal VM kernels, build HTB in but not prio.)
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


def drop_commands(peers: Sequence[str], direction: str) -> list[list[str]]:
    """iptables commands that drop traffic from (in), to (out) or both ways with PEERS."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of in/out/both, got {direction!r}")
    cmds: list[list[str]] = []
    for peer in peers:
        addr = _check_ipv4(peer)
        if direction in ("in", "both"):
            cmds.append(["iptables", "-w", "-A", "INPUT", "-s", addr, "-j", "DROP"])
        if direction in ("out", "both"):
            cmds.append(["iptables", "-w", "-A", "OUTPUT", "-d", addr, "-j", "DROP"])
    return cmds


def heal_commands() -> list[list[str]]:
    return [["iptables", "-w", "-F", "INPUT"], ["iptables", "-w", "-F", "OUTPUT"]]


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
