"""The SSH backend against real sshd hosts (one network namespace each, see sshd_hosts.py).

Host key policies, bounded commands that cannot hang on large output, every node
verb on a host, and a teardown that leaves nothing behind.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from harness.backends.base import BackendError, NeedsRootError
from harness.backends.ssh import SSHCluster, build_wheel
from harness.backends.ssh_connection import SSHConnection, SSHError, SSHOptions, UnknownHostKeyError
from harness.net import run

sys.path.insert(0, str(Path(__file__).parent))
from sshd_hosts import SshdHosts, leftovers, sshd_hosts, sshd_missing_reason  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.skipif(sshd_missing_reason() is not None,
                                                   reason=sshd_missing_reason() or "")]


@pytest.fixture(scope="module")
def hosts() -> Iterator[SshdHosts]:
    with tempfile.TemporaryDirectory(prefix="ukj-sshd-") as tmp:
        with sshd_hosts(2, Path(tmp)) as made:
            yield made
        assert leftovers(made) == [], "the sshd fixture left kernel objects behind"


@pytest.fixture(scope="module")
def wheel() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ukj-wheel-test-") as tmp:
        yield build_wheel(Path(tmp))


def sha256_fingerprint(pubkey_line: str) -> str:
    blob = base64.b64decode(pubkey_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def options(hosts: SshdHosts, known_hosts: Path, policy: str = "strict", key: Path | None = None) -> SSHOptions:
    return SSHOptions(user="root", key=str(key or hosts.client_key), host_key_policy=policy,
                      known_hosts=str(known_hosts), connect_timeout=10)


# -- host key policies -------------------------------------------------------------------
def test_strict_policy_refuses_an_unknown_host_and_says_how_to_add_it(hosts: SshdHosts, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    conn = SSHConnection(hosts.addresses[0], options(hosts, known))
    with pytest.raises(UnknownHostKeyError) as caught:
        conn.connect()
    msg = str(caught.value)
    assert sha256_fingerprint(hosts.host_pubkeys[0]) in msg  # the user can compare it
    assert f"ssh-keyscan -p 22 {hosts.addresses[0]} >> {known}" in msg
    assert "--ssh-host-key-policy accept-new" in msg
    assert known.read_text() == "", "strict must never write the known-hosts file"


def test_strict_policy_connects_to_a_known_host(hosts: SshdHosts) -> None:
    conn = SSHConnection(hosts.addresses[1], options(hosts, hosts.known_hosts())).connect()
    try:
        assert conn.check(["echo", "hello"]) == "hello\n"
    finally:
        conn.close()


def test_accept_new_remembers_the_key_then_strict_trusts_it(hosts: SshdHosts, tmp_path: Path) -> None:
    known = tmp_path / "nested" / "known_hosts"  # created with its directory on first use
    conn = SSHConnection(hosts.addresses[0], options(hosts, known, "accept-new")).connect()
    conn.close()
    kind, b64 = hosts.host_pubkeys[0].split()
    assert known.read_text().split() == [hosts.addresses[0], kind, b64]
    strict = SSHConnection(hosts.addresses[0], options(hosts, known)).connect()
    try:
        assert strict.check("echo ok").strip() == "ok"
    finally:
        strict.close()


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_a_changed_host_key_is_refused_by_both_policies(hosts: SshdHosts, tmp_path: Path, policy: str) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"{hosts.addresses[0]} {hosts.host_pubkeys[1]}\n")  # host 1's key under host 0's name
    with pytest.raises(SSHError) as caught:
        SSHConnection(hosts.addresses[0], options(hosts, known, policy)).connect()
    assert "DIFFERENT" in str(caught.value)
    assert f"ssh-keygen -R '{hosts.addresses[0]}' -f {known}" in str(caught.value)
    assert known.read_text().count("\n") == 1


def test_ignore_policy_connects_and_writes_nothing(hosts: SshdHosts, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    conn = SSHConnection(hosts.addresses[0], options(hosts, known, "ignore")).connect()
    try:
        assert conn.check("echo ok").strip() == "ok"
    finally:
        conn.close()
    assert not known.exists()


def test_a_key_the_host_does_not_accept_is_reported_as_such(hosts: SshdHosts, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True, timeout=30)
    with pytest.raises(SSHError) as caught:
        SSHConnection(hosts.addresses[0], options(hosts, hosts.known_hosts(), key=other)).connect()
    assert "refused our credentials" in str(caught.value) and "--ssh-key" in str(caught.value)


def test_options_are_validated_with_the_fix() -> None:
    with pytest.raises(SSHError, match="choose one of strict, accept-new, ignore"):
        SSHOptions(host_key_policy="yes")
    with pytest.raises(SSHError, match="no such file"):
        SSHOptions(key="/nonexistent/key")


# -- commands ----------------------------------------------------------------------------
@pytest.fixture
def conn(hosts: SshdHosts) -> Iterator[SSHConnection]:
    c = SSHConnection(hosts.addresses[0], options(hosts, hosts.known_hosts())).connect()
    yield c
    c.close()


def test_large_stdout_and_stderr_together_do_not_hang(conn: SSHConnection) -> None:
    # 5 MB on each stream, interleaved, far beyond the SSH window (2 MB): a reader that
    # drains one stream before the other would stall here until the timeout.
    script = ("import sys\n"
              "for i in range(80):\n"
              "    sys.stdout.write(chr(97 + i % 26) * 65536); sys.stdout.flush()\n"
              "    sys.stderr.write(chr(65 + i % 26) * 65536); sys.stderr.flush()\n")
    start = time.monotonic()
    rc, out, err = conn.run(["python3", "-c", script], timeout=120)
    elapsed = time.monotonic() - start
    assert rc == 0, err[-500:]
    assert len(out) == len(err) == 80 * 65536
    assert out[:65536] == b"a" * 65536 and out[-65536:] == bytes([97 + 79 % 26]) * 65536
    assert err[65536:131072] == b"B" * 65536
    assert elapsed < 90, f"5 MB per stream took {elapsed:.1f} s"


def test_a_command_that_outlives_its_timeout_is_ended(conn: SSHConnection, hosts: SshdHosts) -> None:
    marker = f"{os.getpid() % 1000 + 17.25:g}"  # an unusual sleep length to find the process by
    start = time.monotonic()
    # It ignores SIGTERM, so only the follow-up SIGKILL ends it.
    rc, _, err = conn.run(f"trap '' TERM; sleep {marker}", timeout=1.0)
    assert rc == 124
    assert time.monotonic() - start < 15
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in hosts.processes_in_namespaces()
                    if Path(f"/proc/{pid}/cmdline").exists()]
        if not any(marker.encode() in c for c in cmdlines):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the timed-out command is still running on the host")


def test_stdin_reaches_the_command_and_exit_codes_come_back(conn: SSHConnection) -> None:
    assert conn.run("cat; exit 7", stdin=b"x" * 300_000, timeout=30)[:2] == (7, b"x" * 300_000)
    with pytest.raises(SSHError, match=r"exit 3.*boom"):
        conn.check("echo boom >&2; exit 3", what="a failing command")


# -- the cluster and its node verbs --------------------------------------------------------
SERVE = ("import socket, sys, time\n"
         "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
         "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen()\n"
         "print('listening', flush=True)\n"
         "while True:\n"
         "    c, _ = s.accept(); c.sendall(b'%r\\n' % time.time()); c.close()\n")
ASK = ("import socket, sys\n"
       "try:\n"
       "    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2); print(c.recv(100).decode())\n"
       "except OSError as e:\n"
       "    print('unreachable', e); sys.exit(1)\n")


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
def test_node_verbs_on_real_hosts_and_a_teardown_that_leaves_nothing(hosts: SshdHosts, wheel: Path,
                                                                      tmp_path: Path) -> None:
    remote_root = tmp_path / "remote"  # the "hosts" share this machine's file system
    remote_root.mkdir()
    results = tmp_path / "results"
    a_host, b_host = hosts.addresses
    cluster = SSHCluster(hosts.addresses, options(hosts, hosts.known_hosts()), results_dir=results,
                         faketime=True, node_port=7123, remote_dir=str(remote_root), wheel=wheel)
    with cluster:
        a, b = cluster[a_host], cluster[b_host]
        assert cluster.network_faults_supported
        assert a.address == a_host and a.ports == (7123,)
        # a fresh directory per run and node, made like mkdtemp: private, the user's own, no symlink
        assert a.workdir.parent == remote_root and a.workdir.name.startswith(f"ukj-{cluster.run_id}-{a_host}.")
        st = os.lstat(a.workdir)
        assert not a.workdir.is_symlink() and st.st_uid == 0 and st.st_mode & 0o777 == 0o700
        assert b.workdir.parent == remote_root and b.workdir != a.workdir
        # the wheel is installed: the node's CLI answers with the host's python3
        rc, out, err = a.exec(["env", f"PYTHONPATH={a.workdir}/lib", "python3", "-m", "ukehi.cli", "--help"])
        assert rc == 0 and "node" in out, err
        # this machine's /usr/bin/python3 (the hosts') has no msgpack: its pure-Python modules were uploaded
        host_has_msgpack = a.exec(["python3", "-c", "import msgpack"])[0] == 0
        assert host_has_msgpack or Path(f"{a.workdir}/lib/msgpack/fallback.py").is_file()

        # process verbs act on the real pid: the server itself, under the fake clock
        pid = b.start([sys.executable, "-c", SERVE, "7123"], log_path="node.log")
        wait_for(lambda: b"listening" in b.read_file("node.log"), what="the server to listen")
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"python3"
        assert b.pid == pid and b.is_running() and b.process_state() in ("S", "R")
        b.pause()
        assert b.process_state() == "T"
        b.resume()
        assert b.process_state() in ("S", "R")

        # partition with iptables on the host: a cannot reach b, then can again
        ask = ["python3", "-c", ASK, b_host, "7123"]
        assert a.exec(ask)[0] == 0
        b.drop_from([a_host], "in")
        rc, out, _ = a.exec(ask)
        assert rc == 1 and "unreachable" in out
        b.heal_network()
        assert a.exec(ask)[0] == 0

        # the clock: b's server reports b's time, an hour ahead after set_clock
        b.set_clock(3600.0)
        served = float(a.exec(ask)[1])
        assert 3500 < served - time.time() < 3700
        assert abs(b.clock_offset() - 3600.0) < 5
        b.reset_clock()
        assert abs(float(a.exec(ask)[1]) - time.time()) < 60

        # packet shaping: delay to a (tc netem, or the nfqueue delayer on kernels without it)
        b.set_netem(delay_ms=300.0, to=[a_host])
        t0 = time.monotonic()
        assert a.exec(ask)[0] == 0
        assert time.monotonic() - t0 > 0.3
        b.clear_netem()

        # kill -9 and stop report Popen's statuses; an exited process reports its exit code
        assert b.kill() == -9
        assert not b.is_running() and b.pid is None and b.process_state() is None
        b.start(["sleep", "60"])
        assert b.stop(timeout=5) == -15
        b.start(["sh", "-c", "echo bye; exit 3"])
        wait_for(lambda: not b.is_running(), what="the short process to exit")
        assert b.kill() == 3
        with pytest.raises(BackendError, match="not running"):
            b.pause()

        # files: binary-exact, in place (same inode), relative to the workdir
        data = bytes(range(256)) * 1000
        a.write_file("data/wal-00000001.seg", data)
        inode = os.stat(f"{a.workdir}/data/wal-00000001.seg").st_ino
        a.write_file("data/wal-00000001.seg", data[::-1])
        assert a.read_file("data/wal-00000001.seg") == data[::-1]
        assert os.stat(f"{a.workdir}/data/wal-00000001.seg").st_ino == inode
        with pytest.raises(FileNotFoundError):
            a.read_file("no-such-file")
        a.start(["sh", "-c", "echo a-was-here; sleep 60"])
        run_dirs = [a.workdir, b.workdir]

    # after close: logs collected, nothing left on the hosts
    assert (results / "nodes" / a_host / "node.log").read_text().startswith("a-was-here")
    assert "bye" in (results / "nodes" / b_host / "node.log").read_text()
    assert not any(d.exists() for d in run_dirs) and list(remote_root.iterdir()) == []
    for ns in hosts.netns:
        rules = run(["ip", "netns", "exec", ns, "iptables", "-w", "-S"]).stdout
        assert "UKJ" not in rules, rules
        assert " 1: root" not in run(["ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", "eth0"]).stdout

    def others() -> list[str]:
        """Processes on the hosts besides sshd, as "pid state cmdline"."""
        found = []
        for pid in hosts.processes_in_namespaces():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue  # gone meanwhile
            if b"sshd" not in cmdline:
                found.append(f"{pid} {state} {cmdline.replace(bytes(1), b' ').decode(errors='replace')}")
        return found

    # An exiting process shows for a moment (a zombie has an empty cmdline until its parent
    # reaps it): what counts is one still there after a few seconds.
    settle = time.monotonic() + 5.0
    while others() and time.monotonic() < settle:
        time.sleep(0.2)
    assert others() == [], "processes other than sshd were left on the hosts"


def test_a_host_that_cannot_be_reached_fails_open_with_the_reason(hosts: SshdHosts, tmp_path: Path) -> None:
    bad = SSHOptions(user="root", key=str(hosts.client_key), port=2999, known_hosts=str(hosts.known_hosts()),
                     connect_timeout=5)
    with pytest.raises(SSHError, match=r"cannot connect to root@.*:2999.*--ssh-port"):
        with SSHCluster([hosts.addresses[0]], bad, results_dir=tmp_path, remote_dir=str(tmp_path / "r")):
            pass
    assert not (tmp_path / "r").exists()


# -- a user who is neither root nor a passwordless sudoer ------------------------------------
@contextlib.contextmanager
def throwaway_user(suffix: str) -> Iterator[str]:
    """An account that the test hosts' authorized_keys admit; it and its processes are removed afterwards."""
    if shutil.which("useradd") is None:
        pytest.skip("useradd is missing (passwd package)")
    name = f"ukjssh{suffix}{os.getpid() % 100000}"
    # password field "*": no password login, but not a locked account (sshd refuses locked ones)
    subprocess.run(["useradd", "-M", "-d", "/tmp", "-s", "/bin/sh", "-p", "*", name], check=True,
                   capture_output=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True, timeout=30)
        subprocess.run(["userdel", name], capture_output=True, timeout=30)


