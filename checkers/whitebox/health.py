"""Node health: an error- or fatal-level event fails the run unless it is expected.

Every ``level=error`` or ``level=fatal`` line of every node log (and any Python traceback
on a node's stderr) is a failure, except the events in :data:`EXPECTED`, each with the
condition under which it is the node doing its documented job.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from .common import nothing_to_judge, result
from .nodedata import NodeData, Process

BAD_LEVELS = frozenset({"error", "fatal", "critical"})


def _refuse_start_policy(process: Process, event: Mapping[str, str], restarted: bool) -> bool:
    return process.policy == "refuse-start"


#: how the OS says the port is taken (EADDRINUSE: Linux errno 98, macOS errno 48)
ADDRESS_IN_USE = ("address already in use", "errno 98", "errno 48", "eaddrinuse")


def _port_taken_on_restart(process: Process, event: Mapping[str, str], restarted: bool) -> bool:
    # Only a restart: the node's first start in the run is on a port the harness just
    # picked as free, so a failure there is worth a look; a restart after a kill can find
    # the port taken by someone else on the machine in between (the environment, not the build).
    error = event.get("error", "").lower()
    return restarted and any(s in error for s in ADDRESS_IN_USE)


# event -> (when it is expected, why); keep this list short and say why for each.
EXPECTED: dict[str, tuple[Callable[[Process, Mapping[str, str], bool], bool], str]] = {
    "refuse-start": (_refuse_start_policy,
                     "RefuseStart found a damaged WAL and exits with code 4, files untouched (its promise)"),
    "corruption-report": (_refuse_start_policy,
                          "under RefuseStart the findings that made the node refuse are logged at error level"),
    "listen-failed": (_port_taken_on_restart,
                      "a node restarted mid-run (not its first start) found its port in use (EADDRINUSE): "
                      "another process on the machine took it while the node was down; the environment, "
                      "not the build (the availability checker still reports the node as down)"),
}


def check_node_health(cluster: Mapping[str, NodeData]) -> dict[str, Any]:
    if not any(n.processes for n in cluster.values()):
        return nothing_to_judge("no node logs to read")
    violations, expected, excused = [], 0, []
    for node in cluster.values():
        for i, process in enumerate(node.processes):
            for event in process.events:
                if event.get("level") not in BAD_LEVELS:
                    continue
                name = event.get("event", "?")
                rule = EXPECTED.get(name)
                if rule is not None and rule[0](process, event, i > 0):
                    expected += 1
                    excused.append({"node": node.name, "pid": process.pid, "event": name,
                                    "line": event.get("_line"), "why": rule[1]})
                    continue
                fields = " ".join(f"{k}={v}" for k, v in event.items()
                                  if k not in ("ts", "level", "node", "event", "_line", "traceback"))
                violations.append({"node": node.name, "pid": process.pid, "event": name,
                                   "level": event.get("level"), "line": event.get("_line"),
                                   "what": f"{node.name} (pid {process.pid}) logged level={event.get('level')} "
                                           f"event={name} at {event.get('ts', '?')} (node.log line "
                                           f"{event.get('_line')}): {fields[:300]}"})
    kinds = ", ".join(f"{e['event']} on {e['node']} (pid {e['pid']})" for e in excused[:5])
    return result(violations, f"no unexpected error-level events ({expected} expected ones"
                  f"{': ' + kinds if kinds else ''})",
                  expected_events=expected, expected=excused[:50])
