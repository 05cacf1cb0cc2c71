"""wal-retention: after a compaction, the WAL segments a snapshot covers are gone.

What the node promises (``ukehi/node/driver.py`` ``take_snapshot``, ``ukehi/storage/wal.py``
``compact_to``): when a node takes a snapshot at its applied index I it saves the snapshot,
then calls ``wal.compact_to(I)`` (exactly I: the driver keeps no compaction lag on disk; the
core's in-memory log is its own business), and only once that returned (the removals
fsynced with the directory) logs ``snapshot-created index=I``. ``compact_to`` removes,
oldest first, every segment *but the newest* whose entries all lie at or below I (empty
ones included), stopping at the first segment holding an entry above I. An installed
snapshot (``snapshot-installed index=J``, logged after the persist step) empties the WAL
first (``truncate_from(first)`` removes every segment and starts a fresh one), which is a
compaction to J too.

So, with C the node's last such index, the segments left right after the compaction are
``S_a .. S_n`` where either ``S_a`` holds an entry above C (and so does every later one), or
``S_a = S_n`` was the newest and may lie wholly at or below C. Everything written later has
indexes above C (entries at or below C are applied, hence committed, and never rewritten),
``truncate_from`` only removes the newest segments, and a restart at most adds a new empty
tail. Hence the rule judged on the files at the end:

    a segment that is not the newest on disk, whose entries all lie at or below C (or that
    holds none), is a leak when a later segment holds an entry at or below C (it was
    older than a segment that already existed at the compaction, so it should be gone).

The one segment legitimately left wholly below C (the newest at the time of compaction,
since overtaken by a rotation) is never followed by an entry at or below C, so it passes.

Legitimate exceptions, none of which is judged as a leak:

- a crash between the snapshot and the end of ``compact_to``: ``snapshot-created`` is not
  logged, so C stays at the previous compaction (the snapshot file's own index is not used);
- segments a CorruptionPolicy set aside (AlertAndContinue keeps unreadable segments on disk;
  the dry-run scan gives them no indexes): reported as unjudged, never a leak;
- WAL damage by the disk nemesis, or a replay that cut, dropped or kept entries: the
  damage rewrites files after compactions, so only compactions logged by the process that
  replayed the damage, or later ones, count; a node damaged and not restarted afterwards
  is not judged;
- restarts and wiped nodes: C comes from the node's last incarnation (a wiped node's data
  directory starts empty again), over all of its processes;
- sharded runs: each group's ``data/group-<id>`` is judged with the events tagged with
  that group; a retired group's directory (``retired-group-<id>.<n>``) is not read.

The WAL is read with the same dry-run scan as the other white-box checkers
(:func:`ukehi.storage.scan_wal` under the node's policy: nothing on disk changes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from ukehi.storage import CorruptionPolicy, CorruptionRefusedError, StorageError, scan_wal
from ukehi.storage.scan import list_segments

from .common import result
from .nodedata import GROUP, NodeData, Process, _int, find_group_dir

COMPACTING_EVENTS = ("snapshot-created", "snapshot-installed")


@dataclass(frozen=True)
class Segment:
    """One WAL segment file at the end of the run, as the dry-run scan sees it."""

    segment_id: int
    name: str
    first: int | None  # lowest / highest kept entry index; None when it holds none
    last: int | None
    count: int
    judged: bool = True  # False: the policy set it aside (no readable entries)

    def describe(self) -> str:
        if not self.count:
            return f"{self.name} (no entries)"
        return f"{self.name} (entries {self.first}..{self.last})"


@dataclass(frozen=True)
class NodeWal:
    """What the retention check needs of one node: its processes and its final WAL segments."""

    name: str
    processes: list[Process]
    segments: list[Segment]
    problem: str | None = None  # the WAL could not be read at all
    refused: bool = False  # the node's policy (refuse-start) refuses this WAL as it is


def read_segments(wal_dir: str | Path, policy: str | None) -> tuple[list[Segment], bool]:
    """(the segments in ``wal_dir`` with their kept entries' index range, by id; whether the
    policy refuses the WAL). Reads only."""
    wal_dir = str(wal_dir)
    refused = False
    try:
        scan = scan_wal(wal_dir, policy or CorruptionPolicy.TruncateToLastGood.value)
        segments = scan.segments
    except CorruptionRefusedError:
        # RefuseStart on a damaged WAL: judge nothing the node itself would not read.
        segments, refused = [], True
    kept = {s.segment_id: s for s in segments}
    out = []
    for seg_id, path in list_segments(wal_dir):
        info = kept.get(seg_id)
        name = Path(path).name
        if info is None:
            out.append(Segment(seg_id, name, None, None, 0, judged=False))
            continue
        indexes = list(info.indexes)
        out.append(Segment(seg_id, name, min(indexes) if indexes else None, max(indexes) if indexes else None,
                           len(indexes)))
    return out, refused


def read_node_wal(node: NodeData, node_dir: str | Path, group_id: int | None = None) -> NodeWal:
    """:class:`NodeWal` of an already read node (its processes) and its directory's WAL."""
    group = find_group_dir(Path(node_dir), GROUP if group_id is None else f"group-{group_id}")
    if group is None or not (group / "wal").is_dir():
        return NodeWal(node.name, node.processes, [])
    policies = [p.policy for p in node.processes if p.policy]
    try:
        segments, refused = read_segments(group / "wal", policies[-1] if policies else None)
    except (StorageError, OSError, ValueError) as exc:
        return NodeWal(node.name, node.processes, [], problem=f"{type(exc).__name__}: {exc}")
    return NodeWal(node.name, node.processes, segments, refused=refused)


