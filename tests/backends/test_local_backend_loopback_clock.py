"""Loopback mode (no root needed) and per-node fake clocks through libfaketime.

The clock tests use loopback isolation: libfaketime needs no namespace, and the
node's own answer to "time" is what is checked.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends.base import NeedsRootError
from harness.backends.clock import FakeClock, faketime_spec, find_libfaketime
from harness.backends.local import LocalCluster, LocalNode

from backend_probes import PY, STANDIN, probe_from_host, serve


def node_clock_offset(node: LocalNode) -> float:
    """The stand-in's time.time() minus ours, measured over one round trip."""
    with socket.create_connection((node.address, node.ports[0]), timeout=5) as s:
        f = s.makefile("rb")
        t0 = time.time()
        s.sendall(b"time\n")
        reading = float(f.readline())
        t1 = time.time()
    return reading - (t0 + t1) / 2


@pytest.fixture
def loop_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(["a", "b"], results_dir=tmp_path, isolation="loopback", faketime=True) as c:
        yield c


def test_loopback_nodes_get_distinct_ports_and_serve(loop_cluster: LocalCluster) -> None:
    a, b = loop_cluster["a"], loop_cluster["b"]
    assert a.address == b.address == "127.0.0.1"
    assert len(set(a.ports) | set(b.ports)) == 4
    for node in (a, b):
        assert isinstance(node, LocalNode)
        serve(node)
        assert probe_from_host(node, 1.0)
    assert not loop_cluster.network_faults_supported


def test_loopback_refuses_network_faults_with_a_reason(loop_cluster: LocalCluster) -> None:
    a = loop_cluster["a"]
    with pytest.raises(NeedsRootError, match="need root and network namespaces"):
        a.drop_from(["127.0.0.2"], "both")
    with pytest.raises(NeedsRootError, match="kill, pause, clock, disk"):
        a.set_netem(delay_ms=100)


def test_faketime_spec_format() -> None:
    assert faketime_spec(5, 1.5) == "+5.000000 x1.500000\n"
    assert faketime_spec(-0.25, 1) == "-0.250000 x1.000000\n"
    with pytest.raises(ValueError):
        faketime_spec(0, 0)
    assert find_libfaketime().name == "libfaketime.so.1"


def test_fake_clock_file_offset_keeps_the_clock_continuous(tmp_path: Path) -> None:
    # A process started at S=100 runs at x1 until t=160, then x2 from there.
    clock = FakeClock(tmp_path / "rc")
    clock.process_started(100.0)
    clock.set(0.0, 2.0, now=160.0)
    # libfaketime: fake(t) = S + (t - S) * rate + F. At t=160 the node must read 160.
    f = clock.file_offset()
    assert 100 + (160 - 100) * 2 + f == pytest.approx(160.0)
    assert 100 + (170 - 100) * 2 + f == pytest.approx(180.0)  # then 2 s per real second
    assert clock.offset_at(170.0) == pytest.approx(10.0)
    assert (tmp_path / "rc").read_text() == faketime_spec(f, 2.0)


def test_offset_is_what_the_node_reports(loop_cluster: LocalCluster) -> None:
    a, b = loop_cluster["a"], loop_cluster["b"]
    assert isinstance(a, LocalNode) and isinstance(b, LocalNode)
    serve(a)
    serve(b)
    assert abs(node_clock_offset(a)) < 0.2
    a.set_clock(5.0)
    assert node_clock_offset(a) == pytest.approx(5.0, abs=0.2)
    assert abs(node_clock_offset(b)) < 0.2  # only that node moved
    a.set_clock(-120.0)
    assert node_clock_offset(a) == pytest.approx(-120.0, abs=0.2)
    assert a.clock_offset() == pytest.approx(-120.0, abs=0.01)
    a.reset_clock()
    assert abs(node_clock_offset(a)) < 0.2


