"""Proof that each fault takes effect, seen from outside a real Ukehi cluster.

One 3-node cluster (network namespaces, libfaketime, fast timers) is shared by
the module; every test drives the real nemesis package's ``invoke`` through the
harness's RunContext, then checks the effect with an independent probe: TCP
connects from inside one node's namespace, /proc process states and pids,
the nodes' own ``status`` (role, leader, pid, clock). Each test heals what it
did in ``finally`` and starts by waiting for a leader, so order does not matter.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from harness.backends.local import LocalCluster, LocalNode
from harness.db import UkehiDB
from harness.net import netns_support
from harness.run import RunContext
from nemeses import clock, packet, partition, process
from nemeses.targets import resolve

_ok, _why = netns_support()
ROOT = os.geteuid() == 0
needs_netns = [pytest.mark.root,
               pytest.mark.skipif(not (ROOT and _ok), reason=f"needs root and `ip netns`: {_why}")]
pytestmark = needs_netns

PY = sys.executable
# Run inside a node's namespace: TCP connect to HOST:PORT N times; print each connect time (ms)
# or "fail". A connect is one round trip (SYN, SYN-ACK), so it measures the path's RTT.
CONNECT_SCRIPT = """
import socket, sys, time
host, port, n, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
for _ in range(n):
    t0 = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        print((time.monotonic() - t0) * 1000.0)
    except OSError:
        print("fail")
    time.sleep(0.02)
"""


def connect_times(src: LocalNode, dst: LocalNode, n: int = 1, timeout: float = 1.0) -> list[float | None]:
    """Connect times (ms) from SRC's namespace to DST's client port; None for each failed connect."""
    rc, out, err = src.exec([PY, "-c", CONNECT_SCRIPT, dst.address, str(dst.ports[0]), str(n), str(timeout)],
                            timeout=n * (timeout + 1) + 10)
    assert rc == 0, f"probe from {src.name} failed to run: {err}"
    return [None if line == "fail" else float(line) for line in out.split()]


def can_connect(src: LocalNode, dst: LocalNode) -> bool:
    return connect_times(src, dst, 1)[0] is not None


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def wait_until(what: str, check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Poll CHECK until it returns something truthy (returned); fail naming WHAT after TIMEOUT s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def leader_among(db: UkehiDB, names: set[str]) -> str | None:
    """A node of NAMES that says it leads, if every answering node of NAMES agrees with it."""
    statuses = run(db.statuses())
    leaders = [n for n in names if (statuses.get(n) or {}).get("role") == "leader"]
    if len(leaders) != 1:
        return None
    views = {(statuses[n] or {}).get("leader") for n in names if statuses.get(n)}
    return leaders[0] if views == {leaders[0]} else None


class Harness:
    """A real cluster as the run sees it: backend, DB and the nemeses' FaultContext."""

    def __init__(self, cluster: LocalCluster, db: UkehiDB) -> None:
        self.cluster, self.db = cluster, db
        self.ctx = RunContext(cluster, db)

    def node(self, name: str) -> LocalNode:
        handle = self.cluster.nodes[name]
        assert isinstance(handle, LocalNode)
        return handle

    def invoke(self, package: Any, op: dict[str, Any]) -> Any:
        return run(package.invoke(op))

    def heal(self, package: Any) -> None:
        for op in package.final():
            run(package.invoke(op))

    def settled_leader(self, timeout: float = 20.0) -> str:
        """The leader, once every member (a node with a configuration; spares have none) follows it."""
        def check() -> str | None:
            statuses = run(self.db.statuses())
            members = {n for n, s in statuses.items() if s and s.get("voters")}
            return leader_among(self.db, members) if members else None

        return wait_until("one leader that every member follows", check, timeout)


def open_harness(root: Path, names: list[str], founders: list[str] | None = None) -> Iterator[Harness]:
    with LocalCluster(names, results_dir=root, isolation="netns", faketime=True) as cluster:
        db = UkehiDB(cluster, use_fake_clock=True, founders=founders)
        try:
            db.start_all()
            run(db.wait_for_leader())
            yield Harness(cluster, db)
        finally:
            db.stop_all()


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    yield from open_harness(tmp_path_factory.mktemp("effects"), ["n1", "n2", "n3"])


