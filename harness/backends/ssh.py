"""The SSH backend: every node a process on a remote host, reached through paramiko.

    with SSHCluster(["10.0.0.11", "10.0.0.12", "10.0.0.13"], SSHOptions(user="root", key="~/.ssh/id_ed25519"),
                    results_dir=run_dir) as cluster:
        ...

What ``open()`` does on each host (in parallel):

- connects (host key policy strict / accept-new / ignore, see ssh_connection.py) and
  finds out whether the user is root, has passwordless sudo, or neither;
- creates the node's directory fresh for this run, as ``mkdtemp`` does:
  ``<remote-dir>/ukj-<run-id>-<node>.XXXXXXXX`` (remote-dir default ``/tmp``), made by the
  SSH user with mode 0700 under a name nobody could have prepared. A remote-dir that is a
  symlink, belongs to another user, or is writable by everyone without the sticky bit is
  refused, and so is a created directory that is not a plain directory of the SSH user;
- uploads the project's wheel (built here with ``pip wheel --no-deps``) and unpacks it
  under ``<node directory>/lib``: the node is pure Python and the wheel is a
  zip, so this is its whole install and needs nothing on the host but ``python3``
  (>= 3.11). msgpack, the node's only dependency, is the host's own (python3-msgpack)
  when present, else msgpack's pure-Python modules are uploaded from this machine;
- uploads the harness's supervisor (ssh_supervisor.py) and a start script: a process
  is started detached (``setsid nohup``), logs to a file, and its own pid goes to a pid
  file, so kill, pause and resume signal the real node and not a wrapper;
- installs the node's iptables chains (UKJ-IN / UKJ-OUT / UKJ-SHAPE / UKJ-DUP, as the
  local backend does in a namespace) when the user may (root or sudo).

The node's address is the host's IPv4 address; it listens on one fixed port
(``node_port``). ``close()`` stops every process, removes the chains and any packet
shaping, copies the logs into the run's store (``nodes/<node>/node.log``) and deletes the
remote directory.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping, Sequence

from harness.backends.base import BackendError, Cluster, Direction, NeedsRootError, NodeHandle
from harness.backends.clock import FakeClock, FakeClockVerbs, faketime_env, faketime_spec
from harness.backends.faults import (CHAINS_RESTORE, DROP_IN, DROP_OUT, DUP, SHAPE, Netem, clear_shaping_commands,
                                     delayer_args, drop_commands, duplicate_commands, heal_commands,
                                     needs_delayer, netem_commands, queue_commands)
from harness.backends.local import new_run_id
from harness.backends.ssh_connection import TIMEOUT_EXIT, SSHConnection, SSHError, SSHOptions, resolve_ipv4

DEFAULT_NODE_PORT = 7000
DEFAULT_REMOTE_DIR = "/tmp"  # the parent of each run's fresh node directories
REMOTE_PYTHON = "python3"
_SUPERVISOR = Path(__file__).with_name("ssh_supervisor.py")
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_LIBFAKETIME_GLOBS = "/usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1 " \
                     "/usr/local/lib/faketime/libfaketime.so.1 /usr/lib64/faketime/libfaketime.so.1"

# The start script: runs NAME.json under the supervisor, detached from the SSH session,
# and prints the supervised process's pid once the supervisor has written it.
START_SCRIPT = """#!/bin/sh
# Start NAME.json under the harness's supervisor, detached from this SSH session; print its pid.
cd "$(dirname "$0")" || exit 1
name=$1
rm -f "$name.pid" "$name.exit"
setsid nohup {python} ssh_supervisor.py "$name.json" </dev/null >>"$name.supervisor.log" 2>&1 &
i=0
while [ ! -s "$name.pid" ]; do
  i=$((i + 1))
  if [ "$i" -gt 150 ]; then
    echo "the supervisor did not start within 15 s; its log says:" >&2
    tail -n 5 "$name.supervisor.log" >&2
    exit 1
  fi
  sleep 0.1
