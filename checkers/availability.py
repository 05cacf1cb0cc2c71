"""Availability: did the cluster of the build under test serve at all?

Jepsen reports a cluster that never answered as ``unknown``: nothing linearizable or not
happened. For a test of *our own* build that hides a broken build behind an unknown (or a
harness crash): a correct Ukehi cluster always elects a leader once every node runs and the
network is whole, and serves once the faults heal. This checker fails a run (``valid:
False``) when, and only when, the build under test did not do that:

- **startup**: the cluster did not come up because of the build: a node exited at start
  with a Python traceback, a fatal or invariant-violated event (never a port in use or a
  missing tool: those stay a harness crash), or nobody was elected within the start-up
  bound while every node ran and answered and every node could reach every other one;
- **no-ok-op**: clients invoked operations and not one of them succeeded, in the whole run;
- **kind-never-served**: one kind of operation (e.g. ``write``) was invoked at least 10 times,
  at least 3 of them with no fault active from invocation to completion (in the simulator
  also none ended within one election timeout before it), and never served (every attempt unknown, or refused with an error that only says the
  cluster could not serve it now: ``not_leader``, ``unavailable``, ``recovering``,
  ``timeout``, ``internal``; never ``ok``, never an answer from the state machine such as a
  failed cas precondition) while other kinds succeeded: reads and writes both need a leader
  with a quorum;
- **membership-refused**: the nemesis asked for at least 3 membership changes (add or
  remove a node) while no other fault was active (from the request to its answer), every
  one of them was refused or went unanswered, and not one change in the whole run
  succeeded: the membership nemesis only asks once a leader outside joint consensus is
  seen, and a correct leader with a whole cluster accepts a change within the admin timeout;
- **transfer-refused**: the same rule for leadership transfers (``transfer-leader``): at
  least 3 asked for while no other fault was active (in the simulator also: while the
  leader asked and the target were both in a connected majority, see majority-unserved),
  every one refused or unanswered, none in the whole run done: a correct leader hands
  leadership to a voter it can reach within a few election timeouts (one that never sends
  TimeoutNow passes every safety check, since each transfer gives up cleanly); every
  unsharded real run (after its final phase) and every simulated seed (at its end) asks for
  up to 3, after every fault healed, until one is done, each to a voter that runs and is not
  recovering (``final``: always judged);
- **majority-unserved** (simulator only, where the fault timeline is exact): in a span in
  which a majority of the voters was up and connected (every link between them whole, their
  clocks at the normal rate, every other voter down, paused or cut off from all of them
  both ways), at least 3 client operations sent to nodes of that majority, invoked after a
  grace of a few election timeouts from the span's start and answered within it, were all
  unserved: Raft promises a leader to such a majority, so a build that needs more than a
  majority (a quorum off by one) fails here while it serves whenever every node is up;
- **final-phase**: after every fault was healed, the final phase's operations all failed
  (none ``ok``), unless a node was down on purpose (its corruption policy refused to
  start, or the harness could not restart it);
- **node-unresponsive**: after the final phase a node runs (not paused) but answers no
  status request for 20 s: hung (a correct node answers even while it replays or recovers,
  since it listens first);
- **busy-when-idle**: once every running node had applied what the leader committed after
  the final phase (no client, no fault), a node handled more Readies or sent more peer
  messages per second over a 2 s window than IDLE_BUDGET times its heartbeat rate (per
  peer) plus IDLE_FLOOR_PER_S: an idle correct node only ticks, heartbeats and answers
  heartbeats (measured: 16-33 per second on 3 nodes), while a Ready loop that never
  settles or a message storm (a resend or probe loop) runs hundreds to thousands per
  second; a node that had not caught up in 10 s is not judged (catch-up traffic is work).
  The simulator counts the same over 2 virtual seconds at every seed's end, where there is
  no scheduling noise, so its budget is per role and close to what Raft needs: an idle node
  sends one message per heartbeat to each node it talks to (a leader: a heartbeat to each
  peer and learner; a follower or learner: one answer to its leader; a candidate: each
  peer) and runs one Ready per heartbeat; it may do IDLE_BUDGET_VIRTUAL times that plus
  IDLE_FLOOR_PER_S_VIRTUAL (the window's edges, a duplicated packet). Measured over seeds
  0-299 of the default draw, 40 kv seeds and 40 membership seeds (1,602 nodes): at most 1.20
  answers per heartbeat for a follower (6 a second at 5 heartbeats a second), 1.04 messages
  per heartbeat and peer and 1.04 Readies per heartbeat for a leader, at most 68% of the
  budget; two messages per heartbeat and destination exceed it at every heartbeat rate the
  simulator draws;
- **node-exit**: a node process had exited on its own when the run ended, and its log says
  the build did it (a traceback, ``event=fatal``, ``event=invariant-violated``: exit
  statuses 1 and 70).

What the harness observed is in ``<run>/availability.json`` (written by ``harness/run.py``:
phase boundaries on the history's clock, the final phase's leader, the start-up diagnosis,
the nodes that had exited on their own with their status); this module only judges it, so
``analyze`` re-judges a stored run offline. Without that file (older runs) only the
no-ok-op rule applies, plus the final phase taken as the ops invoked after ``time_limit``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

FACTS_FILE = "availability.json"

# Exit statuses of a node process (ukehi/node/server.py), as this checker reads them.
EXIT_START_FAILED, EXIT_REFUSE_START, EXIT_INVARIANT, EXIT_BAD_ARGS = 1, 4, 70, 254

# Log events that say the environment, not the build, stopped the node. Kept short: each is
# something a correct build does when the machine is not fit to run it.
ENVIRONMENT_EVENTS = {
    "listen-failed": "could not listen (port in use or not bindable on this machine)",
}
# Exceptions on a node's stderr that mean a missing tool or a machine problem.
ENVIRONMENT_EXCEPTIONS = ("ModuleNotFoundError", "ImportError", "PermissionError", "FileNotFoundError",
                          "MemoryError")
_ERRNO = re.compile(r"\[Errno \d+\]")
_EVENT = re.compile(r"(?:^|\s)event=(\S+)")
_ERROR_FIELD = re.compile(r'(?:error|reason|detail|invariant)="?([^"]{0,120})')


def _last_process(text: str) -> str:
    """The log lines of the node's last process: from its last ``event=starting`` line on
    (a traceback before that line is an earlier process's, unless there is no start line)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _EVENT.search(line) and "event=starting" in line]
    return "\n".join(lines[starts[-1]:] if starts else lines)


def _exception_line(text: str) -> str:
    """The last line of the last Python traceback in ``text`` ("KeyError: 'x'"), or ""."""
    lines = text.splitlines()
    at = max((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")),
             default=None)
    if at is None:
        return ""
    for line in lines[at + 1:]:
        if line and not line.startswith((" ", "\t", "Traceback")):
            return line.strip()
    return "a Python traceback"


def classify_exit(log_text: str, status: int | None = None, *, fresh: bool = True) -> tuple[str, str]:
    """Why a node process exited on its own, from its log text: (cause, reason).

    cause is ``build`` (the build under test failed), ``environment`` (this machine: a port
    in use, a missing module, an OS error), ``expected`` (the node kept a documented
    promise: refuse-start) or ``unexplained`` (nothing in the log says: not blamed on the
    build). ``fresh``: the node started from a data directory no fault touched (start-up),
    where a replay that the core refuses can only be the build's doing.
    """
    text = _last_process(log_text)
    events = [(m.group(1), line) for line in text.splitlines() for m in [_EVENT.search(line)] if m]

    def detail(line: str) -> str:
        m = _ERROR_FIELD.search(line)
        return f": {m.group(1).strip()}" if m else ""

    for name, line in events:
        if name in ENVIRONMENT_EVENTS:
            return "environment", f"{ENVIRONMENT_EVENTS[name]}{detail(line)}"
    for name, line in events:
        if name == "refuse-start":
            return "expected", f"refused to start (corruption policy refuse-start){detail(line)}"
    for name, line in events:
        if name == "invariant-violated":
            return "build", f"stopped itself: a Raft invariant broke (event=invariant-violated{detail(line)})"
        if name == "fatal":
            return "build", f"died of an unexpected error (event=fatal{detail(line)})"
    for name, line in events:
        if name == "storage-open-failed":
            if _ERRNO.search(line):
                return "environment", f"could not open its data directory{detail(line)}"
            if fresh:
                return "build", f"could not open its fresh data directory (event=storage-open-failed{detail(line)})"
        if name == "start-failed" and fresh:
            return "build", f"its core refused the log it replayed from a fresh data directory{detail(line)}"
    exception = _exception_line(text)
    if exception:
        if exception.startswith(ENVIRONMENT_EXCEPTIONS) or _ERRNO.search(exception):
            return "environment", f"a Python traceback that points at this machine: {exception[:200]}"
        return "build", f"a Python traceback on its stderr: {exception[:200]}"
    if status == EXIT_INVARIANT:
        return "build", "exit status 70: a Raft invariant broke"
    if status == EXIT_REFUSE_START:
        return "expected", "exit status 4: refused to start (corruption policy refuse-start)"
    if status == EXIT_BAD_ARGS:
        return "environment", "exit status 254: bad arguments (the harness's command line, not the build)"
    return "unexplained", f"exit status {status}: nothing in its log says why" if status is not None \
        else "nothing in its log says why"


def load_facts(run_dir: str | Path) -> dict[str, Any] | None:
    """``<run>/availability.json``, or None for a run stored before it existed."""
    path = Path(run_dir) / FACTS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable ({err}); re-run the test") from None


def _node_log(run_dir: Path | None, node: str) -> str:
    if run_dir is None:
        return ""
    try:
        return (run_dir / "nodes" / node / "node.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _last_line(run_dir: Path | None, node: str) -> str:
    lines = [line for line in _node_log(run_dir, node).splitlines() if line.strip()]
    return f"; its last log line: {lines[-1][:200]}" if lines else ""


def _count(ops: Iterable[Any]) -> dict[str, int]:
    counts = {"invoke": 0, "ok": 0, "fail": 0, "info": 0}
    for op in ops:
        counts[op.type] = counts.get(op.type, 0) + 1
    return counts


def _errors(ops: Iterable[Any], limit: int = 3) -> str:
    seen: dict[str, int] = {}
    for op in ops:
        if op.type in ("fail", "info") and op.error is not None:
            key = str(op.error)[:120]
            seen[key] = seen.get(key, 0) + 1
    top = sorted(seen.items(), key=lambda kv: -kv[1])[:limit]
    return ", ".join(f"{e!r} x{n}" for e, n in top) or "no error given"


#: invocations of one kind of operation that must all have gone unserved (unknown outcomes,
#: or refusals in CANNOT_SERVE) for the kind to count as never served
NEVER_SERVED_MIN = 10
#: of those, how many must have run with no fault active (from invocation to completion): a
#: cluster faulted nearly all the time can miss every short window it served in by chance
#: (sim seed 17, fencing: 13 fenced-puts, each under a partition, kill or slow link), while a
#: build that cannot serve a kind fails it in quiet times as well
NEVER_SERVED_QUIET_MIN = 3
#: error codes (ukehi.wire.ErrorCode values, as the clients record them) that say only "the
#: cluster could not serve this now": no leader here, no quorum, still recovering, no outcome
#: in time, a bug on the node. Any other refusal (cas_failed, refused, lock_held,
#: not_lock_holder, stale_entry, forbidden, bad_request, ...) is an answer about the request
#: itself, so the kind was served.
CANNOT_SERVE = frozenset({"not_leader", "unavailable", "recovering", "timeout", "internal"})


def _served(op: Any) -> bool:
    """Did this completion show the cluster serving the request (ok, or an answer about it)?"""
    if op.type == "ok":
        return True
    return op.type == "fail" and op.error is not None and str(op.error) not in CANNOT_SERVE


def _quiet_test(history: list[Any], recovery_s: float = 0.0) -> Callable[[Any, Any], bool]:
    """``quiet(invoked, done)``: no fault window of the run overlaps the span from an
    invocation to its completion (to the end of the run when ``done`` is None), nor ended
    less than ``recovery_s`` before the invocation."""
    from checkers.faults import fault_events

    windows, _ = fault_events(history, _fault_specs())
    end = max((op.time for op in history), default=0)

    def quiet(invoked: Any, done: Any) -> bool:
        lo, hi = invoked.time / 1e9, (done.time if done is not None else end) / 1e9
        return not any(w.start_s <= hi and lo <= w.end_s + recovery_s for w in windows)
    return quiet


def _quiet_attempts(client: list[Any], history: list[Any], f: str, recovery_s: float = 0.0) -> int:
    """Invocations of kind ``f`` with no fault window overlapping them (to their completion,
    or to the end of the run when none came) or ending within ``recovery_s`` before them."""
    quiet = _quiet_test(history, recovery_s)
    invoked: dict[Any, Any] = {}
    spans: list[tuple[Any, Any]] = []
    for op in client:
        if op.f != f:
            continue
        if op.type == "invoke":
            invoked[op.process] = op
        elif op.process in invoked:
            spans.append((invoked.pop(op.process), op))
    spans += [(op, None) for op in invoked.values()]
    return sum(1 for inv, done in spans if quiet(inv, done))


def _kinds_never_served(client: list[Any], history: list[Any] | None = None,
                        recovery_s: float = 0.0) -> list[dict[str, Any]]:
    """Kinds of operation (``f``) the cluster never served while it served others: at least
    NEVER_SERVED_MIN invoked, not one ``ok`` and not one answer about the request (a cas whose
    precondition failed is one; a ``not_leader`` or ``unavailable`` refusal is not). A correct
    cluster that serves reads serves writes too: both need a leader with a quorum, so over a
    whole run they are served in the same windows; one that refuses every write as "not the
    leader" while reads through the same leaders succeed is broken, as much as one that lets
    every write time out. At least NEVER_SERVED_QUIET_MIN of the attempts must have run while
    no fault was active (``history``: where the fault windows come from; None: all quiet), and
    not within ``recovery_s`` after one ended: a node just reconnected or restarted knows no
    leader until the next heartbeat or election, and refuses as ``not_leader`` meanwhile (sim
    seed 686: all 4 "quiet" writes of 26 fell in the second after a fault, while cas and reads
    before and between them succeeded)."""
    by_f: dict[str, dict[str, int]] = {}
    answered: dict[str, int] = {}
    for op in client:
        by_f.setdefault(op.f, {"invoke": 0, "ok": 0, "fail": 0, "info": 0})[op.type] += 1
        if op.type != "invoke" and _served(op):
            answered[op.f] = answered.get(op.f, 0) + 1
    served = sorted(f for f, c in by_f.items() if c["ok"])
    out = []
    for f, c in sorted(by_f.items()):
        if c["invoke"] >= NEVER_SERVED_MIN and not answered.get(f):
            quiet = _quiet_attempts(client, history, f, recovery_s) if history is not None else c["invoke"]
            if quiet < NEVER_SERVED_QUIET_MIN:
                continue
            errors = _errors(op for op in client if op.f == f)
            how = (f"all unknown ({errors})" if not c["fail"] else
                   f"{c['fail']} refused as not served now, {c['info']} unknown ({errors})")
            out.append({"rule": "kind-never-served", "f": f, "counts": c,
                        "quiet": quiet,
                        "what": f"no {f} was ever answered: {c['invoke']} invoked ({quiet} with no fault "
                                f"active), {how}, while {', '.join(served)} succeeded"})
    return out


#: membership changes the nemesis asked for (nemeses.membership and the simulator's own)
MEMBERSHIP_CHANGES = ("add-node", "remove-node")
#: leadership transfers the nemesis asked for (the same two sources)
TRANSFERS = ("transfer-leader",)
#: refused or unanswered changes (with no other fault active, none accepted in the run) that fail a run
MEMBERSHIP_REFUSED_MIN = 3
# Fault windows the simulator records under names of its own (harness.sim.runner: kill and
# start, pause and resume, clock-skew and clock-reset); every real nemesis family's windows
# come from its shading in harness.registry, and start-X / stop-X pairs from checkers.faults.
_SIM_FAULT_SPECS = (("kill", ("kill",), ("start",)), ("pause", ("pause",), ("resume",)),
                    ("clock", ("clock-skew",), ("clock-reset",)))


def _fault_specs() -> list[Any]:
    from checkers.faults import FaultSpec

    specs: list[Any] = [FaultSpec(name, start, stop) for name, start, stop in _SIM_FAULT_SPECS]
    try:
        from harness.registry import SHADING
    except Exception:  # noqa: BLE001 - without the registry only the generic pairs are known
        return specs
    return specs + [s for name, s in sorted(SHADING.items()) if name != "membership"]


def _membership_outcome(value: Any) -> str | None:
    """ok / refused / unknown for a membership change's completion value; None: not attempted."""
    value = value if isinstance(value, dict) else {}
    outcome = value.get("outcome")
    if "skipped" in value:
        return None
    if outcome == "ok":
        return "ok"
    # Real runs record ok / fail / unknown with the error code beside it; the simulator
    # records the error code itself as the outcome.
    code = value.get("error") if outcome == "fail" else outcome
    if code in (None, "unknown", "timeout", "internal"):
        return "unknown"
    return "refused"


def _admin_attempts(history: list[Any], changes: tuple[str, ...]) -> list[tuple[Any, Any, str]]:
    """(invocation, completion or None, outcome) of every admin call in ``changes`` the nemesis
    asked for. Completions pair with invocations of the same ``f`` in order (the simulator may
    have several calls in flight); a call still unanswered when the run ended is ``unknown``.
    A completion recorded without an outcome (an older history) is not judged."""
    pending: dict[str, list[Any]] = {}
    out: list[tuple[Any, Any, str]] = []
    for op in history:
        if op.is_client or op.f not in changes:
            continue
        if op.type == "invoke":
            pending.setdefault(op.f, []).append(op)
            continue
        queue = pending.get(op.f)
        if not queue:
            continue
        invoked = queue.pop(0)
        if not (isinstance(op.value, dict) and "outcome" in op.value):
            continue
        outcome = _membership_outcome(op.value)
        if outcome is not None:
            out.append((invoked, op, outcome))
    out.extend((invoked, None, "unknown") for queue in pending.values() for invoked in queue)
    return out


def _in_healthy_span(healthy: Iterable[tuple[float, float, Any]], invoked: Any, done: Any) -> bool:
    """Did one span of ``healthy`` (majority-unserved's) hold from the call to its answer,
    with the node asked (``via``) and the one named (``node``) both in its majority?"""
    value = invoked.value if isinstance(invoked.value, dict) else {}
    nodes = {value.get("node"), value.get("via")}
    if done is None or None in nodes:
        return False
    return any(start <= invoked.time / 1e9 and done.time / 1e9 <= end and not nodes & set(outside)
               for start, end, outside in healthy)


def _admin_refused(history: list[Any], changes: tuple[str, ...], rule: str, what: str,
                   healthy: Iterable[tuple[float, float, Any]] = ()) -> list[dict[str, Any]]:
    """The membership-refused and transfer-refused rules (module doc): the whole run's admin
    calls of ``changes`` refused or unanswered, at least MEMBERSHIP_REFUSED_MIN of them while
    no other fault was active (from the request to its answer, or to the end of the run when
    none came), or, given ``healthy`` spans (the simulator's), while the node asked and the
    node named were both in a connected majority. ``what``: the calls' name in the
    explanation."""
    attempts = _admin_attempts(history, changes)
    if any(outcome == "ok" for _, _, outcome in attempts):
        return []
    quiet = _quiet_test(history)
    healthy = list(healthy)
    judged = [(done, outcome) for invoked, done, outcome in attempts
              if quiet(invoked, done) or _in_healthy_span(healthy, invoked, done)
              or (isinstance(invoked.value, dict) and invoked.value.get("final"))]
    if len(judged) < MEMBERSHIP_REFUSED_MIN:
        return []
    refused = [done for done, outcome in judged if outcome == "refused"]
    reasons: dict[str, int] = {}
    for done, _ in judged:
        value = done.value if done is not None and isinstance(done.value, dict) else {}
        key = str(value.get("message") or value.get("error") or value.get("outcome") or "no answer")[:120]
        reasons[key] = reasons.get(key, 0) + 1
    top = ", ".join(f"{r!r} x{n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
    return [{"rule": rule, "count": len(judged),
             "what": f"no {what} was ever accepted: {len(judged)} requests made while no "
                     f"other fault was active, {len(refused)} refused and {len(judged) - len(refused)} unanswered "
                     f"({top}); {len(attempts)} requested in the whole run"}]


#: unserved client operations in one healthy span (module doc) that fail a run
MAJORITY_UNSERVED_MIN = 3


def _majority_unserved(client: list[Any], healthy: Iterable[tuple[float, float, Any]],
                       grace_s: float) -> list[dict[str, Any]]:
    """The majority-unserved rule (module doc). ``healthy``: (start s, end s, down nodes) of
    the spans in which a majority was up with nothing else wrong; an operation is judged when
    its client's node (``node`` on the invocation) was up, it was invoked at least ``grace_s``
    after the span began and its completion came before the span ended."""
    invoked: dict[Any, Any] = {}
    spans: list[tuple[Any, Any]] = []
    for op in client:
        if op.type == "invoke":
            invoked[op.process] = op
        elif op.process in invoked:
            spans.append((invoked.pop(op.process), op))
    out: list[dict[str, Any]] = []
    for start, end, down in healthy:
        judged = [(inv, done) for inv, done in spans
                  if start + grace_s <= inv.time / 1e9 and done.time / 1e9 <= end
                  and inv.extra.get("node") is not None and inv.extra.get("node") not in down]
        if len(judged) < MAJORITY_UNSERVED_MIN or any(_served(done) for _, done in judged):
            continue
        out.append({"rule": "majority-unserved", "start_s": round(start, 3), "end_s": round(end, 3),
                    "down": sorted(down), "count": len(judged),
                    "what": f"from {start:.1f} s to {end:.1f} s a majority was up and connected "
                            f"({', '.join(sorted(down)) or 'no node'} down or cut off, nothing else faulted), "
                            f"yet none of the {len(judged)} operations sent to its nodes after a grace of "
                            f"{grace_s:.1f} s was served ({_errors(done for _, done in judged)}): Raft must "
                            f"elect a leader in such a majority and serve"})
    return out


def _seconds(ns: int) -> str:
    return f"{ns / 1e9:.1f} s"


#: busy-when-idle in wall-clock time (real runs): an idle node may do this many times its
#: heartbeat work per peer, plus a floor (scheduling noise, the status requests themselves)
IDLE_BUDGET, IDLE_FLOOR_PER_S = 5.0, 50.0
#: busy-when-idle in virtual time (the simulator, module doc): messages per heartbeat and
#: destination, and Readies per heartbeat, an idle node may send or run, plus a floor per
#: second for the window's edges (a 2 s window holds a heartbeat more or less) and duplicated
#: packets. Measured worst (module doc): 1.20 for a follower, 1.04 for a leader.
IDLE_BUDGET_VIRTUAL, IDLE_FLOOR_PER_S_VIRTUAL = 1.5, 2.0


def idle_destinations(rec: Mapping[str, Any]) -> int:
    """The nodes an idle node sends to (busy-when-idle in virtual time): a leader heartbeats
    each peer and learner, a follower or learner answers its one leader, a candidate asks
    each peer (``rec``: one node's idle record)."""
    role = rec.get("role")
    if role in ("follower", "learner"):
        return 1
    peers = int(rec.get("peers") or 0) + (int(rec.get("learners") or 0) if role == "leader" else 0)
    return max(1, peers)


def idle_budget(rec: Mapping[str, Any], virtual: bool) -> tuple[float, float]:
    """(Readies, messages) per second the busy-when-idle rule allows the node of ``rec``."""
    heartbeats = 1000.0 / max(1.0, float(rec.get("heartbeat_ms") or 50))
    if not virtual:
        budget = IDLE_BUDGET * heartbeats * max(1, int(rec.get("peers") or 0)) + IDLE_FLOOR_PER_S
        return budget, budget
    per = IDLE_BUDGET_VIRTUAL * heartbeats
    return per + IDLE_FLOOR_PER_S_VIRTUAL, per * idle_destinations(rec) + IDLE_FLOOR_PER_S_VIRTUAL


def _busy_when_idle(idle: Mapping[str, Any] | None, notes: list[str]) -> list[dict[str, Any]]:
    """The busy-when-idle rule (module doc) over availability.json's ``idle`` record."""
    if not idle or not idle.get("nodes"):
        return []
    if not idle.get("caught_up"):
        notes.append("idle work not judged: the nodes had not caught up with the leader")
        return []
    virtual = bool(idle.get("virtual"))
    out = []
    for node, rec in sorted(idle["nodes"].items()):
        budgets = dict(zip(("readies_per_s", "messages_per_s"), idle_budget(rec, virtual)))
        busy = {what: rec[what] for what in budgets if float(rec.get(what) or 0) > budgets[what]}
        if busy:
            said = " and ".join(f"{v:g} {k.replace('_per_s', '').replace('_', ' ')} a second (budget "
                                f"{budgets[k]:g})" for k, v in busy.items())
            if virtual:
                dest = idle_destinations(rec)
                to = ("its leader" if rec.get("role") in ("follower", "learner") else
                      f"each of its {dest} peers" + (" and learners" if rec.get("role") == "leader" else ""))
                why = (f"{IDLE_BUDGET_VIRTUAL:g} times one Ready per heartbeat and one message per heartbeat "
                       f"to {to}, plus {IDLE_FLOOR_PER_S_VIRTUAL:g}")
            else:
                why = (f"{IDLE_BUDGET:g} times its heartbeat work with {rec.get('peers')} peers, plus "
                       f"{IDLE_FLOOR_PER_S:g}")
            out.append({"rule": "busy-when-idle", "node": node,
                        "what": f"node {node} ({rec.get('role')}) handled {said} over {idle.get('window_s')} s "
                                f"with no client and no fault active and every node caught up ({why}): a loop "
                                f"that never settles or a message storm"})
    return out


def idle_caught_up(statuses: Mapping[str, Mapping[str, Any]]) -> bool:
    """Before the idle window (harness/run.py ``_idle_work``, harness/sim/runner.py
    ``idle_work``): has every running member of the newest term's leader's configuration
    applied what that leader committed? ``statuses``: running node -> its status (ukehi's
    status answer, or the simulator's equivalent: ``role``, ``term``, ``members``,
    ``learners``, ``commit_index``, ``applied_index``). False with no leader among them;
    nodes outside the configuration (spares) apply nothing and are not waited for."""
    leaders = sorted((int(s.get("term") or 0), n) for n, s in statuses.items() if s.get("role") == "leader")
    if not leaders:
        return False
    lead = statuses[leaders[-1][1]]
    members = set(lead.get("members") or []) | set(lead.get("learners") or [])
    commit = int(lead.get("commit_index") or 0)
    return all(int(s.get("applied_index") or 0) >= commit for n, s in statuses.items() if n in members)


def idle_record(first: Mapping[str, Mapping[str, Any]], second: Mapping[str, Any], window_s: float, *,
                caught_up: bool, virtual: bool = False) -> dict[str, Any]:
    """availability.json's ``idle`` record (harness/run.py ``_idle_work``, harness/sim/runner.py
    ``idle_work``) from each node's status at the start and at the end of the idle window,
    ``window_s`` seconds apart: ``readies`` and ``messages_sent`` (counters since the node
    started), ``role``, ``members`` (voters), ``learners``, ``heartbeat_ms`` and, when known,
    ``election_timeout_ms``. A node with no status at the end, or whose counters went back
    (restarted in the window), is left out; ``virtual``: counted in the simulator's time."""
    nodes: dict[str, Any] = {}
    for name, a in first.items():
        b = second.get(name)
        if not b or "readies" not in a or int(b.get("readies", -1)) < int(a["readies"]):
            continue
        rec = {"role": b.get("role"), "peers": max(0, len(b.get("members") or []) - 1),
               "learners": len(b.get("learners") or []),
               "readies_per_s": round((int(b["readies"]) - int(a["readies"])) / window_s, 1),
               "messages_per_s": round((int(b["messages_sent"]) - int(a["messages_sent"])) / window_s, 1),
               "heartbeat_ms": b.get("heartbeat_ms")}
        if b.get("election_timeout_ms") is not None:
            rec["election_timeout_ms"] = b.get("election_timeout_ms")
        nodes[name] = rec
    return {"nodes": nodes, "caught_up": caught_up, "window_s": round(window_s, 3),
            **({"virtual": True} if virtual else {})}


def check_availability(history: Iterable[Any], facts: Mapping[str, Any] | None, *,
                       run_dir: str | Path | None = None, time_limit_s: float | None = None,
                       healthy: Iterable[tuple[float, float, Any]] = (), grace_s: float = 0.0) -> dict[str, Any]:
    """Judge a run's availability (module doc). ``facts``: the run's availability.json
    (None for an old run); ``run_dir``: where ``nodes/<node>/node.log`` are, to say why a
    node exited; ``time_limit_s``: the main phase's length, for runs without facts;
    ``healthy`` and ``grace_s``: the majority-unserved rule's spans (the simulator's)."""
    base = Path(run_dir) if run_dir is not None else None
    facts = dict(facts or {})
    history = list(history)
    if not healthy and facts.get("healthy"):  # a stored simulated seed's spans (sim_facts)
        healthy = [(a, b, frozenset(down)) for a, b, down in facts["healthy"]]
        grace_s = float(facts.get("grace_s") or 0.0)
    client = [op for op in history if op.is_client]
    violations: list[dict[str, Any]] = []
    notes: list[str] = []

    startup = facts.get("startup")
    if startup:
        nodes = startup.get("nodes", {})
        said = str(startup.get("reason", ""))
        named = "; ".join(f"{n}: {v.get('reason')}" for n, v in sorted(nodes.items())
                          if v.get("cause") == "build" and str(v.get("reason")) not in said)
        violations.append({"rule": "startup", "nodes": sorted(n for n, v in nodes.items() if v.get("cause") == "build"),
                           "what": f"the cluster did not come up because of the build: {startup.get('reason')}"
                                   + (f" ({named})" if named else "")})

    counts = _count(client)
    if counts["invoke"] and not counts["ok"]:
        violations.append({"rule": "no-ok-op", "counts": counts,
                           "what": f"no client operation succeeded in the whole run: {counts['invoke']} invoked, "
                                   f"{counts['fail']} failed, {counts['info']} unknown ({_errors(client)})"})

    if counts["ok"]:
        # A fault's effect outlasts its window by up to an election (facts["recovery_s"]: the
        # simulator's longest election timeout; real runs give none and count from the window).
        violations.extend(_kinds_never_served(client, history, float(facts.get("recovery_s") or 0.0)))
    healthy = list(healthy)
    violations.extend(_majority_unserved(client, healthy, grace_s))
    violations.extend(_admin_refused(history, MEMBERSHIP_CHANGES, "membership-refused", "membership change (add/remove)"))
    violations.extend(_admin_refused(history, TRANSFERS, "transfer-refused", "leadership transfer", healthy))

    main_end = facts.get("main_end_ns")
    if main_end is None and time_limit_s is not None and not startup:
        main_end = int(time_limit_s * 1e9)
        notes.append("no availability.json: final phase taken as the ops invoked after the time limit")
    final_start = max(facts.get("final_start_ns") or 0, main_end or 0)
    down_on_purpose = facts.get("down_on_purpose") or {}
    if main_end is not None:
        final = [op for op in client if op.time >= final_start]
        final_counts = _count(final)
        if final_counts["invoke"] and not final_counts["ok"]:
            if down_on_purpose:
                notes.append("final phase served nothing, but " + "; ".join(
                    f"{n} was down on purpose ({why})" for n, why in sorted(down_on_purpose.items()))
                    + ": not blamed on the build")
            elif counts["ok"]:  # the whole-run rule already said it otherwise
                leader = facts.get("final_leader")
                why = (f"a leader ({leader}) was found" if leader
                       else f"no leader was found ({facts.get('final_leader_error') or 'not recorded'})")
                violations.append({
                    "rule": "final-phase", "counts": final_counts,
                    "what": f"after every fault healed (final phase from {_seconds(final_start)}), none of its "
                            f"{final_counts['invoke']} operations succeeded: {final_counts['fail']} failed, "
                            f"{final_counts['info']} unknown ({_errors(final)}); {why}"})
        elif not final_counts["invoke"]:
            notes.append("no final-phase operations to judge")

    for node, why in sorted((facts.get("unresponsive") or {}).items()):
        violations.append({"rule": "node-unresponsive", "node": node,
                           "what": f"node {node} {why} (every fault was healed: a correct node answers, even "
                                   f"while it replays or recovers){_last_line(base, node)}"})

    violations.extend(_busy_when_idle(facts.get("idle"), notes))

    for node, status in sorted((facts.get("exited") or {}).items()):
        cause, reason = classify_exit(_node_log(base, node), status, fresh=False)
        if cause == "build":
            violations.append({"rule": "node-exit", "node": node, "status": status,
                               "what": f"node {node} had exited on its own (status {status}) when the run ended: "
                                       f"{reason}"})
        else:
            notes.append(f"node {node} had exited on its own (status {status}): {reason} ({cause}, not blamed "
                         f"on the build)")

    if violations:
        return {"valid": False, "violations": violations, "explanation": "; ".join(v["what"] for v in violations),
                "notes": notes, "ok": counts["ok"]}
    if not counts["invoke"]:
        return {"valid": "unknown", "violations": [], "notes": notes,
                "explanation": "no client operations in the history: nothing to judge"}
    text = f"the cluster served: {counts['ok']} of {counts['invoke']} client operations succeeded"
    if main_end is not None:
        final_ok = sum(1 for op in client if op.time >= final_start and op.type == "ok")
        text += f", {final_ok} of them in the final phase after the faults healed"
    if notes:
        text += "; " + "; ".join(notes)
    return {"valid": True, "violations": [], "explanation": text, "notes": notes, "ok": counts["ok"]}


def down_from_logs(logs: Mapping[str, str]) -> dict[str, str]:
    """Nodes that cannot serve by design at the end, read from their node logs alone (the
    simulator, where no process is left to ask): the last process refused to start under
    refuse-start, or logged ``recovering`` after a WAL cut and never ``recovered`` (it does
    not vote until it has caught up). What harness/run.py's ``_down_on_purpose`` finds by
    asking live nodes."""
    down = {}
    for node, text in sorted(logs.items()):
        events = [m.group(1) for line in _last_process(text).splitlines() for m in [_EVENT.search(line)] if m]
        if "refuse-start" in events:
            down[node] = "refused to start (corruption policy refuse-start)"
        elif "recovering" in events and "recovered" not in events[events.index("recovering"):]:
            down[node] = "recovering after a WAL cut: it does not vote until it has caught up"
    return down


def check_sim_availability(history: Iterable[Any], logs: Mapping[str, str], main_end_s: float, *,
                           healthy: Iterable[tuple[float, float, Any]] = (), grace_s: float = 0.0,
                           idle: Mapping[str, Any] | None = None, recovery_s: float = 0.0) -> dict[str, Any]:
    """The availability verdict of a simulated seed (harness/sim/runner.py ``judge``): the same
    rules as a real run's, over facts the simulator knows. ``main_end_s``: virtual time the
    workload phase ended (no worker invokes after it; every fault is healed before the final
    phase, whose first invocation starts it); ``logs``: each node's log. The start-up,
    node-unresponsive and node-exit rules have no simulated counterpart here (a node that
    raises or stops itself fails ``node-health``); no-ok-op, kind-never-served,
    membership-refused, transfer-refused and final-phase apply as they are, and
    majority-unserved over ``healthy`` (harness/sim/runner.py ``healthy_stretches``), and
    busy-when-idle over ``idle`` (``idle_work`` there, in virtual seconds)."""
    history = list(history)
    return check_availability(history, sim_facts(history, logs, main_end_s, healthy=healthy, grace_s=grace_s,
                                                 idle=idle, recovery_s=recovery_s))


def sim_facts(history: Iterable[Any], logs: Mapping[str, str], main_end_s: float, *,
              healthy: Iterable[tuple[float, float, Any]] = (), grace_s: float = 0.0,
              idle: Mapping[str, Any] | None = None, recovery_s: float = 0.0) -> dict[str, Any]:
    """What a simulated seed knows in place of a real run's availability.json (the
    simulator stores it with a failing seed, so ``analyze`` judges it the same way)."""
    main_end = int(main_end_s * 1e9)
    final_start = min((op.time for op in history if op.is_client and op.type == "invoke" and op.time >= main_end),
                      default=main_end)
    return {"main_end_ns": main_end, "final_start_ns": final_start, "exited": {},
            "down_on_purpose": down_from_logs(logs),
            "healthy": [[round(a, 6), round(b, 6), sorted(down)] for a, b, down in healthy], "grace_s": grace_s,
            "recovery_s": recovery_s,
            **({"idle": dict(idle)} if idle else {})}


def availability_checker(run_dir: str | Path, time_limit_s: float | None = None) -> Any:
    """The checker for one stored run (harness/analysis.py): reads its availability.json."""

    def check(history: Iterable[Any], options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return check_availability(history, load_facts(run_dir), run_dir=run_dir, time_limit_s=time_limit_s)

    return check


__all__ = ["FACTS_FILE", "availability_checker", "check_availability", "check_sim_availability", "classify_exit",
           "down_from_logs", "idle_budget", "idle_caught_up", "idle_destinations", "idle_record", "load_facts",
           "sim_facts"]