def test_rate_change_is_visible_and_does_not_jump(loop_cluster: LocalCluster) -> None:
    a = loop_cluster["a"]
    assert isinstance(a, LocalNode)
    serve(a)
    time.sleep(1.5)  # time since the process start: a naive x2 spec would jump by this much
    a.set_clock(3.0, 2.0)
    first = node_clock_offset(a)
    assert first == pytest.approx(3.0, abs=0.25)  # continuous: no jump by the process age
    time.sleep(1.0)
    second = node_clock_offset(a)
    # One real second at x2 adds one second of offset.
    assert second - first == pytest.approx(1.0, abs=0.25)
    a.set_clock(a.clock_offset(), 0.5)
    third = node_clock_offset(a)
    time.sleep(1.0)
    assert node_clock_offset(a) - third == pytest.approx(-0.5, abs=0.25)


def test_clock_survives_a_restart(loop_cluster: LocalCluster) -> None:
    a = loop_cluster["a"]
    assert isinstance(a, LocalNode)
    serve(a)
    a.set_clock(30.0, 1.0)
    a.kill()
    serve(a)  # a new process, a new libfaketime start: the file is rewritten for it
    assert node_clock_offset(a) == pytest.approx(30.0, abs=0.3)


def test_set_clock_without_faketime_says_how_to_enable_it(tmp_path: Path) -> None:
    with LocalCluster(["a"], results_dir=tmp_path, isolation="loopback") as c:
        a = c["a"]
        a.start([PY, str(STANDIN), "serve", a.address, str(a.ports[0])])
        with pytest.raises(Exception, match="faketime=True"):
            a.set_clock(1.0)


def test_without_root_auto_isolation_falls_back_to_loopback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("UKEHI_JEPSEN_STATE_DIR", str(tmp_path / "state"))
    with pytest.raises(NeedsRootError, match="not running as root"):
        LocalCluster(["a"], results_dir=tmp_path, isolation="netns").open()
    with LocalCluster(["a", "b"], results_dir=tmp_path) as c:
        assert c.mode == "loopback" and not c.network_faults_supported
        assert (tmp_path / "state" / f"{c.run_id}.json").exists()
        with pytest.raises(NeedsRootError, match="not running as root"):
            c["a"].drop_from(["127.0.0.1"], "in")
    assert not (tmp_path / "state" / f"{c.run_id}.json").exists()


def node_monotonic(node: LocalNode) -> float:
    with socket.create_connection((node.address, node.ports[0]), timeout=5) as s:
        s.sendall(b"mono\n")
        return float(s.makefile("rb").readline())


def test_rate_also_drives_the_monotonic_clock(loop_cluster: LocalCluster) -> None:
    # Timers and leases run on CLOCK_MONOTONIC: a rate skew must reach it, or a
    # clock-rate nemesis could never expose a lease that outlives its term.
    a = loop_cluster["a"]
    assert isinstance(a, LocalNode)
    serve(a)
    a.set_clock(0.0, 2.0)
    m0, t0 = node_monotonic(a), time.monotonic()
    time.sleep(1.0)
    m1, t1 = node_monotonic(a), time.monotonic()
    assert (m1 - m0) / (t1 - t0) == pytest.approx(2.0, abs=0.3)


def test_nodes_start_and_stop_concurrently_from_threads(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor
    names = [f"t{i}" for i in range(6)]
    with LocalCluster(names, results_dir=tmp_path, isolation="loopback") as c:
        with ThreadPoolExecutor(6) as pool:
            pids = list(pool.map(lambda n: serve(c[n]), names))  # type: ignore[arg-type]
        assert len(set(pids)) == 6 and c.state is not None
        assert {n: r.pid for n, r in c.state.processes.items()} == dict(zip(names, pids))
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda n: c[n].kill(), names))
        assert not any(c[n].is_running() for n in names)


@pytest.mark.root
def test_fake_clock_reaches_a_node_in_its_namespace(tmp_path: Path) -> None:
    from backend_probes import needs_netns
    if needs_netns.args[0]:  # skipif condition
        pytest.skip(needs_netns.kwargs["reason"])
    with LocalCluster(["n1", "n2"], results_dir=tmp_path, isolation="netns", faketime=True) as c:
        n1, n2 = c["n1"], c["n2"]
        assert isinstance(n1, LocalNode) and isinstance(n2, LocalNode)
        serve(n1)
        serve(n2)
        n1.set_clock(7.0)  # the LD_PRELOAD survives `ip netns exec`
        assert node_clock_offset(n1) == pytest.approx(7.0, abs=0.2)
        assert abs(node_clock_offset(n2)) < 0.2
