"""Read what one node persisted and logged into plain data the white-box checkers judge.

Input is a node's directory as the run store keeps it (``<run>/nodes/<node>/``):
``node.log`` (logfmt lines, ``ukehi/nodelog.py``) and the data directory ``data/``
(or ``data.lazyfs-backing/`` after a LazyFS run, where ``data/`` was only the mount
point). Nothing here writes: the WAL is read with :func:`ukehi.storage.scan_wal`, the
reader behind ``ukehi wal dump``, as a dry run under the node's own CorruptionPolicy, so
the entries are those the node would replay; snapshots and the hard state are decoded
without the stores' constructors (which would tidy the directory).

What a node's Raft uses of its WAL mirrors the node's start-up (``ukehi/node.py``
``_recover``): the entries after the snapshot, contiguous from ``snapshot + 1``; entries
after a hole (AlertAndContinue keeps them) are kept apart in ``stray``.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ukehi.nodelog import parse_line
from ukehi.storage import (
    CorruptionPolicy,
    CorruptionRefusedError,
    StorageError,
    decode_hard_state,
    decode_snapshot,
    scan_wal,
)

GROUP = "group-0"
_SNAP_NAME = re.compile(r"^snap-([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
# Replay findings that are a crash's normal leftovers, not corruption (ukehi/storage/policy.py).
INFORMATIONAL = frozenset({"torn-tail", "zero-filled-tail"})
# Actions by which a CorruptionPolicy lost entries on purpose: a node that took one may
# lack entries it had before, and its WAL may end below what it applied.
LOSSY_ACTIONS = frozenset({"cut", "dropped", "skipped", "kept", "refused"})


def _int(value: Any, default: int | None = None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class LogEntry:
    """One entry of a node's log: the WAL record, its command bytes as stored (kind byte first)."""

    index: int
    term: int
    token: int
    command: bytes

    @property
    def crc(self) -> int:
        """CRC-32 of the command bytes: what the node's ``applied`` log lines carry."""
        return zlib.crc32(self.command)

    def describe(self) -> str:
        return f"term {self.term} token {self.token:#x} command {describe_command(self.command)}"


def describe_command(command: bytes) -> str:
    """A short human form of WAL command bytes: kind, then the KV command when it decodes."""
    if not command:
        return "(empty)"
    kind = command[0]
    if kind == 1:
        return "no-op"
    if kind == 2:
        return "config " + command[1:].decode("utf-8", "replace")[:120]
    if kind != 0:
        return f"kind {kind} ({len(command)} bytes)"
    if len(command) == 1:
        return "no-op"
    from ukehi.kv import CommandError, decode_command

    try:
        cmd = decode_command(command[1:])
    except CommandError:
        return f"undecodable ({len(command) - 1} bytes, crc {zlib.crc32(command):08x})"
    return "{" + ", ".join(f"{k}={v!r}" for k, v in cmd.items()) + "}"


@dataclass(frozen=True)
class Applied:
    """One entry a node's process applied, from an ``event=applied`` log line."""

    node: str
    pid: int | None
    index: int
    term: int
    crc: int


