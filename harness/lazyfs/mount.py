"""Mount and unmount LazyFS (fs.py) under a node's data directory, from the harness.

One daemon process per mount (``python -m harness.lazyfs BACKING MOUNTPOINT``). The
node's data lives in BACKING; MOUNTPOINT is the data directory the node is given. Local
backend only: the mount must be visible to the node's process, which runs on this host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .fs import CONTROL

MOUNT_TIMEOUT_S = 15.0


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
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "harness.lazyfs", str(self.backing),
                                          str(self.mountpoint)], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
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
            tool = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
            done = subprocess.run([tool, "-u", str(self.mountpoint)], capture_output=True, timeout=30)
            if done.returncode != 0:  # busy: detach now, the kernel finishes when the last user goes
                subprocess.run([tool, "-u", "-z", str(self.mountpoint)], capture_output=True, timeout=30)
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
