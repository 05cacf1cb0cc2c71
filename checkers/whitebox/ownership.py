"""Checker ``shard-ownership`` (sharded runs): every key a shard's Raft group wrote belongs to
that shard.

Keys map to shards by one stable hash (``ukehi.shardmap.shard_of``) that node and client
share; shard s is Raft group s + 1. A command in group G's log about a key of another shard
means some node served that key from a group that does not own it: the key then lives in two
groups, each with its own history, which clients see only if they happen to read both. The
node's files show it whatever the clients read: every entry of every shard group's log (each
node's WAL, the entries it holds after its snapshot) is decoded and its keys (``key``, a
lock's name, a transaction's micro-op keys) are checked against the group's shard. The
metadata group (0) holds the map and the nodes' addresses and is not judged here.
"""

from __future__ import annotations

from typing import Any, Mapping

from .common import nothing_to_judge, result
from .nodedata import NodeData


def misplaced_keys(cluster: Mapping[str, NodeData], group: int, shards: int) -> list[dict[str, Any]]:
    """Entries of group ``group`` (a shard's group, >= 1) whose keys are in another shard."""
    from ukehi.kv import CommandError, decode_command
    from ukehi.node.driver import ADDRESS_KEY_PREFIX
    from ukehi.shardmap import request_keys, shard_of

    out: list[dict[str, Any]] = []
    seen: set[tuple[int, int]] = set()
    for node in cluster.values():
        for index, entry in sorted(node.entries.items()):
            if entry.command[:1] != b"\x00" or len(entry.command) < 2 or (index, entry.term) in seen:
                continue
            seen.add((index, entry.term))
            try:
                cmd = decode_command(entry.command[1:])
            except CommandError:
                continue  # not a KV command this checker can read; log-matching judges the bytes
            for key in request_keys(cmd["op"], cmd) or ():
                if key.startswith(ADDRESS_KEY_PREFIX):
                    continue
                owner = shard_of(key, shards)
                if owner != group - 1:
                    out.append({"group": group, "shard": group - 1, "index": index, "term": entry.term,
                                "node": node.name, "op": cmd["op"], "key": key, "key_shard": owner,
                                "what": f"group {group} (shard {group - 1}) holds a {cmd['op']} of key {key!r} "
                                        f"at index {index} (term {entry.term}, read on {node.name}), but that key "
                                        f"is in shard {owner}"})
    return out


def check_shard_ownership(groups: Mapping[int, Mapping[str, NodeData]], shards: int) -> dict[str, Any]:
    """``groups``: each shard group's cluster (group id -> node data), as the sharded white-box
    checkers read them."""
    judged = {g: c for g, c in groups.items() if g >= 1 and any(n.entries for n in c.values())}
    if not judged:
        return nothing_to_judge("no shard group's log was read")
    wrong = [v for g, cluster in sorted(judged.items()) for v in misplaced_keys(cluster, g, shards)]
    entries = sum(len({i for n in c.values() for i in n.entries}) for c in judged.values())
    out = result(wrong, f"every key in the logs of {len(judged)} shard groups ({entries} indexes) belongs to "
                        "its group's shard", groups=len(judged), entries=entries)
    if wrong:
        out["explanation"] = ("a node served keys from a group that does not own them: " + out["explanation"])
    return out
