"""The wasted-work checkers in the simulator (checkers/whitebox/wasted.py, fed by
ukehi.sim.fs.SimFS and ukehi.sim.world.WasteWatch): a correct seed passes all three; a build
that fsyncs clean WAL segments, re-sends entries without reason, or sends oversized appends
(each planted here by a monkeypatch of the real code, as the triaged mutants do) fails its
seed by that checker alone, with the node, term and index named."""

from __future__ import annotations

import pytest

from harness.sim.runner import SimSettings, run_seed
from ukehi.raft import core as raft_core
from ukehi.raft.log import RaftLog
from ukehi.raft.messages import HeartbeatResponse
from ukehi.raft.tracker import Progress, ProgressState
from ukehi.storage.wal import WAL

WASTED = ("redundant-fsync", "redundant-replication", "append-cap")
SHORT = SimSettings(workload="register", duration=4.0)


def _only(result, name: str) -> dict:
    assert result.valid is False, result.checkers
    assert result.failing_checkers() == [name], {n: result.checkers[n].get("explanation") for n in result.failing_checkers()}
    return result.checkers[name]


def test_a_correct_seed_passes_every_wasted_work_checker_and_keeps_its_digest():
    first = run_seed(1, SHORT)
    assert first.valid is True, first.failing_checkers()
    for name in WASTED:
        assert first.checkers[name]["valid"] is True, first.checkers[name]
    assert first.checkers["redundant-replication"]["appends"] > 0
    assert run_seed(1, SHORT).digest == first.digest  # the bookkeeping draws nothing


def test_a_wal_that_fsyncs_with_nothing_pending_fails_redundant_fsync(monkeypatch: pytest.MonkeyPatch):
    real = WAL.sync

    def sync(self: WAL) -> None:  # as mutant wal.py WAL.sync without ``self._unsynced = False``
        real(self)
        self._unsynced = True

    monkeypatch.setattr(WAL, "sync", sync)
    out = _only(run_seed(1, SHORT), "redundant-fsync")
    assert "wal/wal-00000001.seg" in out["explanation"] and "with no write since its previous fsync" in out["explanation"]
    assert out["violations"][0]["node"].startswith("n")


def test_a_leader_that_probes_on_every_heartbeat_answer_fails_redundant_replication(monkeypatch: pytest.MonkeyPatch):
    real = raft_core.RaftCore._step_leader

    def step_leader(self, m):  # as mutant core.py ``REPLICATE and rejection_held`` -> ``or``
        pr = self.prs.get(m.src)
        if isinstance(m, HeartbeatResponse) and pr is not None and pr.state is ProgressState.REPLICATE:
            pr.rejection_held = True
        return real(self, m)

    monkeypatch.setattr(raft_core.RaftCore, "_step_leader", step_leader)
    out = _only(run_seed(1, SHORT), "redundant-replication")
    v = out["violations"][0]
    assert v["rule"] == "replicating" and v["term"] >= 1 and v["index"] >= 1
    assert f"{v['leader']} (leader, term {v['term']}) re-sent entry {v['index']} to {v['follower']}" in out["explanation"]


def test_a_leader_that_sends_to_a_paused_probe_fails_redundant_replication(monkeypatch: pytest.MonkeyPatch):
    # As mutant core.py _send_append without its first ``return False``: a probe outstanding
    # does not hold the next append back.
    monkeypatch.setattr(Progress, "is_paused", lambda self: False)
    out = _only(run_seed(1, SHORT), "redundant-replication")
    assert out["resends"]["unprompted"] > 0
    assert "nothing from" in out["explanation"]


def test_slices_past_max_entries_per_message_fail_append_cap(monkeypatch: pytest.MonkeyPatch):
    real = RaftLog.slice
    monkeypatch.setattr(RaftLog, "slice", lambda self, lo, hi, max_count, max_bytes: real(self, lo, hi, 1 << 30, max_bytes))
    out = _only(run_seed(0, SHORT), "append-cap")
    assert "over max_entries_per_message=" in out["explanation"]


def test_every_message_through_the_wire_codec_is_judged_alike(monkeypatch: pytest.MonkeyPatch):
    # 1 seed in 8 sends every peer message as bytes (ukehi.sim.world's codec sampling): the
    # watch reads the decoded frames then; correct passes, a planted resend still fails.
    import dataclasses

    from harness.sim import runner

    real_options = runner._world_options
    monkeypatch.setattr(runner, "_world_options",
                        lambda opts, settings: dataclasses.replace(real_options(opts, settings), wire_every=1))
    correct = run_seed(1, SHORT, keep_world=True)
    assert correct.world.messages_coded == correct.world.messages_sent > 0
    assert correct.valid is True, correct.failing_checkers()
    assert correct.checkers["redundant-replication"]["appends"] > 0
    monkeypatch.setattr(Progress, "is_paused", lambda self: False)
    out = _only(run_seed(1, SHORT), "redundant-replication")
    assert out["resends"]["unprompted"] > 0
