"""Disk faults: corrupt the WAL of a stopped node, then restart it under its CorruptionPolicy.

One ``corrupt-wal`` op stops the victim nodes (SIGTERM), damages one WAL segment
of each through the backend's file verbs, restarts them and waits until each
either serves again or exits. Fault kinds:

- ``bitflip``: one to three bits flipped within 64 bytes;
- ``zero-chunk``: 16..512 bytes overwritten with zeros;
- ``copy-chunk``: 16..512 bytes copied over from elsewhere in the same file;
- ``truncate``: the file cut at a random offset (entries lost, as a lying disk would);
- ``torn-tail``: the last segment cut inside its last entry (what a crash leaves).

The first three damage the middle of the log and are what a CorruptionPolicy
decides about; the last two look like a crash, and every policy simply cuts them.

Victims: on the first op the package draws an order of the nodes; a target
``one`` is the first node of that order, ``minority`` the first (n-1)//2,
``majority`` the first n//2+1. So every op of a run hits the same nodes and a
run never damages more nodes than its largest target names: "corruption aimed
at one node" stays one node for the whole run. ``minority-third`` is the first (n-1)//3
(at least one). ``primaries`` is the exception: the node(s) that claim leadership at the
moment of the op (node status), so damage lands where the log is being written; those
victims change as leadership moves.

Each op's completion records, per node: the file, every changed range with the
bytes before and after (hex), the sizes, the digest of every WAL segment after
the damage, the new pid, and how the restart ended: ``started`` with the
node's status (phase, recovering, refuse_votes_until, corruption report), or
``exit_code`` (4 is RefuseStart doing its job) with ``wal_unchanged`` telling
whether the refusing node left its files as they were. A node that refused
stays down; the final ``disk-heal`` restarts only the nodes that are down for
another reason and lists the refused ones as down, never as healed.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Sequence

from ukehi.storage.format import HEADER_SIZE, parse_segment_name

from .context import FaultContext, NodeVerbs
from .package import NemesisPackage, OpDict, Shading
from .targets import primaries

# Where a node keeps its WAL, relative to its workdir: harness/db.py gives every node
# ``--data-dir <workdir>/data`` and ukehi/storage/datadir.py puts group 0's WAL here.
WAL_DIR = "data/group-0/wal"

CORRUPT, HEAL = "corrupt-wal", "disk-heal"
SHADING = Shading("disk", instant=(CORRUPT,))

MID_LOG_KINDS = ("bitflip", "zero-chunk", "copy-chunk")
CRASH_KINDS = ("truncate", "torn-tail")
KINDS = MID_LOG_KINDS + CRASH_KINDS
TARGETS = ("one", "minority", "majority", "minority-third", "primaries", "all")
SEGMENT_CHOICES = ("random", "first", "last")

# The exit code of a node whose CorruptionPolicy is RefuseStart (ukehi/node.py).
EXIT_REFUSE_START = 4
# Bytes of a removed tail kept in the record as hex; the rest is summarised by length and digest.
MAX_RECORDED_BYTES = 1024
# How long a restarted node gets to serve or exit (replay of a short test's WAL takes well under 1 s).
START_TIMEOUT_S = 30.0

_LEN = struct.Struct("<I")


class DiskFaultError(RuntimeError):
    """The fault could not be applied (no WAL yet, a file verb failed); the message says why."""


@dataclass
class Damage:
    """What one corruption did to one file: new bytes plus a record of every change."""

    data: bytes
    kind: str
    changes: list[dict[str, Any]] = field(default_factory=list)


def victim_count(target: str, node_count: int) -> int:
    """How many nodes a target names: one 1, minority (n-1)//2 (at least 1), majority n//2+1."""
    if target == "one":
        return 1
    if target == "minority":
        return max(1, (node_count - 1) // 2)
    if target == "majority":
        return node_count // 2 + 1
    if target == "minority-third":
        return max(1, (node_count - 1) // 3)
    if target == "all":
        return node_count
    raise ValueError(f"unknown disk fault target {target!r}; choose one of {', '.join(TARGETS)}")


def _hex(data: bytes) -> str:
    return data.hex()


def _change(offset: int, before: bytes, after: bytes, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"offset": offset, "before_len": len(before), "after_len": len(after),
                              "before": _hex(before[:MAX_RECORDED_BYTES]), "after": _hex(after), **extra}
    if len(before) > MAX_RECORDED_BYTES:
        record["before_sha256"] = hashlib.sha256(before).hexdigest()
    return record


def entry_starts(data: bytes) -> list[int]:
    """Offsets of the frames a segment holds, by walking entry_len fields from the header.

    Stops at the first frame that does not fit, so it is also safe on damaged bytes.
    """
    starts = []
    pos = HEADER_SIZE
    while pos + _LEN.size <= len(data):
        (elen,) = _LEN.unpack_from(data, pos)
        if elen == 0 or pos + _LEN.size + elen > len(data):
            break
        starts.append(pos)
        pos += _LEN.size + elen
    return starts


def _pick_chunk(data: bytes, rng: random.Random, length: int, differs: Any, tries: int = 50) -> int | None:
    """A start offset in the entries area where ``differs(start)`` holds, or None."""
    hi = len(data) - length
    if hi < HEADER_SIZE:
        return None
    for _ in range(tries):
        start = rng.randint(HEADER_SIZE, hi)
        if differs(start):
            return start
    return None


def damage(data: bytes, kind: str, rng: random.Random) -> Damage:
    """Apply one fault KIND to a segment's bytes; raises DiskFaultError if it has no entries to hit."""
    if kind not in KINDS:
        raise ValueError(f"unknown disk fault kind {kind!r}; choose one of {', '.join(KINDS)}")
    body = len(data) - HEADER_SIZE
    if body < 1:
        raise DiskFaultError(f"segment holds no entries ({len(data)} bytes); nothing to corrupt")
    out = bytearray(data)
    result = Damage(b"", kind)
    if kind == "bitflip":
        base = rng.randrange(HEADER_SIZE, len(data))
        span = range(base, min(len(data), base + 64))
        for offset in sorted(rng.sample(list(span), min(len(span), rng.randint(1, 3)))):
            before = bytes(out[offset:offset + 1])
            out[offset] ^= 1 << rng.randrange(8)
            result.changes.append(_change(offset, before, bytes(out[offset:offset + 1])))
    elif kind == "zero-chunk":
        length = min(body, rng.randint(16, 512))
        start = _pick_chunk(data, rng, length, lambda s: data.count(0, s, s + length) < length)
        if start is None:
            raise DiskFaultError("every candidate chunk is already zero; nothing to corrupt")
        out[start:start + length] = bytes(length)
        result.changes.append(_change(start, data[start:start + length], bytes(length)))
    elif kind == "copy-chunk":
        if body < 64:
            raise DiskFaultError(f"segment has only {body} bytes of entries; too few to copy a chunk within")
        length = rng.randint(16, min(512, body // 2))
        source = rng.randint(HEADER_SIZE, len(data) - length)

        def differs(start: int) -> bool:
            apart = start + length <= source or source + length <= start
            return apart and data[start:start + length] != data[source:source + length]

        start = _pick_chunk(data, rng, length, differs)
        if start is None:
            raise DiskFaultError("found no chunk that differs from its copy; nothing to corrupt")
        out[start:start + length] = data[source:source + length]
        result.changes.append(_change(start, data[start:start + length], data[source:source + length],
                                      source=source))
    elif kind == "truncate":
        cut = rng.randint(HEADER_SIZE, len(data) - 1)
        out = out[:cut]
        result.changes.append(_change(cut, data[cut:], b""))
    else:  # torn-tail: cut inside the last entry, leaving a partial frame
        starts = entry_starts(data)
        if not starts:
            raise DiskFaultError("segment holds no whole entry; no tail to tear")
        last = starts[-1]
        cut = rng.randint(last + 1, len(data) - 1)
        out = out[:cut]
        result.changes.append(_change(cut, data[cut:], b"", entry_offset=last))
    result.data = bytes(out)
    return result


def wal_path(node: NodeVerbs, segment: str | None = None) -> str:
    """The WAL directory (or one segment) on the node, as a path for its verbs."""
    base = PurePosixPath(str(node.workdir)) / WAL_DIR
    return str(base / segment) if segment else str(base)


def list_segments(node: NodeVerbs) -> list[str]:
    """The node's WAL segment file names, oldest first (read with the node's own ``ls``)."""
    rc, out, err = node.exec(["ls", "-1", wal_path(node)])
    if rc != 0:
        raise DiskFaultError(f"cannot list the WAL of {node.name} at {wal_path(node)}: "
                             f"{err.strip() or f'ls exited {rc}'}; has the node written anything yet?")
    names = [n for n in out.split() if parse_segment_name(n) is not None]
    return sorted(names, key=lambda n: parse_segment_name(n) or 0)


def wal_digest(node: NodeVerbs) -> dict[str, str]:
    """sha256 of every WAL segment on the node, by file name."""
    return {name: hashlib.sha256(node.read_file(wal_path(node, name))).hexdigest()
            for name in list_segments(node)}


def choose_segment(names: Sequence[str], choice: str, rng: random.Random) -> str:
    if not names:
        raise DiskFaultError("the node has no WAL segment yet; run the workload longer before corrupting")
    if choice == "first":
        return names[0]
    if choice == "last":
        return names[-1]
    if choice == "random":
        return rng.choice(list(names))
    if choice in names:
        return choice
    raise DiskFaultError(f"segment {choice!r} is not on the node (it has {', '.join(names)})")


def corrupt_node(node: NodeVerbs, kind: str, segment_choice: str, rng: random.Random) -> dict[str, Any]:
    """Damage one WAL segment of a stopped node; the record of what changed."""
    names = list_segments(node)
    if kind == "torn-tail":
        segment_choice = "last"  # only the newest segment can have a crash tail
    segment = choose_segment(names, segment_choice, rng)
    path = wal_path(node, segment)
    before = node.read_file(path)
    hit = damage(before, kind, rng)
    node.write_file(path, hit.data)
    return {"file": path, "segment": segment, "kind": kind, "size_before": len(before),
            "size_after": len(hit.data), "changes": hit.changes, "wal_after": wal_digest(node)}


def _stop(node: NodeVerbs) -> int | None:
    if node.process_state() == "T":
        node.resume()  # a paused process cannot act on SIGTERM
    return node.stop()


def _status_summary(status: Any) -> dict[str, Any]:
    corruption = status.get("corruption") or {}
    return {"phase": status.get("phase"), "recovering": status.get("recovering"),
            "refuse_votes_until": status.get("refuse_votes_until"),
            "corruption": {k: corruption.get(k) for k in (
                "policy", "clean", "refused", "recovering", "entries_kept", "entries_skipped",
                "entries_dropped", "bytes_cut", "last_good_index", "highest_index_seen")},
            "findings": list(corruption.get("findings") or [])[:20]}


async def await_start(ctx: FaultContext, name: str, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
    """Wait until the restarted node serves (phase running) or exits; what happened."""
    node = ctx.nodes[name]
    deadline = time.monotonic() + timeout
    phase = None
    while time.monotonic() < deadline:
        if not node.is_running():
            code = await asyncio.to_thread(node.stop)  # reaps it; the status of the exit
            return {"started": False, "exit_code": code,
                    "refused": code == EXIT_REFUSE_START}
        status = (await ctx.statuses()).get(name)
        if status is not None:
            phase = status.get("phase")
            if phase == "running":
                return {"started": True, **_status_summary(status)}
        await asyncio.sleep(0.2)
    return {"started": None, "phase": phase,
            "error": f"neither serving nor exited {timeout:.0f} s after restart"}


def package(ctx: FaultContext, targets: Sequence[str] = ("one", "minority"),
            kinds: Sequence[str] = KINDS, segment: str = "random") -> NemesisPackage:
    """WAL corruption of stopped nodes under the cluster's CorruptionPolicy (see the module doc)."""
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise ValueError(f"disk fault targets {list(targets)}: choose from {', '.join(TARGETS)}")
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"disk fault kinds {list(kinds)}: choose from {', '.join(KINDS)}")
    order: list[str] = []  # drawn on the first op; victims are always a prefix of it
    touched: set[str] = set()  # nodes this package stopped at least once
    refused: dict[str, dict[str, Any]] = {}  # nodes that refused to start: they stay down

    def generator(rng: random.Random) -> OpDict:
        return {"f": CORRUPT, "value": {"target": rng.choice(list(targets)), "kind": rng.choice(list(kinds)),
                                        "segment": segment, "seed": rng.getrandbits(32)}}

    async def corrupt(value: dict[str, Any]) -> dict[str, Any]:
        rng = random.Random(value["seed"])
        if not order:
            order.extend(sorted(ctx.nodes))
            rng.shuffle(order)
        record: dict[str, Any] = {**value, "nodes": {}}
        if value["target"] == "primaries":
            # The leader(s) of the moment, not a prefix of the order: damage where the log grows.
            found = await primaries(ctx)
            record["primaries"] = found
            victims = sorted(found) or order[:1]
        else:
            victims = order[:victim_count(value["target"], len(order))]
        record["victims"] = victims
        down = [v for v in victims if v in refused]
        for name in down:
            record["nodes"][name] = {"skipped": "down since it refused to start; left as it is"}
        live = [v for v in victims if v not in refused]
        touched.update(live)
        stopped = await asyncio.gather(*(asyncio.to_thread(_stop, ctx.nodes[n]) for n in live))
        for name, status in zip(live, stopped):
            node_rng = random.Random(f"{value['seed']}-{name}")
            entry: dict[str, Any] = {"stop_status": status}
            try:
                entry.update(await asyncio.to_thread(corrupt_node, ctx.nodes[name], value["kind"],
                                                     value["segment"], node_rng))
            except (DiskFaultError, OSError) as err:
                entry["error"] = f"{type(err).__name__}: {err}"
            record["nodes"][name] = entry
        for name in live:
            record["nodes"][name]["pid"] = await ctx.start_node(name)
        outcomes = await asyncio.gather(*(await_start(ctx, n) for n in live))
        for name, outcome in zip(live, outcomes):
            entry = record["nodes"][name]
            entry.update(outcome)
            if outcome.get("refused"):
                # RefuseStart promises to change nothing: compare with the digest taken right
                # after the damage.
                after = await asyncio.to_thread(wal_digest, ctx.nodes[name])
                entry["wal_unchanged"] = after == entry.get("wal_after")
                refused[name] = {"exit_code": outcome["exit_code"]}
        record["down"] = sorted(refused)
        return record

    async def heal() -> dict[str, Any]:
        restarted: dict[str, Any] = {}
        for name in sorted(touched - set(refused)):
            if not ctx.nodes[name].is_running():
                pid = await ctx.start_node(name)
                restarted[name] = {"pid": pid, **(await await_start(ctx, name))}
                if restarted[name].get("refused"):
                    refused[name] = {"exit_code": restarted[name]["exit_code"]}
        down = {n: f"refused to start (exit {r['exit_code']}); its WAL is corrupt, left down"
                for n, r in sorted(refused.items())}
        return {"restarted": restarted, "down": down}

    async def invoke(op: OpDict) -> Any:
        if op["f"] == HEAL:
            return await heal()
        return await corrupt(dict(op["value"]))

    return NemesisPackage(
        name="disk",
        generator=generator,
        final=lambda: [{"f": HEAL}],
        invoke=invoke,
        shading=SHADING,
        fs=frozenset({CORRUPT, HEAL}),
    )
