"""Pure parts of the node: proposal matching, config parsing, log lines, the unsafe-bug switch."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from ukehi import wire
from ukehi.bugs import UnsafeBugRefused, check_unsafe_bug
from ukehi.config import ConfigError, build_config, load_config_file, parse_peers
from ukehi.nodelog import NodeLogger, format_line, parse_line
from ukehi.waiters import ProposalWaiters, ReadWaiters

OK = (wire.MsgType.OK, {"value": 1})


def test_proposal_answered_only_when_index_and_term_match():
    async def go():
        w = ProposalWaiters()
        same = w.add(5, 2, deadline=1e18)
        other = w.add(6, 2, deadline=1e18)
        w.applied(5, 2, OK)
        w.applied(6, 3, OK)  # another leader's entry took index 6
        return same.result(), other.result()

    same, other = asyncio.run(go())
    assert same == OK
    assert other[0] is wire.MsgType.ERROR and other[1]["code"] == "not_leader"
    assert "overwritten" in other[1]["message"]


def test_snapshot_and_deadline_make_outcomes_unknown():
    async def go():
        w = ProposalWaiters()
        covered = w.add(3, 1, deadline=1e18)
        later = w.add(9, 1, deadline=10.0)
        w.snapshot_installed(5)
        w.expire(now=11.0)
        return covered.result(), later.result(), len(w)

    covered, later, left = asyncio.run(go())
    for outcome in (covered, later):
        assert outcome[1]["code"] == "timeout"  # unknown, never a definite failure
        assert wire.ErrorCode(outcome[1]["code"]) not in wire.DEFINITE_ERRORS
    assert left == 0


def test_reads_wait_for_their_read_index_to_apply():
    async def go():
        r = ReadWaiters()
        loop = asyncio.get_running_loop()
        a, b = loop.create_future(), loop.create_future()
        r.add(b"c1", [a, b], deadline=1e18)
        r.read_state(b"c1", index=10, applied=7)
        before = a.done()
        r.applied(10)
        return before, a.result(), b.result()

    assert asyncio.run(go()) == (False, True, True)


def test_config_parsing_and_errors(tmp_path):
    cfg = build_config({"node_id": "n1", "peers": "n1=127.0.0.1:7001,n2=127.0.0.1:7002",
                        "data_dir": str(tmp_path), "election_timeout": "150:300", "heartbeat": 50,
                        "corruption_policy": "RefuseStart", "insecure": True})
    assert cfg.listen == ("127.0.0.1", 7001) and cfg.corruption_policy == "refuse-start"
    assert cfg.tick_ms == 15
    with pytest.raises(ConfigError, match="twice"):
        parse_peers("n1=127.0.0.1:1,n1=127.0.0.1:2")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_peers("n1=nowhere")
    with pytest.raises(ConfigError, match="twice --heartbeat"):
        build_config({"node_id": "n1", "peers": "n1=127.0.0.1:1", "data_dir": "d",
                      "election_timeout": "100:200", "heartbeat": 80})
    with pytest.raises(ConfigError, match="unknown setting"):
        build_config({"node_id": "n1", "peers": "n1=127.0.0.1:1", "data_dir": "d", "colour": "red"})
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"id": "n2", "data-dir": "x"}))
    assert load_config_file(str(path)) == {"id": "n2", "data_dir": "x"}
    bad = tmp_path / "c.toml"
    bad.write_text("id = ")
    with pytest.raises(ConfigError, match="not valid"):
        load_config_file(str(bad))


def test_replication_flow_control_settings():
    base = {"node_id": "n1", "peers": "n1=127.0.0.1:7001", "data_dir": "d", "insecure": True}
    default = build_config(base)
    assert (default.max_inflight, default.max_entries_per_message) == (256, 256)
    stop_and_wait = build_config({**base, "max_inflight": "1", "max_entries_per_message": 1})
    assert (stop_and_wait.max_inflight, stop_and_wait.max_entries_per_message) == (1, 1)
    with pytest.raises(ConfigError, match="--max-inflight must be a whole number >= 1"):
        build_config({**base, "max_inflight": 0})
    with pytest.raises(ConfigError, match="--max-entries-per-message must be a whole number"):
        build_config({**base, "max_entries_per_message": "many"})


def test_snapshot_chunk_size_reaches_the_core(tmp_path):
    from ukehi.node import raft_config
    from ukehi.nodecli import add_arguments, config_from_args
    import argparse

    base = {"node_id": "n1", "peers": "n1=127.0.0.1:7001", "data_dir": str(tmp_path), "insecure": True}
    assert raft_config(build_config(base)).snapshot_chunk_size == 1 << 20
    assert raft_config(build_config({**base, "snapshot_chunk_size": "64"})).snapshot_chunk_size == 64
    with pytest.raises(ConfigError, match="--snapshot-chunk-size must be a whole number >= 1"):
        build_config({**base, "snapshot_chunk_size": 0})
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--id", "n1", "--peers", "n1=127.0.0.1:7001", "--data-dir", str(tmp_path),
                              "--insecure", "--snapshot-chunk-size", "40"])
    assert config_from_args(args).snapshot_chunk_size == 40


def test_log_lines_round_trip():
    line = format_line("info", "n1", "became-leader", {"term": 3, "detail": 'a "quoted" = thing', "none": None}, 0.0)
    assert line.startswith("ts=1970-01-01T00:00:00.000Z level=info node=n1 event=became-leader term=3 ")
    parsed = parse_line(line)
    assert parsed["detail"] == 'a "quoted" = thing' and parsed["term"] == "3" and parsed["none"] == "none"
    out = io.StringIO()
    NodeLogger("n1", "warning", out).info("hidden")
    assert out.getvalue() == ""


def test_unsafe_bug_needs_the_switch():
    assert check_unsafe_bug(None, {}) is None
    with pytest.raises(UnsafeBugRefused, match="UKEHI_I_KNOW_THIS_IS_UNSAFE"):
        check_unsafe_bug("stale-read", {})
    with pytest.raises(UnsafeBugRefused, match="unknown"):
        check_unsafe_bug("nope", {"UKEHI_I_KNOW_THIS_IS_UNSAFE": "1"})
    assert check_unsafe_bug("stale-read", {"UKEHI_I_KNOW_THIS_IS_UNSAFE": "1"}) == "stale-read"


def test_the_core_gets_the_node_timers_in_ticks(tmp_path):
    from ukehi.node import raft_config

    def core_cfg(timeout: str, heartbeat: int, bug: str | None = None):
        return raft_config(build_config({"node_id": "n1", "peers": "n1=127.0.0.1:7001", "data_dir": str(tmp_path),
                                         "election_timeout": timeout, "heartbeat": heartbeat,
                                         "insecure": True}), bug)

    # 1000:2000 at 100 ms ticks: [10, 20) ticks
    rc = core_cfg("1000:2000", 100)
    assert (rc.election_tick, rc.election_tick_max, rc.heartbeat_tick) == (10, 20, 1)
    # a range narrower than [MIN, 2*MIN) is kept as given, not widened
    rc = core_cfg("1000:1300", 100)
    assert (rc.election_tick, rc.election_tick_max) == (10, 13)
    # a planted bug's core flag wins
    assert core_cfg("1000:2000", 100, "commit-old-term").unsafe_commit_old_terms_by_counting is True
    assert rc.unsafe_commit_old_terms_by_counting is False
