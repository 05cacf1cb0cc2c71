import asyncio
import io

from harness.interpreter import Counters
from harness.progress import Progress, format_line


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_for(progress: Progress, seconds: float) -> None:
    async def main():
        task = asyncio.create_task(progress.run())
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_line_shows_time_rate_counts_and_faults():
    counters = Counters(ok=7, fail=2, info=1, active_faults={"partition", "kill"})
    line = format_line(12.0, 20.0, counters, 41.5, "main")
    assert "[main]" in line and "12.0s elapsed" in line and "8.0s left" in line
    assert "41.5 ops/s" in line and "ok 7 fail 2 info 1" in line and "faults: kill,partition" in line


def test_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    progress = Progress(Counters(ok=3), 10.0, stream=stream, interval=0.05)
    progress.set_phase("main")
    run_for(progress, 0.3)
    text = stream.getvalue()
    assert "phase: main\n" in text
    assert "\r" not in text and "\x1b[" not in text
    assert text.count("\n") >= 3  # one line per interval


def test_one_refreshed_line_on_a_terminal():
    stream = FakeTerminal()
    progress = Progress(Counters(ok=3), 10.0, stream=stream, interval=0.05)
    progress.set_phase("main")
    run_for(progress, 0.3)
    text = stream.getvalue()
    assert "phase: main" not in text  # phases show inside the refreshed line instead
    assert text.count("\r\x1b[K") >= 3 and text.endswith("\n")
