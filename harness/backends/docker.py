"""The Docker backend: every node a container, driven through the Docker SDK.

Layout for run id ``3fa9c1`` with nodes n1..n3:

- network ``ukj-3fa9c1``: a user-defined bridge with a fixed /24 from 10.214.0.0/16,
  chosen to clash with no Docker network and no host route; the gateway ``.1`` is
  where the harness reaches the nodes from; node i gets ``.10+i``;
- container ``ukj-3fa9c1-n1`` (hostname ``n1``) from ``ukehi-node:latest``: tini as
  PID 1 idling (``sleep infinity``), ``NET_ADMIN`` only (iptables, tc, nfqueue), the
  node's directory ``<results>/nodes/n1`` bind-mounted at the *same* path inside, so
  data dir, ``node.log``, pid file and the libfaketime file have one path for the
  harness and for the container;
- the node is started with ``docker exec`` (as the harness's own uid:gid, so its files
  on the bind mount are the user's) through ``ukehi-start`` (docker/), which records
  its pid and execs the node: SIGKILL/SIGSTOP hit that pid only, and the container,
  its address and its iptables rules survive a ``kill -9``; fault commands run as root;
- every object carries the labels ``ukehi-jepsen.run`` (and ``.kind``, ``.owner``, and
  ``.session`` when UKEHI_JEPSEN_SESSION is set), so teardown and ``ukehi-jepsen cleanup``
  find exactly what a run made.

Faults act inside the containers with the same command lines as the local backend
(:mod:`harness.backends.faults`): iptables chains for partitions; tc netem where the
kernel has sch_netem, else the nfqueue delayer (``python3 -m harness.backends.delayer``,
which ships in the image's wheel) plus iptables TEE for duplicates.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import os
import random
import re
import secrets
import socket
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.backends.base import BackendError, Cluster, Direction, NodeHandle
from harness.backends.clock import FakeClock, FakeClockVerbs, faketime_env
from harness.backends.faults import (CHAINS_RESTORE, NODE_DEV, Netem, clear_netem_command, clear_shaping_commands,
                                     delayer_args, drop_commands, duplicate_commands, heal_commands,
                                     needs_delayer, netem_commands, queue_commands)
from harness.backends.process import proc_stat

DEFAULT_IMAGE = "ukehi-node:latest"
IMAGE_ENV = "UKEHI_JEPSEN_IMAGE"  # overrides the image a run uses
SUPERNET = ipaddress.IPv4Network("10.214.0.0/16")
NODE_HOST_OFFSET = 10
MAX_NODES = 200
DEFAULT_BASE_PORT = 7000
PYTHON_IN_IMAGE = "python3"
START_SCRIPT = "/usr/local/bin/ukehi-start"

LABEL_RUN = "ukehi-jepsen.run"
LABEL_KIND = "ukehi-jepsen.kind"  # "run" (removed by cleanup once its harness is gone) or "cluster"
LABEL_OWNER = "ukehi-jepsen.owner"  # host:pid:start-ticks of the harness process that made it
LABEL_NODE = "ukehi-jepsen.node"
LABEL_CLUSTER = "ukehi-jepsen.cluster"  # name of a `cluster up` cluster
LABEL_WORKDIR = "ukehi-jepsen.workdir"
LABEL_PORTS = "ukehi-jepsen.ports"
# A CI job or a test session sets this to tell its objects apart from everyone else's on a
# shared engine: they all get the label, and `cleanup` then touches only objects that have it.
SESSION_ENV = "UKEHI_JEPSEN_SESSION"
LABEL_SESSION = "ukehi-jepsen.session"

_RUN_ID_RE = re.compile(r"^[0-9a-z]{4,12}$")
log = logging.getLogger("ukehi_jepsen.docker")


class DockerUnavailable(BackendError):
    """No Docker engine answers, or the SDK is missing."""


def connect(timeout: int = 60) -> Any:
    """A Docker SDK client for the engine; DockerUnavailable telling how to get one otherwise."""
    try:
        import docker
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise DockerUnavailable(f"the `docker` Python package is missing ({err}): pip install docker") from None
    try:
        client = docker.from_env(timeout=timeout, max_pool_size=32)
        client.ping()
    except Exception as err:  # noqa: BLE001 - DockerException, connection and permission errors
        raise DockerUnavailable(
            f"no Docker engine answers ({err}): start it (`systemctl start docker` or `dockerd &`), check "
            "DOCKER_HOST and your access to /var/run/docker.sock, or use --backend local") from None
    return client


def owner_label() -> str:
    stat = proc_stat(os.getpid())
    return f"{socket.gethostname()}:{os.getpid()}:{stat[1] if stat else 0}"


def owner_alive(label: str) -> bool:
    """Whether the harness process named by an owner label still runs (on this host)."""
    try:
        host, pid_s, ticks_s = label.rsplit(":", 2)
        pid, ticks = int(pid_s), int(ticks_s)
    except ValueError:
        return False
    if host != socket.gethostname():
        return True  # another machine's harness: not ours to judge
    stat = proc_stat(pid)
    return stat is not None and stat[1] == ticks


def container_name(run_id: str, node: str) -> str:
    return f"ukj-{run_id}-{re.sub(r'[^A-Za-z0-9_.-]', '_', node)}"


def network_name(run_id: str) -> str:
    return f"ukj-{run_id}"


def _exit_status(code: int | None) -> int | None:
    """Docker's exit code for a process killed by signal N is 128+N; Popen's convention is -N."""
    if code is not None and 128 < code < 128 + 65:
        return -(code - 128)
    return code


def _taken_networks(client: Any) -> list[ipaddress.IPv4Network]:
    nets: list[ipaddress.IPv4Network] = []
    for net in client.networks.list():
        for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
            try:
                sub = ipaddress.ip_network(cfg.get("Subnet", ""), strict=False)
            except ValueError:
                continue
            if isinstance(sub, ipaddress.IPv4Network):
                nets.append(sub)
    try:
        from harness.net import host_ipv4_networks

        nets += host_ipv4_networks()
    except Exception:  # noqa: BLE001 - no `ip` tool: Docker's own overlap check still applies
        pass
    return nets


def free_subnets(client: Any, seed: str) -> list[ipaddress.IPv4Network]:
    """The /24s of SUPERNET that no Docker network or host route overlaps, in a run-specific order."""
    taken = _taken_networks(client)
    candidates = [s for s in SUPERNET.subnets(new_prefix=24) if not any(s.overlaps(t) for t in taken)]
    random.Random(seed).shuffle(candidates)
    return candidates


def stale_image_warning(image: str, labels: Mapping[str, str]) -> str | None:
    """Why IMAGE does not carry this tree's node code, or None when it does (or cannot be told)."""
    from harness.image import SOURCE_LABEL, source_hash

    built_from = labels.get(SOURCE_LABEL)
    if not built_from:
        return None  # not built by `ukehi-jepsen image build`: nothing to compare
    try:
        here = source_hash()
    except OSError:
        return None
    if built_from == here:
        return None
    return (f"image {image} was built from other sources than this harness's (source hash {built_from}, "
            f"here {here}): the nodes run that older code; rebuild with `ukehi-jepsen image build --offline`")


