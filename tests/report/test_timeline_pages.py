"""timeline.html as a person reads it: a bounded height for idle time, labelled boxes, fault
bands across every process with what they hit, and each process's node in its column head."""

from __future__ import annotations

import re
from pathlib import Path

from checkers.history import Op
from harness.report import FaultSpec
from harness.report.timeline import GAP_CAP_PX, LABEL_PX, render_timeline

S = 1_000_000_000
MS = 1_000_000
PARTITION = FaultSpec("partition", start=("start-partition",), stop=("stop-partition",))


def build(events: list[tuple[int, int | str, str, str, dict]]) -> list[Op]:
    """Ops from (time ns, process, type, f, fields), indexed in time order."""
    events = sorted(events, key=lambda e: e[0])
    return [Op(i, t, p, ty, f, key=kw.get("key"), value=kw.get("value"), error=kw.get("error"),
               extra={"node": kw["node"]} if "node" in kw else {})
            for i, (t, p, ty, f, kw) in enumerate(events)]


def client_op(t: int, process: int, f: str, key: int, value, latency: int = 2 * MS, node: str | None = None,
              kind: str = "ok") -> list[tuple[int, int | str, str, str, dict]]:
    inv = {"key": key, "value": value if f != "read" else None, **({"node": node} if node else {})}
    return [(t, process, "invoke", f, inv), (t + latency, process, kind, f, {"key": key, "value": value})]


def boxes(page: str) -> list[dict]:
    """Every op box: its class, top, height, left and label lines."""
    out = []
    for m in re.finditer(r"<div class='op ([a-z-]+)' style='top:([\d.]+)px;height:([\d.]+)px;left:(\d+)px;[^']*' "
                         r"title='([^']*)'>(.*?)</div>", page):
        out.append({"cls": m[1], "top": float(m[2]), "height": float(m[3]), "left": int(m[4]),
                    "title": m[5], "lines": re.findall(r"<span>(.*?)</span>", m[6])})
    return out


def height(page: str) -> int:
    return int(re.search(r"data-height='(\d+)'", page)[1])


def test_an_hour_of_idle_time_costs_a_marked_gap_not_an_hour_of_page(tmp_path: Path) -> None:
    ops = []
    for k in range(10):
        ops += client_op(k * 20 * MS, k % 2, "write", 0, k)
    for k in range(10):  # the same again, an hour later
        ops += client_op(3600 * S + k * 20 * MS, k % 2, "write", 0, 10 + k)
    page = render_timeline(build(ops), tmp_path / "t.html").read_text()
    # 20 ops need about 20 labelled rows; the hour between them costs one capped gap
    assert height(page) <= 20 * (LABEL_PX + 2 * GAP_CAP_PX) + 100
    assert re.search(r"class='gap'[^>]*title='3599\.\d\d s without events, shortened'><span>⋯ 3599\.\d\d s<", page)
    tops = [b["top"] for b in boxes(page)]
    assert tops == sorted(tops)  # still in time order


def test_every_box_gets_room_for_its_op_and_value(tmp_path: Path) -> None:
    ops = client_op(0, 0, "write", 3, 7) + client_op(10 * MS, 1, "read", 3, 7) \
        + client_op(20 * MS, 0, "cas", 3, [7, 9]) + client_op(30 * MS, 1, "read", 4, None) \
        + client_op(40 * MS, 0, "write", 4, 1, kind="fail")
    page = render_timeline(build(ops), tmp_path / "t.html").read_text()
    drawn = boxes(page)
    assert all(b["height"] >= LABEL_PX for b in drawn)
    assert [b["lines"][0] for b in drawn] == ["write 7", "read 7", "cas 7→9", "read nil", "write 1"]
    assert [b["cls"] for b in drawn] == ["ok", "ok", "ok", "ok", "fail"]


def test_fault_windows_are_bands_across_every_process_with_what_they_hit(tmp_path: Path) -> None:
    ops = []
    for p in range(4):
        for k in range(6):
            ops += client_op(k * 100 * MS + p * 7 * MS, p, "read", p, k, latency=20 * MS, node=f"n{p % 3 + 1}")
    ops += [(150 * MS, "nemesis", "invoke", "start-partition", {}),
            (160 * MS, "nemesis", "info", "start-partition",
             {"value": {"components": [["n1"], ["n2", "n3"]]}}),
            (350 * MS, "nemesis", "invoke", "stop-partition", {}),
            (360 * MS, "nemesis", "info", "stop-partition", {"value": {"healed": ["n1", "n2", "n3"]}})]
    page = render_timeline(build(ops), tmp_path / "t.html", [PARTITION]).read_text()
    band = re.search(r"<div class='fault' data-fault='partition' style='top:([\d.]+)px;height:([\d.]+)px", page)
    top, bottom = float(band[1]), float(band[1]) + float(band[2])
    body_width = int(re.search(r"<div class='body' style='height:\d+px;width:(\d+)px", page)[1])
    assert re.search(r"\.fault \{ position: absolute; left: 0; right: 0;", page)  # spans the body
    columns = sorted({b["left"] for b in boxes(page)})
    assert len(columns) == 5 and columns[-1] < body_width  # 4 clients and the nemesis, all under it
    # every client process has an op inside the band: the band is drawn across all of them
    inside = {b["left"] for b in boxes(page) if b["cls"] == "ok" and top <= b["top"] and b["top"] + b["height"] <= bottom}
    assert len(inside) == 4
    assert "partition n1 | n2 n3" in page  # what it cut, in its label
    heads = re.findall(r"class='head' data-process='(\w+)'>\w+<small>([^<]*)</small>", page)
    assert heads[:4] == [("0", "→ n1"), ("1", "→ n2"), ("2", "→ n3"), ("3", "→ n1")]
    assert heads[4] == ("nemesis", "faults")


def test_a_huge_history_is_squeezed_to_the_cap(tmp_path: Path) -> None:
    ops = []
    for k in range(3000):
        ops += client_op(k * 5 * MS, k % 4, "write", 0, k)
    page = render_timeline(build(ops), tmp_path / "t.html").read_text()
    from harness.report.timeline import MAX_HEIGHT_PX
    assert MAX_HEIGHT_PX * 0.9 <= height(page) <= MAX_HEIGHT_PX + 30
    tops = [b["top"] for b in boxes(page)]
    assert tops == sorted(tops)