@dataclass
class Process:
    """One run of the node binary: its log lines from ``starting`` up to the next ``starting``."""

    pid: int | None
    events: list[dict[str, str]]
    incarnation: int  # 0, 1, ...: a new one starts when the node is wiped and rejoins
    damaged: bool = False  # the disk nemesis damaged the WAL right before this start

    def first(self, event: str) -> dict[str, str] | None:
        return next((e for e in self.events if e.get("event") == event), None)

    def all(self, event: str) -> list[dict[str, str]]:
        return [e for e in self.events if e.get("event") == event]

    @property
    def policy(self) -> str | None:
        start = self.first("starting")
        return start.get("policy") if start else None

    @property
    def replay(self) -> dict[str, str] | None:
        return self.first("replay-done")

    @property
    def started_at(self) -> str:
        return self.events[0].get("ts", "?") if self.events else "?"

    def lossy_replay(self) -> list[str]:
        """Why this process may hold less than the previous one applied (empty: no reason)."""
        reasons = ["the disk nemesis damaged its WAL before this start"] if self.damaged else []
        for e in self.all("corruption-report"):
            if e.get("kind") not in INFORMATIONAL and e.get("action") in LOSSY_ACTIONS:
                reasons.append(f"corruption-report {e.get('kind')} {e.get('action')} at {e.get('segment')}"
                               f" offset {e.get('offset')}")
        for e in self.all("log-hole"):
            reasons.append(f"log-hole from index {e.get('missing_from')}")
        if self.first("recovering") is not None:
            reasons.append("recovering after a WAL cut")
        if self.first("refuse-start") is not None:
            reasons.append("refused to start")
        return reasons

    def applied(self, node: str) -> list[Applied]:
        out = []
        for e in self.all("applied"):
            first = _int(e.get("first"))
            items = (e.get("entries") or "").split(",")
            if first is None:
                continue
            for offset, item in enumerate(i for i in items if i):
                term, _, crc = item.partition(".")
                try:
                    t, c = int(term), int(crc, 16)
                except ValueError:
                    continue
                out.append(Applied(node, self.pid, first + offset, t, c))
        return out

    def max_applied(self) -> int:
        """Highest index this process applied or installed from a snapshot (0 if none)."""
        best = 0
        for e in self.all("applied"):
            best = max(best, _int(e.get("last"), 0) or 0)
        for e in self.all("snapshot-installed"):
            best = max(best, _int(e.get("index"), 0) or 0)
        for e in self.all("shutdown"):
            best = max(best, _int(e.get("applied"), 0) or 0)
        return best

    def max_term(self) -> int:
        """Highest term this process logged (term-changed, became-*, leader-changed)."""
        best = 0
        for e in self.events:
            ev = e.get("event", "")
            if ev == "term-changed" or ev.startswith("became-") or ev == "leader-changed":
                best = max(best, _int(e.get("term"), 0) or 0)
        return best


@dataclass
class NodeData:
    """Everything the white-box checkers know about one node at the end of a run."""

    name: str
    processes: list[Process] = field(default_factory=list)
    entries: dict[int, LogEntry] = field(default_factory=dict)  # usable log, contiguous after the snapshot
    stray: dict[int, LogEntry] = field(default_factory=dict)  # kept after a hole: Raft does not use them
    snapshot_index: int = 0
    snapshot_term: int = 0
    snapshot_config: Any = None
    hard_term: int | None = None
    hard_commit: int | None = None
    wal_report: dict[str, Any] | None = None
    has_data: bool = False  # a data directory with a group was found
    problems: list[str] = field(default_factory=list)  # files that could not be read

    @property
    def last_index(self) -> int:
        return max(self.entries) if self.entries else self.snapshot_index

    def applied(self) -> list[Applied]:
        return [a for p in self.processes for a in p.applied(self.name)]

    def incarnation_processes(self) -> list[Process]:
        """The processes of the node's last incarnation (since its data directory was last wiped)."""
        if not self.processes:
            return []
        last = self.processes[-1].incarnation
        return [p for p in self.processes if p.incarnation == last]

    @property
    def commit_end(self) -> int:
        """A lower bound of the node's commit index at the end, within the log it holds.

        The largest of the saved commit index and every index its current incarnation
        applied (applied entries are committed), cut to the log's last usable index
        (commit may run past a log that a CorruptionPolicy cut; those are not held).
        """
        best = self.hard_commit or 0
        for p in self.incarnation_processes():
            best = max(best, p.max_applied())
            replay = p.replay
            if replay is not None:
                best = max(best, _int(replay.get("commit"), 0) or 0)
        return min(best, self.last_index)

    def entry(self, index: int) -> LogEntry | None:
        return self.entries.get(index)

    def covered_by_snapshot(self, index: int) -> bool:
        return 0 < index <= self.snapshot_index

    def corruption_reported(self) -> bool:
        """The node's current incarnation replayed with corruption a policy acted on."""
        return any(p.lossy_replay() for p in self.incarnation_processes())


# ---------------------------------------------------------------------------------- reading

