"""bench/checker.py keeps working (a smoke run on tiny cells; speed itself is the bench's job)."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "checker.py"


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location("bench_checker", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_prints_a_table_and_a_json_last_line(bench, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench, "matrix", lambda quick: [
        {"kind": "generated", "ops": 300, "processes": 5, "keys": 10, "info": 0.05},
    ])
    history = tmp_path / "h.txt"
    history.write_text('{:process 0, :type :invoke, :f :get, :key "a", :value nil}\n'
                       '{:process 0, :type :ok, :f :get, :key "a", :value ""}\n')
    assert bench.main(["--budget", "0.3", "--file", str(history)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    kinds = [c["kind"] for c in summary["cells"]]
    assert kinds == ["generated", "adversarial", "adversarial", "file"]
    generated, adversarial = summary["cells"][0], summary["cells"][1]
    assert generated["verdict"] == "ok" and generated["ops_per_s"] > 0
    assert adversarial["verdict"] == "unknown" and adversarial["seconds"] < 5
    assert summary["cells"][3]["verdict"] == "ok" and summary["cells"][3]["model"] == "porcupine-kv"
    assert summary["adversarial_unknown_in_budget"] is True
    assert any(line.startswith("kind") for line in lines)


def test_bench_rejects_a_missing_file(bench):
    with pytest.raises(SystemExit):
        bench.main(["--file", "/no/such/history"])
