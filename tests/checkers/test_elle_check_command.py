"""`ukehi-jepsen check FILE --model list-append|rw-register`: Elle's EDN and our JSONL."""

import json
from pathlib import Path

import pytest
import typer

import harness.cli
from checkers.elle.txn import history_of
from checkers.history import dumps_op
from harness.commands import check

DATA = Path(__file__).parent / "data"


@pytest.fixture
def cli(monkeypatch, capsys):
    def build_app() -> typer.Typer:
        app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

        @app.callback()
        def root() -> None:
            """ukehi-jepsen (test)"""

        check.register(app)
        return app

    monkeypatch.setattr(harness.cli, "build_app", build_app)

    def run(*args: str) -> tuple[int, str, str]:
        code = harness.cli.main(["check", *args])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_elle_edn_write_skew_is_g2_item(cli, tmp_path):
    page = tmp_path / "cycle.html"
    code, out, _ = cli(str(DATA / "elle-append-g2.edn"), "--model", "list-append", "--html", str(page))
    assert code == 1, out
    assert out.startswith("INVALID") and "G2-item" in out and "not repeatable-read" in out
    assert "T0 read key 2 as [], which misses T1's append of 1" in out
    html = page.read_text()
    assert "<svg" in html and "G2-item" in html


def test_elle_edn_valid_neighbour_and_model_inferred(cli):
    code, out, _ = cli(str(DATA / "elle-append-ok.edn"))  # no --model: txn ops with appends
    assert code == 0, out
    assert out.startswith("VALID") and "model list-append" in out


def test_consistency_option_and_json(cli):
    code, out, _ = cli(str(DATA / "elle-append-g2.edn"), "--consistency", "read-committed", "--json")
    assert code == 0  # write skew is allowed by read committed
    result = json.loads(out)
    assert result["anomaly_types"] == ["G2-item"] and result["valid"] is True
    code, out, err = cli(str(DATA / "elle-append-g2.edn"), "--consistency", "serialisable")
    assert code == 254 and "serialisable" in err + out


def test_jsonl_rw_register_with_raft_index(cli, tmp_path):
    W, R = "w", "r"
    specs = [(0, "ok", [(W, "x", 1), (W, "y", 1)], 0, 10), (1, "ok", [(W, "x", 2), (W, "y", 2)], 0, 10)]
    path = tmp_path / "h.jsonl"
    path.write_text("".join(dumps_op(op) + "\n" for op in history_of(specs, {0: [1, 4], 1: [2, 3]})))
    code, out, _ = cli(str(path), "--model", "rw-register")
    assert code == 1 and "G0" in out and "raft log: index" in out, out
    path.write_text("".join(dumps_op(op) + "\n" for op in history_of(specs, {0: [1, 3], 1: [2, 4]})))
    code, out, _ = cli(str(path))
    assert code == 0 and "model rw-register" in out, out


def test_non_transactional_history_with_txn_model_is_bad_input(cli):
    code, out, err = cli(str(DATA / "history-ok.edn"), "--model", "list-append")
    assert code == 254 and "txn" in err + out