done
cat "$name.pid"
"""

# Unpacks the wheel (argv[1]) into lib/ beside it and says whether the host has msgpack.
# Makes the node's directory on the host (run as the SSH user; argv: parent, name prefix).
MKDTEMP_PY = """
import os, stat, sys, tempfile
base, prefix = sys.argv[1], sys.argv[2]
try:
    st = os.lstat(base)
except OSError as e:
    print("refused:", base, "cannot be used:", e.strerror); sys.exit(3)
if stat.S_ISLNK(st.st_mode):
    print("refused:", base, "is a symlink; give the real directory"); sys.exit(3)
if not stat.S_ISDIR(st.st_mode):
    print("refused:", base, "is not a directory"); sys.exit(3)
if st.st_uid not in (0, os.getuid()):
    print("refused:", base, "belongs to uid", st.st_uid, "(neither root nor this user)"); sys.exit(3)
if st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
    print("refused:", base, "is writable by everyone without the sticky bit (chmod +t)"); sys.exit(3)
d = tempfile.mkdtemp(prefix=prefix + ".", dir=base)  # 0700, a name nobody could prepare
st = os.lstat(d)
if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) != 0o700:
    print("refused: the new directory", d, "is not a private directory of this user"); sys.exit(3)
print("created", d)
"""

INSTALL_PY = """
import os, sys, zipfile
if sys.version_info < (3, 11):
    print("python-too-old", sys.version.split()[0])
    sys.exit(3)
workdir = sys.argv[1]
zipfile.ZipFile(os.path.join(workdir, "ukehi.whl")).extractall(os.path.join(workdir, "lib"))
try:
    import msgpack
    print("msgpack-ok")
except ImportError:
    print("msgpack-missing")
