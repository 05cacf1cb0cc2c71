"""The CorruptionPolicy matrix: each policy x where the WAL damage lands x what came of it.

One cell is one ordinary run, ``run --nemesis disk-<target> --corruption-policy <policy>``:
mid-log WAL damage (bit flips, zeroed or copied chunks) of the same fixed victims all
run long, one node, a minority or a majority of them, restarted under the policy. The
cell's outcome comes from that run's checkers and its history:

- ``invalid``: a checker said false: the linearizability checker (acknowledged data
  lost, read in the workload's final reads) or the policy checker (a node broke its
  policy's promise);
- ``unavailable``: the checkers found nothing wrong, but the cluster could not serve
  at the end: no final read succeeded (e.g. a majority refused to start, or a
  recovering majority cannot elect a leader);
- ``valid``: every checker said true and the cluster served;
- ``unknown``: a checker could not decide (e.g. its time budget ran out);
- ``error``: the harness failed to run the cell (the only outcome that is not a finding).

A policy losing data is a finding, not a failure of the matrix.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from checkers.history import Op, load_jsonl

from .store import check_writable, timestamp

TARGETS = ("one", "minority", "majority")
OUTCOMES = ("valid", "invalid", "unavailable", "unknown", "error")
CORRUPT_F = "corrupt-wal"


@dataclass
class Cell:
    policy: str
    target: str
    outcome: str
    decided_by: list[str]
    summary: str
    run_dir: str | None = None
    victims: list[str] = field(default_factory=list)
    checkers: dict[str, Any] = field(default_factory=dict)
    availability: dict[str, int] = field(default_factory=dict)
    #: outcomes over the repeated runs of this cell (one run: {outcome: 1})
    counts: dict[str, int] = field(default_factory=dict)
    #: each repeated run: outcome, decided_by, summary, run_dir
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The outcome, with how often it happened when the cell ran more than once."""
        total = sum(self.counts.values())
        return self.outcome if total <= 1 else f"{self.outcome} ({self.counts.get(self.outcome, 0)} of {total})"


# Which outcome a repeated cell shows: the worst one seen (a harness error first, since the
# cell then was not fully measured; lost data before unavailability before doubt).
_SEVERITY = {"error": 4, "invalid": 3, "unavailable": 2, "unknown": 1, "valid": 0}


def merge_repeats(cells: Sequence[Cell]) -> Cell:
    """One cell from several runs of it: the worst run's details, the counts of every outcome."""
    if not cells:
        raise ValueError("a matrix cell needs at least one run")
    worst = max(cells, key=lambda c: _SEVERITY.get(c.outcome, 0))
    counts: dict[str, int] = {}
    for cell in cells:
        counts[cell.outcome] = counts.get(cell.outcome, 0) + 1
    runs = [{"outcome": c.outcome, "decided_by": c.decided_by, "summary": c.summary, "run_dir": c.run_dir}
            for c in cells]
    summary = worst.summary
    if len(cells) > 1:
        spread = ", ".join(f"{n} {o}" for o, n in sorted(counts.items(), key=lambda i: -_SEVERITY.get(i[0], 0)))
        summary = f"{len(cells)} runs: {spread}; worst: {worst.summary}"
    return Cell(worst.policy, worst.target, worst.outcome, worst.decided_by, summary, worst.run_dir,
                worst.victims, worst.checkers, worst.availability, counts, runs)


def availability(history: Sequence[Op]) -> dict[str, int]:
    """Client results of the final phase (after the last nemesis op, the heal) and after the first damage."""
    nemesis = [op.index for op in history if not op.is_client]
    last_nemesis = max(nemesis, default=-1)
    first_damage = min((op.index for op in history if op.f == CORRUPT_F and not op.is_client), default=None)
    done = [op for op in history if op.is_client and op.type != "invoke"]
    final = [op for op in done if op.index > last_nemesis]
    after = [op for op in done if first_damage is not None and op.index > first_damage]
    return {"final_ok": sum(op.type == "ok" for op in final), "final_total": len(final),
            "after_damage_ok": sum(op.type == "ok" for op in after), "after_damage_total": len(after),
            "damage_ops": sum(1 for op in history if op.f == CORRUPT_F and not op.is_client
                              and op.type != "invoke")}


def classify(verdict: dict[str, Any], avail: dict[str, int]) -> tuple[str, list[str]]:
    """The cell's outcome and the checker(s) that decided it (see the module doc)."""
    checkers = verdict.get("checkers", {})
    false = [n for n, r in checkers.items() if r.get("valid") is False]
    if false:
        return "invalid", false
    if avail["final_total"] and not avail["final_ok"]:
        return "unavailable", ["availability"]
    if not avail["final_total"] and avail["after_damage_total"] and not avail["after_damage_ok"]:
        return "unavailable", ["availability"]
    unknown = [n for n, r in checkers.items() if r.get("valid") is not True]
    if unknown or verdict.get("valid") is not True:
        return "unknown", unknown or ["verdict"]
    return "valid", sorted(checkers)


def _first_line(text: Any, limit: int = 160) -> str:
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    picked = next((line for line in lines if line.startswith("could not linearize")), lines[0] if lines else "")
    return picked if len(picked) <= limit else picked[:limit - 3] + "..."


