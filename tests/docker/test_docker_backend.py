"""The Docker backend's verbs on real containers, and its clear errors.

One 2-node cluster (nodes started under libfaketime) serves the verb tests; the
error and teardown tests open their own. Every test ends with no container,
network or volume of its own left.
"""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness.backends.base import BackendError
from harness.backends.docker import (LABEL_KIND, LABEL_OWNER, LABEL_RUN, LABEL_SESSION, SESSION_ENV, DockerCluster,
                                     DockerNode, DockerUnavailable, cleanup_docker_leftovers, connect, owner_label)
from harness.db import UkehiDB

from docker_leftovers import labelled

# A TCP connect from inside a node, timed: prints the seconds, exit 1 if it fails.
PROBE = ("import socket,sys,time\n"
         "t=time.monotonic()\n"
         "try:\n"
         "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()\n"
         "except OSError as e:\n"
         "    print(e); sys.exit(1)\n"
         "print(time.monotonic()-t)\n")


def connect_time(node: DockerNode, peer: DockerNode, timeout: float = 2.0) -> float | None:
    rc, out, _ = node.exec(["python3", "-c", PROBE, peer.address, str(peer.ports[0]), str(timeout)],
                           timeout=timeout + 10)
    return float(out.strip()) if rc == 0 else None


@pytest.fixture(scope="module")
def cluster(docker_client: Any, node_image: Any, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[DockerCluster, UkehiDB]]:
    before = labelled(docker_client)
    c = DockerCluster(["n1", "n2"], results_dir=tmp_path_factory.mktemp("dockerrun"), faketime=True,
                      client=docker_client)
    try:
        with c:
            db = UkehiDB(c, use_fake_clock=True)
            db.start_all()
            asyncio.run(db.wait_for_leader(timeout=60))
            yield c, db
    finally:
        after = labelled(docker_client)
        assert all(not (after[k] - before[k]) for k in after), "the cluster left objects behind"


pytestmark = pytest.mark.docker


def test_nodes_have_stable_names_addresses_and_only_net_admin(cluster: tuple[DockerCluster, UkehiDB],
                                                            docker_client: Any) -> None:
    c, _ = cluster
    for i, (name, node) in enumerate(c.nodes.items()):
        assert isinstance(node, DockerNode)
        assert node.container_name == f"ukj-{c.run_id}-{name}"
        info = docker_client.api.inspect_container(node.container_name)
        assert info["Config"]["Hostname"] == name
        assert info["HostConfig"]["CapAdd"] == ["NET_ADMIN"]
        assert info["HostConfig"]["Privileged"] is False
        assert info["NetworkSettings"]["Networks"][c.network_name]["IPAddress"] == node.address
        assert node.address == str(c.subnet.network_address + 10 + i)  # type: ignore[union-attr]
        # tini is PID 1, so the node is not the container's main process
        assert node.exec(["cat", "/proc/1/comm"])[1].strip() == "tini"
        assert node.pid is not None and node.pid != 1


def test_kill_leaves_the_container_and_its_rules_then_restart(cluster: tuple[DockerCluster, UkehiDB],
                                                             docker_client: Any) -> None:
    c, db = cluster
    n1, n2 = c["n1"], c["n2"]
    n1.drop_from([n2.address], "in")
    try:
        old_pid = n1.pid
        assert n1.kill() == -9
        assert not n1.is_running() and n1.pid is None and n1.process_state() is None
        assert docker_client.containers.get(n1.container_name).status == "running"  # type: ignore[attr-defined]
        rules = n1.exec(["iptables", "-w", "-S", "UKJ-IN"])[1]
        assert f"-s {n2.address}/32" in rules and "DROP" in rules
    finally:
        n1.heal_network()
    new_pid = db.start("n1")
    assert n1.is_running() and n1.pid == new_pid and new_pid != old_pid
    assert "-s " not in n1.exec(["iptables", "-w", "-S", "UKJ-IN"])[1]
    asyncio.run(db.wait_for_leader(timeout=60))


def test_pause_stops_the_node_process_and_resume_continues_it(cluster: tuple[DockerCluster, UkehiDB]) -> None:
    c, _ = cluster
    n2 = c["n2"]
    n2.pause()
    try:
        assert n2.process_state() == "T"
        assert n2.is_running()  # a stopped process still exists
    finally:
        n2.resume()
    deadline = time.monotonic() + 10
    while n2.process_state() == "T" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert n2.process_state() in ("R", "S", "D")


