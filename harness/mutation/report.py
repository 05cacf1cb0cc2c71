"""Figures, tables and the stored report (``<results>/mutation/<timestamp>/``) of a mutation run."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from .operators import Mutant
from .runner import MutantResult

# The part of Ukehi the goal is about: the Raft core, the log (in memory and on disk), the KV.
CORE_PREFIXES: tuple[str, ...] = ("ukehi/raft/", "ukehi/storage/wal.py", "ukehi/kv.py")


def is_core(path: str) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in CORE_PREFIXES)


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def figures(results: Sequence[MutantResult], not_run: Sequence[Mutant] = ()) -> dict[str, Any]:
    unit = [r for r in results if r.unit.status != "skipped"]
    harness = [r for r in results if r.harness.status != "skipped"]
    unit_killed = [r for r in results if r.unit.status == "killed"]
    # The score compares the harness with the unit tests on the mutants both judged.
    both_ran = [r for r in unit_killed if r.harness.status != "skipped"]
    both_killed = [r for r in both_ran if r.harness.status == "killed"]
    noticed = [r for r in both_ran if r.harness.status in ("killed", "unknown", "crashed", "timeout")]
    core_ran = [r for r in both_ran if r.mutant and is_core(r.mutant.path)]
    core_killed = [r for r in core_ran if r.harness.status == "killed"]
    return {
        "mutants": len(results),
        "not_run": len(not_run),
        "unit_run": len(unit),
        "unit_killed": len(unit_killed),
        "unit_errors": sum(r.unit.status == "error" for r in results),
        "harness_run": len(harness),
        "harness_killed": sum(r.harness.status == "killed" for r in results),
        "harness_unknown": sum(r.harness.status == "unknown" for r in results),
        "harness_crashed": sum(r.harness.status in ("crashed", "timeout") for r in results),
        "killed_by_both": len(both_killed),
        "killed_by_harness_only": sum(r.harness.status == "killed" and r.unit.status == "survived" for r in results),
        "missed_by_harness": len(both_ran) - len(both_killed),
        "survived": sum(not r.killed for r in results),
        # mutants the harness kills / mutants the unit tests kill (both judged)
        "harness_score": _ratio(len(both_killed), len(both_ran)),
        "harness_score_core": _ratio(len(core_killed), len(core_ran)),
        # counting unknown / crashed / timed-out harness runs as noticed (not kills: reported apart)
        "harness_noticed": _ratio(len(noticed), len(both_ran)),
    }


def per_file(results: Sequence[MutantResult]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = defaultdict(lambda: {"mutants": 0, "unit_killed": 0, "harness_killed": 0,
                                                          "harness_unknown_or_crashed": 0, "survived": 0})
    for r in results:
        assert r.mutant is not None
        row = rows[r.mutant.path]
        row["mutants"] += 1
        row["unit_killed"] += r.unit.status == "killed"
        row["harness_killed"] += r.harness.status == "killed"
        row["harness_unknown_or_crashed"] += r.harness.status in ("unknown", "crashed", "timeout")
        row["survived"] += not r.killed
    return [{"file": path, **row} for path, row in sorted(rows.items())]


def _cell(status: str, detail: str = "") -> str:
    return status if not detail else f"{status} ({detail})"


def plain_table(results: Sequence[MutantResult], figs: dict[str, Any]) -> str:
    rows = per_file(results)
    header = ("file", "mutants", "killed by unit tests", "killed by harness", "harness unknown/crashed", "survived")
    body = [(r["file"], r["mutants"], r["unit_killed"], r["harness_killed"], r["harness_unknown_or_crashed"],
             r["survived"]) for r in rows]
    body.append(("total", figs["mutants"], figs["unit_killed"], figs["harness_killed"],
                 figs["harness_unknown"] + figs["harness_crashed"], figs["survived"]))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in (header, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _score_line(figs: dict[str, Any]) -> str:
    if figs["harness_score"] is None:
        return "Harness mutation score: n/a (needs mutants killed by the unit tests and run through the harness)."
    pct = lambda x: "n/a" if x is None else f"{100 * x:.0f}%"  # noqa: E731
    return (f"Harness mutation score: {pct(figs['harness_score'])} ({figs['killed_by_both']} of the "
            f"{figs['killed_by_both'] + figs['missed_by_harness']} mutants the unit tests kill are killed by the "
            f"harness; Raft core, log and KV only: {pct(figs['harness_score_core'])}; counting unknown/crashed "
            f"harness runs as noticed: {pct(figs['harness_noticed'])}).")


def survivors(results: Sequence[MutantResult]) -> list[MutantResult]:
    return [r for r in results if not r.killed]


def missed_by_harness(results: Sequence[MutantResult]) -> list[MutantResult]:
    return [r for r in results if r.unit.status == "killed" and r.harness.status not in ("killed", "skipped")]


def markdown(results: Sequence[MutantResult], figs: dict[str, Any], meta: dict[str, Any]) -> str:
    out = ["# Mutation run", "",
           f"Command: `{meta['command']}`", "",
           f"Commit: `{meta.get('commit') or 'working tree (not a git checkout)'}`; seed {meta['seed']}; "
           f"{figs['mutants']} mutants run of {meta['population']} found"
           + (f", {figs['not_run']} not run (time budget)" if figs["not_run"] else "") + ".", "",
           "| file | mutants | killed by unit tests | killed by harness | harness unknown/crashed | survived |",
           "|---|---|---|---|---|---|"]
    for r in per_file(results):
        out.append(f"| {r['file']} | {r['mutants']} | {r['unit_killed']} | {r['harness_killed']} | "
                   f"{r['harness_unknown_or_crashed']} | {r['survived']} |")
    out.append(f"| **total** | {figs['mutants']} | {figs['unit_killed']} | {figs['harness_killed']} | "
               f"{figs['harness_unknown'] + figs['harness_crashed']} | {figs['survived']} |")
    out += ["", _score_line(figs), ""]

    def listing(title: str, rows: Sequence[MutantResult]) -> None:
        out.extend([f"## {title} ({len(rows)})", ""])
        if not rows:
            out.extend(["none", ""])
            return
        out.extend(["| mutant | change | unit tests | harness |", "|---|---|---|---|"])
        for r in rows:
            assert r.mutant is not None
            change = r.mutant.describe().replace("|", "\\|")
            out.append(f"| `{r.mutant.id}` | `{change}` | {_cell(r.unit.status)} | "
                       f"{_cell(r.harness.status, r.harness.detail)} |")
        out.append("")

    listing("Survivors (killed by neither)", survivors(results))
    listing("Killed by the unit tests, missed by the harness", missed_by_harness(results))
    listing("All mutants", list(results))
    return "\n".join(out)


def write_report(results_dir: str | os.PathLike[str], where: Path, results: Sequence[MutantResult],
                 not_run: Sequence[Mutant], meta: dict[str, Any], baseline: MutantResult | None) -> dict[str, Any]:
    figs = figures(results, not_run)
    (where / "mutation.md").write_text(markdown(results, figs, meta) + "\n", encoding="utf-8")
    data = {**meta, "figures": figs, "per_file": per_file(results),
            "baseline": baseline.to_json() if baseline else None,
            "mutants": [r.to_json() for r in results], "not_run": [m.id for m in not_run]}
    (where / "mutation.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    base = where.parent
    link, tmp = base / "latest", base / f".latest.tmp{os.getpid()}"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(where.name, tmp)
    os.replace(tmp, link)
    return figs
