"""The progress line's clock starts with the main phase: a long set-up (the SSH backend builds
and uploads a wheel first) must not eat the "left" of the time limit."""

import io
import time

from harness.interpreter import Counters
from harness.progress import Progress

from test_progress import run_for


def test_elapsed_counts_from_the_main_phase_not_from_set_up():
    stream = io.StringIO()
    progress = Progress(Counters(ok=1), 10.0, stream=stream, interval=0.05)
    progress.started -= 100.0  # as if set-up had taken 100 s
    progress.set_phase("main")
    run_for(progress, 0.2)
    first = next(line for line in stream.getvalue().splitlines() if line.startswith("[main]"))
    elapsed = float(first.split("s elapsed")[0].split()[-1])
    assert elapsed < 5.0, first
    assert "0.0s left" not in first


def test_later_phases_keep_the_main_clock():
    progress = Progress(Counters(), 10.0, stream=io.StringIO(), interval=0.05)
    progress.set_phase("main")
    started = progress.started
    time.sleep(0.01)
    progress.set_phase("heal")
    assert progress.started == started
