"""Planted bugs for testing the harness: a node that is wrong on purpose.

The harness must prove it catches a broken system, so a node can be started with
`--unsafe-bug NAME`. That is refused unless the environment variable
`UKEHI_I_KNOW_THIS_IS_UNSAFE=1` is set, so nobody turns one on by accident in production,
and the node logs a WARNING line naming the bug when it starts.

Each bug is a name the node, the Raft core or the storage checks at one precise place;
nothing else changes. Where the code path lives:

- node (ukehi/node/: api, driver, recovery, server): stale-read, ack-before-commit, forget-vote, truncate-then-vote,
  lost-unfsynced;
- Raft core flags (ukehi/raft/config.py), set through :func:`raft_overrides`:
  commit-old-term, accept-stale-term, lease-no-drift-bound;
- storage (ukehi/storage/scan.py): no-crc-check;
- state machine (ukehi/kv.py): no-fencing-check;
- transactions (ukehi/txnserve.py): txn-not-atomic, read-uncommitted-txn;
- sharded nodes (ukehi/node/groups.py): no-shard-check, serve-before-install, no-epoch-check,
  drop-during-move.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

__all__ = ["KNOWN_BUGS", "ALIASES", "ENV_VAR", "UnsafeBugRefused", "canonical_bug", "check_unsafe_bug",
           "check_unsafe_fsync", "raft_overrides", "BACKGROUND_FSYNC_S"]

ENV_VAR = "UKEHI_I_KNOW_THIS_IS_UNSAFE"

KNOWN_BUGS: dict[str, str] = {
    # Serve get from this node's state machine at once, on any node and without ReadIndex:
    # a partitioned old leader or a lagging follower returns stale values.
    "stale-read": "answer reads from local state on any node, without ReadIndex",
    # Lease reads as an always-on optimisation that trusts every clock to run at the same
    # rate: the lease lasts the full election timeout of the leader's own clock, with no
    # drift margin, even when --read-mode readindex was asked for.
    "lease-no-drift-bound": "serve reads under a leader lease with no clock-drift margin (whatever --read-mode says)",
    # Acknowledge a write as soon as it is proposed, before it commits: a write lost in a
    # leader change was still reported ok.
    "ack-before-commit": "acknowledge writes once appended locally, before a quorum has them",
    # Raft paper figure 8: count replicas of an older term's entry to commit it.
    "commit-old-term": "commit entries of earlier terms by counting replicas (Raft figure 8)",
    # Term is saved, the vote is not: a node restarted in the same term may vote again.
    "forget-vote": "do not persist the vote, so a restarted node can vote twice in one term",
    # A follower takes AppendEntries from a deposed leader of a lower term.
    "accept-stale-term": "accept AppendEntries from a lower term (and let them overwrite entries)",
    # Replay trusts every frame whose lengths look right: damaged bytes become log entries.
    "no-crc-check": "skip the CRC check when replaying the WAL",
    # After TruncateToLastGood cut the WAL, vote and campaign at once instead of waiting
    # until a leader brought the node past the cut.
    "truncate-then-vote": "after a truncate-to-last-good cut, vote at once instead of catching up first",
    # fenced_put ignores the key's fence: a deposed lock holder overwrites newer data.
    "no-fencing-check": "accept fenced writes whose token is lower than the key's fence",
    # WAL appends are written to the kernel and acknowledged at once; a background task
    # fsyncs every BACKGROUND_FSYNC_S ("fsync every N ms" mode). A process crash loses
    # nothing (the page cache survives it); a power cut loses acknowledged writes.
    "lost-unfsynced": "acknowledge WAL appends before they are fsynced (fsync in the background)",
    # A transaction's micro-ops go into the log as separate entries, awaited one by one:
    # concurrent transactions (and a crash) see half of it.
    "txn-not-atomic": "apply a transaction's micro-ops as separate log entries, not one",
    # A leader answers read-only transactions from its log at once, uncommitted entries
    # included and without ReadIndex: reads see writes that may never commit.
    "read-uncommitted-txn": "answer read-only transactions from the leader's log before commit",
    # Sharded clusters: a node that does not host a key's shard serves the key from one of
    # its own groups instead of refusing it (wrong_shard), so one key lives in two groups
    # (the class of bug where a node keeps serving a shard it does not own).
    "no-shard-check": "sharded node: serve a key of a shard it does not host from one of its own groups",
    # Sharded clusters, replica moves: the new replica takes the shard's data as installed
    # once it has the log positions, without the data. Its state machine skips what the group
    # applied before this node was added (entries, or a snapshot's contents), so as the
    # shard's leader it answers reads from a state that lacks the shard's earlier writes (the
    # class of a new owner serving before its copy is loaded: 6.824 shardkv serving a shard
    # before the migration arrived; a TiKV/CockroachDB peer acknowledging a snapshot before
    # ingesting it).
    "serve-before-install": "sharded node: a replica added by a move serves the shard without the data applied "
                            "before it joined",
    # Sharded clusters, replica moves: a node the map no longer names for a shard keeps the
    # copy of the shard its removed replica held, and a request routed by an older map (that
    # still named it an owner) is served from that copy instead of refused with the newer
    # epoch: writes are applied there and acknowledged, and never reach the shard's group
    # (the class of an old owner not fencing by configuration epoch: a 6.824 shardkv group
    # taking Puts after the config moved the shard, a MongoDB donor shard writing after the
    # chunk commit).
    "no-epoch-check": "sharded node: a former owner of a shard serves requests routed by an older map (writes "
                      "included) from its leftover copy",
    # Sharded clusters, replica moves: the new replica does not apply the writes the group
    # committed while it was a learner (between its addition and its promotion), as a
    # migration that copies the shard as of the move's start and loses the modifications made
    # during the copy (MongoDB's chunk migration "transfer mods", a snapshot-then-cutover
    # without the tail). As the shard's leader it then answers reads without them.
    "drop-during-move": "sharded node: a replica added by a move does not apply the writes committed while the "
                        "move was in flight",
}

# Older names that still work, so existing scripts and tests keep running.
ALIASES: dict[str, str] = {"early-ack": "ack-before-commit"}

# lost-unfsynced: how often the background task fsyncs the WAL, as Redis's `appendfsync
# everysec` does. A power cut then loses up to a second of acknowledged writes (with 0.5 s,
# one quick regress run escaped: a node's fsync had just run before the cut).
BACKGROUND_FSYNC_S = 1.0


class UnsafeBugRefused(ValueError):
    """The bug name is unknown, or an unsafe setting was asked for without the safety switch."""


def canonical_bug(name: str | None) -> str | None:
    """The bug's name as KNOWN_BUGS spells it (aliases resolved); None stays None."""
    if name is None:
        return None
    return ALIASES.get(name, name)