"""
# msgpack falls back to these pure-Python modules when its C extension is absent.
_MSGPACK_PURE = ("__init__.py", "exceptions.py", "ext.py", "fallback.py")


def build_wheel(out_dir: Path, project_root: Path = _PROJECT_ROOT) -> Path:
    """``pip wheel --no-deps`` of this project into OUT_DIR; the wheel's path."""
    if not (project_root / "pyproject.toml").is_file():
        raise BackendError(f"cannot build the project's wheel: {project_root} is not a source checkout "
                           "(no pyproject.toml); run ukehi-jepsen from the repository, or pass a built "
                           "wheel (SSHCluster(wheel=...))")
    # UKEHI_PURE_PYTHON=1: setup.py leaves out the checker's optional C reader, so the wheel
    # is pure Python (py3-none-any) whatever the hosts run, and no compiler is needed here.
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out_dir),
                           str(project_root)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "UKEHI_PURE_PYTHON": "1"})
    wheels = sorted(out_dir.glob("ukehi_jepsen-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise BackendError(f"building the project's wheel failed (exit {proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()[-1500:]}; try "
                           f"`python3 -m pip wheel --no-deps -w dist .` in {project_root} to see why")
    return wheels[-1]


def _sh(argv: Sequence[str]) -> str:
    return shlex.join([str(a) for a in argv])


@dataclass
class RemoteFakeClock(FakeClock):
    """A FakeClock whose timestamp file lives on the host (written whole, then renamed)."""

    writer: Callable[[str, bytes], None] | None = None

    def write(self) -> None:
        assert self.writer is not None
        self.writer(str(self.path), faketime_spec(self.file_offset(), self.rate).encode())


class SSHNode(FakeClockVerbs, NodeHandle):
    """A node process on a remote host; see the module doc."""

    def __init__(self, cluster: "SSHCluster", host: str, address: str, workdir: PurePosixPath) -> None:
        self.cluster = cluster
        self.name = host
        self.host = host
        self.address = address
        self.ports = (cluster.node_port,)
        self.workdir = Path(workdir)  # a path on the host
        self.conn: SSHConnection | None = None
        self.sudo = ""  # prefix for commands that need root: "" (root) or "sudo -n "
        self.privileged = False
        self.no_faults_reason = ""
        self.harness_address: str | None = None  # this machine as the host sees it
        self.libfaketime: str | None = None
        self.clock = RemoteFakeClock(self.workdir / "faketime.rc", writer=self._write_atomic)
        self._faked = False
        self._pid: int | None = None  # the node's pid while it may be running
        self._delayer_running = False
        self._netem_dev: str | None = None
        self._shaper = "auto"  # "netem" (tc) or "nfqueue" (the delayer), decided on first use
        self._installed = False
        self._chains = False

    def __repr__(self) -> str:
        return f"<SSHNode {self.name} {self.address}:{self.ports[0]} pid={self._pid}>"

    # -- set-up ---------------------------------------------------------------------
    def _c(self) -> SSHConnection:
        if self.conn is None:
            raise BackendError(f"node {self.name} is not connected: open the cluster first")
        return self.conn

    def connect(self) -> None:
        self.conn = SSHConnection(self.host, self.cluster.options).connect()

    def probe(self) -> None:
        """Who we are on the host, and which faults that allows."""
        conn = self._c()
        # sbin added for users whose PATH lacks it; iptables and tc live there.
        out = conn.check('id -u; echo "$SSH_CONNECTION"; PATH="$PATH:/usr/sbin:/sbin"; '
                         'for t in timeout setsid nohup iptables tc ip; do command -v $t; done; true',
                         what="probing the host").splitlines()
        uid, ssh_conn = out[0].strip(), (out[1].split() if len(out) > 1 else [])
        tools = {PurePosixPath(line.strip()).name for line in out[2:]}
        self.harness_address = ssh_conn[0] if ssh_conn else None
        for tool in ("timeout", "setsid", "nohup"):
            if tool not in tools:
                raise SSHError(f"host {self.host} has no `{tool}`: install coreutils and util-linux there")
        if uid == "0":
            self.sudo, self.privileged = "", True
        elif conn.run("sudo -n true", timeout=10)[0] == 0:
            self.sudo, self.privileged = "sudo -n ", True
        else:
            self.no_faults_reason = (f"user {conn.options.user_name} on {self.host} is not root and has no "
                                     "passwordless sudo; connect as root (--ssh-user root) or allow "
                                     "`sudo -n` for iptables and tc there")
        if self.privileged and not {"iptables", "tc", "ip"} <= tools:
            self.privileged = False
            self.no_faults_reason = f"host {self.host} lacks iptables, tc or ip: apt-get install iptables iproute2"

    def make_workdir(self) -> None:
        """A fresh directory for this run (see the module doc); it becomes the workdir."""
        prefix = f"ukj-{self.cluster.run_id}-{re.sub(r'[^A-Za-z0-9_.-]', '_', self.host)}"
        rc, out, err = self._c().run([REMOTE_PYTHON, "-", self.cluster.remote_dir, prefix], timeout=30,
                                     stdin=MKDTEMP_PY.encode())
        said = out.decode(errors="replace").strip()
        if rc != 0 or not said.startswith("created /"):
            raise SSHError(f"cannot create the node's directory on {self.host} under {self.cluster.remote_dir}: "
                           f"{said or err.decode(errors='replace').strip()[-400:]}")
        self.workdir = Path(said.split(" ", 1)[1])
        self.clock = RemoteFakeClock(self.workdir / "faketime.rc", writer=self._write_atomic)
        self._installed = True  # from here on, teardown removes the directory

    def install(self, wheel: Path) -> None:
        conn = self._c()
        self.make_workdir()
        wd = str(self.workdir)
        conn.put(wheel, f"{wd}/ukehi.whl")
        conn.write_file(f"{wd}/ssh_supervisor.py", _SUPERVISOR.read_bytes(), mode=0o644)
        conn.write_file(f"{wd}/start.sh", START_SCRIPT.format(python=REMOTE_PYTHON).encode(), mode=0o755)
        rc, out, err = conn.run([REMOTE_PYTHON, "-", wd], timeout=60, stdin=INSTALL_PY.encode())
        said = out.decode(errors="replace")
        if "python-too-old" in said:
            raise SSHError(f"host {self.host} has {said.split()[-1]} as {REMOTE_PYTHON}; Ukehi needs Python "
                           ">= 3.11 there (Debian 12 or later ships it)")
        if rc != 0:
            raise SSHError(f"installing the wheel on {self.host} failed (exit {rc}): "
                           f"{err.decode(errors='replace').strip()[-800:]}; is python3 installed there?")
        if "msgpack-missing" in said:
            self._upload_pure_msgpack()
        conn.check(f"cd {shlex.quote(wd)} && PYTHONPATH=lib {REMOTE_PYTHON} -c 'import ukehi.cli, msgpack'",
                   timeout=60, what="checking the installed node")

    def _upload_pure_msgpack(self) -> None:
        import msgpack

        src = Path(msgpack.__file__).parent
        dest = f"{self.workdir}/lib/msgpack"
        self._c().check(["mkdir", "-p", dest])
        for name in _MSGPACK_PURE:
            self._c().write_file(f"{dest}/{name}", (src / name).read_bytes(), mode=0o644)

    def install_chains(self) -> None:
        # The chains are the host's, not the run's: one run at a time per host (as the node
        # port is), and a crashed earlier run's chains are replaced here.
        if not self.privileged:
            return
        self._remove_chains()  # a crashed earlier run may have left them
        self._chains = True
        self._c().check(f"{self.sudo}iptables-restore -w --noflush", stdin=CHAINS_RESTORE.encode(),
                        what="installing the node's iptables chains")

    def _remove_chains(self) -> None:
        """Unhook and delete this project's chains; each step tolerates their absence."""
        ipt = f"{self.sudo}iptables -w"
        hooks = [("", "INPUT", DROP_IN), ("", "OUTPUT", DROP_OUT), ("", "OUTPUT", SHAPE),
                 ("-t mangle", "POSTROUTING", DUP)]
        lines = []
        for table, parent, chain in hooks:
            # bounded: a hook is added once per open
            lines.append(f"i=0; while [ $i -lt 8 ] && {ipt} {table} -D {parent} -j {chain} 2>/dev/null; "
                         f"do i=$((i+1)); done")
        for table, _, chain in hooks:
            lines.append(f"{ipt} {table} -F {chain} 2>/dev/null; {ipt} {table} -X {chain} 2>/dev/null")
        self._c().run("; ".join(lines) + "; true", timeout=30)

    def find_libfaketime(self) -> None:
        out = self._c().check(f"ls -1 {_LIBFAKETIME_GLOBS} 2>/dev/null || true").split()
        if not out:
            raise SSHError(f"libfaketime.so.1 not found on {self.host}: the clock nemesis needs it "
                           "there (apt-get install libfaketime)")
        self.libfaketime = out[0]

    def _write_atomic(self, path: str, data: bytes) -> None:
        self._c().write_file(path, data, atomic=True)

    # -- supervised processes -------------------------------------------------------
    def _launch(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: str,
                privileged: bool = False) -> int:
        wd = str(self.workdir)
        spec = {"argv": list(argv), "env": dict(env), "cwd": wd, "log": log,
                "pid_file": f"{wd}/{name}.pid", "exit_file": f"{wd}/{name}.exit"}
        self._c().write_file(f"{wd}/{name}.json", json.dumps(spec).encode(), atomic=True)
        prefix = self.sudo if privileged else ""
        out = self._c().check(f"{prefix}sh {shlex.quote(wd + '/start.sh')} {name}", timeout=30,
                              what=f"starting {name} on {self.host}")
        try:
            return int(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise SSHError(f"the start script on {self.host} printed {out!r} instead of a pid") from None

    def _signal_and_wait(self, name: str, sig: str, wait_s: float, escalate: bool,
                         privileged: bool = False) -> int | None:
        """Send SIG to NAME's process, wait for its exit status (SIGKILL after WAIT_S if ESCALATE)."""
        wd = shlex.quote(str(self.workdir))
        kill = f"{self.sudo if privileged else ''}kill"
        steps = int(wait_s * 10)
        # SIGKILL goes to the process group the supervisor made; SIGTERM only to the process
        # itself, so that it shuts down in its own way.
        target = "-s KILL -- -$pid" if sig == "KILL" else f"-{sig} $pid"
        script = (
            f"cd {wd} || exit 0; [ -e {name}.pid ] || {{ echo none; exit 0; }}; pid=$(cat {name}.pid); "
            f"waitexit() {{ i=0; while [ ! -e {name}.exit ] && [ $i -lt $1 ]; do sleep 0.1; i=$((i+1)); done; }}; "
            f"[ -e {name}.exit ] || {kill} {target} 2>/dev/null; waitexit {steps}; "
            + (f"[ -e {name}.exit ] || {{ {kill} -CONT $pid 2>/dev/null; {kill} -s KILL -- -$pid 2>/dev/null; "
               f"waitexit 100; }}; " if escalate else "")
            # whatever the process left behind in its group (its children) goes with it
            + f"[ -e {name}.exit ] && {kill} -s KILL -- -$pid 2>/dev/null; "
            + f"if [ -e {name}.exit ]; then cat {name}.exit; else echo running; fi")
        out = self._c().check(script, timeout=wait_s + 20, what=f"stopping {name}").strip()
        if out == "none":
            return None
        if out == "running":
            raise BackendError(f"{name} on {self.host} (pid file {self.workdir}/{name}.pid) did not exit "
                               f"after SIG{sig}; look at it there with `ps`")
        return int(out)

    # -- process verbs --------------------------------------------------------------
    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              log_path: str | Path | None = None) -> int:
        if not argv:
            raise BackendError(f"node {self.name}: start() needs a command line")
        if self._pid is not None and self.is_running():
            raise BackendError(f"node {self.name} is already running as pid {self._pid}; stop or kill it first")
        argv = list(argv)
        # The harness writes node command lines with its own interpreter (harness/db.py);
        # on the host that is python3 with the unpacked wheel on PYTHONPATH.
        if argv[0] == sys.executable or PurePosixPath(argv[0]).name.startswith("python"):
            argv[0] = REMOTE_PYTHON
        full_env = dict(env or {})
        full_env["PYTHONPATH"] = f"{self.workdir}/lib" + (f":{full_env['PYTHONPATH']}" if "PYTHONPATH" in full_env
                                                          else "")
        if self.cluster.faketime:
            fake = self.clock_env()
            if "LD_PRELOAD" in full_env and full_env["LD_PRELOAD"] != fake["LD_PRELOAD"]:
                fake["LD_PRELOAD"] = f"{fake['LD_PRELOAD']}:{full_env['LD_PRELOAD']}"
            full_env.update(fake)
            self.clock.process_started(time.time())  # the file must exist before the node reads it
        log = PurePosixPath(str(log_path)) if log_path is not None else PurePosixPath("node.log")
        if not log.is_absolute():
            log = PurePosixPath(str(self.workdir)) / log
        pid = self._launch("node", argv, full_env, str(log))
        self._pid = pid
        self._faked = self.cluster.faketime
        if self._faked:
            self.clock.process_started(time.time())
        return pid

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.conn is None:
            return None
        status = self._signal_and_wait("node", "TERM", timeout, escalate=True)
        self._pid = None
        return status

    def kill(self) -> int | None:
        if self.conn is None:
            return None
        status = self._signal_and_wait("node", "KILL", 10.0, escalate=False)
        self._pid = None
        return status

    def _signal(self, sig: str, verb: str) -> None:
        if self._pid is None or not self.is_running():
            raise BackendError(f"cannot {verb} node {self.name}: it is not running (start it first)")
        self._c().check(["kill", f"-{sig}", str(self._pid)], what=f"{verb} of node {self.name}")

    def pause(self) -> None:
        self._signal("STOP", "pause")

    def resume(self) -> None:
        self._signal("CONT", "resume")

    @property
    def pid(self) -> int | None:
        # Asks the host: a node may have exited on its own (e.g. refusing to start).
        return self._pid if self._pid is not None and self.is_running() else None

    def is_running(self) -> bool:
        return self.process_state() not in (None, "Z")

    def process_state(self) -> str | None:
        if self._pid is None or self.conn is None:
            return None
        wd = shlex.quote(str(self.workdir))
        out = self._c().check(
            f"if [ -e {wd}/node.exit ]; then echo exited; elif [ -r /proc/{self._pid}/stat ]; then "
            f"sed 's/.*) //' /proc/{self._pid}/stat | cut -d' ' -f1; else echo gone; fi").strip()
        return None if out in ("exited", "gone", "") else out

    # -- commands and files ---------------------------------------------------------
    def exec(self, argv: Sequence[str], timeout: float = 10.0) -> tuple[int, str, str]:
        command = f"cd {shlex.quote(str(self.workdir))} && exec {_sh(argv)}"
        rc, out, err = self._c().run(command, timeout=timeout)
        text_err = err.decode(errors="replace")
        if rc == TIMEOUT_EXIT and "timed out" not in text_err:
            text_err += f"timed out after {timeout:g} s"  # as the local backend says it
        return rc, out.decode(errors="replace"), text_err

    def _path(self, path: str | Path) -> str:
        p = PurePosixPath(str(path))
        return str(p if p.is_absolute() else PurePosixPath(str(self.workdir)) / p)

    def read_file(self, path: str | Path) -> bytes:
        return self._c().read_file(self._path(path))

    def write_file(self, path: str | Path, data: bytes) -> None:
        # In place (same inode), as the local backend does: a WAL corrupted here stays corrupted.
        target = self._path(path)
        self._c().check(["mkdir", "-p", str(PurePosixPath(target).parent)])
        self._c().write_file(target, data)

    # -- network faults -------------------------------------------------------------
    def _root(self, commands: Sequence[Sequence[str]], what: str, stdin: bytes | None = None) -> None:
        if not self.privileged:
            raise NeedsRootError(f"network faults on node {self.name} need root: {self.no_faults_reason}")
        if commands:
            script = " && ".join(self.sudo + _sh(c) for c in commands)
            self._c().check(script, timeout=30, stdin=stdin, what=what)

    def drop_from(self, peer_addresses: Sequence[str], direction: Direction = "in") -> None:
        self._root(drop_commands(peer_addresses, direction), f"dropping packets on {self.name}")

    def heal_network(self) -> None:
        self._root(heal_commands(), f"healing the network of {self.name}")

    def _device(self) -> str:
        """The interface this host reaches its peers through (the one to shape)."""
        if self._netem_dev is None:
            peer = next((a for a in self.cluster.addresses_besides(self.name)), None)
            if peer is None:
                raise BackendError("packet shaping needs at least one other node or the harness to aim at")
            out = self._c().check(["ip", "-o", "route", "get", peer], what="finding the peer-facing device")
            m = re.search(r"\bdev (\S+)", out)
            if not m:
                raise BackendError(f"cannot tell the device {self.host} reaches {peer} through: {out.strip()}")
            self._netem_dev = m.group(1)
        return self._netem_dev

    def set_netem(self, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss_pct: float = 0.0,
                  duplicate_pct: float = 0.0, reorder_pct: float = 0.0,
                  to: Sequence[str] | None = None) -> None:
        netem = Netem(delay_ms, jitter_ms, loss_pct, duplicate_pct, reorder_pct)
        targets = list(to) if to is not None else None
        self.clear_netem()
        dev = self._device()
        try:
            if self._shaper in ("auto", "netem"):
                try:
                    self._root(netem_commands(netem, targets, dev), f"shaping packets on {self.name}")
                    self._shaper = "netem"
                    return
                except SSHError as err:
                    if self._shaper == "netem" or "kind is unknown" not in str(err).lower() and \
                            "unknown qdisc" not in str(err).lower():
                        raise
                    self.clear_netem()
                    self._shaper = "nfqueue"  # this kernel has no sch_netem: shape in user space
            self._shape_with_nfqueue(netem, targets, dev)
        except BaseException:
            self.clear_netem()  # never leave half a setup
            raise

    def _shape_with_nfqueue(self, netem: Netem, targets: list[str] | None, dev: str) -> None:
        if needs_delayer(netem):
            self._start_delayer(netem)
            self._root(queue_commands(targets, dev), f"queueing packets of {self.name}")
        if netem.duplicate_pct:
            dests = targets if targets is not None else self.cluster.addresses_besides(self.name)
            self._root(duplicate_commands(netem.duplicate_pct, dests, dev), f"duplicating packets of {self.name}")

    def _start_delayer(self, netem: Netem) -> None:
        wd = str(self.workdir)
        argv = [REMOTE_PYTHON, "-m", "harness.backends.delayer", *delayer_args(netem)]
        self._launch("delayer", argv, {"PYTHONPATH": f"{wd}/lib"}, f"{wd}/delayer.log", privileged=True)
        self._delayer_running = True
        q = shlex.quote(wd)
        out = self._c().check(
            f"i=0; while [ $i -lt 100 ]; do grep -q '^ready' {q}/delayer.log 2>/dev/null && {{ echo ready; exit 0; }}; "
            f"[ -e {q}/delayer.exit ] && break; sleep 0.1; i=$((i+1)); done; tail -n 5 {q}/delayer.log", timeout=30)
        if out.strip() != "ready":
            self._stop_delayer()
            raise BackendError(f"the packet delayer on {self.host} did not start (it needs nfnetlink_queue "
                               f"in the kernel): {out.strip() or 'no output'}")

    def _stop_delayer(self) -> None:
        if self._delayer_running:
            self._delayer_running = False
            # SIGTERM: it releases every held packet, then exits
            self._signal_and_wait("delayer", "TERM", 5.0, escalate=True, privileged=True)

    def clear_netem(self) -> None:
        if not self.privileged:
            raise NeedsRootError(f"packet shaping on node {self.name} needs root: {self.no_faults_reason}")
        lines = [self.sudo + _sh(c) + " 2>/dev/null" for c in clear_shaping_commands()]
        if self._netem_dev is not None:
            dev = shlex.quote(self._netem_dev)
            # Only delete a root qdisc we installed (handle 1:), never the host's own.
            lines.append(f"if {self.sudo}tc qdisc show dev {dev} | grep -q ' 1: root'; then "
                         f"{self.sudo}tc qdisc del dev {dev} root; fi")
        self._c().run("; ".join(lines) + "; true", timeout=30)
        self._stop_delayer()

    # -- clock ----------------------------------------------------------------------
    def clock_env(self) -> dict[str, str]:
        if self.libfaketime is None:
            raise BackendError(f"node {self.name}: the cluster was opened without faketime=True, so "
                               "libfaketime was not looked for on the host; open it with faketime=True")
        return faketime_env(self.clock.path, Path(self.libfaketime))


    # -- teardown -------------------------------------------------------------------
    def teardown(self, local_dir: Path) -> list[str]:
        """Stop everything on the host, collect logs into LOCAL_DIR, remove what we made there."""
        problems: list[str] = []
        if self.conn is None:
            return problems

        def attempt(what: str, fn: Callable[[], object]) -> None:
            try:
                fn()
            except (BackendError, OSError) as err:
                problems.append(f"{self.host}: {what}: {err}")

        if self._installed:
            attempt("killing the node", self.kill)
        if self.privileged:
            attempt("clearing packet shaping", self.clear_netem)
            if self._chains:
                attempt("removing iptables chains", self._remove_chains)
        if self._installed:
            for name in ("node.log", "node.supervisor.log", "delayer.log", "delayer.supervisor.log"):
                attempt(f"collecting {name}",
                        lambda n=name: self._c().get(f"{self.workdir}/{n}", local_dir / n))
            attempt("removing the remote directory", lambda: self._c().check(
                f"{self.sudo if self.privileged else ''}rm -rf {shlex.quote(str(self.workdir))}", timeout=60))
        return problems

    def remove_empty_dirs_and_close(self) -> None:
        """Disconnect, once every node is down (the name is kept for the callers)."""
        if self.conn is None:
            return
        # The node's directory went with teardown; its parent is shared (e.g. /tmp) and stays.
        self.conn.close()
        self.conn = None


class SSHCluster(Cluster):
    """The remote hosts of one run; node names are the host names or addresses as given."""

    def __init__(self, hosts: Sequence[str], options: SSHOptions, *, results_dir: str | Path | None = None,
                 run_id: str | None = None, faketime: bool = False, node_port: int = DEFAULT_NODE_PORT,
                 remote_dir: str = DEFAULT_REMOTE_DIR, wheel: str | Path | None = None) -> None:
        if not hosts:
            raise BackendError("the ssh backend needs hosts: --nodes host1,host2,host3")
        if len(set(hosts)) != len(hosts):
            raise BackendError(f"hosts must be distinct, got {list(hosts)}")
        if not 1 <= node_port <= 65535:
            raise BackendError(f"node port {node_port}: give a TCP port between 1 and 65535")
        if not PurePosixPath(remote_dir).is_absolute():
            raise BackendError(f"remote directory {remote_dir!r} must be an absolute path on the hosts")
        self.hosts = list(hosts)
        self.options = options
        self.run_id = run_id or new_run_id()
        self.results_dir = Path(os.path.abspath(results_dir) if results_dir
                                else tempfile.mkdtemp(prefix=f"ukj-{self.run_id}-"))
        self.faketime = faketime
        self.node_port = node_port
        self.remote_dir = remote_dir
        self.wheel = Path(wheel) if wheel else None
        self.nodes: dict[str, NodeHandle] = {}
        self.loopback_reason = ""  # why network faults are unavailable (read by harness/run.py)
        self._opened = False
        self._closed = False
        self._wheel_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def network_faults_supported(self) -> bool:
        return self._opened and all(isinstance(n, SSHNode) and n.privileged for n in self.nodes.values())

    def addresses_besides(self, name: str) -> list[str]:
        """Every address a node may send to: the other nodes and the harness."""
        others = [n.address for n in self.nodes.values() if n.name != name]
        me = self.nodes.get(name)
        if isinstance(me, SSHNode) and me.harness_address and me.harness_address not in others:
            others.append(me.harness_address)
        return others

    def _node_workdir(self, host: str) -> PurePosixPath:
        # A placeholder until install() creates the real one (SSHNode.make_workdir).
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", host)
        return PurePosixPath(self.remote_dir) / f"ukj-{self.run_id}-{safe}.not-created-yet"

    def open(self) -> "SSHCluster":
        if self._opened:
            return self
        if self._closed:
            raise BackendError("this cluster was closed; create a new SSHCluster for a new run")
        for host in self.hosts:
            self.nodes[host] = SSHNode(self, host, resolve_ipv4(host), self._node_workdir(host))
        if self.wheel is not None and not self.wheel.is_file():
            raise BackendError(f"wheel {self.wheel} does not exist; build one with `python3 -m pip wheel "
                               "--no-deps -w dist .` or leave it out to have it built")
        # Connect first: an unknown host key or a refused login is reported before the wheel build.
        self._for_each(SSHNode.connect)
        wheel = self.wheel
        if wheel is None:
            self._wheel_dir = tempfile.TemporaryDirectory(prefix="ukj-wheel-")
            wheel = build_wheel(Path(self._wheel_dir.name))

        def prepare(node: SSHNode) -> None:
            node.probe()
            node.install(wheel)
            node.install_chains()
            if self.faketime:
                node.find_libfaketime()

        self._for_each(prepare)
        reasons = [n.no_faults_reason for n in self._ssh_nodes() if not n.privileged]
        self.loopback_reason = "; ".join(reasons)
        self._opened = True
        return self

    def _ssh_nodes(self) -> list[SSHNode]:
        return [n for n in self.nodes.values() if isinstance(n, SSHNode)]

    def _for_each(self, fn: Callable[[SSHNode], None]) -> None:
        """FN on every node at once; the first error (by node order) is raised after all finish."""
        nodes = self._ssh_nodes()
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            futures = [pool.submit(fn, n) for n in nodes]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]  # type: ignore[misc]

    def _teardown(self) -> None:
        self._closed = True
        problems: list[str] = []
        lock = threading.Lock()

        def down(node: SSHNode) -> None:
            found = node.teardown(self.results_dir / "nodes" / node.name)
            with lock:
                problems.extend(found)

        try:
            self._for_each(down)
        finally:
            for node in self._ssh_nodes():
                node.remove_empty_dirs_and_close()
            self._opened = False
            if self._wheel_dir is not None:
                self._wheel_dir.cleanup()
                self._wheel_dir = None
        if problems:
            raise BackendError("; ".join(problems))
