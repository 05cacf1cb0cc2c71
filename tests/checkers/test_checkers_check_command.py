"""`ukehi-jepsen check`: verdicts, exit codes, --json, --html and bad input."""

import json
from pathlib import Path

import pytest
import typer

import harness.cli
from checkers.history import HistoryWriter
from harness.commands import check

DATA = Path(__file__).parent / "data"


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run harness.cli.main with only the check command registered (other commands'
    modules are not this test's business), returning (exit code, stdout, stderr)."""
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


@pytest.mark.parametrize("name, code", [
    ("register-ok.jsonl", 0), ("register-stale-read.jsonl", 1),
    ("history-ok.edn", 0), ("history-bad.edn", 1), ("read-initial-zero.edn", 1),
    ("etcd-ok.log", 0), ("etcd-bad-cas.log", 1), ("etcd-bad-nil.log", 1),
    ("kv-ok.txt", 0), ("kv-bad.txt", 1), ("knossos-bare.log", 1),
    ("fencing-ok.jsonl", 0), ("fencing-stale.jsonl", 1),
])
def test_verdicts_and_exit_codes(cli, name, code):
    got, out, _ = cli(str(DATA / name))
    assert got == code, out
    assert out.startswith({0: "VALID", 1: "INVALID"}[code])


def test_invalid_explains_key_op_and_state(cli):
    code, out, _ = cli(str(DATA / "register-stale-read.jsonl"))
    assert code == 1
    assert "could not linearize: read -> 1" in out
    assert "leaving state 2" in out


def test_initial_value(cli):
    assert cli(str(DATA / "knossos-bare.log"), "--initial", "0")[0] == 0
    assert cli(str(DATA / "read-initial-zero.edn"), "--initial", "0")[0] == 0
    assert cli(str(DATA / "read-initial-zero.edn"), "--initial", "nil")[0] == 1


def test_unknown_when_the_time_limit_runs_out(cli, tmp_path):
    path = tmp_path / "hard.jsonl"
    with HistoryWriter(str(path)) as h:
        for p in range(24):
            h.append(p, p, "invoke", "write", value=p)
        for p in range(24):
            h.append(100 + p, p, "ok", "write", value=p)
        h.append(200, 99, "invoke", "read")
        h.append(201, 99, "ok", "read", value=999)
    code, out, _ = cli(str(path), "--time-limit", "0.3")
    assert code == 2 and out.startswith("UNKNOWN") and "--time-limit" in out


def test_json_output_is_one_object(cli):
    code, out, _ = cli(str(DATA / "kv-bad.txt"), "--json")
    assert code == 1
    result = json.loads(out)
    assert result["valid"] is False and result["model"] == "porcupine-kv"
    assert result["format"] == "porcupine-kv"
    assert result["failures"][0]["key"] == "a"
    assert result["stats"]["by_f"]["get"]["ok"] == 3
    code, out, _ = cli(str(DATA / "register-ok.jsonl"), "--json")
    assert code == 0 and json.loads(out)["valid"] is True


def test_html_page_is_written(cli, tmp_path):
    page = tmp_path / "cx.html"
    code, out, _ = cli(str(DATA / "history-bad.edn"), "--html", str(page))
    assert code == 1 and str(page) in out
    assert "NOT linearizable" in page.read_text()


def test_format_and_model_can_be_forced(cli):
    assert cli(str(DATA / "etcd-ok.log"), "--format", "jepsen-log", "--model", "cas-register")[0] == 0
    code, _, err = cli(str(DATA / "kv-ok.txt"), "--format", "jsonl")
    assert code == 254 and "line 1" in err


@pytest.mark.parametrize("args, message", [
    (["/no/such/history.jsonl"], "cannot read"),
    ([str(DATA / "bad-line.jsonl")], "line 3: not valid JSON"),
    ([str(DATA / "bad.edn")], "line 4"),
    ([str(DATA / "bad.log")], "line 3"),
    ([str(DATA / "register-ok.jsonl"), "--format", "yaml"], "unknown --format 'yaml'"),
    ([str(DATA / "register-ok.jsonl"), "--model", "set"], "unknown --model 'set'"),
    ([str(DATA / "register-ok.jsonl"), "--model", "register"], "has no operation 'cas'"),
    ([str(DATA / "register-ok.jsonl"), "--time-limit", "-1"], "--time-limit"),
    ([str(DATA / "register-ok.jsonl"), "--time-limit", "soon"], "--time-limit must be a number"),
    ([], "give the history file"),
])
def test_bad_input_exits_254_with_a_reason(cli, args, message):
    code, _, err = cli(*args)
    assert code == 254
    assert message in err


def test_empty_and_binary_files(cli, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, _, err = cli(str(empty))
    assert code == 254 and "no history" in err
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    code, _, err = cli(str(binary))
    assert code == 254 and "not UTF-8" in err


def test_parse_initial():
    assert check.parse_initial(None) is None and check.parse_initial("nil") is None
    assert check.parse_initial("0") == 0 and check.parse_initial('"a"') == "a"
    assert check.parse_initial("[1,2]") == (1, 2) and check.parse_initial("abc") == "abc"


def test_independent_histories_are_checked_per_key(cli):
    code, out, _ = cli(str(DATA / "independent.edn"), "--independent", "--json")
    assert code == 1
    result = json.loads(out)
    assert result["partitions"] == 2 and [f["key"] for f in result["failures"]] == [1]
    code, _, err = cli(str(DATA / "history-ok.edn"), "--independent")
    assert code == 254 and "[key value] pairs" in err


def test_check_keeps_the_read_history_out_of_gc_scans_and_unfreezes_after(tmp_path, monkeypatch):
    """run_check freezes what it read while the search runs (no full collection rescans the
    history) and unfreezes it afterwards, also when the model cannot apply an op."""
    import gc

    path = tmp_path / "h.jsonl"
    with HistoryWriter(str(path)) as w:
        w.append(0, 0, "invoke", "write", key="k", value=1)
        w.append(1, 0, "ok", "write", key="k", value=1)
        w.append(2, 0, "invoke", "read", key="k")
        w.append(3, 0, "ok", "read", key="k", value=1)
    during: list[int] = []
    real = check.analyze

    def spy(*args, **kwargs):
        during.append(gc.get_freeze_count())
        return real(*args, **kwargs)

    monkeypatch.setattr(check, "analyze", spy)
    before = gc.get_freeze_count()
    result, _ = check.run_check(path, model="register", workers=1)
    assert result["valid"] is True
    assert during[-1] > before and gc.get_freeze_count() == before

    def boom(*args, **kwargs):
        during.append(gc.get_freeze_count())
        raise ValueError("the register model cannot apply 'cas'")

    monkeypatch.setattr(check, "analyze", boom)
    with pytest.raises(harness.cli.BadArgument):
        check.run_check(path, model="register", workers=1)
    assert during[-1] > before and gc.get_freeze_count() == before
