"""`ukehi-jepsen check FILE` parses its options without typer (issue 17: start-up), from the
same table its typer command is generated from: both parsers must hand the command the same
values, and whatever the fast parser does not take (help, usage errors) goes to typer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

import harness.cli
from harness.commands import check

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"


def typer_values(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> dict[str, Any]:
    """The values the typer command passes to check_command for ``check ARGS``."""
    seen: dict[str, Any] = {}

    def record(**values: Any) -> int:
        seen.update(values)
        return 0

    monkeypatch.setattr(check, "check_command", record)
    app = harness.cli.build_app(["harness.commands.check"])
    try:
        typer.main.get_command(app).main(args=["check", *args], prog_name="ukehi-jepsen", standalone_mode=False)
    except typer.Exit:
        pass
    return seen


@pytest.mark.parametrize("args", [
    ["h.jsonl"],
    [],
    ["h.jsonl", "--json", "--model", "kv", "--time-limit", "5"],
    ["--format=edn", "h.edn", "--initial", "-1", "--html", "out/page.html"],
    ["--model", "list-append", "--consistency", "serializable", "--independent", "h.jsonl"],
    ["h.jsonl", "--ignore-torn-tail", "--all-failures", "--format", "jsonl", "--format", "edn"],
    ["--", "-odd-name.jsonl"],
    ["--initial", "--json", "h.jsonl"],  # a value that looks like a flag is still the value
])
def test_fast_parser_gives_the_values_typer_gives(monkeypatch, args):
    fast = check.parse_fast(args)
    assert fast is not None
    assert fast == typer_values(monkeypatch, args)


@pytest.mark.parametrize("args", [
    ["--help"], ["h.jsonl", "--help"], ["--bogus", "h.jsonl"], ["-h"], ["a", "b"], ["--json=1", "h"],
    ["h.jsonl", "--time-limit"], ["--form", "jsonl", "h"],
])
def test_what_the_fast_parser_does_not_take_goes_to_typer(args):
    assert check.parse_fast(args) is None


def test_usage_errors_through_the_fast_entry_are_typers_one_line(capsys):
    assert harness.cli.main(["check", "--bogus"]) == harness.cli.EXIT_BAD_ARGUMENT
    err = capsys.readouterr().err
    assert err.strip() == "ukehi-jepsen check: error: No such option: --bogus (see ukehi-jepsen check --help)"
    assert harness.cli.main(["check", "--help"]) == 0
    assert "--ignore-torn-tail" in capsys.readouterr().out


def test_check_of_a_valid_file_imports_no_typer_click_or_pydantic():
    code = ("import sys; from harness.cli import main; code = main(['check', sys.argv[1]]); "
            "print(code, ' '.join(m for m in ('typer', 'click', 'pydantic', 'checkers.elle', 'harness.store', "
            "'matplotlib', 'docker', 'paramiko', 'networkx') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, str(DATA / "register-ok.jsonl")], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "0"

