"""Test fixture: real sshd "hosts", one per network namespace on a private bridge.

    with sshd_hosts(3, tmp_path) as hosts:
        hosts.addresses        # ["10.213.X.10", ...], sshd on port 22 of each
        hosts.client_key       # private key that every host accepts for root
        hosts.known_hosts()    # a known_hosts file with every host's key

Each host is ``/usr/sbin/sshd -D -f <config made here>`` run in its own namespace
(``ukj-<run id>-h<i>``, made with harness.backends.netns like the local backend's,
so ``ukehi-jepsen cleanup --orphans`` recognises leftovers), with a host key and
a client key generated for the test. Namespaces share this machine's file
system, so the "hosts" see the same /usr and /tmp: the backend under test must
keep each node in its own directory, which it does.

Everything is removed on exit, also on failure: the processes in the namespaces,
the namespaces, the veths, the bridge and its FORWARD rule.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from harness.backends import netns as nsnet
from harness.net import run

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without its privilege separation directory


def sshd_missing_reason() -> str | None:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces for the sshd hosts)"
    if not Path(SSHD).is_file():
        return f"{SSHD} is missing: install openssh-server (scripts/setup does, as root)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is missing: install openssh-client"
    if shutil.which("ip") is None or shutil.which("iptables") is None:
        return "needs iproute2 and iptables"
    return None


@dataclass
class SshdHosts:
    run_id: str
    dir: Path
    addresses: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    host_pubkeys: list[str] = field(default_factory=list)
    bridge_address: str = ""
    port: int = 22

    @property
    def client_key(self) -> Path:
        return self.dir / "client_key"

    def known_hosts(self, name: str = "known_hosts") -> Path:
        """A known_hosts file naming every host's real key."""
        path = self.dir / name
        path.write_text("".join(f"{a} {k}\n" for a, k in zip(self.addresses, self.host_pubkeys)))
        return path

    def processes_in_namespaces(self) -> list[int]:
        pids: list[int] = []
        for ns in self.netns:
            out = run(["ip", "netns", "pids", ns], check=False).stdout
            pids += [int(p) for p in out.split()]
        return pids


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ukj-test", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    kind, b64 = Path(f"{path}.pub").read_text().split()[:2]
    return f"{kind} {b64}"


def _sshd_config(hosts: SshdHosts, index: int, address: str, host_key: Path) -> Path:
    d = hosts.dir / f"h{index}"
    cfg = d / "sshd_config"
    cfg.write_text("\n".join([
        f"ListenAddress {address}",
        f"Port {hosts.port}",
        f"HostKey {host_key}",
        f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {hosts.dir / 'authorized_keys'}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",  # the files live in a pytest tmp dir
        "MaxSessions 64",  # the backend opens a channel per command, from several threads
        "MaxStartups 64",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
        "",
    ]))
    return cfg


def _wait_listening(address: str, port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd on {address} exited ({proc.returncode}): {log.read_text()[-1000:]}")
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1.0):
            return
        time.sleep(0.1)
    raise RuntimeError(f"sshd on {address}:{port} did not listen within {timeout:g} s: {log.read_text()[-1000:]}")


@contextlib.contextmanager
def sshd_hosts(count: int, workdir: Path) -> Iterator[SshdHosts]:
    hosts = SshdHosts(run_id=secrets.token_hex(3), dir=workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    bridge = nsnet.bridge_name(hosts.run_id)
    links: list[str] = []
    tools: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    made_privsep = False
    bridge_made = False
    try:
        if not PRIVSEP_DIR.exists():
            PRIVSEP_DIR.mkdir(mode=0o755)
            made_privsep = True
        client_pub = _keygen(hosts.client_key)
        (hosts.dir / "authorized_keys").write_text(client_pub + "\n")
        # sshd reads authorized_keys as the user logging in, who may not be root
        hosts.dir.chmod(0o755)
        (hosts.dir / "authorized_keys").chmod(0o644)
        with nsnet.subnet_lock(nsnet.LOCK_DIR):
            subnet = nsnet.choose_subnet(hosts.run_id)
            nsnet.create_bridge(bridge, subnet)
            bridge_made = True
        hosts.bridge_address = str(subnet.network_address + 1)
        for tool in nsnet.forward_rule_tools():
            tools.append(tool)
            nsnet.add_forward_rule(tool, bridge, hosts.run_id)
        for i in range(count):
            link = nsnet.NodeLink(node=f"h{i}", index=i, netns=nsnet.netns_name(hosts.run_id, f"h{i}"),
                                  host_veth=nsnet.host_veth_name(hosts.run_id, i),
                                  peer_veth=nsnet.peer_veth_name(hosts.run_id, i),
                                  address=nsnet.node_address(subnet, i))
            hosts.netns.append(link.netns)
            links.append(link.host_veth)
            nsnet.create_node_link(bridge, link, subnet.prefixlen)
            hosts.addresses.append(link.address)
            d = hosts.dir / f"h{i}"
            d.mkdir(exist_ok=True)
            host_key = d / "ssh_host_ed25519_key"
            hosts.host_pubkeys.append(_keygen(host_key))
            cfg = _sshd_config(hosts, i, link.address, host_key)
            log = d / "sshd.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(["ip", "netns", "exec", link.netns, SSHD, "-D", "-e", "-f", str(cfg)],
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            procs.append(proc)
            _wait_listening(link.address, hosts.port, proc, log)
        yield hosts
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        # Anything still in a namespace (a node the backend failed to stop) goes too.
        for pid in hosts.processes_in_namespaces():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while hosts.processes_in_namespaces() and time.monotonic() < deadline:
            time.sleep(0.1)
        for ns in hosts.netns:
            nsnet.delete_netns(ns)
        for link in links:
            nsnet.delete_link(link)
        if bridge_made:
            nsnet.delete_link(bridge)
        for tool in tools:
            nsnet.delete_forward_rule(tool, bridge, hosts.run_id)
        if made_privsep:
            with contextlib.suppress(OSError):
                PRIVSEP_DIR.rmdir()


def leftovers(hosts: SshdHosts) -> list[str]:
    """Kernel objects of this fixture's run that still exist (should be none after exit)."""
    found = [ns for ns in run(["ip", "netns", "list"]).stdout.split() if hosts.run_id in ns]
    found += [line.split(":")[1].strip().split("@")[0] for line in run(["ip", "-o", "link"]).stdout.splitlines()
              if hosts.run_id in line]
    found += [line for line in run(["iptables", "-w", "-S", "FORWARD"]).stdout.splitlines() if hosts.run_id in line]
    return found


@contextlib.contextmanager
def checked_sshd_hosts(count: int, prefix: str) -> Iterator[SshdHosts]:
    """``sshd_hosts`` in a temporary directory, then assert nothing of them is left behind
    (the module fixtures of the end-to-end tests)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        with sshd_hosts(count, Path(tmp)) as made:
            yield made
        assert leftovers(made) == [], "the sshd fixture left kernel objects behind"


def ssh_args(hosts: SshdHosts, known_hosts: Path, policy: str) -> list[str]:
    """The `run` flags that point the SSH backend at these hosts."""
    return ["--backend", "ssh", "--nodes", ",".join(hosts.addresses), "--ssh-user", "root",
            "--ssh-key", str(hosts.client_key), "--ssh-port", "22", "--ssh-host-key-policy", policy,
            "--ssh-known-hosts", str(known_hosts)]