def read_log(path: str | Path) -> list[dict[str, str]]:
    """The logfmt lines of a node log, plus ``{"event": "traceback"}`` for a Python traceback."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    events = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("ts="):
            event = parse_line(line)
            event["_line"] = str(number)
            events.append(event)
        elif line.startswith("Traceback (most recent call last)"):
            events.append({"event": "traceback", "level": "error", "_line": str(number),
                           "detail": "a Python traceback on the node's stderr"})
    return events


def split_processes(events: Iterable[dict[str, str]]) -> list[Process]:
    """Cut a node's log into processes at each ``starting`` line; count incarnations.

    A process starts a new incarnation when it was started with ``join=true`` and replayed
    an empty data directory: the harness wiped the node and added it again as a new member.
    """
    processes: list[Process] = []
    current: list[dict[str, str]] = []
    for event in events:
        if event.get("event") == "starting" and current:
            processes.append(Process(_int(current[0].get("pid")), current, 0))
            current = []
        current.append(event)
    if current:
        processes.append(Process(_int(current[0].get("pid")), current, 0))
    incarnation = 0
    for i, process in enumerate(processes):
        start = process.first("starting") or {}
        replay = process.replay or {}
        fresh = (replay.get("entries") == "0" and replay.get("snapshot_index") == "0"
                 and replay.get("term") == "0")
        if i > 0 and fresh and start.get("join") == "true":
            incarnation += 1
        process.incarnation = incarnation
    return processes


def group_events(events: Iterable[dict[str, str]], group: int) -> list[dict[str, str]]:
    """One Raft group's view of a sharded node's log, shaped like an unsharded node's log.

    A sharded node logs ``starting`` once per process, then ``group-starting group=G`` for
    each group it hosts (and again when it joins a group later, by a move), and tags every
    Raft event with ``group=G``. For group G this keeps the events tagged G and turns each
    ``group-starting`` of G into the ``starting`` line the checkers split processes at (pid and
    policy of the process it belongs to, ``peers`` = the group's founding members, ``join``):
    a replica that joins mid-process is a new process of the group, and a fresh join after the
    node left the group is a new incarnation, as for a wiped unsharded node."""
    out: list[dict[str, str]] = []
    process: dict[str, str] = {}
    tag = str(group)
    for e in events:
        ev = e.get("event")
        if ev == "starting":
            process = e
        elif ev == "group-starting":
            if e.get("group") == tag:
                out.append({"event": "starting", "ts": e.get("ts", ""), "level": "info",
                            "pid": process.get("pid", ""), "policy": process.get("policy", ""),
                            "join": e.get("join", "false"), "peers": e.get("members", ""),
                            "_line": e.get("_line", "")})
        elif e.get("group") == tag and out:
            out.append(e)
    return out


def find_group_dir(node_dir: Path, group: str = GROUP) -> Path | None:
    """The group directory holding the node's files: ``data/group-0``, or the LazyFS backing's."""
    for name in ("data", "data.lazyfs-backing"):
        candidate = node_dir / name / group
        if candidate.is_dir() and any(candidate.iterdir()):
            return candidate
    return None


def _read_snapshot(snap_dir: Path, node: NodeData) -> None:
    if not snap_dir.is_dir():
        return
    found = sorted((int(m.group(1), 16), int(m.group(2), 16), snap_dir / name)
                   for name in os.listdir(snap_dir) if (m := _SNAP_NAME.match(name)))
    if not found:
        return
    index, term, path = found[-1]
    try:
        snap = decode_snapshot(path.read_bytes(), source=str(path))
    except (StorageError, OSError) as exc:
        node.problems.append(f"snapshot {path.name}: {exc}")
        return
    node.snapshot_index, node.snapshot_term, node.snapshot_config = snap.index, snap.term, snap.config


def read_node(name: str, node_dir: str | Path, policy: str | None = None, *,
              group_id: int | None = None, events: list[dict[str, str]] | None = None) -> NodeData:
    """Read one node's log and data directory (missing pieces are left empty, never invented).

    ``group_id``: one Raft group of a sharded node (its events, :func:`group_events`, and its
    ``data/group-<id>`` directory); None: an unsharded node (group 0, every event).
    ``events``: the node log already parsed (:func:`read_log`), to read several groups once."""
    node_dir = Path(node_dir)
    node = NodeData(name)
    if events is None:
        events = read_log(node_dir / "node.log")
    node.processes = split_processes(events if group_id is None else group_events(events, group_id))
    if policy is None:
        policies = [p.policy for p in node.processes if p.policy]
        policy = policies[-1] if policies else CorruptionPolicy.TruncateToLastGood.value
    group = find_group_dir(node_dir, GROUP if group_id is None else f"group-{group_id}")
    if group is None:
        return node
    node.has_data = True
    hs_path = group / "hardstate"
    if hs_path.exists():
        try:
            hs = decode_hard_state(hs_path.read_bytes(), source=str(hs_path))
            node.hard_term, node.hard_commit = hs.term, hs.commit
        except (StorageError, OSError) as exc:
            node.problems.append(f"hard state: {exc}")
    _read_snapshot(group / "snap", node)
    wal_dir = group / "wal"
    records: list[Any] = []
    if wal_dir.is_dir():
        try:
            scan = scan_wal(str(wal_dir), policy)
            records, node.wal_report = scan.entries, scan.report.to_dict()
        except CorruptionRefusedError as exc:
            records = exc.entries
            report = getattr(exc, "report", None)
            node.wal_report = report.to_dict() if hasattr(report, "to_dict") else None
        except (StorageError, OSError, ValueError) as exc:
            node.problems.append(f"WAL: {exc}")
    expected = node.snapshot_index + 1
    in_order = True
    for record in records:
        if record.index <= node.snapshot_index:
            continue
        entry = LogEntry(record.index, record.term, record.fencing_token, bytes(record.command))
        if in_order and record.index == expected:
            node.entries[record.index] = entry
            expected += 1
        else:
            in_order = False
            node.stray[record.index] = entry
    return node


def read_cluster(nodes_dir: str | Path, names: Iterable[str] | None = None,
                 policy: str | None = None, *, group_id: int | None = None) -> dict[str, NodeData]:
    """Every node under ``<run>/nodes/`` (or the NAMES given), read with :func:`read_node`
    (``group_id``: that Raft group of sharded nodes)."""
    nodes_dir = Path(nodes_dir)
    if names is None:
        names = sorted(p.name for p in nodes_dir.iterdir() if p.is_dir()) if nodes_dir.is_dir() else []
    return {name: read_node(name, nodes_dir / name, policy, group_id=group_id) for name in names}


def mark_damaged(cluster: Mapping[str, NodeData], damaged: Iterable[tuple[str, int]]) -> None:
    """Mark the processes started right after the disk nemesis damaged their WAL: (node, pid).

    That damage (a truncated file, zeroed or flipped bytes) destroys entries on purpose, and a
    truncation looks like a crash's torn tail, which replay cuts silently: such a restart
    may hold less than the node had applied, and that is the fault, not a bug.
    """
    for name, pid in damaged:
        node = cluster.get(name)
        for process in node.processes if node is not None else ():
            if process.pid == pid:
                process.damaged = True


def voters_at_end(cluster: Mapping[str, NodeData]) -> tuple[frozenset[str], frozenset[str], str]:
    """(voters, outgoing voters, where it came from) of the cluster's last committed configuration.

    The committed config entry with the highest index on any node; else the newest
    snapshot's config; else the founders' ``--peers``; else every node read.
    """
    import json

    best: tuple[int, bytes] | None = None
    for node in cluster.values():
        end = node.commit_end
        for index, entry in node.entries.items():
            if index <= end and entry.command[:1] == b"\x02" and (best is None or index > best[0]):
                best = (index, entry.command[1:])
    if best is not None:
        try:
            obj = json.loads(best[1].decode())
            return frozenset(obj["voters"]), frozenset(obj.get("outgoing") or ()), f"config entry {best[0]}"
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            pass
    snaps = sorted((n.snapshot_index, n.name) for n in cluster.values() if n.snapshot_index)
    for index, name in reversed(snaps):
        config = cluster[name].snapshot_config
        if isinstance(config, Mapping) and config.get("voters"):
            return (frozenset(config["voters"]), frozenset(config.get("outgoing") or ()),
                    f"snapshot {index} of {name}")
    for node in cluster.values():
        for process in node.processes:
            start = process.first("starting") or {}
            if start.get("join") != "true" and start.get("peers"):
                peers = frozenset(p.split("=", 1)[0] for p in start["peers"].split(",") if p)
                return peers, frozenset(), f"--peers of {node.name}"
    return frozenset(cluster), frozenset(), "every node read"