class DockerNode(FakeClockVerbs, NodeHandle):
    """One node: a container, and the node process started in it with ``docker exec``."""

    #: the interpreter inside the image (harness/db.py asks the handle for it)
    python = PYTHON_IN_IMAGE

    def __init__(self, cluster: "DockerCluster", name: str, address: str, ports: tuple[int, ...],
                 workdir: Path, container_id: str) -> None:
        self.cluster = cluster
        self.name = name
        self.address = address
        self.ports = ports
        self.workdir = workdir
        self.container_id = container_id
        self.container_name = container_name(cluster.run_id, name)
        self.clock = FakeClock(workdir / "faketime.rc")
        self._faked = False
        self._exec_id: str | None = None  # the exec instance running the node
        self._pid: int | None = None  # the node's pid inside the container
        self._delayer_exec: str | None = None
        self._delayer_pid: int | None = None

    def __repr__(self) -> str:
        return f"<DockerNode {self.name} {self.address} {self.container_name} pid={self._pid}>"

    @property
    def api(self) -> Any:
        return self.cluster.client.api

    # -- exec helpers ----------------------------------------------------------------
    def _run(self, argv: Sequence[str], timeout: float = 15.0, env: Mapping[str, str] | None = None,
             workdir: str | None = None) -> tuple[int, str, str]:
        # coreutils `timeout` bounds the command inside the container: the SDK has no per-exec timeout.
        cmd = ["timeout", "-k", "2", f"{timeout:g}", *argv]
        try:
            ex = self.api.exec_create(self.container_id, cmd, stdout=True, stderr=True,
                                      environment=dict(env or {}), workdir=workdir)
            out, err = self.api.exec_start(ex["Id"], demux=True)
            code = self.api.exec_inspect(ex["Id"]).get("ExitCode")
        except Exception as exc:  # noqa: BLE001 - NotFound/APIError when the container is gone
            raise BackendError(f"node {self.name}: cannot run {' '.join(argv[:3])} in container "
                               f"{self.container_name}: {exc}; is the container still up? "
                               f"(`docker ps -a --filter name={self.container_name}`)") from None
        return (int(code) if code is not None else 255, (out or b"").decode(errors="replace"),
                (err or b"").decode(errors="replace"))

    def _check(self, argv: Sequence[str], timeout: float = 15.0) -> str:
        rc, out, err = self._run(argv, timeout)
        if rc != 0:
            raise BackendError(f"node {self.name}: `{' '.join(argv)}` failed in {self.container_name} "
                               f"(exit {rc}): {err.strip() or out.strip() or 'no output'}")
        return out

    def _spawn(self, argv: Sequence[str], env: Mapping[str, str], pidfile: Path, log: Path,
               user: str = "") -> tuple[str, int]:
        """Start ARGV detached through ukehi-start (as USER, default root); return (exec id, pid in the container)."""
        try:
            pidfile.unlink()
        except FileNotFoundError:
            pass
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            ex = self.api.exec_create(self.container_id, [START_SCRIPT, str(pidfile), str(log), *argv],
                                      environment=dict(env), workdir=str(self.workdir), user=user)
            self.api.exec_start(ex["Id"], detach=True)
        except Exception as exc:  # noqa: BLE001
            raise BackendError(f"node {self.name}: cannot start a process in {self.container_name}: {exc}") from None
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            try:
                text = pidfile.read_text().strip()
                if text:
                    return ex["Id"], int(text)
            except (FileNotFoundError, ValueError):
                pass
            info = self.api.exec_inspect(ex["Id"])
            if not info.get("Running") and info.get("ExitCode") is not None and not pidfile.exists():
                raise BackendError(f"node {self.name}: {START_SCRIPT} exited with {info.get('ExitCode')} before "
                                   f"starting {argv[0]}; is {self.cluster.image} built from this version? "
                                   "(`ukehi-jepsen image build --offline`)")
            time.sleep(0.02)
        raise BackendError(f"node {self.name}: no pid file {pidfile} 15 s after starting {argv[0]}")

    def _exec_info(self, exec_id: str | None) -> dict[str, Any] | None:
        if exec_id is None:
            return None
        try:
            return dict(self.api.exec_inspect(exec_id))
        except Exception:  # noqa: BLE001 - the container (and its execs) are gone
            return {"Running": False, "ExitCode": None}

    def _signal(self, pid: int, sig: str) -> None:
        rc, _, err = self._run(["kill", f"-{sig}", str(pid)], timeout=10.0)
        if rc != 0 and "No such process" not in err:
            raise BackendError(f"node {self.name}: kill -{sig} {pid} failed in {self.container_name}: {err.strip()}")

    def _wait_exit(self, exec_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self._exec_info(exec_id)
            if not info or not info.get("Running"):
                return True
            time.sleep(0.02)
        return False

    # -- process -------------------------------------------------------------------
    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              log_path: str | Path | None = None) -> int:
        if not argv:
            raise BackendError(f"node {self.name}: start() needs a command line")
        if self.is_running():
            raise BackendError(f"node {self.name} is already running (pid {self._pid}); stop or kill it first")
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
        self._exec_id, self._pid = self._spawn(argv, full_env, self.workdir / "node.pid", log,
                                               user=self.cluster.node_user)
        self._faked = self.cluster.faketime
        if self._faked:
            self.clock.process_started(time.time())
        return self._pid

    def _status(self) -> int | None:
        info = self._exec_info(self._exec_id)
        if info is None:
            return None
        return _exit_status(info.get("ExitCode")) if not info.get("Running") else None

    def stop(self, timeout: float = 5.0) -> int | None:
        if self._exec_id is None:
            return None
        if self.is_running():
            assert self._pid is not None
            self._signal(self._pid, "TERM")
            if not self._wait_exit(self._exec_id, timeout):
                return self.kill()
        return self._status()

    def kill(self) -> int | None:
        if self._exec_id is None:
            return None
        if self.is_running():
            assert self._pid is not None
            self._signal(self._pid, "KILL")
            if not self._wait_exit(self._exec_id, 10.0):
                raise BackendError(f"node {self.name}: pid {self._pid} still runs 10 s after SIGKILL "
                                   f"(in {self.container_name})")
        return self._status()

    def pause(self) -> None:
        if self.is_running():
            assert self._pid is not None
            self._signal(self._pid, "STOP")

    def resume(self) -> None:
        if self.is_running():
            assert self._pid is not None
            self._signal(self._pid, "CONT")

    @property
    def pid(self) -> int | None:
        return self._pid if self.is_running() else None

    def is_running(self) -> bool:
        info = self._exec_info(self._exec_id)
        return bool(info and info.get("Running"))

    def process_state(self) -> str | None:
        info = self._exec_info(self._exec_id)
        if not info or not info.get("Running"):
            return None
        state = _host_proc_state(int(info.get("Pid") or 0), self._pid)
        if state is not None:
            return state
        # The engine is elsewhere (or another pid namespace): ask inside the container.
        rc, out, _ = self._run(["cat", f"/proc/{self._pid}/stat"], timeout=5.0)
        if rc != 0 or ")" not in out:
            return None
        return out.rsplit(")", 1)[1].split()[0]

    # -- commands and files ---------------------------------------------------------
    def exec(self, argv: Sequence[str], timeout: float = 10.0) -> tuple[int, str, str]:
        return self._run(argv, timeout, workdir=str(self.workdir))

    def _path(self, path: str | Path) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.workdir / p

    def _on_mount(self, p: Path) -> bool:
        try:
            p.resolve().relative_to(self.workdir.resolve())
            return True
        except ValueError:
            return False

    def read_file(self, path: str | Path) -> bytes:
        p = self._path(path)
        if self._on_mount(p):
            return p.read_bytes()  # the bind mount: the same bytes the container sees
        try:
            stream, _ = self.api.get_archive(self.container_id, str(p))
        except Exception as exc:  # noqa: BLE001 - NotFound for a missing file
            raise FileNotFoundError(f"{p} on node {self.name} ({self.container_name}): {exc}") from None
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.getmembers()[0]
            f = tar.extractfile(member)
            if f is None:
                raise IsADirectoryError(f"{p} on node {self.name} is not a regular file")
            return f.read()

    def write_file(self, path: str | Path, data: bytes) -> None:
        p = self._path(path)
        if self._on_mount(p):
            # In place (same inode) and fsynced, as on the local backend: a corrupted WAL
            # stays corrupted across the node's restart, exactly as written.
            p.parent.mkdir(parents=True, exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(p.name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
        self._check(["mkdir", "-p", str(p.parent)])
        if not self.api.put_archive(self.container_id, str(p.parent), buf.getvalue()):
            raise BackendError(f"node {self.name}: could not write {p} in {self.container_name}")

    # -- network faults -------------------------------------------------------------
    def drop_from(self, peer_addresses: Sequence[str], direction: Direction = "in") -> None:
        for cmd in drop_commands(peer_addresses, direction):
            self._check(cmd)

    def heal_network(self) -> None:
        for cmd in heal_commands():
            self._check(cmd)

    def set_netem(self, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss_pct: float = 0.0,
                  duplicate_pct: float = 0.0, reorder_pct: float = 0.0,
                  to: Sequence[str] | None = None) -> None:
        netem = Netem(delay_ms, jitter_ms, loss_pct, duplicate_pct, reorder_pct)
        targets = list(to) if to is not None else None
        self.clear_netem()
        try:
            if self.cluster.shaper == "netem":
                for cmd in netem_commands(netem, targets):
                    self._check(cmd)
            else:
                if needs_delayer(netem):
                    self._start_delayer(netem)
                    for cmd in queue_commands(targets):
                        self._check(cmd)
                if netem.duplicate_pct:
                    dests = targets if targets is not None else self.cluster.addresses_besides(self.name)
                    for cmd in duplicate_commands(netem.duplicate_pct, dests):
                        self._check(cmd)
        except BaseException:
            self.clear_netem()  # never leave half a setup behind
            raise

    def _start_delayer(self, netem: Netem) -> None:
        log = self.workdir / "delayer.log"
        mark = log.stat().st_size if log.exists() else 0
        self._delayer_exec, self._delayer_pid = self._spawn(
            [self.python, "-m", "harness.backends.delayer", *delayer_args(netem)], {},
            self.workdir / "delayer.pid", log)
        deadline = time.monotonic() + 15.0
        text = ""
        while time.monotonic() < deadline:
            # The log is made by the shell inside the container: on a loaded machine the first
            # look can come before it exists (CI failed here with FileNotFoundError).
            if log.exists():
                with open(log, "rb") as f:
                    f.seek(mark)
                    text = f.read().decode(errors="replace")
            if "ready" in text.split():
                return
            if not self._exec_info(self._delayer_exec).get("Running"):  # type: ignore[union-attr]
                break
            time.sleep(0.05)
        self._stop_delayer()
        raise BackendError(f"the packet delayer for node {self.name} did not start in {self.container_name} "
                           f"(it needs nfnetlink_queue in the host kernel and NET_ADMIN): "
                           f"{text.strip()[-800:] or 'no output'}")

    def _stop_delayer(self) -> None:
        exec_id, pid = self._delayer_exec, self._delayer_pid
        self._delayer_exec = self._delayer_pid = None
        if exec_id is None or pid is None:
            return
        info = self._exec_info(exec_id)
        if info and info.get("Running"):
            self._signal(pid, "TERM")  # it releases every held packet, then exits
            if not self._wait_exit(exec_id, 5.0):
                self._signal(pid, "KILL")

    def clear_netem(self) -> None:
        if self.cluster.shaper == "netem":
            shown = self._check(["tc", "qdisc", "show", "dev", NODE_DEV])
            if any(len(tok) > 3 and tok[2] == "1:" and tok[3] == "root"
                   for tok in (line.split() for line in shown.splitlines())):
                self._check(clear_netem_command())
        else:
            for cmd in clear_shaping_commands():
                self._check(cmd)
            self._stop_delayer()

    # -- clock ----------------------------------------------------------------------
    def clock_env(self) -> dict[str, str]:
        lib = self.cluster.libfaketime_path()
        return faketime_env(self.clock.path, Path(lib))



def _host_proc_state(host_pid: int, container_pid: int | None) -> str | None:
    """The state letter from this host's /proc, if HOST_PID is the node (its innermost pid matches)."""
    if host_pid <= 0 or container_pid is None:
        return None
    try:
        status = Path(f"/proc/{host_pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            if int(line.split()[-1]) != container_pid:
                return None
            stat = proc_stat(host_pid)
            return stat[0] if stat else None
    return None


class DockerCluster(Cluster):
    """The containers and network of one run (or one `cluster up`); see the module doc."""

    def __init__(self, node_names: Sequence[str], *, results_dir: str | Path | None = None,
                 run_id: str | None = None, image: str | None = None, faketime: bool = False,
                 subnet: str | None = None, base_port: int = DEFAULT_BASE_PORT, ports_per_node: int = 2,
                 kind: str = "run", cluster_name: str | None = None, node_user: str | None = None,
                 client: Any = None) -> None:
        if not node_names:
            raise BackendError("a cluster needs at least one node name")
        if len(set(node_names)) != len(node_names):
            raise BackendError(f"node names must be distinct, got {list(node_names)}")
        if len(node_names) > MAX_NODES:
            raise BackendError(f"at most {MAX_NODES} nodes per Docker cluster, got {len(node_names)}")
        if run_id is not None and not _RUN_ID_RE.match(run_id):
            raise BackendError(f"run id {run_id!r}: use 4-12 lowercase letters or digits, or leave it out")
        self.node_names = list(node_names)
        self.run_id = run_id or secrets.token_hex(3)
        self.results_dir = (Path(results_dir) if results_dir
                            else Path(tempfile.mkdtemp(prefix=f"ukj-{self.run_id}-"))).resolve()
        self.image = image or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
        self.faketime = faketime
        self.requested_subnet = subnet
        self.base_port = base_port
        self.ports_per_node = ports_per_node
        self.kind = kind
        self.cluster_name = cluster_name
        # The node runs as the harness's own uid:gid, so the files it writes on the bind mount
        # (data, log) belong to the person running the harness, who may then corrupt, copy or
        # delete them without root. Fault commands (iptables, tc, kill, the delayer) stay root.
        self.node_user = node_user if node_user is not None else f"{os.getuid()}:{os.getgid()}"
        self.client = client
        self.shaper = "nfqueue"
        self.subnet: ipaddress.IPv4Network | None = None
        self.nodes: dict[str, NodeHandle] = {}
        self.loopback_reason = ""
        self._network_id: str | None = None
        self._container_ids: list[str] = []
        self._libfaketime: str | None = None
        self._opened = False
        self._preflighted = False
        self._closed = False
        self._leave_running = False
        self._lock = threading.Lock()

    @property
    def network_faults_supported(self) -> bool:
        return self._opened

    @property
    def network_name(self) -> str:
        return network_name(self.run_id)

    @property
    def gateway(self) -> str | None:
        return str(self.subnet.network_address + 1) if self.subnet else None

    def labels(self, **extra: str) -> dict[str, str]:
        labels = {LABEL_RUN: self.run_id, LABEL_KIND: self.kind, LABEL_OWNER: owner_label()}
        if os.environ.get(SESSION_ENV):
            labels[LABEL_SESSION] = os.environ[SESSION_ENV]
        if self.cluster_name:
            labels[LABEL_CLUSTER] = self.cluster_name
        labels.update(extra)
        return labels

    def addresses_besides(self, name: str) -> list[str]:
        """Every address a node may send to: the other nodes and the gateway (the harness)."""
        others = [n.address for n in self.nodes.values() if n.name != name]
        if self.gateway:
            others.append(self.gateway)
        return others

    # -- open ------------------------------------------------------------------------
    def preflight(self) -> "DockerCluster":
        """Check, before anything is created, that an engine answers and the image exists (once)."""
        if self._preflighted:
            return self
        if self.client is None:
            self.client = connect()
        self._check_image()
        self._preflighted = True
        return self

    def open(self) -> "DockerCluster":
        if self._opened:
            return self
        if self._closed:
            raise BackendError("this cluster was closed; create a new DockerCluster for a new run")
        self.preflight()
        self._create_network()
        ports = tuple(self.base_port + k for k in range(self.ports_per_node))
        for i, name in enumerate(self.node_names):
            assert self.subnet is not None
            address = str(self.subnet.network_address + NODE_HOST_OFFSET + i)
            workdir = self.results_dir / "nodes" / name
            workdir.mkdir(parents=True, exist_ok=True)
            cid = self._create_container(name, address, workdir, ports)
            self.nodes[name] = DockerNode(self, name, address, ports, workdir, cid)
        for name, node in self.nodes.items():
            assert isinstance(node, DockerNode)
            self._await_running(name, node)
            try:
                self._install_chains(node)
            except BackendError:
                if not self._container_running(node):
                    raise self._exited_error(name, node) from None
                raise
        first = next(iter(self.nodes.values()))
        self.shaper = "netem" if self._kernel_has_netem(first) else "nfqueue"  # type: ignore[arg-type]
        for name, node in self.nodes.items():
            # A container that exits right after starting may have passed the checks above.
            assert isinstance(node, DockerNode)
            if not self._container_running(node):
                raise self._exited_error(name, node)
        self._opened = True
        return self

    def _check_image(self) -> None:
        import docker.errors

        try:
            image = self.client.images.get(self.image)
        except docker.errors.ImageNotFound:
            raise BackendError(f"image {self.image} not found: build it with `ukehi-jepsen image build --offline` "
                               "(no registry needed) or `ukehi-jepsen image build` (with a registry); "
                               f"or name another image in {IMAGE_ENV}") from None
        stale = stale_image_warning(self.image, image.labels or {})
        if stale:
            # A warning, not an error: testing an older build on purpose is legitimate.
            log.warning("%s", stale)
            print(f"warning: {stale}", file=sys.stderr)

    def _create_network(self) -> None:
        import docker.errors

        if self.requested_subnet:
            try:
                wanted = ipaddress.ip_network(self.requested_subnet)
            except ValueError as err:
                raise BackendError(f"subnet {self.requested_subnet!r}: {err}; give e.g. 10.214.7.0/24") from None
            if not isinstance(wanted, ipaddress.IPv4Network) or wanted.num_addresses < len(self.node_names) + 16:
                raise BackendError(f"subnet {wanted}: give an IPv4 network with room for "
                                   f"{len(self.node_names)} nodes (a /24 is usual)")
            clashes = [t for t in _taken_networks(self.client) if wanted.overlaps(t)]
            if clashes:
                raise BackendError(f"address clash: subnet {wanted} overlaps {', '.join(map(str, clashes))} "
                                   "(a Docker network or a host route); pick another subnet, or leave it out "
                                   "to get a free one")
            candidates = [wanted]
        else:
            candidates = free_subnets(self.client, self.run_id)[:20]
            if not candidates:
                raise BackendError(f"address clash: every /24 of {SUPERNET} is taken by Docker networks or host "
                                   "routes; remove old networks (`ukehi-jepsen cleanup`) or give a subnet")
        last_error = ""
        for subnet in candidates:
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
                subnet=str(subnet), gateway=str(subnet.network_address + 1))])
            try:
                with self._lock:
                    net = self.client.networks.create(self.network_name, driver="bridge", ipam=ipam,
                                                      labels=self.labels(), check_duplicate=True)
            except docker.errors.APIError as err:
                last_error = str(err.explanation or err)
                if "overlap" in last_error.lower():
                    continue  # another run took it meanwhile: try the next one
                if "already exists" in last_error:
                    raise BackendError(f"a Docker network {self.network_name} already exists: run id "
                                       f"{self.run_id} is in use (`ukehi-jepsen cleanup` removes leftovers)") from None
                raise BackendError(f"cannot create Docker network {self.network_name}: {last_error}") from None
            self._network_id, self.subnet = net.id, subnet
            return
        raise BackendError(f"address clash: could not create network {self.network_name} on "
                           f"{', '.join(map(str, candidates[:3]))}...: {last_error}; give a free subnet")

    def _create_container(self, name: str, address: str, workdir: Path, ports: tuple[int, ...]) -> str:
        import docker.errors

        api = self.client.api
        cname = container_name(self.run_id, name)
        host_config = api.create_host_config(
            cap_add=["NET_ADMIN"],
            binds={str(workdir): {"bind": str(workdir), "mode": "rw"}},
            network_mode=self.network_name,
            init=False,  # the image's ENTRYPOINT is tini
        )
        networking = api.create_networking_config({
            self.network_name: api.create_endpoint_config(ipv4_address=address, aliases=[name])})
        try:
            created = api.create_container(
                self.image, name=cname, hostname=name, host_config=host_config, networking_config=networking,
                labels=self.labels(**{LABEL_NODE: name, LABEL_WORKDIR: str(workdir),
                                      LABEL_PORTS: ",".join(map(str, ports))}),
                detach=True)
        except docker.errors.APIError as err:
            text = str(err.explanation or err)
            if "Conflict" in text or "already in use" in text:
                raise BackendError(f"a container named {cname} already exists: run id {self.run_id} is in use "
                                   "(`ukehi-jepsen cleanup` removes leftovers of dead runs)") from None
            raise BackendError(f"cannot create container {cname} from {self.image}: {text}") from None
        cid = str(created["Id"])
        with self._lock:
            self._container_ids.append(cid)
        try:
            api.start(cid)
        except docker.errors.APIError as err:
            text = str(err.explanation or err)
            hint = " (address clash: another container holds that address)" if "Address already in use" in text \
                or "address" in text.lower() and "in use" in text.lower() else ""
            raise BackendError(f"cannot start container {cname} at {address}{hint}: {text}") from None
        return cid

    def _await_running(self, name: str, node: DockerNode) -> None:
        deadline = time.monotonic() + 20.0
        while True:
            state = self.client.api.inspect_container(node.container_id).get("State", {})
            if state.get("Running"):
                return
            if state.get("Status") in ("exited", "dead") or time.monotonic() > deadline:
                raise self._exited_error(name, node, state)
            time.sleep(0.1)

    def _exited_error(self, name: str, node: DockerNode, state: dict[str, Any] | None = None) -> BackendError:
        if state is None:
            state = self.client.api.inspect_container(node.container_id).get("State", {})
        tail = self.client.api.logs(node.container_id, tail=20).decode(errors="replace").strip()
        return BackendError(f"container {node.container_name} (node {name}) exited at start with status "
                            f"{state.get('ExitCode')}; last log lines:\n{tail or '(no output)'}\n"
                            f"Is {self.image} a ukehi-node image that idles? "
                            "(`ukehi-jepsen image build --offline`)")

    def _container_running(self, node: DockerNode) -> bool:
        return bool(self.client.api.inspect_container(node.container_id).get("State", {}).get("Running"))

    def _install_chains(self, node: DockerNode) -> None:
        rules = node.workdir / ".ukj-chains.rules"
        rules.write_text(CHAINS_RESTORE)
        rc, out, err = node._run(["iptables-restore", "-w", "--noflush", str(rules)], timeout=20.0)
        rules.unlink()
        if rc != 0:
            raise BackendError(f"iptables does not work in container {node.container_name} (exit {rc}): "
                               f"{(err or out).strip()}; the host kernel needs iptables (nf_tables or legacy) "
                               "support and the container NET_ADMIN")

    @staticmethod
    def _kernel_has_netem(node: DockerNode) -> bool:
        rc, _, _ = node._run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"], timeout=10.0)
        if rc == 0:
            node._run(["tc", "qdisc", "del", "dev", "lo", "root"], timeout=10.0)
        return rc == 0

    def libfaketime_path(self) -> str:
        if self._libfaketime is None:
            node = next(iter(self.nodes.values()))
            assert isinstance(node, DockerNode)
            rc, out, _ = node._run(["sh", "-c", "ls /usr/lib/*/faketime/libfaketime.so.1 "
                                    "/usr/lib/faketime/libfaketime.so.1 2>/dev/null | head -n1"])
            if rc != 0 or not out.strip():
                raise BackendError(f"libfaketime.so.1 is not in {self.image}; rebuild the image "
                                   "(`ukehi-jepsen image build --offline`) or drop the clock nemesis")
            self._libfaketime = out.strip()
        return self._libfaketime

    # -- close -------------------------------------------------------------------------
    def leave_running(self) -> None:
        """Keep the containers after close(); `ukehi-jepsen cleanup` (runs) or `cluster down` removes them."""
        self._leave_running = True

    def _teardown(self) -> None:
        self._closed = True
        if self._leave_running or self.client is None:
            return
        problems = remove_run(self.client, self.run_id, extra_containers=self._container_ids,
                              results_dir=self.results_dir)
        self._container_ids = []
        self._network_id = None
        self._opened = False
        if problems:
            raise BackendError("; ".join(problems))


