"""`ukehi-jepsen cleanup --help` says what --orphans removes and what it never touches."""

from __future__ import annotations

import subprocess
import sys


def test_cleanup_help_explains_orphans():
    out = subprocess.run([sys.executable, "-m", "harness.cli", "cleanup", "--help"], capture_output=True,
                         text=True, timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    for needle in ("network namespaces ukj-<run>-<node>", "FORWARD rules", "no record left in the state dir",
                   "as root", "nothing on SSH hosts", "no files or results"):
        assert needle in text, (needle, text)
