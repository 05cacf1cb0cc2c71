"""What a local run created, on disk, so teardown and later cleanup are exact.

A run writes ``<state dir>/<run id>.json`` *before* creating each thing (bridge,
rule, namespace, link, process), so a harness killed at any moment leaves a record
of everything it may have made. :func:`teardown` removes what a record lists and
tolerates what is already gone; :func:`cleanup_leftovers` applies it to the records
of runs whose harness is no longer alive (never to a live run of someone else).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Collection

from harness.backends import netns as nsnet
from harness.backends.process import proc_stat, same_process, wait_gone
from harness.net import is_root, link_names, netns_names, netns_pids


def default_state_dir() -> Path:
    """/run/ukehi-jepsen as root; a per-user directory otherwise (UKEHI_JEPSEN_STATE_DIR overrides)."""
    env = os.environ.get("UKEHI_JEPSEN_STATE_DIR")
    if env:
        return Path(env)
    if is_root():
        return Path("/run/ukehi-jepsen")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "ukehi-jepsen" if runtime else Path(tempfile.gettempdir()) / f"ukehi-jepsen-{os.getuid()}"


@dataclass
class ProcessRecord:
    pid: int
    start_ticks: int  # /proc start time: tells our process apart from a later one reusing the pid


@dataclass
class RunState:
    run_id: str
    owner_pid: int
    owner_start_ticks: int
    mode: str  # "netns" or "loopback"
    bridge: str | None = None
    subnet: str | None = None
    forward_rules: list[str] = field(default_factory=list)  # iptables binaries holding the FORWARD rule
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    processes: dict[str, ProcessRecord] = field(default_factory=dict)

    @classmethod
    def for_this_process(cls, run_id: str, mode: str) -> "RunState":
        stat = proc_stat(os.getpid())
        return cls(run_id=run_id, owner_pid=os.getpid(), owner_start_ticks=stat[1] if stat else 0, mode=mode)

    def path(self, state_dir: Path) -> Path:
        return state_dir / f"{self.run_id}.json"

    def save(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        target = self.path(state_dir)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, target)

    @classmethod
    def load(cls, path: Path) -> "RunState":
        d = json.loads(path.read_text())
        d["processes"] = {k: ProcessRecord(**v) for k, v in d.get("processes", {}).items()}
        return cls(**d)

    def owner_alive(self) -> bool:
        stat = proc_stat(self.owner_pid)
        return stat is not None and stat[1] == self.owner_start_ticks


def _kill_recorded(rec: ProcessRecord) -> bool:
    if not same_process(rec.pid, rec.start_ticks):
        return False
    for kill in (lambda: os.killpg(rec.pid, signal.SIGKILL), lambda: os.kill(rec.pid, signal.SIGKILL)):
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            continue
    return True


def teardown(state: RunState, state_dir: Path | None) -> list[str]:
    """Remove everything STATE lists, processes first; return a line per thing removed.

    Raises RuntimeError naming what could not be removed (after trying everything).
    """
    removed: list[str] = []
    problems: list[str] = []
    killed = [rec.pid for rec in state.processes.values() if _kill_recorded(rec)]
    removed += [f"process {pid}" for pid in killed]
    # Anything else living in the run's namespaces is the run's too (e.g. a node's helper).
    for ns in state.netns:
        for pid in netns_pids(ns):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                removed.append(f"process {pid} in {ns}")
            except ProcessLookupError:
                pass
    still = wait_gone(killed, 10.0)
    if still:
        problems.append(f"processes {still} survived SIGKILL")
    if state.mode == "netns":
        existing_ns = set(netns_names())
        for ns in state.netns:
            if ns in existing_ns:
                if nsnet.delete_netns(ns):
                    removed.append(f"netns {ns}")
                else:
                    problems.append(f"netns {ns}")
        existing_links = set(link_names())
        for link in state.links:  # usually gone with their namespace's peer
            if link in existing_links and nsnet.delete_link(link):
                removed.append(f"link {link}")
        for tool in state.forward_rules if state.bridge else []:
            n = nsnet.delete_forward_rule(tool, state.bridge, state.run_id)
            removed += [f"{tool} FORWARD rule {nsnet.rule_comment(state.run_id)}"] * n
        if state.bridge and state.bridge in set(link_names()):
            if nsnet.delete_link(state.bridge):
                removed.append(f"bridge {state.bridge}")
            else:
                problems.append(f"bridge {state.bridge}")
        leftover_links = [l for l in link_names() if l in state.links or l == state.bridge]
        problems += [f"link {l}" for l in leftover_links]
    if state_dir is not None:
        state.path(state_dir).unlink(missing_ok=True)
    if problems:
        raise RuntimeError(f"run {state.run_id}: could not remove {', '.join(problems)}; "
                           "run `ukehi-jepsen cleanup` as root once they are free")
    return removed


def cleanup_leftovers(state_dir: Path | None = None, orphans: bool = False,
                      run_ids: Collection[str] | None = None) -> list[str]:
    """Remove what earlier runs left behind; return a line per thing removed.

    Only runs whose harness process is gone are touched (and, given RUN_IDS, only
    those runs). With ORPHANS, also remove kernel objects named like this backend's
    (``ukjb<id>``, ``ukjh<id>N``, ``ukj-<id>-node``, FORWARD rules commented
    ``ukj-<id>``) whose run has no live record in STATE_DIR, e.g. after /run was
    wiped by a reboot. Runs recorded in another state dir look orphaned here: use
    ORPHANS only when every run uses the same state dir.
    """
    state_dir = state_dir or default_state_dir()
    removed: list[str] = []
    live: set[str] = set()
    errors: list[str] = []
    for path in sorted(state_dir.glob("*.json")) if state_dir.is_dir() else []:
        try:
            state = RunState.load(path)
        except (ValueError, TypeError, KeyError) as err:
            errors.append(f"unreadable state file {path} ({err}); delete it by hand")
            continue
        if state.owner_alive() or (run_ids is not None and state.run_id not in run_ids):
            live.add(state.run_id)
            continue
        try:
            removed += teardown(state, state_dir)
        except RuntimeError as err:
            errors.append(str(err))
    if orphans and is_root():
        removed += _remove_orphans(live, run_ids)
    if errors:
        raise RuntimeError("; ".join(errors))
    return removed


def _remove_orphans(live: set[str], run_ids: Collection[str] | None) -> list[str]:
    by_run: dict[str, RunState] = {}

    def state_for(run_id: str) -> RunState:
        return by_run.setdefault(run_id, RunState(run_id=run_id, owner_pid=0, owner_start_ticks=-1,
                                                  mode="netns"))

    for ns in netns_names():
        m = nsnet.OWN_NETNS_RE.match(ns)
        if m and m.group(1) not in live:
            state_for(m.group(1)).netns.append(ns)
    for link in link_names():
        m = nsnet.OWN_LINK_RE.match(link)
        if m and m.group(1) not in live:
            st = state_for(m.group(1))
            if link == nsnet.bridge_name(m.group(1)):
                st.bridge = link
            else:
                st.links.append(link)
    for run_id, (bridge, tools) in nsnet.forward_rule_bridges().items():
        if run_id not in live:
            st = state_for(run_id)
            st.bridge, st.forward_rules = bridge, tools
    removed: list[str] = []
    for st in by_run.values():
        if run_ids is None or st.run_id in run_ids:
            removed += teardown(st, None)
    return removed
