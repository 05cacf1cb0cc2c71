"""Build and remove the private network of a namespaced local cluster.

Layout for run id ``3fa9c1`` (names fit the 15-byte interface name limit):

- bridge ``ukjb3fa9c1`` holding ``10.213.X.1/24`` (the harness reaches nodes through it)
- per node i: namespace ``ukj-3fa9c1-<node>``, veth ``ukjh3fa9c1<i>`` on the bridge and
  its peer, created as ``ukjp3fa9c1<i>`` and renamed ``eth0`` inside the namespace,
  with address ``10.213.X.(10+i)/24``
- one ``iptables FORWARD -i br -o br -j ACCEPT`` rule tagged with the comment ``ukj-3fa9c1``,
  because br_netfilter sends bridged frames through FORWARD, whose policy may be
  DROP (Docker sets it so); the rule lets only this bridge's own traffic through.

Every function here either creates one thing or removes one thing and tolerates
its absence, so teardown can run after a partial setup.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from harness.backends.base import BackendError
from harness.net import CommandError, host_ipv4_networks, run

SUPERNET = ipaddress.ip_network("10.213.0.0/16")
NODE_HOST_OFFSET = 10  # node i gets .10+i; .1 is the bridge
MAX_NODES = 200
RUN_ID_RE = r"[0-9a-f]{6}"
# One lock for every run on the machine, whatever state dir a run uses.
LOCK_DIR = Path("/run/ukehi-jepsen")


def bridge_name(run_id: str) -> str:
    return f"ukjb{run_id}"


def host_veth_name(run_id: str, index: int) -> str:
    return f"ukjh{run_id}{index}"


def peer_veth_name(run_id: str, index: int) -> str:
    return f"ukjp{run_id}{index}"


def netns_name(run_id: str, node: str) -> str:
    # Namespace names become file names under /run/netns: keep them tame.
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", node)
    return f"ukj-{run_id}-{safe}"


def rule_comment(run_id: str) -> str:
    return f"ukj-{run_id}"


def forward_rule(bridge: str, run_id: str) -> list[str]:
    """The FORWARD rule spec (without -A/-I/-D) that admits this bridge's own traffic."""
    return ["FORWARD", "-i", bridge, "-o", bridge, "-m", "comment", "--comment",
            rule_comment(run_id), "-j", "ACCEPT"]


# Names this module creates, for recognising leftovers of earlier runs.
OWN_LINK_RE = re.compile(rf"^ukj[bhp]({RUN_ID_RE})\d*$")
OWN_NETNS_RE = re.compile(rf"^ukj-({RUN_ID_RE})-")
OWN_COMMENT_RE = re.compile(rf"ukj-({RUN_ID_RE})\b")


@dataclass(frozen=True)
class NodeLink:
    node: str
    index: int
    netns: str
    host_veth: str
    peer_veth: str
    address: str


@contextlib.contextmanager
def subnet_lock(lock_dir: Path) -> Iterator[None]:
    """Serialise subnet choice across concurrent runs on this machine (held until the bridge has its address)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / "subnet.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def choose_subnet(run_id: str, taken: list[ipaddress.IPv4Network] | None = None) -> ipaddress.IPv4Network:
    """A /24 from 10.213.0.0/16 that overlaps no host address or route (call under subnet_lock)."""
    taken = host_ipv4_networks() if taken is None else taken
    candidates = list(SUPERNET.subnets(new_prefix=24))
    # Start at a run-dependent place so parallel runs rarely even try the same /24.
    start = random.Random(run_id).randrange(len(candidates))
    for i in range(len(candidates)):
        net = candidates[(start + i) % len(candidates)]
        if not any(net.overlaps(t) for t in taken):
            return net
    raise BackendError(f"no free /24 left in {SUPERNET}: remove leftovers with `ukehi-jepsen cleanup`")


def node_address(subnet: ipaddress.IPv4Network, index: int) -> str:
    if index >= MAX_NODES:
        raise BackendError(f"at most {MAX_NODES} nodes fit a local cluster's /24")
    return str(subnet.network_address + NODE_HOST_OFFSET + index)


def create_bridge(bridge: str, subnet: ipaddress.IPv4Network) -> None:
    run(["ip", "link", "add", bridge, "type", "bridge"])
    run(["ip", "addr", "add", f"{subnet.network_address + 1}/{subnet.prefixlen}", "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])


def _variant(tool: str) -> str | None:
    """'nft' or 'legacy' for an iptables binary, None if it is missing or broken."""
    try:
        out = run([tool, "--version"]).stdout
    except CommandError:
        return None
    return "nft" if "nf_tables" in out else "legacy"


def _forward_blocks(tool: str) -> bool:
    """Whether TOOL's FORWARD chain could drop bridged traffic (policy not ACCEPT, or any rules)."""
    try:
        lines = run([tool, "-w", "-S", "FORWARD"]).stdout.splitlines()
    except CommandError:
        return False
    return any(l.startswith("-P FORWARD") and not l.endswith("ACCEPT") for l in lines) or \
        any(l.startswith("-A FORWARD") for l in lines)


