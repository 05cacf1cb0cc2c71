"""The local backend: every node a process on this machine.

As root (with ``ip netns``) each node lives in its own network namespace on a
private bridge with its own address, so partitions (iptables) and packet faults
(tc netem) act in the kernel on that node only. Without root, nodes share
127.0.0.1 with distinct ports and the network faults refuse with a clear reason.

    with LocalCluster(["n1", "n2", "n3"], results_dir=run_dir) as cluster:
        n1 = cluster["n1"]
        n1.start(["ukehi", "node", "--listen", f"{n1.address}:{n1.ports[0]}", ...],
                 log_path=n1.workdir / "node.log")
        n1.drop_from([cluster["n2"].address], "both")
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Literal, Mapping, Sequence

from harness.backends import netns as nsnet
from harness.backends.base import BackendError, Cluster, Direction, NeedsRootError, NodeHandle
from harness.backends.clock import FakeClock, FakeClockVerbs, faketime_env, find_libfaketime
from harness.backends.faults import (CHAINS_RESTORE, NODE_DEV, Netem, clear_netem_command, clear_shaping_commands,
                                     delayer_args, drop_commands, duplicate_commands, heal_commands,
                                     needs_delayer, netem_commands, queue_commands)
from harness.backends.process import NodeProcess, proc_stat
from harness.backends.runstate import ProcessRecord, RunState, default_state_dir, teardown
from harness.net import CommandError, in_netns, netns_support, run

Isolation = Literal["auto", "netns", "loopback"]
Shaper = Literal["auto", "netem", "nfqueue"]
DEFAULT_BASE_PORT = 7000


def new_run_id() -> str:
    """Six hex digits: short enough for interface names, random enough for parallel runs."""
    return secrets.token_hex(3)


class LocalNode(FakeClockVerbs, NodeHandle):
    """A node process on this machine, in its own namespace (netns set) or on loopback."""

    def __init__(self, cluster: "LocalCluster", name: str, address: str, ports: tuple[int, ...],
                 workdir: Path, netns: str | None) -> None:
        if not workdir.is_absolute():
            raise BackendError(f"node {name}: its directory {str(workdir)!r} must be an absolute path "
                               "(the node runs with it as cwd, so relative paths would resolve twice)")
        self.cluster = cluster
        self.name = name
        self.address = address
        self.ports = ports
        self.workdir = workdir
        self.netns = netns
        self.process = NodeProcess(name)
        self.clock = FakeClock(workdir / "faketime.rc")
        self._faked = False  # whether the current process runs under the fake clock
        self._delayer: subprocess.Popen[bytes] | None = None  # packet delayer (nfqueue shaper)

    def __repr__(self) -> str:
        where = f"netns {self.netns}" if self.netns else "loopback"
        return f"<LocalNode {self.name} {self.address} {where} pid={self.pid}>"

    # -- process -------------------------------------------------------------------
    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              log_path: str | Path | None = None) -> int:
        if not argv:
            raise BackendError(f"node {self.name}: start() needs a command line")
        full_env = dict(env or {})
        if self.cluster.faketime:
            fake = self.clock_env()
            if "LD_PRELOAD" in full_env:
                fake["LD_PRELOAD"] = f"{fake['LD_PRELOAD']}:{full_env['LD_PRELOAD']}"
            full_env.update(fake)
            self.clock.process_started(time.time())  # the file must exist before the node reads it
        log = Path(log_path) if log_path is not None else self.workdir / "node.log"
        if not log.is_absolute():
            log = self.workdir / log
        pid = self.process.start(in_netns(self.netns, argv), full_env, log, self.workdir)
        self._faked = self.cluster.faketime
        if self._faked:
            # libfaketime counts from its load in the node, which is just after the exec.
            self.clock.process_started(time.time())
        stat = proc_stat(pid)
        self.cluster._record_process(self.name, ProcessRecord(pid, stat[1] if stat else 0))
        return pid

    def stop(self, timeout: float = 5.0) -> int | None:
        return self.process.stop(timeout)

    def kill(self) -> int | None:
        return self.process.kill()

    def pause(self) -> None:
        self.process.pause()

    def resume(self) -> None:
        self.process.resume()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.is_running()

    def process_state(self) -> str | None:
        return self.process.process_state()

    # -- commands and files ---------------------------------------------------------
    def exec(self, argv: Sequence[str], timeout: float = 10.0) -> tuple[int, str, str]:
        try:
            proc = subprocess.run(in_netns(self.netns, argv), capture_output=True, text=True,
                                  timeout=timeout, cwd=self.workdir)
        except subprocess.TimeoutExpired as err:
            out = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
            return 124, out, f"timed out after {timeout:g} s"
        except FileNotFoundError as err:
            return 127, "", str(err)
        return proc.returncode, proc.stdout, proc.stderr

    def _path(self, path: str | Path) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.workdir / p

    def read_file(self, path: str | Path) -> bytes:
        return self._path(path).read_bytes()

    def write_file(self, path: str | Path, data: bytes) -> None:
        # In place (same inode), flushed to disk: a WAL corrupted here must stay corrupted
        # across the node's restart, exactly as written.
        p = self._path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    # -- network faults -------------------------------------------------------------
    def _ns_run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        if self.netns is None:
            raise NeedsRootError(
                f"network faults on node {self.name} need root and network namespaces "
                f"({self.cluster.loopback_reason}): run ukehi-jepsen as root with iproute2, "
                "or choose nemeses that do not touch the network (kill, pause, clock, disk)")
        return run(in_netns(self.netns, argv), check=check)

    def drop_from(self, peer_addresses: Sequence[str], direction: Direction = "in") -> None:
        cmds = drop_commands(peer_addresses, direction)
        for cmd in cmds:
            self._ns_run(cmd)

    def heal_network(self) -> None:
        for cmd in heal_commands():
            self._ns_run(cmd)

    def set_netem(self, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss_pct: float = 0.0,
                  duplicate_pct: float = 0.0, reorder_pct: float = 0.0,
                  to: Sequence[str] | None = None) -> None:
        netem = Netem(delay_ms, jitter_ms, loss_pct, duplicate_pct, reorder_pct)
        targets = list(to) if to is not None else None
        self.clear_netem()
        try:
            if self.cluster.shaper == "netem":
                for cmd in netem_commands(netem, targets):
                    self._ns_run(cmd)
            else:
                self._shape_with_nfqueue(netem, targets)
        except CommandError as err:
            self.clear_netem()  # never leave half a setup (an HTB root without its filters)
            if "qdisc kind is unknown" in err.stderr:
                raise BackendError(
                    f"tc netem is unavailable on node {self.name}: this kernel has no sch_netem "
                    "(CONFIG_NET_SCH_NETEM); run `modprobe sch_netem`, or open the cluster with "
                    "shaper='nfqueue' (the default 'auto' does so by itself)") from err
            raise
        except BaseException:
            self.clear_netem()
            raise

    def _shape_with_nfqueue(self, netem: Netem, targets: list[str] | None) -> None:
        if needs_delayer(netem):
            self._start_delayer(netem)
            for cmd in queue_commands(targets):
                self._ns_run(cmd)
        if netem.duplicate_pct:
            dests = targets if targets is not None else self.cluster.addresses_besides(self.name)
            for cmd in duplicate_commands(netem.duplicate_pct, dests):
                self._ns_run(cmd)

    def _start_delayer(self, netem: Netem) -> None:
        assert self.netns is not None
        log = open(self.workdir / "delayer.log", "ab")
        try:
            proc = subprocess.Popen(
                in_netns(self.netns, [sys.executable, "-m", "harness.backends.delayer", *delayer_args(netem)]),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        finally:
            log.close()
        self._delayer = proc
        stat = proc_stat(proc.pid)
        self.cluster._record_process(f"{self.name}.delayer", ProcessRecord(proc.pid, stat[1] if stat else 0))
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10.0)
        line = proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self._stop_delayer()
            tail = (self.workdir / "delayer.log").read_text(errors="replace")[-800:]
            raise BackendError(f"the packet delayer for node {self.name} did not start "
                               f"(needs nfnetlink_queue in the kernel): {tail or 'no output'}")

    def _stop_delayer(self) -> None:
        proc, self._delayer = self._delayer, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # it releases every held packet, then exits
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5.0)
        if proc.stdout is not None:
            proc.stdout.close()

    def clear_netem(self) -> None:
        if self.cluster.shaper == "netem":
            # Only delete a root qdisc we installed (handle 1:); a veth's default root is
            # noqueue, which tc refuses to delete.
            shown = self._ns_run(["tc", "qdisc", "show", "dev", NODE_DEV]).stdout
            # lines look like "qdisc netem 1: root refcnt 2 limit 1000 delay 100ms"
            if any(len(tok) > 3 and tok[2] == "1:" and tok[3] == "root"
                   for tok in (line.split() for line in shown.splitlines())):
                self._ns_run(clear_netem_command())
        else:
            # Rules first, so no new packet is queued; then the delayer releases what it holds.
            for cmd in clear_shaping_commands():
                self._ns_run(cmd)
            self._stop_delayer()

    # -- clock ----------------------------------------------------------------------
    def clock_env(self) -> dict[str, str]:
        return faketime_env(self.clock.path, self.cluster.libfaketime)



class LocalCluster(Cluster):
    """The nodes of one local run, and everything made for them; see the module doc."""

    def __init__(self, node_names: Sequence[str], *, results_dir: str | Path | None = None,
                 run_id: str | None = None, isolation: Isolation = "auto", faketime: bool = False,
                 base_port: int = DEFAULT_BASE_PORT, ports_per_node: int = 2,
                 state_dir: str | Path | None = None, shaper: Shaper = "auto") -> None:
        if not node_names:
            raise BackendError("a cluster needs at least one node name")
        if len(set(node_names)) != len(node_names):
            raise BackendError(f"node names must be distinct, got {list(node_names)}")
        self.node_names = list(node_names)
        if run_id is not None and not re.fullmatch(nsnet.RUN_ID_RE, run_id):
            # Interface names are built from it and must fit 15 bytes and cleanup's patterns.
            raise BackendError(f"run id must be 6 lowercase hex digits (e.g. {new_run_id()}), got {run_id!r}; "
                               "or leave it out to get a fresh one")
        self.run_id = run_id or new_run_id()
        # Absolute: every node runs with its own directory as cwd, so a relative path handed
        # to it (--data-dir, the log) would land under that directory instead.
        self.results_dir = Path(os.path.abspath(results_dir) if results_dir
                                else tempfile.mkdtemp(prefix=f"ukj-{self.run_id}-"))
        self.isolation = isolation
        self.faketime = faketime
        self.libfaketime = find_libfaketime() if faketime else None
        self.base_port = base_port
        self.ports_per_node = ports_per_node
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        # How set_netem shapes packets: "netem" (tc) or "nfqueue" (user-space delayer);
        # "auto" picks netem when the kernel has it. Decided in open().
        self.shaper: str = shaper
        self.nodes: dict[str, NodeHandle] = {}
        self.state: RunState | None = None
        self._state_lock = threading.Lock()
        self.loopback_reason = ""
        self._closed = False
        self._leave_running = False

    @property
    def network_faults_supported(self) -> bool:
        return self.state is not None and self.state.mode == "netns"

    @property
    def mode(self) -> str | None:
        return self.state.mode if self.state else None

    def _save(self) -> None:
        # Nemeses call node verbs from worker threads: one writer at a time.
        with self._state_lock:
            assert self.state is not None
            self.state.save(self.state_dir)

    def _record_process(self, node: str, rec: ProcessRecord) -> None:
        if self.state is not None:
            self.state.processes[node] = rec
            self._save()

    def open(self) -> "LocalCluster":
        if self.state is not None:
            return self
        if self._closed:
            raise BackendError("this cluster was closed; create a new LocalCluster for a new run")
        supported, reason = netns_support()
        if self.isolation == "netns" and not supported:
            raise NeedsRootError(f"cannot build namespaced nodes: {reason}")
        use_netns = supported and self.isolation != "loopback"
        self.loopback_reason = reason or "loopback isolation was chosen"
        self.state = RunState.for_this_process(self.run_id, "netns" if use_netns else "loopback")
        self._save()
        if use_netns:
            self._open_netns()
        else:
            self._open_loopback()
        return self

    def _workdir(self, name: str) -> Path:
        d = self.results_dir / "nodes" / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _open_netns(self) -> None:
        assert self.state is not None
        bridge = nsnet.bridge_name(self.run_id)
        with nsnet.subnet_lock(nsnet.LOCK_DIR):
            subnet = nsnet.choose_subnet(self.run_id)
            self.state.bridge, self.state.subnet = bridge, str(subnet)
            self._save()
            nsnet.create_bridge(bridge, subnet)
        for tool in nsnet.forward_rule_tools():
            self.state.forward_rules.append(tool)
            self._save()
            nsnet.add_forward_rule(tool, bridge, self.run_id)
        ports = tuple(self.base_port + k for k in range(self.ports_per_node))
        for i, name in enumerate(self.node_names):
            link = nsnet.NodeLink(node=name, index=i, netns=nsnet.netns_name(self.run_id, name),
                                  host_veth=nsnet.host_veth_name(self.run_id, i),
                                  peer_veth=nsnet.peer_veth_name(self.run_id, i),
                                  address=nsnet.node_address(subnet, i))
            self.state.netns.append(link.netns)
            self.state.links += [link.host_veth, link.peer_veth]
            self._save()
            nsnet.create_node_link(bridge, link, subnet.prefixlen)
            run(in_netns(link.netns, ["iptables-restore", "-w", "--noflush"]), input=CHAINS_RESTORE.encode())
            self.nodes[name] = LocalNode(self, name, link.address, ports, self._workdir(name), link.netns)

        if self.shaper == "auto":
            self.shaper = "netem" if self._kernel_has_netem(self.state.netns[0]) else "nfqueue"

    @staticmethod
    def _kernel_has_netem(netns: str) -> bool:
        # Probe on the namespace's own lo, which nothing uses yet.
        probe = run(in_netns(netns, ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]), check=False)
        if probe.returncode == 0:
            run(in_netns(netns, ["tc", "qdisc", "del", "dev", "lo", "root"]), check=False)
        return probe.returncode == 0

    def addresses_besides(self, name: str) -> list[str]:
        """Every address a node may send to: the other nodes and the bridge (the harness)."""
        others = [n.address for n in self.nodes.values() if n.name != name]
        if self.state is not None and self.state.subnet:
            others.append(str(ipaddress.ip_network(self.state.subnet).network_address + 1))
        return others

    def _open_loopback(self) -> None:
        # Reserve distinct free ports by binding them all at once, then release them for the nodes.
        socks: list[socket.socket] = []
        try:
            for _ in range(len(self.node_names) * self.ports_per_node):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind(("127.0.0.1", 0))
                socks.append(s)
            ports = [s.getsockname()[1] for s in socks]
        finally:
            for s in socks:
                s.close()
        k = self.ports_per_node
        for i, name in enumerate(self.node_names):
            self.nodes[name] = LocalNode(self, name, "127.0.0.1", tuple(ports[i * k:(i + 1) * k]),
                                         self._workdir(name), None)

    def leave_running(self) -> None:
        """Keep everything up after close() (``--leave-running``); `ukehi-jepsen cleanup`
        removes it once this process has exited, from the run's state file."""
        self._leave_running = True

    def _teardown(self) -> None:
        self._closed = True
        if self.state is None or self._leave_running:
            return
        problems: list[str] = []
        for node in self.nodes.values():
            try:
                node.kill()  # reaps our own children; teardown() below covers anything else
                if isinstance(node, LocalNode):
                    node._stop_delayer()
            except BackendError as err:
                problems.append(str(err))
        try:
            teardown(self.state, self.state_dir)
        except RuntimeError as err:
            problems.append(str(err))
        self.state = None
        if problems:
            raise BackendError("; ".join(problems))
