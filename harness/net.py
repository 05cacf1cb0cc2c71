"""Small helpers for running the kernel's network tools (ip, iptables, tc).

Every command goes through :func:`run`, which bounds it in time and turns a
failure into a :class:`CommandError` that shows the command and its stderr,
so a failed fault injection says exactly what the kernel refused.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from typing import Any, Sequence

# Every name this project creates in the kernel starts with this prefix, so
# cleanup can recognise its own leftovers and never touches anything else.
NAME_PREFIX = "ukj"
# Linux interface names are at most 15 bytes (IFNAMSIZ 16 including the NUL).
IFNAME_MAX = 15


class CommandError(RuntimeError):
    """A system command failed; carries the argv, exit code and stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"command failed (exit {returncode}): {' '.join(argv)}: {self.stderr or 'no output'}")


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 15.0,
        input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run a short system command with a time bound; raise CommandError on failure if check."""
    try:
        proc = subprocess.run(list(argv), input=input.decode() if input is not None else None,
                              capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise CommandError(argv, 127, f"{argv[0]} not found: install iproute2/iptables") from None
    except subprocess.TimeoutExpired:
        raise CommandError(argv, -1, f"timed out after {timeout:g} s") from None
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr)
    return proc


def is_root() -> bool:
    return os.geteuid() == 0


def netns_support() -> tuple[bool, str]:
    """Whether this process can build namespaced clusters; the reason when it cannot."""
    if not is_root():
        return False, "not running as root (network namespaces, iptables and tc need root)"
    for tool in ("ip", "iptables", "tc"):
        if shutil.which(tool) is None:
            return False, f"`{tool}` is not installed (apt-get install iproute2 iptables)"
    proc = run(["ip", "netns", "list"], check=False)
    if proc.returncode != 0:
        return False, f"`ip netns` is unavailable: {proc.stderr.strip()}"
    return True, ""


def ip_json(*args: str) -> list[dict[str, Any]]:
    """`ip -j ARGS` parsed; an empty list when ip prints nothing."""
    out = run(["ip", "-j", *args]).stdout.strip()
    return json.loads(out) if out else []


def host_ipv4_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host has an address in or a route to (for clash checks)."""
    nets: list[ipaddress.IPv4Network] = []
    for link in ip_json("addr"):
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                nets.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for route in ip_json("-4", "route"):
        dst = route.get("dst")
        if dst and dst != "default":
            nets.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    return nets


def link_names() -> list[str]:
    return [link["ifname"] for link in ip_json("link")]


def netns_names() -> list[str]:
    # `ip netns list` prints "name" or "name (id: N)"; -j is not supported by all versions.
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(netns: str) -> list[int]:
    """Pids of every process whose network namespace is NETNS (empty if it is gone)."""
    proc = run(["ip", "netns", "pids", netns], check=False)
    if proc.returncode != 0:
        return []
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    """ARGV run inside NETNS (`ip netns exec` execs, so the pid is the command's own)."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
