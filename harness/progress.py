"""Live progress of a run: one refreshed line on a terminal, plain lines elsewhere."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from .interpreter import Counters


def format_line(elapsed: float, limit: float, counters: Counters, rate: float, phase: str) -> str:
    faults = ",".join(sorted(counters.active_faults)) or "none"
    remaining = max(0.0, limit - elapsed)
    return (f"[{phase}] {elapsed:5.1f}s elapsed, {remaining:5.1f}s left | {rate:7.1f} ops/s | "
            f"ok {counters.ok} fail {counters.fail} info {counters.info} | faults: {faults}")


class Progress:
    """Prints progress every ``interval`` seconds until cancelled."""

    def __init__(self, counters: Counters, time_limit: float, stream: TextIO | None = None,
                 interval: float | None = None) -> None:
        self.counters = counters
        self.time_limit = time_limit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if interval is not None else (0.5 if self.tty else 5.0)
        self.phase = "setup"
        self.started = time.monotonic()

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        if phase == "main":
            # the time limit counts from the first client op, not from set-up (which takes
            # over a minute on the SSH backend: wheel build and upload), so "left" is true
            self.started = time.monotonic()
        if not self.tty:
            self.stream.write(f"phase: {phase}\n")
            self.stream.flush()

    async def run(self) -> None:
        last_done, last_time = 0, time.monotonic()
        try:
            while True:
                await asyncio.sleep(self.interval)
                now = time.monotonic()
                done = self.counters.ok + self.counters.fail + self.counters.info
                rate = (done - last_done) / max(1e-9, now - last_time)
                last_done, last_time = done, now
                line = format_line(now - self.started, self.time_limit, self.counters, rate, self.phase)
                if self.tty:
                    self.stream.write("\r\x1b[K" + line)
                else:
                    self.stream.write(line + "\n")
                self.stream.flush()
        finally:
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()
