"""Nothing a run created survives it: close, exception, SIGINT, and cleanup after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.backends.local import LocalCluster
from harness.backends.process import proc_stat
from harness.backends.runstate import cleanup_leftovers, default_state_dir
from harness.net import link_names, netns_names, run

from backend_probes import PY, STANDIN, needs_netns, serve

pytestmark = [pytest.mark.root, needs_netns]

REPO = Path(__file__).resolve().parents[2]


def leftovers(run_id: str, pids: list[int]) -> list[str]:
    """Everything of run RUN_ID still present in the kernel or the process table."""
    found = [f"netns {n}" for n in netns_names() if run_id in n]
    found += [f"link {l}" for l in link_names() if run_id in l]
    for tool in ("iptables-nft", "iptables-legacy"):
        rules = run([tool, "-w", "-S", "FORWARD"], check=False).stdout
        found += [f"{tool} rule {line}" for line in rules.splitlines() if f"ukj-{run_id}" in line]
    found += [f"pid {p}" for p in pids if (s := proc_stat(p)) is not None and s[0] != "Z"]
    if (default_state_dir() / f"{run_id}.json").exists():
        found.append("state file")
    return found


def test_close_leaves_nothing_even_after_a_node_kill_and_an_exception(tmp_path: Path) -> None:
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="boom"):
        with LocalCluster(["n1", "n2", "n3"], results_dir=tmp_path, isolation="netns") as c:
            run_id = c.run_id
            for node in c:
                pids.append(serve(node))  # type: ignore[arg-type]
            c["n2"].kill()
            c["n3"].pause()
            c["n1"].drop_from([c["n2"].address], "both")
            assert leftovers(run_id, pids)  # the check sees a live run
            raise RuntimeError("boom")
    assert leftovers(run_id, pids) == []


CHILD = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {repo!r})
    from harness.backends.local import LocalCluster
    with LocalCluster(["n1", "n2", "n3"], results_dir={results!r}, isolation="netns") as c:
        pids = [n.start([sys.executable, {standin!r}, "serve", n.address, str(n.ports[0])]) for n in c]
        c["n1"].drop_from([c["n2"].address], "both")
        print(json.dumps({{"run_id": c.run_id, "pids": pids}}), flush=True)
        time.sleep(60)
""")


def start_child_harness(tmp_path: Path) -> tuple[subprocess.Popen[str], str, list[int]]:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO), results=str(tmp_path / "run"), standin=str(STANDIN)))
    # SIGINT as a terminal's Ctrl-C, even if this test run inherited it ignored (a background
    # job of a shell without job control): the child must not inherit SIG_IGN
    child = subprocess.Popen([PY, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert child.stdout is not None
    line = child.stdout.readline()  # bounded by the child's own setup; it prints once ready
    if not line:
        child.kill()
        raise AssertionError(f"child harness failed: {child.stderr.read() if child.stderr else ''}")
    info = json.loads(line)
    return child, info["run_id"], info["pids"]


def test_sigint_to_a_harness_process_leaves_nothing(tmp_path: Path) -> None:
    child, run_id, pids = start_child_harness(tmp_path)
    try:
        # 3 namespaces, bridge + 3 host veths, the FORWARD rule, 3 nodes, the state file
        assert len(leftovers(run_id, pids)) == 3 + 4 + 1 + 3 + 1
        child.send_signal(signal.SIGINT)
        child.wait(timeout=30)
        assert leftovers(run_id, pids) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        cleanup_leftovers()


def test_sigterm_to_a_harness_process_leaves_nothing(tmp_path: Path) -> None:
    child, run_id, pids = start_child_harness(tmp_path)
    try:
        child.terminate()
        assert child.wait(timeout=30) == 128 + signal.SIGTERM
        assert leftovers(run_id, pids) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        cleanup_leftovers()


def test_cleanup_leftovers_removes_what_a_sigkilled_harness_left(tmp_path: Path) -> None:
    child, run_id, pids = start_child_harness(tmp_path)
    child.kill()  # no teardown can run: namespaces, links, rule and node processes stay
    child.wait(timeout=10)
    try:
        left = leftovers(run_id, pids)
        assert any(x.startswith("netns") for x in left) and any(x.startswith("pid") for x in left)
        removed = cleanup_leftovers()
        assert any(run_id in r for r in removed)
        assert leftovers(run_id, pids) == []
    finally:
        cleanup_leftovers()


def test_cleanup_leftovers_spares_live_runs(tmp_path: Path) -> None:
    with LocalCluster(["n1"], results_dir=tmp_path, isolation="netns") as c:
        pid = serve(c["n1"])  # type: ignore[arg-type]
        cleanup_leftovers()
        assert c["n1"].is_running() and c["n1"].pid == pid
        assert c.state is not None and all(n in netns_names() for n in c.state.netns)


def test_orphans_without_a_state_file_are_found_by_their_names(tmp_path: Path) -> None:
    child, run_id, pids = start_child_harness(tmp_path)
    child.kill()
    child.wait(timeout=10)
    try:
        (default_state_dir() / f"{run_id}.json").unlink()  # as if /run had been wiped
        assert cleanup_leftovers(run_ids={run_id}) == []  # no record: the plain sweep cannot see it
        removed = cleanup_leftovers(orphans=True, run_ids={run_id})
        assert any(r.startswith("netns ukj-" + run_id) for r in removed)
        assert any("FORWARD rule" in r for r in removed) and any(r.startswith("bridge") for r in removed)
        assert leftovers(run_id, pids) == []
    finally:
        cleanup_leftovers(orphans=True, run_ids={run_id})
        for pid in pids:  # the namespace sweep kills node processes; make sure of it either way
            if proc_stat(pid) is not None:
                os.kill(pid, signal.SIGKILL)


def test_run_id_must_fit_interface_names(tmp_path: Path) -> None:
    from harness.backends.base import BackendError
    with pytest.raises(BackendError, match="6 lowercase hex digits"):
        LocalCluster(["n1"], results_dir=tmp_path, run_id="2026-11-27T05-30")


def test_leave_running_keeps_the_cluster_for_a_later_cleanup(tmp_path: Path) -> None:
    from harness.backends.runstate import RunState, teardown
    from backend_probes import probe_from_host
    with LocalCluster(["n1", "n2"], results_dir=tmp_path, isolation="netns") as c:
        pids = [serve(n) for n in c]  # type: ignore[arg-type]
        c.leave_running()
        run_id, node = c.run_id, c["n2"]
    try:
        assert probe_from_host(node, 1.0)  # type: ignore[arg-type]
        assert len(leftovers(run_id, pids)) == 2 + 3 + 1 + 2 + 1
    finally:
        state_file = default_state_dir() / f"{run_id}.json"
        teardown(RunState.load(state_file), default_state_dir())  # what cleanup does once we exit
    assert leftovers(run_id, pids) == []
