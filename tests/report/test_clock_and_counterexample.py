"""clock.png only when offsets were recorded (and then drawn from them); the counterexample page
names each process's node and the fault windows; the interpreter records the node it reads."""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path

import numpy as np
from matplotlib.image import imread

from checkers.faults import FaultSpec, process_nodes
from checkers.history import HistoryWriter, Op, load_jsonl
from checkers.linearizability import analyze
from checkers.visualize import render
from harness.interpreter import Clock, Completion, Interpreter
from harness.report import render_all
from harness.report.plots import FAULT_COLORS, render_clock
from workloads.generator import Limit, mix

S = 1_000_000_000
MS = 1_000_000
PARTITION = FaultSpec("partition", start=("start-partition",), stop=("stop-partition",))


def ops_from(events: list[tuple]) -> list[Op]:
    return [Op(i, t, p, ty, f, key=k, value=v, extra=x or {}) for i, (t, p, ty, f, k, v, x) in enumerate(events)]


def reads_and_writes() -> list[Op]:
    ev = []
    for n in range(6):
        t = n * 100 * MS
        ev += [(t, n % 2, "invoke", "write", 0, n, {"node": f"n{n % 2 + 1}"}), (t + 5 * MS, n % 2, "ok", "write", 0, n, None)]
    return ops_from(ev)


def test_no_clock_offsets_no_clock_png_and_a_stale_one_goes(tmp_path: Path) -> None:
    (tmp_path / "clock.png").write_bytes(b"an old placeholder")
    files = render_all(reads_and_writes(), tmp_path, None)
    assert "clock.png" not in files and not (tmp_path / "clock.png").exists()
    assert {"latency.png", "rate.png", "latency-quantiles.png", "timeline.html"} <= set(files)


def test_clock_png_draws_each_nodes_recorded_offset(tmp_path: Path) -> None:
    history = list(reads_and_writes())
    base = len(history)
    history += [Op(base, 150 * MS, "nemesis", "invoke", "bump-clock"),
                Op(base + 1, 160 * MS, "nemesis", "info", "bump-clock",
                   value={"offsets": {"n1": 5.0, "n2": 0.0}, "measured": {"n1": 5.02}}),
                Op(base + 2, 400 * MS, "nemesis", "invoke", "reset-clock"),
                Op(base + 3, 410 * MS, "nemesis", "info", "reset-clock", value={"offsets": {"n1": 0.0, "n2": 0.0}})]
    files = render_all(history, tmp_path, None)
    assert files["clock.png"] == tmp_path / "clock.png"
    pixels = imread(str(tmp_path / "clock.png"))[:, :, :3]
    for node_color in FAULT_COLORS[:2]:  # n1's and n2's lines are drawn in their colors
        rgb = np.array([int(node_color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).max(axis=2) < 0.02).sum() > 200, node_color
    assert render_clock(reads_and_writes(), tmp_path / "again.png") is None
    assert not (tmp_path / "again.png").exists()


def stale_read_history() -> list[Op]:
    """Process 0 (on n1) writes 1, process 1 (on n2) writes 2, then process 2 (on n3) reads 1
    while n3 is cut off from the others."""
    ev = [(0, 0, "invoke", "write", "k", 1, {"node": "n1"}), (10, 0, "ok", "write", "k", 1, None),
          (20, 1, "invoke", "write", "k", 2, {"node": "n2"}), (30, 1, "ok", "write", "k", 2, None),
          (35, "nemesis", "invoke", "start-partition", None, None, None),
          (36, "nemesis", "info", "start-partition", None, {"components": [["n3"], ["n1", "n2"]]}, None),
          (40, 2, "invoke", "read", "k", None, {"node": "n3"}), (50, 2, "ok", "read", "k", 1, None),
          (60, "nemesis", "invoke", "stop-partition", None, None, None),
          (61, "nemesis", "info", "stop-partition", None, None, None),
          (70, 3, "invoke", "read", "j", None, {"node": "n1"}), (80, 3, "ok", "read", "j", None, None)]
    return ops_from([(t * MS, *rest) for t, *rest in ev])


def test_counterexample_page_names_nodes_and_fault_windows() -> None:
    history = stale_read_history()
    analysis = analyze(history, "cas-register")
    assert analysis.result["valid"] is False
    page = render(analysis.model, analysis.info, analysis.counterexamples, history=history, shading=[PARTITION])
    # each row of the drawing says which node its process talked to
    labels = re.findall(r"<text x=\"4\" y=\"\d+\">(process [^<]*)</text>", page)
    assert labels == ["process 0 → n1", "process 1 → n2", "process 2 → n3",  # key k (illegal)
                      "process 3 → n1"]  # key j (ok)
    assert re.search(r"<tr><td>n3</td><td>2</td></tr>", page)  # the Clients table
    # the partition window: listed with what it cut and when, and shaded in the drawing
    assert re.search(r"</i>partition</td><td>from op index 4 \(0\.035 s\) to op index 9 \(0\.061 s\)</td>"
                     r"<td>n3 \| n1 n2</td>", page)
    assert page.count('<g class="fault-window">') == 1 and "partition n3 | n1 n2" in page
    # the read that cannot be linearized ran inside it, and the table says so
    assert re.search(r'<tr class="fail"><td>✗</td><td>k: read -&gt; 1 <span class="faults"[^>]*>'
                     r'\[partition n3 \| n1 n2\]</span></td><td>2</td><td>n3</td>', page)
    # the checker's parts are keys here; "partition" is left to network partitions
    assert "on 2 key(s)" in page and "partition(s)" not in page


def test_without_recorded_nodes_the_page_says_so() -> None:
    history = [Op(op.index, op.time, op.process, op.type, op.f, op.key, op.value) for op in stale_read_history()]
    analysis = analyze(history, "cas-register")
    page = render(analysis.model, analysis.info, analysis.counterexamples, history=history, shading=[PARTITION])
    assert "does not record which node" in page and "→" not in page


class Echo:
    async def invoke(self, op):
        await asyncio.sleep(0)
        return Completion("ok", value=op.get("value"))

    async def close(self):
        pass


def test_the_interpreter_records_each_clients_node_on_its_invocations(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"

    async def go() -> None:
        with HistoryWriter(str(path)) as h:
            interp = Interpreter(h, Clock(), random.Random(1), concurrency=5, nodes=["n1", "n2", "n3"])
            await interp.run_clients(Limit(mix(lambda r: {"f": "write", "value": 1}), 40),
                                     lambda w: _echo(), deadline=None)

    async def _echo():
        return Echo()

    asyncio.run(go())
    history = load_jsonl(str(path))
    invokes = [op for op in history if op.type == "invoke"]
    assert invokes and all("node" in op.extra for op in invokes)
    assert all("node" not in op.extra for op in history if op.type != "invoke")
    # worker w talks to node w mod 3, as workloads.base.pinned_client binds it
    assert process_nodes(history) == {0: "n1", 1: "n2", 2: "n3", 3: "n1", 4: "n2"}
