"""A replay never discards durable bytes (simulator only): ``durable-cut``.

After a crash a WAL segment may end in a torn tail (an un-fsynced append, partly written).
Replay cuts it at the last good entry and the WAL is opened for append. Every byte the node
fsynced survived the crash (the simulated file system's LazyFS semantics), so the cut never
lies below the file's fsynced length, unless disk damage hit the file (then the corruption
policy's own checkers judge what was dropped). A WAL that plans the cut but never makes it
on disk appends after the garbage, fsyncs and acknowledges; the next replay stops at the
garbage again and silently drops every acknowledged entry written since, and the other
white-box checkers take that cut for an ordinary crash tail.

Inputs, all plain data:

- ``logs``: {node: its node.log text}. The ``starting`` line of each incarnation gives its
  ``pid`` and ``data_dir``; each ``corruption-report`` line with ``action=cut`` or
  ``action=skipped`` names the segment (``group=`` for a sharded node, else group 0) and the
  ``offset`` from which replay dropped bytes;
- ``starts``: {node: [(virtual time, {file path: (durable, damage)}) per start]}
  (``ukehi.sim.fs.SimFS.starts``, one record per incarnation, the first for incarnation 1):
  ``durable`` is the file's length at its last fsync, ``damage`` its live damage as
  (offset, extent) pairs, ``extent`` the file's length when a replay first met it (a
  damaged entry may take the rest of the file with it, up to there);
- ``damaged``: {file path: [(virtual time, offset)]} (``SimFS.damaged``);
- ``pid_base``: {node: pid of incarnation 0}: the simulated pid is ``pid_base + incarnation``.

A finding drops bytes ``[offset, offset + length)`` (to the end of the file without a
length). The damage that explains it is the lowest at or above ``offset`` (a cut lands on
the start of the damaged entry) and any below it (a damaged length may misalign what
follows); the finding is a violation when the range holds fsynced bytes (below
``durable``) above the largest extent of those, and no damage hit the file while the
incarnation ran (its own replay
may have met damage made after its start was recorded). So damage excuses only bytes that
were already there when a replay first met it: a WAL that never makes its cut on disk,
appends and fsyncs after the damaged (or torn) bytes, loses those appends at the next
replay, and that is caught.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ukehi.nodelog import parse_line

from .common import result

__all__ = ["check_durable_cut", "NAME"]

NAME = "durable-cut"

_DROPS = ("cut", "skipped")


Start = tuple[float, Mapping[str, tuple[int, Sequence[tuple[int, int]]]]]


def check_durable_cut(logs: Mapping[str, str], starts: Mapping[str, Sequence[Start]],
                      damaged: Mapping[str, Sequence[tuple[float, int]]],
                      pid_base: Mapping[str, int]) -> dict[str, Any]:
    violations: list[dict[str, Any]] = []
    cuts = 0
    for node in sorted(logs):
        records = list(starts.get(node, ()))
        incarnation: int | None = None
        data_dir: str | None = None
        for line in logs[node].splitlines():
            if "event=starting " in line:
                fields = parse_line(line)
                try:
                    incarnation = int(fields.get("pid", "")) - int(pid_base.get(node, 0))
                except ValueError:
                    incarnation = None
                data_dir = fields.get("data_dir")
                continue
            if "event=corruption-report " not in line:
                continue
            fields = parse_line(line)
            if fields.get("action") not in _DROPS:
                continue
            cuts += 1
            if incarnation is None or data_dir is None or not 1 <= incarnation <= len(records):
                continue  # no start record to hold the cut to (cannot happen in a simulated run)
            t_start, lengths = records[incarnation - 1]
            t_end = records[incarnation][0] if incarnation < len(records) else float("inf")
            group = fields.get("group", "0")
            path = f"{data_dir.rstrip('/')}/group-{group}/wal/{fields.get('segment', '?')}"
            try:
                offset = int(fields.get("offset", ""))
            except ValueError:
                continue
            durable, damage = lengths.get(path, (0, ()))
            durable = int(durable)
            above = [(d, e) for d, e in damage if d >= offset]
            explaining = [e for d, e in damage if d < offset] + ([min(above)[1]] if above else [])
            extent = max(explaining, default=0)
            length = fields.get("length")
            end = durable if length in (None, "", "none") else min(durable, offset + int(length))
            if end <= max(offset, extent):
                continue  # no fsynced byte dropped, or damage met by a replay explains them
            if any(t_start <= t <= t_end for t, _ in damaged.get(path, ())):
                continue  # damage while it ran: the corruption policy's checkers judge this cut
            rel = path[len(data_dir.rstrip("/")) + 1:]
            violations.append({
                "node": node, "file": rel, "incarnation": incarnation, "durable": durable, "offset": offset,
                "extent": extent, "end": end, "t": round(float(t_start), 6), "kind": fields.get("kind"),
                "action": fields.get("action"),
                "what": f"{node} (incarnation {incarnation}, started at t={float(t_start):.3f} s) replayed "
                        f"{rel} and {fields.get('action')} it at byte offset {offset} ({fields.get('kind')}), "
                        f"below its durable size {durable} (fsynced before the preceding stop"
                        + (f"; damage a replay met explains bytes below {extent} only" if extent else
                           ", no damage touched the file")
                        + f"): durable bytes {max(offset, extent)}..{end} dropped"})
    return result(violations, "no replay dropped bytes a node had fsynced (damaged files excepted)",
                  cuts=cuts)
