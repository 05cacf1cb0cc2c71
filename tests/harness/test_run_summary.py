"""The verdict lines `run` and `analyze` print: one column of verdicts, whatever the names."""

from __future__ import annotations

from harness.commands.run import print_summary


def test_every_checker_verdict_starts_in_the_same_column(capsys) -> None:
    verdict = {"valid": False, "ops": 12, "checkers": {
        "stats": {"valid": True},
        "state-machine-safety": {"valid": True},
        "unaffected-shards": {"valid": False, "explanation": "shard 3 served none of 6"},
        "linearizable": {"valid": "unknown", "error": "time limit"},
    }}
    print_summary(verdict, "results/x")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "INVALID: 12 client ops; results in results/x"
    columns = {line.index(word) for line in lines[1:] for word in ("VALID", "INVALID", "UNKNOWN")
               if f" {word}" in line and line.split()[1] == word}
    assert len(columns) == 1, lines  # 'state-machine-safety' was pushed a column right of the rest
    assert lines[3].endswith("INVALID: shard 3 served none of 6")
    assert lines[4].endswith("UNKNOWN: time limit") and lines[2].endswith("VALID")
