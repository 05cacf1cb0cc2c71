"""Per-node fake clocks through libfaketime's timestamp file.

A node launched with :func:`faketime_env` re-reads its timestamp file on every
clock call (FAKETIME_NO_CACHE=1), so writing the file changes that node's clock
and no other process's.

libfaketime 0.9.x applies a spec ``+OFFSET xRATE`` relative to the moment the
library was loaded in the process (S): ``fake(t) = S + (t - S) * RATE + OFFSET``
(checked against the installed 0.9.10 by tests/backends). Written naively, a
rate change would make the clock jump by ``(t - S) * (RATE - 1)``. :class:`FakeClock`
keeps the clock continuous instead: ``set(offset, rate)`` means "from now the node
reads real + offset and advances RATE times as fast", and the file gets the
OFFSET' that gives exactly that for the process started at S.

libfaketime moves CLOCK_MONOTONIC with the same spec (tests/backends check the
rate): that is what lets a rate skew stretch a node's timers and leases, but it
also means a *backward* offset makes the node's monotonic clock go back, so its
timers stall for that long. FAKETIME_DONT_FAKE_MONOTONIC=1 would avoid that, but
with libfaketime 0.9.10 it makes Python's time.sleep fail with EINVAL, so it is
not used.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from pathlib import Path

from harness.backends.base import BackendError

_LIB_GLOBS = ("/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1",
              "/usr/local/lib/faketime/libfaketime.so.1", "/usr/lib64/faketime/libfaketime.so.1")


def find_libfaketime() -> Path:
    """Path of libfaketime.so.1; raises BackendError naming the package to install."""
    for pattern in _LIB_GLOBS:
        hits = sorted(glob.glob(pattern))
        if hits:
            return Path(hits[0])
    raise BackendError("libfaketime.so.1 not found under /usr/lib/*/faketime/: the clock nemesis "
                       "needs it (apt-get install libfaketime)")


def faketime_env(timestamp_file: str | Path, lib: Path | None = None) -> dict[str, str]:
    """Variables that put a process under the clock written in TIMESTAMP_FILE."""
    return {
        "LD_PRELOAD": str(lib or find_libfaketime()),
        "FAKETIME_TIMESTAMP_FILE": str(timestamp_file),
        "FAKETIME_NO_CACHE": "1",
    }


def faketime_spec(offset_s: float, rate: float) -> str:
    """The timestamp-file line for an offset (seconds, may be fractional or negative) and rate."""
    if rate <= 0:
        raise ValueError(f"clock rate must be positive, got {rate}")
    return f"{offset_s:+.6f} x{rate:.6f}\n"


@dataclass
class FakeClock:
    """The clock of one node: its current offset and rate, and its timestamp file."""

    path: Path
    offset_s: float = 0.0  # node - real, at set_at
    rate: float = 1.0
    set_at: float = 0.0  # real time of the last set()
    process_start: float | None = None  # S of the current process (libfaketime load time)

    def offset_at(self, t: float) -> float:
        """Node clock minus real clock at real time T."""
        return self.offset_s + (t - self.set_at) * (self.rate - 1.0)

    def set(self, offset_s: float, rate: float = 1.0, now: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"clock rate must be positive, got {rate}")
        self.offset_s, self.rate = float(offset_s), float(rate)
        self.set_at = time.time() if now is None else now
        self.write()

    def process_started(self, start: float) -> None:
        """A new process was launched at START under this clock: rewrite the file for it."""
        self.process_start = start
        self.write()

    def file_offset(self) -> float:
        """OFFSET' for the file: makes ``S + (t - S) * rate + OFFSET'`` equal ``t + offset_at(t)``."""
        start = self.process_start if self.process_start is not None else self.set_at
        return self.offset_s - (self.set_at - start) * (self.rate - 1.0)

    def write(self) -> None:
        # Written whole and renamed: the node re-reads the file on every clock call
        # and must never see a half-written line.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(faketime_spec(self.file_offset(), self.rate))
        os.replace(tmp, self.path)


class FakeClockVerbs:
    """The NodeHandle clock verbs, shared by every backend whose node runs under libfaketime.

    A handle using this keeps ``self.clock`` (a :class:`FakeClock` whose file the node's
    libfaketime reads), ``self._faked`` (whether the running process was started under it)
    and ``self.name``.
    """

    name: str
    clock: FakeClock
    _faked: bool

    def set_clock(self, offset_s: float, rate: float = 1.0) -> None:
        if not self._faked:
            raise BackendError(
                f"node {self.name} was not started under libfaketime, so its clock cannot be moved: "
                "open the cluster with faketime=True (the clock nemesis needs it) and start the node again")
        self.clock.set(offset_s, rate)

    def reset_clock(self) -> None:
        self.clock.set(0.0, 1.0)

    def clock_offset(self) -> float:
        return self.clock.offset_at(time.time()) if self._faked else 0.0
