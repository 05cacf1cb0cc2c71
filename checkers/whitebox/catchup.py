"""Catch-up after a heal: a node a fault brought back must catch up with the cluster, in bounded time.

Liveness, not safety: a follower that never gets back what the cluster committed is a bug
(in replication, snapshot transfer, install or restore) that no client sees as long as the
other nodes form a majority, and that the safety checkers cannot see either (nothing wrong
was applied, something was just never applied). Raft promises more: a live follower that
the leader can reach eventually holds every committed entry.

A nemesis that brings a node back says what it expects in a ``catch_up`` record in its op's
value (the general shape, any nemesis may write it)::

    {"node": "n1", "pid": 1234, "target": 150, "why": "n2 compacted its log to 150 while n1 held at most 101",
     "healed_at_ms": 2891.5, "wait_s": 15.0, "reached": false, "waited_ms": 15003.2,
     "applied_index": 101, "snapshot_index": 100}

``target`` is an index the cluster had committed when the node came back (so reaching it is
always possible in a healthy cluster), ``healed_at_ms`` when the node came back (ms after the
op's invocation), ``reached`` whether the nemesis saw the node's status reach it (applied or
snapshot index) within ``wait_s``. Today the ``snapshot-lag`` nemesis writes one per lag
(nemeses/snapshot_lag.py; records of runs stored before it are read from its older fields).

A record fails the run when the node had not reached the target within the bound, while no
other fault was active from the node's return to the end of the wait (any other fault window
or instant overlapping it excuses the record: listed, not judged), and the node's own log
does not show it reaching the target within the bound either (the status poll can miss it,
e.g. a status call that timed out). The explanation names the node, its pid, the index it
was stuck at, how long it was given, and what its log says (last applied, snapshots
installed, whether it reached the target later or never while that process lived).
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from checkers.history import NEMESIS

from .common import result
from .nodedata import NodeData, Process, _int

#: wait of the snapshot-lag records written before the catch_up record existed (the
#: nemesis then waited 10 s for the install)
LEGACY_WAIT_S = 10.0
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class CatchUp:
    """One catch-up expectation, with where it sits in the history."""

    node: str
    pid: int | None
    target: int
    why: str
    wait_s: float
    reached: bool
    healed_s: float  # seconds since the test started at which the node was back
    end_s: float  # when the nemesis op completed (the wait ended by then)
    op_index: int  # the completion op's index in the history
    invoke_pos: int  # position of the op's invocation in the history
    f: str
    applied_index: int | None = None
    snapshot_index: int | None = None
    waited_s: float | None = None  # how long the nemesis waited (until it saw the target, or the bound)


def _legacy_snapshot_lag(value: Mapping[str, Any]) -> dict[str, Any] | None:
    """The catch_up record of a snapshot-lag op stored before the record existed."""
    follower, target = value.get("follower"), value.get("compacted_to")
    restarted = value.get("restarted")
    if not isinstance(follower, str) or target is None or "installed" not in value:
        return None
    pid = restarted.get(follower) if isinstance(restarted, Mapping) else None
    return {"node": follower, "pid": pid, "target": target,
            "why": f"{value.get('leader')} compacted its log to {target} while {follower} held at most "
                   f"{value.get('follower_holds_at_most')}",
            "healed_at_ms": value.get("restarted_at_ms", 0.0), "wait_s": LEGACY_WAIT_S,
            "reached": bool(value.get("installed")), "snapshot_index": value.get("follower_snapshot_index")}


def catch_up_records(history: Iterable[Any]) -> list[CatchUp]:
    """Every catch-up expectation the nemesis recorded (completed, not failed, ops)."""
    out: list[CatchUp] = []
    invoked: tuple[int, Any] | None = None
    for pos, op in enumerate(history):
        if op.process != NEMESIS:
            continue
        if op.type == "invoke":
            invoked = (pos, op)
            continue
        inv_pos, inv = invoked if invoked is not None else (pos, op)
        invoked = None
        value = op.value
        if op.type == "fail" or not isinstance(value, Mapping):
            continue
        record = value.get("catch_up")
        if not isinstance(record, Mapping):
            record = _legacy_snapshot_lag(value) if op.f == "snapshot-lag" else None
        if record is None or _int(record.get("target")) is None or not isinstance(record.get("node"), str):
            continue
        start_s = inv.time / NS_PER_S
        healed_ms = float(record.get("healed_at_ms") or 0.0)
        out.append(CatchUp(
            node=record["node"], pid=_int(record.get("pid")), target=int(record["target"]),
            why=str(record.get("why") or ""), wait_s=float(record.get("wait_s") or LEGACY_WAIT_S),
            reached=bool(record.get("reached")), healed_s=start_s + healed_ms / 1000.0,
            end_s=max(op.time / NS_PER_S, start_s + healed_ms / 1000.0), op_index=op.index, invoke_pos=inv_pos,
            f=op.f, applied_index=_int(record.get("applied_index")),
            snapshot_index=_int(record.get("snapshot_index")),
            waited_s=(float(record["waited_ms"]) / 1000.0 if record.get("waited_ms") is not None else None)))
    return out


def _fault_specs() -> list[Any]:
    """Every nemesis's shading (which ops open and close its fault window), one spec per op name:
    the most specific one (a combined schedule such as ``mix`` claims the ops of several
    nemeses under one name, which would pair one nemesis's start with another's stop)."""
    try:
        from harness.registry import SHADING
    except Exception:  # noqa: BLE001 - without the registry only generic start-X/stop-X pairs are known
        return []

    def fs(spec: Any) -> set[str]:
        return set(spec.start) | set(spec.stop) | set(getattr(spec, "instant", ()) or ())

    out, claimed = [], set()
    for spec in sorted(SHADING.values(), key=lambda s: (len(fs(s)), s.name)):
        if fs(spec) & claimed:
            continue
        claimed |= fs(spec)
        out.append(spec)
    return out


def _other_faults(history: list[Any], record: CatchUp, specs: list[Any]) -> list[str]:
    """Faults other than the record's own that were active at some moment of its wait."""
    from checkers.faults import fault_events

    windows, instants = fault_events(history, specs)
    out = []
    for w in windows:
        if w.start_pos == record.invoke_pos:
            continue  # the record's own fault (e.g. the snapshot-lag window that brought it back)
        if w.start_s < record.end_s and w.end_s > record.healed_s:
            out.append(f"{w.name} {w.detail}".strip() + f" ({w.start_s:.1f}-{w.end_s:.1f} s)")
    for i in instants:
        if record.healed_s <= i.t_s <= record.end_s:
            out.append(f"{i.f} {i.detail}".strip() + f" (at {i.t_s:.1f} s)")
    return out