def _save_container_log(client: Any, container: Any, results_dir: Path | None) -> None:
    node = container.labels.get(LABEL_NODE)
    workdir = container.labels.get(LABEL_WORKDIR)
    target = Path(workdir) if workdir else (results_dir / "nodes" / node if results_dir and node else None)
    if target is None or not target.is_dir():
        return
    try:
        text = container.logs(tail=500)
    except Exception:  # noqa: BLE001 - a container being removed has no logs to give
        return
    if text:
        (target / "container.log").write_bytes(text)


def remove_run(client: Any, run_id: str, *, extra_containers: Sequence[str] = (),
               results_dir: Path | None = None) -> list[str]:
    """Remove every container (with its volumes) and the network of run RUN_ID; return the problems.

    Goes by label *and* by the ids this process created, so a container created but
    not yet labelled in the listing is removed too; tolerates what is already gone.
    """
    import docker.errors

    problems: list[str] = []
    seen: set[str] = set()
    try:
        containers = client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
    except Exception as err:  # noqa: BLE001
        return [f"cannot list containers of run {run_id}: {err}"]
    for cid in extra_containers:
        if cid not in {c.id for c in containers}:
            try:
                containers.append(client.containers.get(cid))
            except docker.errors.NotFound:
                continue
    for c in containers:
        if c.id in seen:
            continue
        seen.add(c.id)
        _save_container_log(client, c, results_dir)
        try:
            c.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as err:
            if "already in progress" not in str(err):
                problems.append(f"cannot remove container {c.name}: {err.explanation or err}; "
                                f"remove it with `docker rm -f -v {c.name}`")
    nets = {n.id: n for n in client.networks.list(filters={"label": f"{LABEL_RUN}={run_id}"})}
    # The name filter matches substrings: keep only the exact name.
    nets.update({n.id: n for n in client.networks.list(names=[network_name(run_id)])
                 if n.name == network_name(run_id)})
    for net in nets.values():
        try:
            net.remove()
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as err:
            problems.append(f"cannot remove network {net.name}: {err.explanation or err}; "
                            f"remove it with `docker network rm {net.name}`")
    for vol in client.volumes.list(filters={"label": f"{LABEL_RUN}={run_id}"}):
        try:
            vol.remove(force=True)
        except docker.errors.APIError as err:
            problems.append(f"cannot remove volume {vol.name}: {err}")
    return problems


