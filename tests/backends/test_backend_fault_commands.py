"""The exact kernel commands behind each fault, and the naming/subnet rules (no root needed)."""

from __future__ import annotations

import ipaddress

import pytest

from harness.backends import netns as nsnet
from harness.backends.faults import (Netem, delayer_args, drop_commands, duplicate_commands, heal_commands,
                                     needs_delayer, netem_commands, queue_commands)
from harness.net import IFNAME_MAX


def test_drop_directions() -> None:
    assert drop_commands(["10.0.0.2"], "in") == [["iptables", "-w", "-A", "UKJ-IN", "-s", "10.0.0.2", "-j", "DROP"]]
    assert drop_commands(["10.0.0.2"], "out") == [["iptables", "-w", "-A", "UKJ-OUT", "-d", "10.0.0.2", "-j", "DROP"]]
    both = drop_commands(["10.0.0.2", "10.0.0.3"], "both")
    assert len(both) == 4 and {c[3] for c in both} == {"UKJ-IN", "UKJ-OUT"}
    with pytest.raises(ValueError, match="in/out/both"):
        drop_commands(["10.0.0.2"], "sideways")
    with pytest.raises(ValueError, match="IPv4"):
        drop_commands(["n2"], "in")
    assert all("-F" in c for c in heal_commands())


def test_netem_arguments_and_validation() -> None:
    assert Netem(100, 10, 5, 1, 25).args() == ["netem", "delay", "100ms", "10ms", "loss", "5%",
                                               "duplicate", "1%", "reorder", "25%"]
    assert Netem(loss_pct=100).args() == ["netem", "loss", "100%"]
    for bad in (dict(loss_pct=101), dict(delay_ms=-1), dict(jitter_ms=5), dict(reorder_pct=5)):
        with pytest.raises(ValueError):
            Netem(**bad)  # type: ignore[arg-type]


def test_netem_everywhere_is_one_root_qdisc() -> None:
    (cmd,) = netem_commands(Netem(delay_ms=50))
    assert cmd[:7] == ["tc", "qdisc", "add", "dev", "eth0", "root", "handle"] and "netem" in cmd


def test_netem_per_link_steers_only_listed_destinations() -> None:
    cmds = netem_commands(Netem(delay_ms=50), to=["10.213.1.11", "10.213.1.12"])
    root = cmds[0]
    assert "htb" in root and root[root.index("default") + 1] == "1"  # unlisted traffic: class 1:1
    netem = [c for c in cmds if "netem" in c]
    assert len(netem) == 1 and netem[0][netem[0].index("parent") + 1] == "1:2"
    filters = [c for c in cmds if c[1] == "filter"]
    assert [f[f.index("dst") + 1] for f in filters] == ["10.213.1.11/32", "10.213.1.12/32"]
    assert all(f[-1] == "1:2" for f in filters)
    with pytest.raises(ValueError, match="shapes nothing"):
        netem_commands(Netem(delay_ms=1), to=[])


def test_names_fit_the_kernel_limit_and_are_recognised_as_ours() -> None:
    rid = "a1b2c3"
    names = [nsnet.bridge_name(rid), nsnet.host_veth_name(rid, 199), nsnet.peer_veth_name(rid, 199)]
    assert all(len(n) <= IFNAME_MAX for n in names)
    assert all(nsnet.OWN_LINK_RE.match(n).group(1) == rid for n in names)  # type: ignore[union-attr]
    assert nsnet.OWN_NETNS_RE.match(nsnet.netns_name(rid, "n 1/x")).group(1) == rid  # type: ignore[union-attr]
    assert "/" not in nsnet.netns_name(rid, "n 1/x")
    assert not nsnet.OWN_LINK_RE.match("docker0") and not nsnet.OWN_LINK_RE.match("ukjbzzzzzz")


def test_subnet_choice_avoids_every_taken_network() -> None:
    taken = [ipaddress.ip_network(f"10.213.{i}.0/24") for i in range(256) if i != 77]
    assert nsnet.choose_subnet("a1b2c3", taken) == ipaddress.ip_network("10.213.77.0/24")
    # A wide route over the whole /16 leaves nothing: the error says how to free space.
    with pytest.raises(Exception, match="ukehi-jepsen cleanup"):
        nsnet.choose_subnet("a1b2c3", [ipaddress.ip_network("10.0.0.0/8")])
    net = nsnet.choose_subnet("a1b2c3", [])
    assert net.subnet_of(nsnet.SUPERNET) and nsnet.node_address(net, 0).endswith(".10")


def test_nfqueue_shaping_rules() -> None:
    (everything,) = queue_commands(None)
    assert everything[3:6] == ["UKJ-SHAPE", "-o", "eth0"] and "--queue-bypass" in everything
    per_link = queue_commands(["10.213.1.11"])
    assert per_link[0][per_link[0].index("-d") + 1] == "10.213.1.11"
    (dup,) = duplicate_commands(25, ["10.213.1.12"])
    assert dup[dup.index("--probability") + 1] == "0.250000"
    assert dup[dup.index("--gateway") + 1] == "10.213.1.12" and dup[2:5] == ["-t", "mangle", "-A"]
    assert needs_delayer(Netem(delay_ms=1)) and needs_delayer(Netem(loss_pct=1))
    assert not needs_delayer(Netem(duplicate_pct=50))
    args = delayer_args(Netem(delay_ms=100, jitter_ms=5, reorder_pct=10))
    assert args[args.index("--delay-ms") + 1] == "100" and args[args.index("--reorder-pct") + 1] == "10"
