"""Report renderers: fault windows, the numbers behind the plots, and well-formed files."""

from __future__ import annotations

import random
import re
import struct
import zlib
from pathlib import Path

import pytest

from checkers.history import HistoryWriter, Op, load_jsonl
from harness.report import FaultSpec, render_all
from harness.report.faults import fault_events
from harness.report.pairs import pair_ops
from harness.report.plots import DPI, FIGSIZE, clock_offsets, latency_quantiles, throughput
from harness.report.timeline import render_timeline

S = 1_000_000_000
SPECS = [FaultSpec("partition", start=("start-partition",), stop=("stop-partition",)),
         FaultSpec("kill", instant=("kill",))]


def synthetic_history(path: Path, seconds: int = 10, clients: int = 4, seed: int = 7) -> list[Op]:
    """Clients doing read/write/cas for SECONDS; a partition from 3 s to 6 s, a kill at 8 s,
    clock bumps; slow ops during the partition, some fails, info ops that retire processes."""
    rng = random.Random(seed)
    events: list[tuple[int, int | str, str, str, dict]] = []
    next_process = clients
    for c in range(clients):
        process: int | str = c
        t = rng.randrange(0, 50_000_000)
        while t < seconds * S:
            f = rng.choice(["read", "write", "cas"])
            slow = 3 * S <= t < 6 * S
            lat = rng.randrange(200_000, 5_000_000) * (40 if slow else 1)
            kind = rng.choices(["ok", "fail", "info"], [85, 10, 5])[0]
            events.append((t, process, "invoke", f, {"key": c % 2, "value": rng.randrange(5)}))
            events.append((t + lat, process, kind, f, {"key": c % 2, "value": rng.randrange(5)}))
            if kind == "info":
                process, next_process = next_process, next_process + 1
            t += lat + rng.randrange(1_000_000, 20_000_000)
    for t, f, value in [(3 * S, "start-partition", {"n1": ["n2", "n3"]}),
                        (6 * S, "stop-partition", None),
                        (8 * S, "kill", {"node": "n2"}),
                        (2 * S, "bump-clock", {"offsets": {"n1": 5.0, "n2": 0.0}, "measured": {"n1": 5.01}}),
                        (7 * S, "reset-clock", {"offsets": {"n1": 0.0, "n2": 0.0}})]:
        events.append((t, "nemesis", "invoke", f, {"value": None}))
        events.append((t + 10_000_000, "nemesis", "info", f, {"value": value}))
    events.sort(key=lambda e: e[0])
    with HistoryWriter(str(path)) as w:
        for t, process, kind, f, kw in events:
            w.append(t, process, kind, f, **kw)  # type: ignore[arg-type]
    return load_jsonl(str(path))


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR, after checking the signature and the chunk's CRC."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    body = data[16:16 + length]
    (crc,) = struct.unpack(">I", data[16 + length:20 + length])
    assert zlib.crc32(kind + body) == crc, "IHDR CRC mismatch"
    assert data.endswith(b"IEND\xaeB`\x82")
    width, height = struct.unpack(">II", body[:8])
    return width, height


@pytest.fixture
def history(tmp_path: Path) -> list[Op]:
    return synthetic_history(tmp_path / "history.jsonl")


def test_fault_windows_and_instants(history: list[Op]) -> None:
    windows, instants = fault_events(history, SPECS)
    (w,) = windows
    assert (w.name, w.start_s, w.end_s, w.open_ended) == ("partition", 3.0, 6.01, False)
    assert [(i.name, i.t_s) for i in instants] == [("kill", 8.01)]


def test_unstopped_window_runs_to_the_end_and_start_stop_pairs_need_no_spec() -> None:
    ops = [Op(0, 1 * S, "nemesis", "info", "start-packet"), Op(1, 2 * S, "nemesis", "info", "stop-packet"),
           Op(2, 3 * S, "nemesis", "info", "start-partition"), Op(3, 9 * S, 0, "invoke", "read"),
           Op(4, 10 * S, 0, "ok", "read")]
    windows, _ = fault_events(ops, None)
    assert [(w.name, w.start_s, w.end_s, w.open_ended) for w in windows] == [
        ("packet", 1.0, 2.0, False), ("partition", 3.0, 10.0, True)]


def test_specs_in_shading_and_dict_form_are_accepted() -> None:
    class Shading:  # the shape of nemeses.package.Shading
        name, start, stop, instant = "pause", ("pause",), ("resume",), ()
    ops = [Op(0, 1 * S, "nemesis", "info", "pause"), Op(1, 4 * S, "nemesis", "info", "resume"),
           Op(2, 5 * S, "nemesis", "info", "strobe-clock")]
    windows, instants = fault_events(ops, [Shading(), {"name": "clock", "instant": ["strobe-clock"]}])
    assert [(w.name, w.start_s, w.end_s) for w in windows] == [("pause", 1.0, 4.0)]
    assert [(i.name, i.f) for i in instants] == [("clock", "strobe-clock")]


