"""Each planted bug (ukehi/bugs.py) changes exactly the code path it names, and only when asked.

Unit-level: the storage, state machine and Raft-config switches are driven directly;
the node-level bugs through one real single-node `ukehi node` process each (the loud
start-up WARNING, and forget-vote's hard state on disk).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ukehi.bugs import ALIASES, ENV_VAR, KNOWN_BUGS, UnsafeBugRefused, check_unsafe_bug, raft_overrides
from ukehi.kv import KVStateMachine, encode_command
from ukehi.raft.config import RaftConfig
from ukehi.storage import WAL, WalEntry, scan_wal
from ukehi.storage.hardstate import HardStateFile
from ukehi.storage.format import HEADER_SIZE

ISSUE_8_BUGS = ("stale-read", "lease-no-drift-bound", "ack-before-commit", "commit-old-term", "forget-vote",
                "accept-stale-term", "no-crc-check", "truncate-then-vote", "no-fencing-check", "lost-unfsynced")


def test_every_bug_of_issue_8_is_known_and_needs_the_switch() -> None:
    assert set(ISSUE_8_BUGS) <= set(KNOWN_BUGS)
    for name in ISSUE_8_BUGS:
        with pytest.raises(UnsafeBugRefused, match=ENV_VAR):
            check_unsafe_bug(name, environ={})
        assert check_unsafe_bug(name, environ={ENV_VAR: "1"}) == name
    with pytest.raises(UnsafeBugRefused, match="known bugs"):
        check_unsafe_bug("no-such-bug", environ={ENV_VAR: "1"})


def test_the_old_early_ack_name_is_an_alias() -> None:
    assert ALIASES["early-ack"] == "ack-before-commit"
    assert check_unsafe_bug("early-ack", environ={ENV_VAR: "1"}) == "ack-before-commit"


def test_raft_bugs_turn_on_their_core_flag_and_nothing_else() -> None:
    assert raft_overrides(None) == {} and raft_overrides("stale-read") == {}
    assert RaftConfig(**raft_overrides("commit-old-term")).unsafe_commit_old_terms_by_counting
    assert RaftConfig(**raft_overrides("accept-stale-term")).unsafe_accept_lower_term_append
    lease = RaftConfig(**raft_overrides("lease-no-drift-bound"))
    assert lease.lease_read and lease.lease_drift_margin == 0
    default = RaftConfig()
    assert not default.lease_read and default.lease_drift_margin > 0
    assert not (default.unsafe_commit_old_terms_by_counting or default.unsafe_accept_lower_term_append)


def _flip_a_command_byte(directory: Path) -> bytes:
    """Write 3 entries and flip one bit inside the 2nd entry's command; returns its old command."""
    wal, _ = WAL.open(str(directory))
    commands = [encode_command({"op": "put", "key": "k", "value": v}) for v in (1, 2, 3)]
    wal.append([WalEntry(1, i + 1, c, 0) for i, c in enumerate(commands)], sync=True)
    wal.close()
    seg = next(directory.glob("wal-*.seg"))
    data = bytearray(seg.read_bytes())
    second = HEADER_SIZE + 4 + int.from_bytes(data[HEADER_SIZE:HEADER_SIZE + 4], "little")
    data[second + 4 + 20 + 2] ^= 0x01  # past entry_len, term, index, cmd_len: a command byte
    seg.write_bytes(bytes(data))
    return commands[1]


def test_no_crc_check_replays_damaged_bytes_unreported(tmp_path: Path) -> None:
    original = _flip_a_command_byte(tmp_path)
    correct = scan_wal(str(tmp_path))
    assert [f.kind for f in correct.report.findings] == ["crc-mismatch"]
    assert [e.index for e in correct.entries] == [1]  # cut at the damage (truncate-to-last-good)
    buggy = scan_wal(str(tmp_path), unsafe_skip_crc=True)
    assert buggy.report.findings == [] and [e.index for e in buggy.entries] == [1, 2, 3]
    assert buggy.entries[1].command != original  # the flipped bit is now log content


def _fenced(sm: KVStateMachine, index: int, token: int, value: int) -> bool:
    command = encode_command({"op": "fenced_put", "key": "k", "value": value, "token": token})
    return sm.apply(index, index, command)["ok"]  # entry token = index: always increasing


@pytest.mark.parametrize("ignore, expect_lower_accepted", [(False, False), (True, True)])
def test_no_fencing_check_accepts_a_lower_token(ignore: bool, expect_lower_accepted: bool) -> None:
    sm = KVStateMachine(unsafe_ignore_fences=ignore)
    assert _fenced(sm, 1, token=10, value=1)
    assert _fenced(sm, 2, token=5, value=2) is expect_lower_accepted
    assert sm.read("k") == (2 if expect_lower_accepted else 1)
    assert int(sm.fence_of("k")) == 10  # the fence itself never goes down


# ---------------------------------------------------------------- real node processes

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_single_node(tmp_path: Path, bug: str, until: str, timeout: float = 20.0) -> str:
    """Start a one-node cluster with BUG until its log shows UNTIL; returns the log text."""
    port = _free_port()
    log_path = tmp_path / "node.log"
    argv = [sys.executable, "-m", "ukehi.cli", "node", "--id", "n1", "--listen", f"127.0.0.1:{port}",
            "--peers", f"n1=127.0.0.1:{port}", "--data-dir", str(tmp_path / "data"),
            "--election-timeout", "150:300", "--heartbeat", "50", "--unsafe-bug", bug, "--insecure"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, ENV_VAR: "1"}, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if until in log_path.read_text(errors="replace"):
                break
            time.sleep(0.1)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return log_path.read_text(errors="replace")


@pytest.mark.parametrize("bug", sorted(KNOWN_BUGS))
def test_a_node_with_a_planted_bug_says_so_loudly_and_still_runs(tmp_path: Path, bug: str) -> None:
    text = _run_single_node(tmp_path, bug, "event=became-leader")
    warning = [line for line in text.splitlines() if "event=unsafe-bug " in line]
    assert warning and "level=warning" in warning[0] and f"bug={bug}" in warning[0], text
    assert "event=became-leader" in text, text  # the bug leaves the node working otherwise


def test_the_node_refuses_a_bug_without_the_switch(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    done = subprocess.run([sys.executable, "-m", "ukehi.cli", "node", "--id", "n1", "--listen", "127.0.0.1:1",
                           "--peers", "n1=127.0.0.1:1", "--data-dir", str(tmp_path), "--unsafe-bug", "forget-vote",
                           "--insecure"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode != 0 and ENV_VAR in done.stderr


def test_forget_vote_persists_the_term_but_not_the_vote(tmp_path: Path) -> None:
    _run_single_node(tmp_path, "forget-vote", "event=became-leader")
    hs = HardStateFile(str(tmp_path / "data" / "group-0" / "hardstate")).load()
    assert hs.term >= 1 and hs.vote is None  # it voted for itself, and forgot


def test_a_correct_node_persists_its_vote(tmp_path: Path) -> None:
    # The same start without the bug: "stale-read" does not touch the hard state.
    _run_single_node(tmp_path, "stale-read", "event=became-leader")
    hs = HardStateFile(str(tmp_path / "data" / "group-0" / "hardstate")).load()
    assert hs.term >= 1 and hs.vote == "n1"