def test_partition_drops_traffic_between_the_sides_only(h: Harness) -> None:
    h.settled_leader()
    pkg = partition.package(h.ctx, topologies=["one"], one_way_fraction=0.0)
    op = pkg.generator(random.Random(7))
    assert op["f"] == partition.START
    try:
        value = h.invoke(pkg, op)
        (alone,) = [c[0] for c in value["components"] if len(c) == 1]
        rest = sorted(set(h.cluster.nodes) - {alone})
        lone, a, b = h.node(alone), h.node(rest[0]), h.node(rest[1])
        # Both directions between the sides are cut, in the kernel...
        assert not can_connect(lone, a) and not can_connect(a, lone) and not can_connect(b, lone)
        # ...while the majority still talks, and the harness still reaches everyone.
        assert can_connect(a, b) and can_connect(b, a)
        assert run(h.db.statuses())[alone] is not None
        # The majority side has (or elects) a leader of its own.
        wait_until("a leader on the majority side", lambda: leader_among(h.db, set(rest)))
    finally:
        h.heal(pkg)
    assert can_connect(lone, a) and can_connect(a, lone)
    h.settled_leader()


def test_kill_removes_the_process_and_a_new_pid_serves_after_restart(h: Harness) -> None:
    leader = h.settled_leader()
    pkg = process.kill_package(h.ctx, targets=["leader"])
    op = pkg.generator(random.Random(1))
    assert op["f"] == "kill"
    try:
        value = h.invoke(pkg, op)
        assert list(value["killed"]) == [leader]
        old_pid = value["killed"][leader]
        assert old_pid is not None
        assert not Path(f"/proc/{old_pid}").exists(), "the killed process still exists"
        assert not h.node(leader).is_running()
        assert run(h.db.statuses())[leader] is None  # nobody answers at its address
        others = set(h.cluster.nodes) - {leader}
        wait_until("a new leader among the survivors", lambda: leader_among(h.db, others))
        started = h.invoke(pkg, pkg.generator(random.Random(1)))["started"]
    finally:
        h.heal(pkg)
    new_pid = started[leader]
    assert new_pid != old_pid and Path(f"/proc/{new_pid}").exists()
    status = wait_until(f"{leader} answering after its restart", lambda: run(h.db.statuses())[leader])
    assert status["pid"] == new_pid, "the answer came from another process than the restarted one"
    h.settled_leader()


def test_pause_stops_the_leader_and_the_cluster_elects_around_it(h: Harness) -> None:
    leader = h.settled_leader()
    term = run(h.db.statuses())[leader]["term"]
    pkg = process.pause_package(h.ctx, targets=["leader"])
    try:
        value = h.invoke(pkg, pkg.generator(random.Random(1)))
        assert value["paused"] == [leader]
        assert h.node(leader).process_state() == "T"
        with open(f"/proc/{h.node(leader).pid}/stat") as f:  # the kernel's own word, not the handle's
            assert f.read().rsplit(")", 1)[1].split()[0] == "T"
        others = set(h.cluster.nodes) - {leader}
        new = wait_until("a new leader while the old one is paused", lambda: leader_among(h.db, others))
        assert run(h.db.statuses())[new]["term"] > term
        assert run(h.db.statuses())[leader] is None  # a stopped process answers nothing
        h.invoke(pkg, pkg.generator(random.Random(1)))  # resume
    finally:
        h.heal(pkg)
    assert h.node(leader).process_state() in ("R", "S")
    h.settled_leader()


def clock_error(h: Harness, name: str) -> float:
    """The node's clock minus ours, from its status (one local round trip: ~ms)."""
    reading = run(h.db.node_clock(name))
    assert reading is not None, f"{name} did not report its clock"
    return reading - time.time()