def compaction_point(processes: list[Process], damaged_later: bool = False) -> tuple[int, str] | None | str:
    """(C, where it was logged) for the node's WAL on disk; None when it never compacted; a
    string (why) when it cannot be judged.

    C is the highest ``snapshot-created`` / ``snapshot-installed`` index logged by the last
    incarnation's processes from the last one that replayed damage or a lossy cut onward."""
    if damaged_later:
        return "the disk nemesis damaged its WAL after its last start"
    if not processes:
        return None
    last = processes[-1].incarnation
    mine = [p for p in processes if p.incarnation == last]
    start = max((i for i, p in enumerate(mine) if p.lossy_replay()), default=0)
    best: tuple[int, str] | None = None
    for p in mine[start:]:
        for e in p.events:
            if e.get("event") in COMPACTING_EVENTS:
                index = _int(e.get("index"))
                if index is not None and (best is None or index > best[0]):
                    best = (index, f"{e.get('event')} index={index} (pid {p.pid}, log line {e.get('_line', '?')})")
    return best


def leaked(segments: list[Segment], point: int) -> list[Segment]:
    """The segments the rule above says a compaction to ``point`` should have removed."""
    judged = [s for s in segments if s.judged]
    out = []
    for i, seg in enumerate(judged[:-1]):  # the newest segment is never removed
        if seg.count and seg.last is not None and seg.last > point:
            continue
        if any(later.count and later.first is not None and later.first <= point for later in judged[i + 1:]):
            out.append(seg)
    return out


def check_wal_retention(nodes: Iterable[NodeWal], *, group: int | None = None,
                        damaged_unrestarted: Iterable[str] = ()) -> dict[str, Any]:
    """wal-retention over every node's final WAL (see the module docstring for the rule).

    ``damaged_unrestarted``: nodes whose WAL the disk nemesis damaged with no restart after
    it (their files are not what any compaction left)."""
    skip = set(damaged_unrestarted)
    where = f" group {0 if group is None else group}"  # an unsharded node's one group is 0
    violations: list[dict[str, Any]] = []
    compactions: dict[str, int] = {}
    unjudged: dict[str, str] = {}
    segments_seen = 0
    for node in nodes:
        segments_seen += len(node.segments)
        if node.problem:
            unjudged[node.name] = f"WAL unreadable: {node.problem}"
            continue
        aside = [s.name for s in node.segments if not s.judged]
        if node.refused:
            unjudged[node.name] = "its policy (refuse-start) refuses its damaged WAL: not judged"
            continue
        if aside:
            unjudged[node.name] = "segments set aside by its CorruptionPolicy (not judged): " + ", ".join(aside)
        point = compaction_point(node.processes, node.name in skip)
        if isinstance(point, str):
            unjudged[node.name] = point
            continue
        if point is None:
            continue
        index, logged = point
        compactions[node.name] = index
        for seg in leaked(node.segments, index):
            later = next(s for s in node.segments if s.judged and s.segment_id > seg.segment_id and s.count
                         and s.first is not None and s.first <= index)
            violations.append({
                "node": node.name, "group": group, "segment": seg.name, "first": seg.first, "last": seg.last,
                "compacted_to": index,
                "what": (f"{node.name}{where}: WAL segment {seg.describe()} is still on disk after its compaction"
                         f" to index {index} ({logged}); every entry in it is covered by the snapshot and the"
                         f" later segment {later.describe()} already existed then, so compact_to({index})"
                         " should have removed it"),
            })
    ok = (f"{len(compactions)} node(s) compacted (to {', '.join(f'{n}:{i}' for n, i in sorted(compactions.items()))});"
          f" no segment at or below a compaction point was left ({segments_seen} segments on disk)"
          if compactions else f"no node logged a compaction ({segments_seen} segments on disk): nothing to judge")
    return result(violations, ok, compactions=len(compactions), compaction_points=compactions,
                  segments=segments_seen, unjudged=unjudged)


def damaged_without_restart(history: Iterable[Any], cluster: Mapping[str, NodeData]) -> list[str]:
    """Nodes a completed ``corrupt-wal`` op damaged whose restart (its pid) is not in their log."""
    from checkers.policy import CORRUPT_F

    out = []
    for op in history:
        if getattr(op, "is_client", True) or op.f != CORRUPT_F or op.type == "invoke" or not isinstance(op.value, Mapping):
            continue
        for name, record in (op.value.get("nodes") or {}).items():
            if not isinstance(record, Mapping) or "changes" not in record:
                continue
            node = cluster.get(name)
            pid = _int(record.get("pid"))
            if node is None or pid is None or all(p.pid != pid for p in node.processes):
                out.append(name)
    return sorted(set(out))


def check_cluster_retention(cluster: Mapping[str, NodeData], node_dirs: Mapping[str, str | Path],
                            history: Iterable[Any], *, group: int | None = None) -> dict[str, Any]:
    """Read each node's WAL segments from ``node_dirs[name]`` and judge :func:`check_wal_retention`."""
    wals = [read_node_wal(node, node_dirs[name], group) for name, node in cluster.items() if name in node_dirs]
    return check_wal_retention(wals, group=group, damaged_unrestarted=damaged_without_restart(history, cluster))