def may_sudo(user: str) -> bool:
    if shutil.which("sudo") is None:
        return False
    out = subprocess.run(["sudo", "-l", "-U", user], capture_output=True, text=True, timeout=30).stdout
    return "not allowed" not in out


@pytest.fixture
def plain_user() -> Iterator[str]:
    """A throwaway account without sudo."""
    with throwaway_user("p") as name:
        if may_sudo(name):
            pytest.skip("sudo here grants rights to new users; the no-sudo case needs a host without that")
        yield name


@pytest.fixture
def sudo_user() -> Iterator[str]:
    """A throwaway account with passwordless sudo (a drop-in under /etc/sudoers.d, removed afterwards)."""
    if shutil.which("sudo") is None or not Path("/etc/sudoers.d").is_dir():
        pytest.skip("sudo is not installed (scripts/setup installs it)")
    with throwaway_user("s") as name:
        dropin = Path("/etc/sudoers.d") / f"ukj-{name}"
        dropin.write_text(f"{name} ALL=(root) NOPASSWD: ALL\n")
        dropin.chmod(0o440)
        try:
            yield name
        finally:
            dropin.unlink()


def test_a_user_without_root_or_sudo_gets_process_verbs_and_a_clear_no_for_network_faults(
        hosts: SshdHosts, wheel: Path, plain_user: str, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    # The plain user creates its run directory in here (pytest's tmp_path is root's alone).
    remote_root = Path(tempfile.mkdtemp(prefix="ukj-ssh-plain-"))
    remote_root.chmod(0o1777)  # like /tmp: writable by all, sticky
    request.addfinalizer(lambda: shutil.rmtree(remote_root, ignore_errors=True))
    opts = SSHOptions(user=plain_user, key=str(hosts.client_key), known_hosts=str(hosts.known_hosts()),
                      connect_timeout=10)
    with SSHCluster([hosts.addresses[0]], opts, results_dir=tmp_path / "results",
                    remote_dir=str(remote_root), wheel=wheel) as cluster:
        node = cluster[hosts.addresses[0]]
        assert not cluster.network_faults_supported
        assert f"user {plain_user} on {hosts.addresses[0]} is not root and has no passwordless sudo" \
            in cluster.loopback_reason
        with pytest.raises(NeedsRootError, match="--ssh-user root"):
            node.drop_from([hosts.addresses[1]], "both")
        with pytest.raises(NeedsRootError):
            node.set_netem(delay_ms=10)
        pid = node.start(["sleep", "60"])
        assert os.stat(f"/proc/{pid}").st_uid != 0  # the node runs as that user
        node.pause()
        assert node.process_state() == "T"
        assert node.kill() == -9
    assert list(remote_root.iterdir()) == []
    assert remote_root.is_dir(), "a remote directory that existed before the run must stay"
    assert (tmp_path / "results" / "nodes" / hosts.addresses[0] / "node.supervisor.log").exists()


def test_a_user_with_passwordless_sudo_gets_network_faults_through_sudo(
        hosts: SshdHosts, wheel: Path, sudo_user: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    remote_root = Path(tempfile.mkdtemp(prefix="ukj-ssh-sudo-"))
    remote_root.chmod(0o1777)  # like /tmp: writable by all, sticky
    request.addfinalizer(lambda: shutil.rmtree(remote_root, ignore_errors=True))
    opts = SSHOptions(user=sudo_user, key=str(hosts.client_key), known_hosts=str(hosts.known_hosts()),
                      connect_timeout=10)
    a_host, b_host = hosts.addresses
    with SSHCluster([a_host], opts, results_dir=tmp_path / "results", remote_dir=str(remote_root),
                    wheel=wheel) as cluster:
        node = cluster[a_host]
        assert cluster.network_faults_supported and cluster.loopback_reason == ""
        node.drop_from([b_host], "out")
        rules = run(["ip", "netns", "exec", hosts.netns[0], "iptables", "-w", "-S", "UKJ-OUT"]).stdout
        assert f"-d {b_host}/32 -j DROP" in rules
        node.heal_network()
        node.set_netem(delay_ms=20.0)  # on this kernel without sch_netem: the delayer, started as root
        pid = node.start(["sleep", "60"])
        assert os.stat(f"/proc/{pid}").st_uid != 0  # the node itself runs as the user, not root
    for ns in hosts.netns:
        assert "UKJ" not in run(["ip", "netns", "exec", ns, "iptables", "-w", "-S"]).stdout
    others = [p for p in hosts.processes_in_namespaces()
              if Path(f"/proc/{p}/cmdline").exists() and b"sshd" not in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert others == [], "the node or the delayer was left running"
    assert list(remote_root.iterdir()) == []


@pytest.mark.parametrize("case", ["symlink", "world-writable", "missing"])
def test_an_unsafe_remote_directory_is_refused(hosts: SshdHosts, wheel: Path, tmp_path: Path, case: str) -> None:
    """The node's directory is made fresh under a parent that nobody else can tamper with."""
    real = tmp_path / "real"
    real.mkdir()
    if case == "symlink":
        remote = tmp_path / "link"
        remote.symlink_to(real)
        needle = "is a symlink"
    elif case == "world-writable":
        remote = real
        remote.chmod(0o777)  # no sticky bit: another user could swap our directory for a symlink
        needle = "without the sticky bit"
    else:
        remote = tmp_path / "absent"
        needle = "cannot be used"
    cluster = SSHCluster([hosts.addresses[0]], options(hosts, hosts.known_hosts()), results_dir=tmp_path / "res",
                         remote_dir=str(remote), wheel=wheel)
    with pytest.raises(SSHError, match=needle):
        with cluster:
            pass
    assert list(real.iterdir()) == [], "nothing may be created under a refused directory"


def test_the_node_wheel_is_pure_python_without_the_checkers_c_reader(wheel: Path) -> None:
    # The hosts may run another Python or architecture: the node wheel must not carry the
    # checker's optional C extension (setup.py leaves it out under UKEHI_PURE_PYTHON=1).
    import zipfile
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    # (its C source may ride along as package data when an editable install listed it: inert)
    assert not [n for n in names if n.endswith((".so", ".pyd"))], names
    assert "ukehi/node/server.py" in names