def _epoch(ts: str | None) -> float | None:
    """A node log's ``ts`` (UTC, ms) as Unix seconds."""
    if not ts:
        return None
    try:
        whole, _, frac = ts.rstrip("Z").partition(".")
        return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + (int(frac) / 1000.0 if frac else 0.0)
    except ValueError:
        return None


def _reached_index(event: Mapping[str, str]) -> int | None:
    """The index an event says the node holds applied (None if it says nothing of it)."""
    name = event.get("event")
    if name == "applied":
        return _int(event.get("last"))
    if name == "snapshot-installed":
        return _int(event.get("index"))
    if name == "replay-done":
        return _int(event.get("snapshot_index"))
    if name == "shutdown":
        return _int(event.get("applied"))
    return None


@dataclass(frozen=True)
class LogView:
    """What one process's log says about its catch-up to a target."""

    reached_after_s: float | None  # seconds after the process started (None: never)
    lived_s: float | None  # from its first to its last log line
    ended: str  # how the process's log ends
    last_applied: int
    installs: list[int]

    def describe(self, target: int) -> str:
        installs = ("snapshots installed at " + ", ".join(map(str, self.installs[:5]))
                    if self.installs else "no snapshot installed")
        text = f"its log: applied up to {self.last_applied}, {installs}"
        if self.reached_after_s is not None:
            return text + f"; it reached {target} only {self.reached_after_s:.1f} s after its start"
        lived = f" in the {self.lived_s:.1f} s that process ran" if self.lived_s is not None else ""
        return text + f"; it never reached {target}{lived} ({self.ended})"