def test_partition_drops_traffic_between_containers_until_healed(cluster: tuple[DockerCluster, UkehiDB]) -> None:
    c, _ = cluster
    n1, n2 = c["n1"], c["n2"]
    assert isinstance(n1, DockerNode) and isinstance(n2, DockerNode)
    assert connect_time(n1, n2) is not None
    n1.drop_from([n2.address], "out")
    try:
        assert connect_time(n1, n2, timeout=1.0) is None
    finally:
        n1.heal_network()
    assert connect_time(n1, n2) is not None


def test_packet_delay_applies_to_the_chosen_destination_and_clears(cluster: tuple[DockerCluster, UkehiDB]) -> None:
    c, _ = cluster
    n1, n2 = c["n1"], c["n2"]
    assert isinstance(n1, DockerNode) and isinstance(n2, DockerNode)
    n1.set_netem(delay_ms=400, to=[n2.address])
    try:
        delayed = connect_time(n1, n2, timeout=5.0)
    finally:
        n1.clear_netem()
    assert delayed is not None and delayed >= 0.3, f"connect took {delayed} s under a 400 ms delay"
    after = connect_time(n1, n2)
    assert after is not None and after < 0.3, f"connect took {after} s after clear_netem"


def test_clock_offset_moves_only_that_node(cluster: tuple[DockerCluster, UkehiDB]) -> None:
    c, db = cluster
    c["n1"].set_clock(120.0)
    try:
        skew1 = asyncio.run(db.node_clock("n1"))
        skew2 = asyncio.run(db.node_clock("n2"))
        now = time.time()
        assert skew1 is not None and skew2 is not None
        assert 110 < skew1 - now < 130
        assert abs(skew2 - now) < 10
        assert 119 < c["n1"].clock_offset() < 121
    finally:
        c["n1"].reset_clock()


def test_files_on_the_mount_and_elsewhere_in_the_container(cluster: tuple[DockerCluster, UkehiDB]) -> None:
    c, _ = cluster
    n1 = c["n1"]
    data = bytes(range(256)) * 4
    n1.write_file("probe/bytes.bin", data)
    assert (n1.workdir / "probe" / "bytes.bin").read_bytes() == data  # the bind mount: same file
    rc, out, _ = n1.exec(["sha256sum", str(n1.workdir / "probe" / "bytes.bin")])
    import hashlib

    assert rc == 0 and out.split()[0] == hashlib.sha256(data).hexdigest()
    assert n1.read_file("/etc/hostname") == b"n1\n"
    n1.write_file("/tmp/ukj-probe/x.txt", b"inside only\n")
    assert n1.exec(["cat", "/tmp/ukj-probe/x.txt"])[1] == "inside only\n"
    assert n1.read_file("/tmp/ukj-probe/x.txt") == b"inside only\n"
    assert not Path("/tmp/ukj-probe/x.txt").exists() or Path("/tmp/ukj-probe/x.txt").read_bytes() != b"inside only\n"
    with pytest.raises(FileNotFoundError):
        n1.read_file("/nonexistent/file")


def test_exec_is_bounded_by_its_timeout(cluster: tuple[DockerCluster, UkehiDB]) -> None:
    c, _ = cluster
    t0 = time.monotonic()
    rc, _, _ = c["n2"].exec(["sleep", "30"], timeout=1.0)
    assert rc == 124
    assert time.monotonic() - t0 < 15


def test_stop_ends_the_node_and_returns_its_status(cluster: tuple[DockerCluster, UkehiDB]) -> None:
    c, db = cluster
    status = c["n2"].stop()
    assert status is not None and status in (0, -15)
    assert not c["n2"].is_running()
    assert "level=" in db.last_log_lines("n2")  # the node's log is on the host, in the run's store


# -- own clusters: teardown and errors -----------------------------------------------

def test_teardown_after_an_exception_removes_everything(docker_client: Any, node_image: Any, tmp_path: Path,
                                                        no_leftovers: None) -> None:
    c = DockerCluster(["a", "b"], results_dir=tmp_path, client=docker_client)
    with pytest.raises(RuntimeError, match="boom"):
        with c:
            assert len(docker_client.containers.list(filters={"label": f"{LABEL_RUN}={c.run_id}"})) == 2
            raise RuntimeError("boom")
    assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={c.run_id}"}) == []
    assert docker_client.networks.list(names=[c.network_name]) == []


def test_missing_image_says_how_to_build_it(docker_client: Any, tmp_path: Path, no_leftovers: None) -> None:
    c = DockerCluster(["a"], results_dir=tmp_path, image="ukehi-node:no-such-tag-ukj", client=docker_client)
    with pytest.raises(BackendError, match=r"ukehi-jepsen image build --offline"):
        with c:
            pass


