"""A broken build for the availability tests: imported at start-up by every Python process
whose PYTHONPATH starts with this directory; acts only in node processes (`-m ukehi.cli`)
and only when UKJ_TEST_BROKEN_BUILD names a breakage:

- ``no-votes``: vote counting never reaches a decision, so nobody is ever elected
  (the nodes run, talk and campaign forever);
- ``crash-at-start``: building the Raft core raises, so every node dies at start with a
  Python traceback;
- ``port-in-use``: listening fails with EADDRINUSE, as when another process holds the port
  (the machine's fault, not the build's);
- ``drop-proposals``: the leader drops every client proposal (ProposalDropped), so every
  write is refused while reads are served;
- ``drop-conf-changes``: the leader drops every membership change (the node retries until
  its proposal timeout), so no node is ever added or removed;
- ``no-timeout-now``: a leader never sends TimeoutNow, so every leadership transfer gives
  up cleanly after an election timeout (nothing unsafe happens; no transfer succeeds);
- ``unanimous-votes``: an election needs every voter's vote instead of a majority (a quorum
  off by one on 3 voters), so the cluster serves while every node runs and never elects
  a leader while one is down;
- ``append-echo``: the leader answers every successful append response with another
  append, empty when the follower has everything (a "send more" test off by one): a
  message storm at the round-trip rate that breaks no safety property and serves every
  request;
- ``heartbeat-probe``: the leader answers every heartbeat response with an append, empty
  when the follower has everything: one more append and answer per heartbeat and
  follower, twice an idle node's work (what mutant core.py:681:17:and_or was first thought
  to do), which the simulator's per-role busy-when-idle budget catches and the older
  2x-per-peer budget did not.

- ``forget-reads``: the leader's core takes every fifth linearizable read and never
  confirms or drops it (a lost read context): clients see timeouts, which lost replies also
  cause, and the driver's "read-lost" error (node-health) is what names it.

The two ``drop-`` modes, ``no-timeout-now``, ``unanimous-votes``, ``append-echo``,
``heartbeat-probe`` and ``forget-reads`` act in the simulator too
(``-m harness.cli sim``: the node code runs in that process).
"""

import os
import sys

_MODE = os.environ.get("UKJ_TEST_BROKEN_BUILD")

_ARGV = getattr(sys, "orig_argv", [])
_SIM = "harness.cli" in _ARGV and "sim" in _ARGV

if _MODE in ("drop-proposals", "drop-conf-changes") and ("ukehi.cli" in _ARGV or _SIM):
    from ukehi.raft.core import RaftCore as _Core
    from ukehi.raft.types import ProposalDropped as _Dropped

    _NAME = "propose" if _MODE == "drop-proposals" else "propose_conf_change"

    def _dropped(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._check_idle(f"{_NAME}()")
        raise _Dropped(f"planted: {_MODE}")

    setattr(_Core, _NAME, _dropped)

if _MODE == "no-timeout-now" and ("ukehi.cli" in _ARGV or _SIM):
    from ukehi.raft.core import RaftCore as _Core

    def _never_sent(self, to):  # type: ignore[no-untyped-def]
        self._lease_disabled = True

    _Core._send_timeout_now = _never_sent

if _MODE == "unanimous-votes" and ("ukehi.cli" in _ARGV or _SIM):
    import ukehi.raft.quorum as _quorum

    def _unanimous(voters, votes):  # type: ignore[no-untyped-def]
        if not voters:
            return _quorum.VoteResult.WON
        if all(votes.get(v) is True for v in voters):
            return _quorum.VoteResult.WON
        if any(votes.get(v) is False for v in voters):
            return _quorum.VoteResult.LOST
        return _quorum.VoteResult.PENDING

    _quorum._simple_vote = _unanimous

if _MODE == "append-echo" and ("ukehi.cli" in _ARGV or _SIM):
    from ukehi.raft.core import RaftCore as _Core
    from ukehi.raft.messages import AppendResponse as _AppendResponse

    _step_leader = _Core._step_leader

    def _echo(self, m):  # type: ignore[no-untyped-def]
        _step_leader(self, m)
        if isinstance(m, _AppendResponse) and m.success and m.src in self.prs:
            self._must_send.add(m.src)

    _Core._step_leader = _echo

if _MODE and "ukehi.cli" in _ARGV:
    if _MODE == "no-votes":
        import ukehi.raft.quorum as _quorum

        def _never_decided(voters, votes):  # type: ignore[no-untyped-def]
            return _quorum.VoteResult.PENDING if voters else _quorum.VoteResult.WON

        _quorum._simple_vote = _never_decided
    elif _MODE == "crash-at-start":
        import ukehi.node.server as _server

        def _broken_core(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise KeyError("planted: the core cannot be built")

        _server.build_core = _broken_core
    elif _MODE == "port-in-use":
        import errno

        import ukehi.server as _srv

        async def _in_use(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise OSError(errno.EADDRINUSE, "address already in use")

        _srv.NodeServer.start = _in_use

if _MODE == "heartbeat-probe" and ("ukehi.cli" in _ARGV or _SIM):
    from ukehi.raft.core import RaftCore as _Core
    from ukehi.raft.messages import HeartbeatResponse as _HeartbeatResponse

    _step_leader_hb = _Core._step_leader

    def _probe_each_heartbeat(self, m):  # type: ignore[no-untyped-def]
        _step_leader_hb(self, m)
        if isinstance(m, _HeartbeatResponse) and m.src in self.prs:
            self._must_send.add(m.src)

    _Core._step_leader = _probe_each_heartbeat

if _MODE == "forget-reads" and ("ukehi.cli" in _ARGV or _SIM):
    from ukehi.raft.core import RaftCore as _Core
    from ukehi.raft.types import Role as _Role

    _read_index = _Core.read_index

    def _forgetful_read_index(self, ctx):  # type: ignore[no-untyped-def]
        self._planted_reads = getattr(self, "_planted_reads", 0) + 1
        if self.role is _Role.LEADER and self._planted_reads % 5 == 0:
            return  # taken, never answered nor dropped
        _read_index(self, ctx)

    _Core.read_index = _forgetful_read_index