def log_view(process: Process, target: int) -> LogView:
    t0 = _epoch(process.started_at)
    reached = None
    last_applied = 0
    installs: list[int] = []
    for event in process.events:
        index = _reached_index(event)
        if event.get("event") == "snapshot-installed" and index is not None:
            installs.append(index)
        if index is not None:
            last_applied = max(last_applied, index)
            if reached is None and index >= target:
                t = _epoch(event.get("ts"))
                reached = (t - t0) if t is not None and t0 is not None else 0.0
    t_end = _epoch(process.events[-1].get("ts")) if process.events else None
    lived = (t_end - t0) if t_end is not None and t0 is not None else None
    last = process.events[-1].get("event") if process.events else None
    ended = "until its shutdown" if last == "shutdown" else "its log ends without a shutdown line: killed or still running"
    return LogView(reached, lived, ended, last_applied, installs)


def _process(node: NodeData | None, pid: int | None) -> Process | None:
    if node is None or pid is None:
        return None
    return next((p for p in node.processes if p.pid == pid), None)


def check_catch_up(cluster: Mapping[str, NodeData], history: Iterable[Any]) -> dict[str, Any]:
    history = list(history)
    records = catch_up_records(history)
    if not records:
        return {"valid": True, "violations": [], "explanation": "no nemesis recorded a node it brought back "
                                                                 "and what it had to catch up to: nothing to judge"}
    specs = _fault_specs()
    violations: list[dict[str, Any]] = []
    caught: list[float | None] = []
    excused: list[str] = []
    for r in records:
        where = f"{r.f} (history op {r.op_index})"
        if r.reached:
            caught.append(r.waited_s)
            continue
        if r.pid is None:
            excused.append(f"{r.node} at {where}: not restarted (no pid), the availability checker judges a "
                           f"node that is down")
            continue
        others = _other_faults(history, r, specs)
        if others:
            excused.append(f"{r.node} at {where}: other faults active while it caught up: {'; '.join(others[:3])}")
            continue
        process = _process(cluster.get(r.node), r.pid)
        view = log_view(process, r.target) if process is not None else None
        if view is not None and view.reached_after_s is not None and view.reached_after_s <= r.wait_s:
            caught.append(view.reached_after_s)  # its log shows it in time; the status poll missed it
            continue
        stuck = r.applied_index if r.applied_index is not None and r.applied_index >= 0 else (
            view.last_applied if view is not None else None)
        status = []
        if r.applied_index is not None:
            status.append(f"applied index {r.applied_index}")
        if r.snapshot_index is not None:
            status.append(f"snapshot index {r.snapshot_index}")
        what = (f"{r.node} (pid {r.pid}) did not catch up after it was brought back at {r.healed_s:.1f} s "
                f"({r.why}): {r.wait_s:g} s later, with no other fault active, it was still stuck at "
                f"index {stuck if stuck is not None else '?'}, below the committed index {r.target} "
                f"(its status: {', '.join(status) or 'no answer'}); "
                + (view.describe(r.target) if view is not None else f"no log lines of pid {r.pid}")
                + f" [{where}]")
        violations.append({"node": r.node, "pid": r.pid, "target": r.target, "stuck_at": stuck,
                           "waited_s": r.wait_s, "op": r.op_index, "what": what})
    text = f"{len(caught)} node(s) brought back by a fault caught up within the bound"
    times = [t for t in caught if t is not None]
    if times:
        text += f" (slowest {max(times):.1f} s)"
    if excused:
        text += f"; not judged: {'; '.join(excused[:5])}"
    return result(violations, text, judged=len(records) - len(excused), caught_up=len(caught),
                  not_judged=excused[:50])


__all__ = ["CatchUp", "catch_up_records", "check_catch_up", "log_view"]
