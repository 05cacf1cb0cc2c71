"""Start and stop real `ukehi node` processes on 127.0.0.1 for the node tests.

Every process started here is registered with its `LocalCluster`, and the pytest fixture
kills all of them at the end of the test, also when it fails. Ports are picked by binding
port 0 (then released just before the node binds it; on loopback the window is tiny).
Node logs go to files under the test's tmp dir, and a failing test prints their tails.

Every cluster talks mutual TLS, as a node does by default: a CA per cluster under
`<base>/certs/` (client.pem and admin.pem for the tests' clients, registered for the
cluster's addresses so a plain `UkehiClient(addresses)` uses them; each node's own
`<base>/certs/<id>/` is its --tls-dir). `tls=False` starts the nodes with --insecure.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ukehi import certs
from ukehi.client import UkehiClient
from ukehi.tls import ClientTLS, register_cluster_tls

FAST_ELECTION = "150:300"
FAST_HEARTBEAT = "50"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """N distinct free ports: every socket stays bound until all are picked (one at a time,
    a port closed at once could be handed out again: CI once gave two nodes one port)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class NodeProc:
    node_id: str
    port: int
    data_dir: str
    log_path: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        if self.alive:
            raise RuntimeError(f"node {self.node_id} is already running (pid {self.pid})")
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"--- start #{self.starts}: {' '.join(self.args)}\n".encode())
        log.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ukehi.cli", "node", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        log.close()

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def rss_kib(self) -> int:
        """Resident memory of the process (Linux /proc), for the leak checks."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("VmRSS not found")


class LocalCluster:
    """A set of node processes sharing one `--peers` list (the founding voters)."""

    def __init__(
        self,
        base_dir: str,
        size: int,
        *,
        election: str = FAST_ELECTION,
        heartbeat: str = FAST_HEARTBEAT,
        extra_args: Iterable[str] = (),
        env: dict[str, str] | None = None,
        tls: bool = True,
    ) -> None:
        self.base_dir = base_dir
        self.tls = tls
        self.certs_dir = os.path.join(base_dir, "certs")
        self.client_tls: ClientTLS | None = None
        if tls:
            certs.init_ca(self.certs_dir)
            certs.issue(self.certs_dir, "client", "client")
            certs.issue(self.certs_dir, "admin", "admin")
            self.client_tls = ClientTLS.from_dir(self.certs_dir)
        self.election = election
        self.heartbeat = heartbeat
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.nodes: dict[str, NodeProc] = {}
        founders = [f"n{i}" for i in range(1, size + 1)]
        ports = dict(zip(founders, free_ports(len(founders))))
        self.peers_arg = ",".join(f"{nid}=127.0.0.1:{ports[nid]}" for nid in founders)
        for nid in founders:
            self.nodes[nid] = self._make(nid, ports[nid], self.peers_arg, join=False)

    def node_tls_dir(self, nid: str) -> str:
        return os.path.join(self.certs_dir, nid)

    def _make(self, nid: str, port: int, peers: str, join: bool, extra: Iterable[str] = ()) -> NodeProc:
        data_dir = os.path.join(self.base_dir, nid, "data")
        os.makedirs(data_dir, exist_ok=True)
        if self.tls:
            certs.issue(self.certs_dir, nid, "node", out_dir=self.node_tls_dir(nid), file_stem="node", with_ca=True)
            security = ["--tls-dir", self.node_tls_dir(nid)]
        else:
            security = ["--insecure"]
        register_cluster_tls([f"127.0.0.1:{port}"], self.client_tls)
        args = [
            "--id", nid,
            "--listen", f"127.0.0.1:{port}",
            "--peers", peers,
            "--data-dir", data_dir,
            "--election-timeout", self.election,
            "--heartbeat", self.heartbeat,
            *security,
            *self.extra_args,
            *extra,
        ]
        if join:
            args.append("--join")
        return NodeProc(nid, port, data_dir, os.path.join(self.base_dir, f"{nid}.log"), args, dict(self.env))

    def add_spare(self, nid: str, extra: Iterable[str] = ()) -> NodeProc:
        """A new node (not a founder) started with --join; the cluster must add it."""
        port = free_port()
        peers = self.peers_arg + f",{nid}=127.0.0.1:{port}"
        node = self._make(nid, port, peers, join=True, extra=extra)
        self.nodes[nid] = node
        return node

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes.values()]

    def live_addresses(self) -> list[str]:
        return [n.address for n in self.nodes.values() if n.alive]

    def start(self, ids: Iterable[str] | None = None) -> None:
        for nid in ids if ids is not None else list(self.nodes):
            self.nodes[nid].start()

    def kill_all(self) -> None:
        for node in self.nodes.values():
            try:
                node.kill9()
            except Exception:
                pass

    def ssl_context(self, admin: bool = False) -> ssl.SSLContext | None:
        """What this cluster's test clients present (None with tls=False)."""
        return self.client_tls.context(admin) if self.client_tls is not None else None

    async def open_connection(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A raw stream to a node, over TLS with the client certificate when the cluster uses TLS."""
        ctx = self.ssl_context()
        return await asyncio.open_connection("127.0.0.1", port, **({"ssl": ctx} if ctx else {}))

    def connect(self, port: int) -> socket.socket:
        """A blocking raw socket to a node (TLS with the client certificate when the cluster uses TLS)."""
        s = socket.create_connection(("127.0.0.1", port))
        ctx = self.ssl_context()
        return ctx.wrap_socket(s) if ctx is not None else s

    def client(self, addresses: Iterable[str] | None = None, timeout: float = 3.0) -> UkehiClient:
        return UkehiClient(list(addresses or self.addresses), timeout=timeout, connect_timeout=0.5)

    def tails(self, lines: int = 40) -> str:
        out = []
        for node in self.nodes.values():
            text = node.log_text().splitlines()[-lines:]
            out.append(f"===== {node.node_id} ({node.address}) =====\n" + "\n".join(text))
        return "\n".join(out)

    # ------------------------------------------------------------------ async helpers
    async def statuses(self, ids: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """{node id: status dict} for the live nodes that answer."""
        targets = [self.nodes[i] for i in (ids if ids is not None else self.nodes) if self.nodes[i].alive]
        out: dict[str, dict[str, Any]] = {}
        async with self.client(timeout=1.0) as c:
            results = await asyncio.gather(*(c.status(n.address, timeout=1.0) for n in targets))
        for node, r in zip(targets, results):
            if r.ok and isinstance(r.value, dict):
                out[node.node_id] = r.value
        return out

    async def wait_for_leader(
        self, timeout: float = 15.0, among: Iterable[str] | None = None, exclude: Iterable[str] = ()
    ) -> str:
        """Wait until one live node reports itself leader and a majority of the asked nodes
        agree on it; returns its id."""
        ids = [i for i in (among if among is not None else self.nodes) if i not in set(exclude)]
        deadline = time.monotonic() + timeout
        last: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            last = await self.statuses(ids)
            leaders = [s["id"] for s in last.values() if s.get("role") == "leader"]
            if len(leaders) == 1:
                leader = leaders[0]
                agree = sum(1 for s in last.values() if s.get("leader") == leader)
                if agree * 2 > len(ids):
                    return leader
            await asyncio.sleep(0.1)
        raise AssertionError(f"no leader within {timeout}s; statuses: {last}\n{self.tails()}")

    async def wait_until(
        self, predicate: Callable[[dict[str, dict[str, Any]]], bool], timeout: float, what: str,
        ids: Iterable[str] | None = None,
    ) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        last: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            last = await self.statuses(ids)
            if predicate(last):
                return last
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; statuses: {last}\n{self.tails()}")

    async def wait_converged(self, ids: Iterable[str], timeout: float = 20.0) -> dict[str, dict[str, Any]]:
        """Wait until the given nodes all applied the same index (and the leader's commit)."""
        ids = list(ids)

        def same(st: dict[str, dict[str, Any]]) -> bool:
            if set(st) != set(ids):
                return False
            applied = {s["applied_index"] for s in st.values()}
            commit = max(s["commit_index"] for s in st.values())
            return len(applied) == 1 and applied.pop() >= commit

        return await self.wait_until(same, timeout, f"nodes {ids} to converge", ids)