def cleanup_docker_leftovers(include_clusters: bool = False) -> list[str]:
    """Remove the containers and networks of Docker runs whose harness process is gone.

    `cluster up` clusters are kept (their harness exits on purpose) unless INCLUDE_CLUSTERS.
    With UKEHI_JEPSEN_SESSION set, only that session's objects are considered.
    Returns one line per removed run; [] when no Docker engine answers.
    """
    try:
        client = connect(timeout=30)
    except DockerUnavailable:
        return []
    session = os.environ.get(SESSION_ENV)
    flt = {"label": [LABEL_RUN, f"{LABEL_SESSION}={session}"] if session else [LABEL_RUN]}
    runs: dict[str, tuple[str, str]] = {}
    for obj in client.containers.list(all=True, filters=flt) + client.networks.list(filters=flt):
        labels = obj.attrs.get("Labels") or obj.attrs.get("Config", {}).get("Labels") or {}
        run_id = labels.get(LABEL_RUN)
        if run_id:
            runs.setdefault(run_id, (labels.get(LABEL_KIND, "run"), labels.get(LABEL_OWNER, "")))
    removed: list[str] = []
    problems: list[str] = []
    for run_id, (kind, owner) in sorted(runs.items()):
        if kind == "cluster" and not include_clusters:
            continue
        if kind != "cluster" and owner_alive(owner):
            continue
        problems += remove_run(client, run_id)
        removed.append(f"docker: removed the containers and network of {kind} {run_id}")
    if problems:
        raise RuntimeError("; ".join(problems))
    return removed