def test_clock_offset_and_rate_are_what_the_node_reports(h: Harness) -> None:
    h.settled_leader()
    pkg = clock.package(h.ctx, modes=["bump", "rate"], targets=["one"])
    try:
        # Rate first: a slow clock falls behind, so its reset is a jump forward (a jump back
        # would stall the node's timers for as long).
        value = h.invoke(pkg, {"f": "skew-clock-rate", "value": {"target": "one", "seed": 3, "rate": 0.5}})
        (slow,) = value["nodes"]
        first, t1 = run(h.db.node_clock(slow)), time.time()
        time.sleep(2.0)
        second, t2 = run(h.db.node_clock(slow)), time.time()
        assert first is not None and second is not None
        assert (second - first) / (t2 - t1) == pytest.approx(0.5, abs=0.12)
        fine = [n for n in h.cluster.nodes if n != slow]
        assert all(abs(clock_error(h, n)) < 0.5 for n in fine)
        h.invoke(pkg, {"f": "reset-clock"})
        assert abs(clock_error(h, slow)) < 0.5
        # An offset: the node reads real time + offset, the others are untouched. A paused
        # bystander must not skew what the op records (it answers no status at all).
        (bumped,) = run(resolve(h.ctx, "one", random.Random(4)))  # whom the op below picks
        bystander = h.node(next(n for n in sorted(h.cluster.nodes) if n != bumped))
        bystander.pause()
        try:
            value = h.invoke(pkg, {"f": "bump-clock", "value": {"target": "one", "seed": 4, "offset_s": -20.0}})
        finally:
            bystander.resume()
        assert value["nodes"] == [bumped]
        assert value["measured"][bumped] == pytest.approx(-20.0, abs=0.3)  # the history says so
        assert clock_error(h, bumped) == pytest.approx(-20.0, abs=0.5)
        assert all(abs(clock_error(h, n)) < 0.5 for n in h.cluster.nodes if n != bumped)
    finally:
        h.heal(pkg)
    assert all(abs(clock_error(h, n)) < 0.5 for n in h.cluster.nodes)
    h.settled_leader()


def test_packet_delay_raises_round_trip_time(h: Harness) -> None:
    h.settled_leader()
    pkg = packet.package(h.ctx, profiles=["slow"], targets=["one"])
    op = pkg.generator(random.Random(5))
    delay = op["value"]["delay_ms"]
    names = sorted(h.cluster.nodes)

    def median_rtt(dst: str) -> float:
        src = h.node(next(n for n in names if n != dst))
        times = connect_times(src, h.node(dst), n=7, timeout=3.0)
        assert None not in times, f"connects to {dst} failed: {times}"
        return statistics.median(times)  # type: ignore[arg-type]

    try:
        value = h.invoke(pkg, op)
        (shaped,) = value["nodes"]
        delayed = median_rtt(shaped)
        h.invoke(pkg, {"f": "stop-packet"})
        base = median_rtt(shaped)
    finally:
        h.heal(pkg)
    # The shaper (netem or the nfqueue delayer) holds the shaped node's replies for the delay
    # (with jitter): the connect time rises by about that much, and falls back after.
    assert base < 60.0, f"unshaped RTT is already {base:.1f} ms"
    assert delay * 0.6 <= delayed - base <= delay * 3, (delay, delayed, base, h.cluster.shaper)
    h.settled_leader()


def test_slow_leader_isolates_the_leader_and_slows_its_clock(h: Harness) -> None:
    leader = h.settled_leader()
    pkg = clock.slow_leader_package(h.ctx, rate=0.1)
    try:
        value = h.invoke(pkg, pkg.generator(random.Random(0)))
        assert value["leader"] == leader
        first, t1 = run(h.db.node_clock(leader)), time.time()
        others = sorted(set(h.cluster.nodes) - {leader})
        assert not can_connect(h.node(leader), h.node(others[0]))
        assert not can_connect(h.node(others[1]), h.node(leader))
        assert can_connect(h.node(others[0]), h.node(others[1]))
        second, t2 = run(h.db.node_clock(leader)), time.time()
        assert first is not None and second is not None
        assert (second - first) / (t2 - t1) == pytest.approx(0.1, abs=0.08)
        wait_until("a new leader among the others", lambda: leader_among(h.db, set(others)))
        healed = h.invoke(pkg, pkg.generator(random.Random(0)))
        assert healed["clocks_reset"] == [leader]
    finally:
        h.heal(pkg)
    assert abs(clock_error(h, leader)) < 0.5 and can_connect(h.node(leader), h.node(others[0]))
    h.settled_leader()


def test_the_leader_reported_to_nemeses_is_the_newest_one(h: Harness) -> None:
    # Cut the leader off with a slow clock: it keeps calling itself leader (its lease and
    # check-quorum run in its own slowed ticks) while the others elect a newer one.
    old = h.settled_leader()
    pkg = clock.slow_leader_package(h.ctx, rate=0.05)
    try:
        h.invoke(pkg, pkg.generator(random.Random(0)))
        others = set(h.cluster.nodes) - {old}
        new = wait_until("a new leader among the others", lambda: leader_among(h.db, others))
        assert run(h.db.statuses())[old]["role"] == "leader"  # two claim it...
        assert run(h.ctx.leader()) == new  # ...and the nemeses are told the newer one
    finally:
        h.heal(pkg)
    h.settled_leader()