def check_unsafe_bug(name: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Validate `--unsafe-bug`: returns the canonical name (or None) or raises UnsafeBugRefused."""
    if name is None:
        return None
    env = os.environ if environ is None else environ
    canonical = canonical_bug(name)
    if canonical not in KNOWN_BUGS:
        known = ", ".join(f"{k} ({v})" for k, v in KNOWN_BUGS.items())
        raise UnsafeBugRefused(f"unknown --unsafe-bug {name!r}; known bugs: {known}")
    if env.get(ENV_VAR) != "1":
        raise UnsafeBugRefused(
            f"--unsafe-bug {name} makes this node incorrect on purpose; set {ENV_VAR}=1 "
            "in the environment if you really want that (test harness only)"
        )
    return canonical


def check_unsafe_fsync(fsync: bool, environ: Mapping[str, str] | None = None) -> bool:
    """Validate `fsync = false` (config file only): gated like `--unsafe-bug`, since a node
    that does not fsync acknowledges writes a power cut then loses. Returns `fsync` or
    raises UnsafeBugRefused."""
    if fsync:
        return fsync
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR) != "1":
        raise UnsafeBugRefused(
            "fsync = false turns durability off: the node acknowledges writes before they reach "
            f"stable storage, and a power cut loses them. Remove it from the config file, or set "
            f"{ENV_VAR}=1 in the environment if you really want that (benchmarks and tests only)"
        )
    return fsync


def raft_overrides(name: str | None) -> dict[str, Any]:
    """RaftConfig fields a bug changes (empty for bugs that live outside the Raft core)."""
    bug = canonical_bug(name)
    if bug == "commit-old-term":
        return {"unsafe_commit_old_terms_by_counting": True}
    if bug == "accept-stale-term":
        return {"unsafe_accept_lower_term_append": True}
    if bug == "lease-no-drift-bound":
        # The lease is trusted for the whole election timeout, as if clocks could not drift.
        return {"lease_read": True, "lease_drift_margin": 0}
    return {}
