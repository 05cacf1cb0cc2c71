"""The local backend in namespaces: faults observed from outside, with stand-in servers.

One 3-node cluster serves the whole module (setting one up costs about a second);
every test leaves it healed, unshaped and serving.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends.base import BackendError
from harness.backends.local import LocalCluster, LocalNode
from harness.backends.process import proc_stat

from backend_probes import PY, STANDIN, can_talk, needs_netns, probe_from_host, rtt_ms, serve, udp_count, udp_seen

pytestmark = [pytest.mark.root, needs_netns]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(["n1", "n2", "n3"], results_dir=tmp_path_factory.mktemp("run"),
                      isolation="netns") as c:
        for node in c:
            serve(node)  # type: ignore[arg-type]
        yield c


@pytest.fixture(autouse=True)
def restored(cluster: LocalCluster) -> Iterator[None]:
    yield
    for node in cluster:
        assert isinstance(node, LocalNode)
        if node.process_state() in ("T", "t"):
            node.resume()
        node.heal_network()
        node.clear_netem()
        if not node.is_running():
            serve(node)


def nodes(cluster: LocalCluster) -> tuple[LocalNode, LocalNode, LocalNode]:
    n1, n2, n3 = (cluster[n] for n in ("n1", "n2", "n3"))
    assert isinstance(n1, LocalNode) and isinstance(n2, LocalNode) and isinstance(n3, LocalNode)
    return n1, n2, n3


def test_each_node_has_its_own_namespace_address_and_real_pid(cluster: LocalCluster) -> None:
    n1, n2, n3 = nodes(cluster)
    assert len({n1.address, n2.address, n3.address}) == 3
    for node in (n1, n2, n3):
        assert node.address.startswith("10.213.")
        # `ip netns exec` execs: the pid we hold is the stand-in itself, not a wrapper.
        assert node.pid is not None
        with open(f"/proc/{node.pid}/cmdline", "rb") as f:
            assert b"standin.py" in f.read()
        rc, out, _ = node.exec(["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        assert rc == 0 and node.address in out


def test_every_pair_talks(cluster: LocalCluster) -> None:
    ns = nodes(cluster)
    for src in ns:
        for dst in ns:
            if src is not dst:
                assert can_talk(src, dst), f"{src.name} -> {dst.name}"
        assert probe_from_host(src, 1.0)


def test_symmetric_drop_cuts_only_that_pair_and_heal_restores(cluster: LocalCluster) -> None:
    n1, n2, n3 = nodes(cluster)
    n1.drop_from([n2.address], "both")
    n2.drop_from([n1.address], "both")
    assert not can_talk(n1, n2, timeout=0.7)
    assert not can_talk(n2, n1, timeout=0.7)
    assert can_talk(n1, n3) and can_talk(n3, n1)
    assert can_talk(n2, n3) and can_talk(n3, n2)
    n1.heal_network()
    n2.heal_network()
    assert can_talk(n1, n2) and can_talk(n2, n1)


def test_one_way_drop_lets_datagrams_through_in_one_direction_only(cluster: LocalCluster) -> None:
    n1, n2, _ = nodes(cluster)
    n2.drop_from([n1.address], "in")  # n2 no longer hears n1; n1 still hears n2
    assert not udp_seen(n1, n2, "one-way-1to2")
    assert udp_seen(n2, n1, "one-way-2to1")
    n2.heal_network()
    assert udp_seen(n1, n2, "healed-1to2")


def test_outbound_drop_is_one_way_too(cluster: LocalCluster) -> None:
    n1, _, n3 = nodes(cluster)
    n1.drop_from([n3.address], "out")
    assert not udp_seen(n1, n3, "out-1to3")
    assert udp_seen(n3, n1, "out-3to1")


def test_kill_then_start_serves_with_a_new_pid(cluster: LocalCluster) -> None:
    _, _, n3 = nodes(cluster)
    old = n3.pid
    assert old is not None
    n3.kill()
    assert n3.pid is None and not n3.is_running()
    assert proc_stat(old) is None  # reaped: the pid is gone from /proc
    assert not probe_from_host(n3, 0.5)
    new = serve(n3)
    assert new != old and n3.pid == new
    assert probe_from_host(n3, 1.0)


def test_pause_stops_answering_and_resume_answers_again(cluster: LocalCluster) -> None:
    n1, n2, _ = nodes(cluster)
    n2.pause()
    assert n2.process_state() == "T"
    assert n2.is_running()
    assert not can_talk(n1, n2, timeout=0.7)
    n2.resume()
    assert n2.process_state() != "T"
    assert can_talk(n1, n2, timeout=2.0)


def test_stop_sends_sigterm_and_reaps(cluster: LocalCluster) -> None:
    n1, _, _ = nodes(cluster)
    pid = n1.pid
    n1.pause()  # a paused node must still stop (SIGCONT follows the SIGTERM)
    status = n1.stop(timeout=5.0)
    assert status == -15  # killed by SIGTERM, not by the SIGKILL fallback
    assert pid is not None and proc_stat(pid) is None


def kernel_has_netem(c: LocalCluster) -> bool:
    return c._kernel_has_netem(c["n1"].netns)  # type: ignore[attr-defined]


@pytest.fixture(scope="module", params=["netem", "nfqueue"])
def shaped(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           cluster: LocalCluster) -> Iterator[LocalCluster]:
    """A second cluster per packet shaper: tc netem where the kernel has it, and the nfqueue delayer."""
    if request.param == "netem" and not kernel_has_netem(cluster):
        pytest.skip("this kernel has no sch_netem (CONFIG_NET_SCH_NETEM); the nfqueue shaper covers it")
    with LocalCluster(["n1", "n2", "n3"], results_dir=tmp_path_factory.mktemp("shaped"),
                      isolation="netns", shaper=request.param) as c:
        assert c.shaper == request.param
        for node in c:
            serve(node)  # type: ignore[arg-type]
        yield c
        for node in c:
            node.clear_netem()


def test_auto_shaper_picks_netem_only_where_the_kernel_has_it(cluster: LocalCluster) -> None:
    assert cluster.shaper == ("netem" if kernel_has_netem(cluster) else "nfqueue")


def test_forcing_netem_without_sch_netem_fails_clearly_and_leaves_nothing(
        cluster: LocalCluster, tmp_path: Path) -> None:
    if kernel_has_netem(cluster):
        pytest.skip("this kernel has sch_netem")
    with LocalCluster(["n1", "n2"], results_dir=tmp_path, isolation="netns", shaper="netem") as c:
        n1 = c["n1"]
        with pytest.raises(BackendError, match="sch_netem"):
            n1.set_netem(delay_ms=10, to=[c["n2"].address])
        rc, out, _ = n1.exec(["tc", "qdisc", "show", "dev", "eth0"])  # type: ignore[attr-defined]
        assert rc == 0 and "htb" not in out and "netem" not in out


def test_netem_delay_raises_round_trip(shaped: LocalCluster) -> None:
    n1, n2, _ = nodes(shaped)
    base = rtt_ms(n1, n2)
    n2.set_netem(delay_ms=100)  # n2's replies wait 100 ms
    delayed = rtt_ms(n1, n2)
    assert delayed - base > 80, (base, delayed)
    n2.clear_netem()
    assert rtt_ms(n1, n2) - base < 50


def test_netem_per_link_delays_only_that_destination(shaped: LocalCluster) -> None:
    n1, n2, n3 = nodes(shaped)
    base12, base13 = rtt_ms(n2, n1), rtt_ms(n3, n1)
    n1.set_netem(delay_ms=100, to=[n2.address])  # only n1 -> n2 is slowed
    assert rtt_ms(n2, n1) - base12 > 80
    assert rtt_ms(n3, n1) - base13 < 50
    n1.clear_netem()
    assert rtt_ms(n2, n1) - base12 < 50


def test_netem_loss_of_everything_cuts_traffic(shaped: LocalCluster) -> None:
    n1, n2, _ = nodes(shaped)
    n2.set_netem(loss_pct=100)
    assert not can_talk(n1, n2, timeout=0.7)
    n2.clear_netem()
    assert can_talk(n1, n2)


def test_netem_duplication_doubles_datagrams(shaped: LocalCluster) -> None:
    n1, n2, _ = nodes(shaped)
    n1.set_netem(duplicate_pct=100, to=[n2.address])
    assert udp_count(n1, n2, "dup-twice") == 6  # three datagrams sent, each arrives twice
    n1.clear_netem()
    assert udp_count(n1, n2, "dup-once") == 3


def test_netem_jitter_reorders_datagrams(shaped: LocalCluster) -> None:
    n1, n2, _ = nodes(shaped)
    n1.set_netem(delay_ms=50, jitter_ms=45, to=[n2.address])
    rc, _, err = n1.exec([PY, str(STANDIN), "udpseq", n2.address, str(n2.ports[0]), "seq", "40"])
    assert rc == 0, err
    time.sleep(0.3)
    got = [int(line.split(":")[1]) for line in (n2.workdir / "node.log").read_text().splitlines()
           if line.startswith("udp seq:")]
    assert sorted(got) == list(range(40))  # nothing lost
    assert got != sorted(got)  # but not in the order sent


def test_clear_netem_stops_the_delayer(shaped: LocalCluster) -> None:
    n1, n2, _ = nodes(shaped)
    n1.set_netem(delay_ms=20)
    delayer = n1._delayer  # type: ignore[attr-defined]
    n1.clear_netem()
    if shaped.shaper == "nfqueue":
        assert delayer is not None and delayer.poll() == 0  # exited cleanly, released its packets
    rc, out, _ = n1.exec(["iptables", "-w", "-S", "UKJ-SHAPE"])
    assert rc == 0 and "NFQUEUE" not in out


def test_bad_fault_arguments_are_refused_before_touching_the_kernel(cluster: LocalCluster) -> None:
    n1, _, _ = nodes(cluster)
    with pytest.raises(ValueError, match="IPv4"):
        n1.drop_from(["n2"], "both")
    with pytest.raises(ValueError, match="needs a delay"):
        n1.set_netem(reorder_pct=10)
    rc, out, _ = n1.exec(["iptables", "-w", "-S", "UKJ-IN"])
    assert rc == 0 and "DROP" not in out


def test_files_and_exec_run_in_the_node_context(cluster: LocalCluster) -> None:
    n1, _, _ = nodes(cluster)
    n1.write_file("data/blob", b"\x00\x01wal")
    assert n1.read_file("data/blob") == b"\x00\x01wal"
    assert (n1.workdir / "data" / "blob").read_bytes() == b"\x00\x01wal"
    rc, out, _ = n1.exec(["sh", "-c", "sleep 5"], timeout=0.3)
    assert rc == 124 and out == ""
    t0 = time.monotonic()
    rc, _, _ = n1.exec(["true"])
    assert rc == 0 and time.monotonic() - t0 < 5
