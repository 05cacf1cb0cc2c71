"""Mount and unmount LazyFS (fs.py) under a node's data directory, from the harness.

One daemon process per mount (``python -m harness.lazyfs BACKING MOUNTPOINT``). The
node's data lives in BACKING; MOUNTPOINT is the data directory the node is given. Local
backend only: the mount must be visible to the node's process, which runs on this host.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from harness.backends.process import proc_stat, same_process, wait_gone

from .fs import CONTROL

MOUNT_TIMEOUT_S = 15.0
# In each daemon's environment: the harness that mounted it, as "PID:START_TICKS" (its
# start time tells it apart from a later process with the same pid). `ukehi-jepsen cleanup`
# unmounts the mounts whose harness is gone, e.g. after it was SIGKILLed.
OWNER_ENV = "UKEHI_LAZYFS_OWNER"


class LazyFSError(RuntimeError):
    """LazyFS could not be mounted or driven; the message says what to check."""


def fuse_support() -> tuple[bool, str]:
    """Whether LazyFS can work here, and why not."""
    if not os.path.exists("/dev/fuse"):
        return False, "no /dev/fuse (load the fuse module, or give the container --device /dev/fuse)"
    if shutil.which("fusermount3") is None and shutil.which("fusermount") is None:
        return False, "fusermount3 not found (apt-get install fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as err:
        return False, f"the mfusepy binding or libfuse is missing ({err}); pip install mfusepy, apt-get install fuse3"
    if os.geteuid() != 0:
        return False, "mounting needs root here"
    return True, ""


class LazyMount:
    """LazyFS mounted at ``mountpoint`` over ``backing``."""

    def __init__(self, backing: Path, mountpoint: Path, log_path: Path) -> None:
        self.backing = Path(backing)
        self.mountpoint = Path(mountpoint)
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen[bytes] | None = None

    def mount(self) -> None:
        ok, why = fuse_support()
        if not ok:
            raise LazyFSError(f"cannot use the lazyfs fault: {why}")
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        stat = proc_stat(os.getpid())
        env = {**os.environ, OWNER_ENV: f"{os.getpid()}:{stat[1] if stat else 0}"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "harness.lazyfs", str(self.backing),
                                          str(self.mountpoint)], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=env)
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while time.monotonic() < deadline:
            if os.path.ismount(self.mountpoint):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.unmount()
        raise LazyFSError(f"lazyfs did not mount at {self.mountpoint}; see {self.log_path}")

    @property
    def mounted(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and os.path.ismount(self.mountpoint)

    def drop(self) -> dict[str, Any]:
        """Throw away every write not fsynced yet; what was lost."""
        control = self.mountpoint / CONTROL.lstrip("/")
        control.write_bytes(b"drop")
        return json.loads(control.read_text())

    def unmount(self) -> None:
        if os.path.ismount(self.mountpoint):
            _fusermount_u(self.mountpoint)
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


def _fusermount_u(mountpoint: Path) -> None:
    tool = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
    done = subprocess.run([tool, "-u", str(mountpoint)], capture_output=True, timeout=30)
    if done.returncode != 0:  # busy, or its daemon is gone: detach now, the kernel finishes later
        subprocess.run([tool, "-u", "-z", str(mountpoint)], capture_output=True, timeout=30)


def _daemons() -> Iterator[tuple[int, Path, str | None]]:
    """(pid, mountpoint, owner) of every LazyFS daemon on this host (owner: OWNER_ENV or None)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if b"harness.lazyfs" not in argv:
                continue
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        at = argv.index(b"harness.lazyfs")
        if at < 1 or argv[at - 1] != b"-m" or len(argv) < at + 3:
            continue
        prefix = OWNER_ENV.encode() + b"="
        owner = next((e[len(prefix):].decode(errors="replace") for e in environ if e.startswith(prefix)), None)
        yield int(entry), Path(os.fsdecode(argv[at + 2])), owner


def _owner_alive(owner: str) -> bool:
    pid, _, ticks = owner.partition(":")
    try:
        return same_process(int(pid), int(ticks))
    except ValueError:
        return True  # not a token we wrote: leave that daemon alone


def _lazyfs_mountpoints() -> list[Path]:
    """Mount points of this mount namespace whose source is LazyFS ("lazyfs")."""
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields, _, tail = line.partition(" - ")
            tail_fields = tail.split()
            if len(tail_fields) >= 2 and tail_fields[1] == "lazyfs" and tail_fields[0].startswith("fuse"):
                # octal escapes (\040 for a space) in the mount point field
                raw = fields.split()[4]
                points.append(Path(raw.encode().decode("unicode_escape")))
    return points


def _stop_daemon(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_gone([pid], 5.0):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def cleanup_lazyfs_leftovers() -> list[str]:
    """Unmount the LazyFS mounts of harnesses that are gone and stop their daemons; a line
    per mount removed. Mounts of live harnesses, and daemons started by hand (no owner
    recorded), are left alone; a mount whose daemon died is only detached."""
    removed: list[str] = []
    served: set[Path] = set()
    for pid, mountpoint, owner in list(_daemons()):
        if owner is None or _owner_alive(owner):
            served.add(mountpoint)
            continue
        _fusermount_u(mountpoint)
        _stop_daemon(pid)
        removed.append(f"lazyfs mount {mountpoint} (daemon {pid}; its harness {owner.partition(':')[0]} is gone)")
    for mountpoint in _lazyfs_mountpoints():
        if mountpoint not in served:
            _fusermount_u(mountpoint)
            removed.append(f"lazyfs mount {mountpoint} (its daemon is gone)")
    return removed