def test_pairs_latencies_and_incomplete_ops() -> None:
    ops = [Op(0, 0, 0, "invoke", "write", 1, 3), Op(1, 5_000_000, 0, "ok", "write", 1, 3),
           Op(2, 6_000_000, 1, "invoke", "read", 1)]
    p0, p1 = pair_ops(ops)
    assert (p0.type, p0.latency_ms, p0.incomplete) == ("ok", 5.0, False)
    assert (p1.type, p1.incomplete, p1.end_s) == ("info", True, 0.006)


def test_quantiles_and_throughput_numbers() -> None:
    # One read per 100 ms for 2 s; latency i ms for the i-th op in each second.
    ops: list[Op] = []
    for i in range(20):
        t = i * S // 10
        ops += [Op(2 * i, t, 0, "invoke", "read"), Op(2 * i + 1, t + (i % 10 + 1) * 1_000_000, 0, "ok", "read")]
    q = latency_quantiles(ops, window_s=1.0)["read"]
    assert [y for _, y in q["p50"]] == pytest.approx([5.0, 5.0])
    assert [y for _, y in q["p99"]] == pytest.approx([10.0, 10.0])
    assert [y for _, y in q["max"]] == pytest.approx([10.0, 10.0])
    assert [x for x, _ in q["max"]] == pytest.approx([0.5, 1.5])  # window midpoints
    rate = throughput(ops, bin_s=1.0)
    assert [c for _, c in rate[("read", "ok")]] == [10.0, 10.0]


def test_clock_offsets_come_from_nemesis_values(history: list[Op]) -> None:
    data = clock_offsets(history)
    assert data["offsets"]["n1"] == [(2.01, 5.0), (7.01, 0.0)]
    assert data["measured"] == {"n1": [(2.01, 5.01)]}


def test_render_all_writes_valid_pngs_and_a_timeline(tmp_path: Path, history: list[Op]) -> None:
    files = render_all(history, tmp_path / "out", SPECS)
    assert set(files) == {"latency.png", "latency-quantiles.png", "rate.png", "clock.png", "timeline.html"}
    for name, path in files.items():
        assert path.exists() and path.stat().st_size > 5_000, name
        if name.endswith(".png"):
            assert png_size(path) == (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI)
    page = files["timeline.html"].read_text()
    processes = {p.process for p in history}
    heads = re.findall(r"class='head' data-process='([^']+)'", page)
    assert set(heads) == {str(p) for p in processes}
    assert heads[-1] == "nemesis" and heads[:3] == ["0", "1", "2"]  # clients in numeric order
    n_pairs = len(pair_ops(history))
    assert len(re.findall(r"<div class='op ", page)) == n_pairs
    assert f"data-op-count='{n_pairs}'" in page
    assert "partition" in page and "sampled" not in page
    assert "<script" not in page and "http" not in page  # self-contained


def test_timeline_samples_big_histories_with_a_visible_note(tmp_path: Path, history: list[Op]) -> None:
    path = render_timeline(history, tmp_path / "t.html", SPECS, max_ops=50)
    page = path.read_text()
    assert len(re.findall(r"<div class='op ", page)) == 50
    assert "id='sampled'" in page and f"of {len(pair_ops(history))} operations" in page


def test_tooltips_escape_values(tmp_path: Path) -> None:
    ops = [Op(0, 0, 0, "invoke", "write", "k'<b>", "v\"&"), Op(1, 1_000_000, 0, "ok", "write", "k'<b>", "v\"&")]
    page = render_timeline(ops, tmp_path / "t.html").read_text()
    assert "<b>" not in page and "&lt;b&gt;" in page and "latency 1.000 ms" in page


def test_empty_history_renders_labelled_empty_plots(tmp_path: Path) -> None:
    files = render_all([], tmp_path / "empty", SPECS)
    for name, path in files.items():
        if name.endswith(".png"):
            assert png_size(path) == (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI)
    page = files["timeline.html"].read_text()
    assert "id='empty'" in page and "data-op-count='0'" in page


def test_nemesis_only_history_still_renders(tmp_path: Path) -> None:
    ops = [Op(0, 1 * S, "nemesis", "info", "start-partition"), Op(1, 2 * S, "nemesis", "info", "stop-partition")]
    files = render_all(ops, tmp_path / "n", None)
    assert all(p.exists() for p in files.values())


def test_nemesis_packages_shading_is_understood() -> None:
    package = pytest.importorskip("nemeses.package")
    shading = package.Shading("kill", start=("kill",), stop=("start",))
    ops = [Op(0, 1 * S, "nemesis", "invoke", "kill"), Op(1, 2 * S, "nemesis", "info", "kill", value={"n1": 41}),
           Op(2, 5 * S, "nemesis", "invoke", "start"), Op(3, 6 * S, "nemesis", "info", "start")]
    for spec in (shading, shading.to_dict()):
        windows, _ = fault_events(ops, [spec])
        assert [(w.name, w.start_s, w.end_s) for w in windows] == [("kill", 1.0, 6.0)]