def test_a_clashing_subnet_is_refused_with_the_clash_named(docker_client: Any, node_image: Any, tmp_path: Path,
                                                           no_leftovers: None) -> None:
    bridge = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Subnet"]
    import ipaddress

    inside = str(next(ipaddress.ip_network(bridge).subnets(new_prefix=24)))
    c = DockerCluster(["a"], results_dir=tmp_path, subnet=inside, client=docker_client)
    with pytest.raises(BackendError, match=r"address clash: subnet .* overlaps"):
        with c:
            pass


def test_a_container_that_exits_at_start_shows_its_last_log_lines(docker_client: Any, node_image: Any,
                                                                  tmp_path: Path, no_leftovers: None) -> None:
    tag = f"ukj-test-exits:{os.getpid()}"
    dockerfile = f"FROM {node_image[0].tag}\nCMD [\"sh\", \"-c\", \"echo bye-from-the-container; exit 3\"]\n"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, forcerm=True)
    try:
        c = DockerCluster(["a"], results_dir=tmp_path, image=tag, client=docker_client)
        with pytest.raises(BackendError, match=r"exited at start(.|\n)*bye-from-the-container"):
            with c:
                pass
    finally:
        docker_client.images.remove(tag, force=True)


def test_cleanup_removes_dead_runs_and_keeps_live_ones(docker_client: Any, no_leftovers: None) -> None:
    dead_owner = f"{socket.gethostname()}:{2 ** 22 + 12345}:1"  # above pid_max's default: never alive
    session = {LABEL_SESSION: os.environ[SESSION_ENV]}
    suffix = secrets.token_hex(2)
    dead = docker_client.networks.create(f"ukj-dead{suffix}", driver="bridge", labels={
        LABEL_RUN: f"dead{suffix}", LABEL_KIND: "run", LABEL_OWNER: dead_owner, **session})
    live = docker_client.networks.create(f"ukj-live{suffix}", driver="bridge", labels={
        LABEL_RUN: f"live{suffix}", LABEL_KIND: "run", LABEL_OWNER: owner_label(), **session})
    kept_cluster = docker_client.networks.create(f"ukj-clus{suffix}", driver="bridge", labels={
        LABEL_RUN: f"clus{suffix}", LABEL_KIND: "cluster", LABEL_OWNER: dead_owner, **session})
    other_session = docker_client.networks.create(f"ukj-othr{suffix}", driver="bridge", labels={
        LABEL_RUN: f"othr{suffix}", LABEL_KIND: "run", LABEL_OWNER: dead_owner, LABEL_SESSION: "someone-else"})
    try:
        removed = cleanup_docker_leftovers()
        names = {n.name for n in docker_client.networks.list(filters={"label": LABEL_RUN})}
        assert f"ukj-dead{suffix}" not in names
        # a live harness's run, a `cluster up` cluster and another session's objects stay
        assert {f"ukj-live{suffix}", f"ukj-clus{suffix}", f"ukj-othr{suffix}"} <= names
        assert any(f"dead{suffix}" in line for line in removed)
    finally:
        for net in (dead, live, kept_cluster, other_session):
            try:
                net.remove()
            except Exception:  # noqa: BLE001 - already removed by the cleanup under test
                pass


def test_no_engine_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(DockerUnavailable, match=r"no Docker engine answers.*(start it|DOCKER_HOST)"):
        connect(timeout=5)


def test_the_node_runs_as_the_given_user_and_its_files_are_that_users(docker_client: Any, node_image: Any,
                                                                      tmp_path: Path, no_leftovers: None) -> None:
    # By default node_user is the harness's uid:gid (root here); a non-root one shows the mechanism.
    assert DockerCluster(["a"], results_dir=tmp_path / "x").node_user == f"{os.getuid()}:{os.getgid()}"
    with DockerCluster(["a"], results_dir=tmp_path, node_user="1234:1234", client=docker_client) as c:
        node = c["a"]
        os.chown(node.workdir, 1234, 1234)  # as a harness run by uid 1234 would have made it
        db = UkehiDB(c)
        db.start("a")
        asyncio.run(db.wait_for_leader(timeout=60))
        status = node.exec(["cat", f"/proc/{node.pid}/status"])[1]
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:3] == ["1234", "1234"]
        assert (node.workdir / "node.log").stat().st_uid == 1234
        assert all(p.stat().st_uid == 1234 for p in (node.workdir / "data").rglob("*"))
        # root in the container still signals it
        assert node.kill() == -9