def forward_rule_tools() -> list[str]:
    """The iptables binaries that need this bridge's ACCEPT rule.

    br_netfilter passes bridged frames through every loaded FORWARD chain, the
    nft one and the legacy one alike (Docker may use either). The default
    ``iptables`` always gets the rule; the other variant only when its FORWARD
    chain could drop (so a host that never used it is left alone).
    """
    default = _variant("iptables")
    tools = ["iptables"]
    other = {"nft": "iptables-legacy", "legacy": "iptables-nft"}.get(default or "")
    if other and _variant(other) and _forward_blocks(other):
        tools.append(other)
    return tools


def add_forward_rule(tool: str, bridge: str, run_id: str) -> None:
    run([tool, "-w", "-I", *forward_rule(bridge, run_id)])


def create_node_link(bridge: str, link: NodeLink, prefixlen: int) -> None:
    run(["ip", "netns", "add", link.netns])
    run(["ip", "link", "add", link.host_veth, "type", "veth", "peer", "name", link.peer_veth])
    run(["ip", "link", "set", link.host_veth, "master", bridge, "up"])
    run(["ip", "link", "set", link.peer_veth, "netns", link.netns])
    ns = ["ip", "-n", link.netns]
    run([*ns, "link", "set", link.peer_veth, "name", "eth0"])
    run([*ns, "addr", "add", f"{link.address}/{prefixlen}", "dev", "eth0"])
    run([*ns, "link", "set", "eth0", "up"])
    run([*ns, "link", "set", "lo", "up"])


def delete_netns(netns: str) -> bool:
    """Remove a namespace (its processes must be gone); False if it did not exist."""
    return run(["ip", "netns", "delete", netns], check=False).returncode == 0


def delete_link(name: str) -> bool:
    return run(["ip", "link", "delete", name], check=False).returncode == 0


def delete_forward_rule(tool: str, bridge: str, run_id: str) -> int:
    """Delete every copy of this run's FORWARD rule from TOOL's table; return how many were deleted."""
    deleted = 0
    for _ in range(16):  # bounded: a rule is inserted once per open
        if run([tool, "-w", "-D", *forward_rule(bridge, run_id)], check=False).returncode != 0:
            break
        deleted += 1
    return deleted


def forward_rule_bridges() -> dict[str, tuple[str, list[str]]]:
    """run id -> (bridge, iptables binaries holding its rule) for every ukj FORWARD rule."""
    found: dict[str, tuple[str, list[str]]] = {}
    for tool in ("iptables-nft", "iptables-legacy"):
        if _variant(tool) is None:
            continue
        try:
            out = run([tool, "-w", "-S", "FORWARD"]).stdout
        except CommandError:
            continue
        for line in out.splitlines():
            m = OWN_COMMENT_RE.search(line)
            parts = line.split()
            if m and "-i" in parts:
                bridge, tools = found.setdefault(m.group(1), (parts[parts.index("-i") + 1], []))
                if tool not in tools:
                    tools.append(tool)
    return found