def summarize(outcome: str, verdict: dict[str, Any], avail: dict[str, int]) -> str:
    """One line saying what happened: refusals, cuts, lost data, final reads."""
    checkers = verdict.get("checkers", {})
    parts = []
    policy = checkers.get("corruption-policy", {})
    refused, recovering, skipped = set(), set(), set()
    for node, entry in (policy.get("nodes") or {}).items():
        for fault in entry.get("faults", []):
            seen = fault.get("observed", {})
            if seen.get("refused"):
                refused.add(node)
            if seen.get("recovering"):
                recovering.add(node)
            if any(r.get("action") == "skipped" for r in seen.get("reports", [])):
                skipped.add(node)
    if refused:
        parts.append(f"refused to start: {','.join(sorted(refused))}")
    if recovering:
        parts.append(f"cut and recovering: {','.join(sorted(recovering))}")
    if skipped:
        parts.append(f"skipped bad entries: {','.join(sorted(skipped))}")
    if not avail.get("damage_ops"):
        parts.append("no damage happened (raise --time-limit)")
    parts.append(f"final reads {avail['final_ok']}/{avail['final_total']} ok")
    if outcome == "invalid":
        for name, result in checkers.items():
            if result.get("valid") is False:
                parts.append(f"{name}: {_first_line(result.get('explanation') or result.get('error'))}")
    return "; ".join(parts)


def cell_from_run(policy: str, target: str, run_dir: Path, verdict: dict[str, Any]) -> Cell:
    history = load_jsonl(str(run_dir / "history.jsonl"))
    avail = availability(history)
    outcome, decided = classify(verdict, avail)
    victims: list[str] = []
    for op in history:
        if op.f == CORRUPT_F and op.type != "invoke" and isinstance(op.value, dict):
            victims = list(op.value.get("victims") or victims)
    return Cell(policy, target, outcome, decided, summarize(outcome, verdict, avail), str(run_dir),
                victims, {n: r.get("valid") for n, r in verdict.get("checkers", {}).items()}, avail)


RunCell = Callable[[str, str, int], Cell]


def run_matrix(policies: Sequence[str], targets: Sequence[str], run_cell: RunCell,
               on_cell: Callable[[Cell], None] | None = None, repeats: int = 1) -> list[Cell]:
    """Every policy x target cell, each run ``repeats`` times (``run_cell(policy, target, i)``).

    A run that crashes becomes outcome ``error`` and the rest go on.
    """
    if repeats < 1:
        raise ValueError(f"repeats {repeats}: run each cell at least once")
    cells = []
    for policy in policies:
        for target in targets:
            runs = []
            for i in range(repeats):
                try:
                    runs.append(run_cell(policy, target, i))
                except Exception as err:  # noqa: BLE001 - one broken run must not lose the others
                    runs.append(Cell(policy, target, "error", ["harness"], f"{type(err).__name__}: {err}"))
            cell = merge_repeats(runs)
            cells.append(cell)
            if on_cell is not None:
                on_cell(cell)
    return cells


def parse_choices(text: str, allowed: Sequence[str], flag: str) -> list[str]:
    """``"a,b"`` -> [a, b]; ``"all"`` -> every allowed value; ValueError naming the flag otherwise."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if items == ["all"]:
        return list(allowed)
    bad = [t for t in items if t not in allowed]
    if not items or bad:
        raise ValueError(f"{flag} {text!r}: give a comma list of {', '.join(allowed)} (or all)")
    return list(dict.fromkeys(items))


def markdown(cells: Sequence[Cell], command: str, nodes: int) -> str:
    policies = list(dict.fromkeys(c.policy for c in cells))
    targets = list(dict.fromkeys(c.target for c in cells))
    by = {(c.policy, c.target): c for c in cells}
    lines = [f"Command: `{command}`", "",
             f"| policy \\ damaged WAL on ({nodes} nodes) | " + " | ".join(targets) + " |",
             "|---|" + "---|" * len(targets)]
    for policy in policies:
        row = [by[(policy, t)].label if (policy, t) in by else "" for t in targets]
        lines.append(f"| {policy} | " + " | ".join(row) + " |")
    lines += ["", "| policy | target | victims | outcome | decided by | what happened |",
              "|---|---|---|---|---|---|"]
    for c in cells:
        summary = " ".join(c.summary.split())  # one table row, even for a multi-line error
        summary = (summary if len(summary) <= 400 else summary[:397] + "...").replace("|", "\\|")
        lines.append(f"| {c.policy} | {c.target} | {','.join(c.victims) or '-'} | {c.label} | "
                     f"{', '.join(c.decided_by)} | {summary} |")
    return "\n".join(lines) + "\n"


def plain_table(cells: Sequence[Cell]) -> str:
    rows = [("policy", "target", "outcome", "decided by", "run")]
    rows += [(c.policy, c.target, c.label, ",".join(c.decided_by), c.run_dir or "-") for c in cells]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows)


def write_matrix(results_dir: str, cells: Sequence[Cell], command: str, nodes: int) -> Path:
    """``<results>/matrix/<timestamp>/matrix.md`` and ``matrix.json``, and a ``matrix/latest`` link."""
    base = check_writable(results_dir) / "matrix"
    base.mkdir(exist_ok=True)
    path = base / timestamp()
    path.mkdir()
    (path / "matrix.md").write_text(markdown(cells, command, nodes), encoding="utf-8")
    data = {"command": command, "nodes": nodes, "cells": [{**asdict(c), "label": c.label} for c in cells]}
    (path / "matrix.json").write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    link, tmp = base / "latest", base / f".latest.tmp{os.getpid()}"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(path.name, tmp)
    os.replace(tmp, link)
    return path

