"""Fixtures for the backend tests: stand-in servers and probes run inside node namespaces."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from harness.backends.local import LocalNode
from harness.net import netns_support

STANDIN = Path(__file__).with_name("standin.py")
PY = sys.executable

_ok, _why = netns_support()
needs_netns = pytest.mark.skipif(not _ok, reason=f"needs root and `ip netns`: {_why}")


def serve(node: LocalNode) -> int:
    """Start the stand-in server as NODE's process and wait (bounded) until it answers."""
    pid = node.start([PY, str(STANDIN), "serve", node.address, str(node.ports[0])],
                     log_path=node.workdir / "node.log")
    wait_serving(node)
    return pid


def wait_serving(node: LocalNode, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe_from_host(node, 0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"stand-in on {node.name} did not answer within {timeout} s; "
                         f"log: {(node.workdir / 'node.log').read_text(errors='replace')[-500:]}")


def probe_from_host(node: LocalNode, timeout: float) -> bool:
    import socket
    try:
        with socket.create_connection((node.address, node.ports[0]), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"ping\n")
            return s.makefile("rb").readline() == b"ping\n"
    except OSError:
        return False


def can_talk(src: LocalNode, dst: LocalNode, timeout: float = 1.0) -> bool:
    """One TCP round trip from SRC's namespace to DST's stand-in."""
    rc, _, _ = src.exec([PY, str(STANDIN), "probe", dst.address, str(dst.ports[0]), str(timeout)],
                        timeout=timeout + 10)
    return rc == 0


def rtt_ms(src: LocalNode, dst: LocalNode, n: int = 5) -> float:
    rc, out, err = src.exec([PY, str(STANDIN), "rtt", dst.address, str(dst.ports[0]), str(n)], timeout=20)
    assert rc == 0, err
    return float(out)


def udp_seen(src: LocalNode, dst: LocalNode, payload: str, wait: float = 0.5) -> bool:
    """Send PAYLOAD as UDP from SRC to DST; whether DST's stand-in logged it."""
    rc, _, err = src.exec([PY, str(STANDIN), "udp", dst.address, str(dst.ports[0]), payload])
    assert rc == 0, err
    deadline = time.monotonic() + wait
    log = dst.workdir / "node.log"
    while time.monotonic() < deadline:
        if f"udp {payload}" in log.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def udp_count(src: LocalNode, dst: LocalNode, payload: str, wait: float = 0.5) -> int:
    """Send PAYLOAD three times as UDP from SRC to DST; how many times DST's stand-in logged it."""
    rc, _, err = src.exec([PY, str(STANDIN), "udp", dst.address, str(dst.ports[0]), payload])
    assert rc == 0, err
    time.sleep(wait)
    return sum(1 for line in (dst.workdir / "node.log").read_text(errors="replace").splitlines()
               if line == f"udp {payload}")
