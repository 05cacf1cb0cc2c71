"""bench/elle.py keeps working (a smoke run on small sizes; speed itself is the bench's job)."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "elle.py"


def load():
    spec = importlib.util.spec_from_file_location("bench_elle", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_prints_a_table_and_a_json_last_line(capsys):
    assert load().main(["--sizes", "300,600"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert [c["txns"] for c in summary["cells"]] == [300, 600, 600]
    assert summary["valid_histories_valid"] is True
    assert summary["lost_append_caught"] is True  # the planted lost append is found
    assert summary["cells"][-1]["anomalies"]
    assert lines[0].startswith("model") and "cpu s" in lines[0]
    # CPU time is at most the wall time of a single-threaded check (plus timer slack)
    assert all(c["check_cpu_s"] <= c["check_s"] + 0.05 and c["txns_per_cpu_s"] > 0 for c in summary["cells"])
    assert len(summary["load_average"]) == 3


def test_rw_register_cells_too(capsys):
    assert load().main(["--sizes", "300", "--model", "rw-register"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["cells"][0]["valid"] is True and summary["cells"][0]["model"] == "rw-register"
