"""One supervised node process on this machine: start, stop, kill, pause, resume.

The process runs in its own session (so the harness's Ctrl-C reaches the harness,
which then tears down in order, and not the nodes at random) and signals go to
its process group, so helpers a node may spawn are stopped and killed with it.
The pid held is the node's own: ``ip netns exec`` execs the command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from harness.backends.base import BackendError


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of PID from /proc, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2:].split()
    return rest[0], int(rest[19])


def same_process(pid: int, start_ticks: int) -> bool:
    """Whether PID is still the process that started at START_TICKS, and not a zombie (a
    later process reusing the pid has another start time)."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z" and stat[1] == start_ticks


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait (bounded) until PIDS are gone or zombies; return those still alive."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if (s := proc_stat(p)) is not None and s[0] != "Z"]
        if alive:
            time.sleep(0.02)
    return alive


class NodeProcess:
    """The current incarnation of a node's process (at most one at a time)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._popen: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None  # wall-clock time right after launch

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None and self._popen.poll() is None else None

    @property
    def last_pid(self) -> int | None:
        """Pid of the latest incarnation, even after it exited (for checks after a kill)."""
        return self._popen.pid if self._popen is not None else None

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None, log_path: Path,
              cwd: Path) -> int:
        if self.is_running():
            raise BackendError(f"node {self.name} is already running as pid {self.pid}; "
                               "stop() or kill() it before starting it again")
        full_env = dict(os.environ)
        full_env.update(env or {})
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cwd.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            try:
                self._popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                               stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                                               start_new_session=True)
            except OSError as err:
                raise BackendError(f"cannot start node {self.name} with {list(argv)}: {err}") from err
        self.started_at = time.time()
        return self._popen.pid

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def process_state(self) -> str | None:
        pid = self.pid
        if pid is None:
            return None
        stat = proc_stat(pid)
        return stat[0] if stat else None

    def signal(self, sig: int) -> bool:
        """Send SIG to the node's process group; False if there is no process."""
        if not self.is_running():
            return False
        assert self._popen is not None
        try:
            os.killpg(self._popen.pid, sig)
        except ProcessLookupError:
            return False
        except PermissionError:
            # The group leader changed its group (setsid in the node): signal it directly.
            os.kill(self._popen.pid, sig)
        return True

    def kill(self) -> int | None:
        if not self.signal(signal.SIGKILL):
            return self._reap()
        return self._wait(10.0)

    def stop(self, timeout: float = 5.0) -> int | None:
        if not self.signal(signal.SIGTERM):
            return self._reap()
        self.signal(signal.SIGCONT)  # a paused node would otherwise never see the SIGTERM
        try:
            assert self._popen is not None
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def pause(self) -> None:
        if not self.signal(signal.SIGSTOP):
            raise BackendError(f"cannot pause node {self.name}: it is not running (start it first)")
        # SIGSTOP is asynchronous: wait (bounded) until the kernel reports the stop,
        # so a caller that checks right after sees the node paused.
        self._await_state(lambda s: s in ("T", "t"), 2.0)

    def resume(self) -> None:
        if not self.signal(signal.SIGCONT):
            raise BackendError(f"cannot resume node {self.name}: it is not running (start it first)")
        self._await_state(lambda s: s not in ("T", "t"), 2.0)

    def _await_state(self, ok: Callable[[str], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.process_state()
            if state is None or ok(state):
                return
            time.sleep(0.005)

    def _wait(self, timeout: float) -> int | None:
        assert self._popen is not None
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BackendError(f"node {self.name} (pid {self._popen.pid}) did not exit within "
                               f"{timeout:g} s of SIGKILL; it may be stuck in the kernel (state D)") from None

    def _reap(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None
