"""The end-of-run consistency check: every replica's state digest at one log index.

Linearizability only sees a replica's state when a client reads through it while it leads,
so a replica whose state machine went wrong (a shard copied without the writes made during
its move, a snapshot restored without part of its contents, an apply that differs between
the leader and its followers) passes unless that replica happens to serve the right read.
CockroachDB's consistency checker closes that gap, and this does the same: after the final
phase the harness asks the leader of every Raft group (group 0; in a sharded cluster, every
shard's group too) to commit one ``checksum`` entry (`UkehiClient.checksum`); every replica
that applies it logs ``event=state-digest`` with the digest of its whole state at that very
index. `checkers/whitebox/digests.py` then compares the digests from the node logs.

What the harness asked and what the leaders answered goes to ``checksums.jsonl`` in the run
directory (one line per group).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from ukehi.client import UkehiClient


CHECKSUMS_FILE = "checksums.jsonl"
#: seconds one group's checksum may take (a leader must exist and commit one entry)
CHECKSUM_TIMEOUT_S = 5.0
#: seconds to wait for the followers to apply the checksum entries (they log the digest then)
APPLY_WAIT_S = 5.0


def _applied(status: Mapping[str, Any] | None, shard: int | None) -> int | None:
    """The applied index a node reports for the group (None: not known from its status)."""
    if not status:
        return None
    if shard is None:
        return None if status.get("sharded") else status.get("applied_index")
    entry = (status.get("shards") or {}).get(str(shard))
    return entry.get("applied_index") if isinstance(entry, Mapping) else None


async def checksum_groups(addresses: list[str], shards: int | None, run_dir: str | Path,
                          statuses: Any) -> list[dict[str, Any]]:
    """Commit one checksum entry in every group and wait (bounded) until the running nodes
    that report the group have applied it. ``shards``: the shard count (None: unsharded);
    ``statuses``: an async callable returning {node: status or None}. Returns the records
    written to ``checksums.jsonl`` (also when a group had no leader: then ``ok`` is false)."""
    groups: list[int | None] = [None] + (list(range(shards)) if shards else [])
    records: list[dict[str, Any]] = []
    async with UkehiClient(addresses, timeout=CHECKSUM_TIMEOUT_S, connect_timeout=0.5) as client:
        for shard in groups:
            started = time.monotonic()
            r = await client.checksum(shard=shard, timeout=CHECKSUM_TIMEOUT_S)
            value = r.value if r.ok and isinstance(r.value, Mapping) else {}
            records.append({"shard": shard, "ok": r.ok, "index": value.get("index"), "digest": value.get("digest"),
                            "keys": value.get("keys"), "node": r.node,
                            "error": None if r.ok else f"{r.error}: {r.message}",
                            "seconds": round(time.monotonic() - started, 3)})
    deadline = time.monotonic() + APPLY_WAIT_S
    wanted = [(rec["shard"], rec["index"]) for rec in records if rec["ok"] and isinstance(rec["index"], int)]
    while wanted and time.monotonic() < deadline:
        answers = await statuses()
        behind = [(s, i) for s, i in wanted
                  if any((a := _applied(st, s)) is not None and a < i for st in answers.values())]
        if not behind:
            break
        await asyncio.sleep(0.2)
    path = Path(run_dir) / CHECKSUMS_FILE
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
    return records


def summary(records: Iterable[Mapping[str, Any]]) -> str:
    recs = list(records)
    done = sum(1 for r in recs if r.get("ok"))
    return f"{done} of {len(recs)} groups checksummed"
