"""Figures, tables and the stored report (``<results>/mutation/<timestamp>/``) of a mutation run."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from .operators import Mutant
from .runner import MutantResult
from .triage import Entry, triage_counts

# mutant id -> its triage entry (from the registry, triage.toml)
TriageMap = dict[str, Entry]

# The part of Ukehi the goal is about: the Raft core, the log (in memory and on disk), the KV.
CORE_PREFIXES: tuple[str, ...] = ("ukehi/raft/", "ukehi/storage/wal.py", "ukehi/kv.py")


def is_core(path: str) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in CORE_PREFIXES)


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _unsure(r: MutantResult) -> str | None:
    """Why the harness noticed a mutant without killing it: "crashed" (a crash, a timeout or a
    node raise that does not count), "unknown", or None."""
    if r.harness_killed:
        return None
    steps = (r.harness.status, r.sim.status)
    if any(s in ("crashed", "timeout", "raised") for s in steps):
        return "crashed"
    if "unknown" in steps:
        return "unknown"
    return None


def _category(r: MutantResult, triage: TriageMap | None) -> str | None:
    entry = (triage or {}).get(r.mutant.id) if r.mutant else None
    return entry.category if entry else None


def figures(results: Sequence[MutantResult], not_run: Sequence[Mutant] = (),
            triage: TriageMap | None = None) -> dict[str, Any]:
    unit = [r for r in results if r.unit.status != "skipped"]
    harness = [r for r in results if r.harness_judged]
    unit_killed = [r for r in results if r.unit.status == "killed"]
    # The score compares the harness (real runs and sim together) with the unit tests on the
    # mutants both judged.
    both_ran = [r for r in unit_killed if r.harness_judged]
    both_killed = [r for r in both_ran if r.harness_killed]
    noticed = [r for r in both_ran if r.harness_killed or _unsure(r)]
    core_ran = [r for r in both_ran if r.mutant and is_core(r.mutant.path)]
    core_killed = [r for r in core_ran if r.harness_killed]
    both_steps = [r for r in results if r.harness.status != "skipped" and r.sim.status != "skipped"]
    # The score keeps every unit-killed mutant in the denominator; the second figure
    # leaves out only the mutants the registry marks equivalent (performance and limit stay).
    equivalent = [r for r in both_ran if _category(r, triage) == "equivalent"]
    missed = [r for r in both_ran if not r.harness_killed]
    return {
        "mutants": len(results),
        "not_run": len(not_run),
        "unit_run": len(unit),
        "unit_killed": len(unit_killed),
        "unit_errors": sum(r.unit.status == "error" for r in results),
        "harness_run": len(harness),
        "harness_killed": sum(r.harness_killed for r in results),
        "harness_unknown": sum(_unsure(r) == "unknown" for r in results),
        "harness_crashed": sum(_unsure(r) == "crashed" for r in results),
        # the two parts of the harness budget
        "runs_judged": sum(r.harness.status != "skipped" for r in results),
        "runs_killed": sum(r.harness.counts_as_kill for r in results),
        "sim_judged": sum(r.sim.status != "skipped" for r in results),
        "sim_killed": sum(r.sim.status == "killed" for r in results),
        "sim_raised": sum(r.sim.status == "raised" for r in results),
        "sim_raised_killed": sum(r.sim.status == "raised" and r.sim.counts_as_kill for r in results),
        "sim_timeout": sum(r.sim.status == "timeout" for r in results),
        # over the limit with the limit >= 10x the clean run of the same seed / run: kills
        "sim_hung": sum(r.sim.status == "hung" for r in results),
        "runs_hung": sum(r.harness.status == "hung" for r in results),
        "hung_killed": sum(r.sim.status == "hung" or r.harness.status == "hung" for r in results),
        # among mutants both parts judged: what only one of them kills
        "killed_by_sim_not_runs": sum(r.sim.counts_as_kill and not r.harness.counts_as_kill for r in both_steps),
        "killed_by_runs_not_sim": sum(r.harness.counts_as_kill and not r.sim.counts_as_kill for r in both_steps),
        "killed_by_both": len(both_killed),
        "killed_by_harness_only": sum(r.harness_killed and r.unit.status == "survived" for r in results),
        "missed_by_harness": len(both_ran) - len(both_killed),
        "survived": sum(not r.killed for r in results),
        # mutants the harness kills / mutants the unit tests kill (both judged)
        "harness_score": _ratio(len(both_killed), len(both_ran)),
        "harness_score_core": _ratio(len(core_killed), len(core_ran)),
        # counting unknown / crashed / timed-out / uncounted-raise harness outcomes as noticed (not kills)
        "harness_noticed": _ratio(len(noticed), len(both_ran)),
        # the triage registry: the score without the mutants marked equivalent, and what the misses are
        "equivalent_left_out": len(equivalent),
        "killed_without_equivalent": len(both_killed) - sum(r.harness_killed for r in equivalent),
        "judged_without_equivalent": len(both_ran) - len(equivalent),
        "harness_score_without_equivalent": _ratio(len(both_killed) - sum(r.harness_killed for r in equivalent),
                                                   len(both_ran) - len(equivalent)),
        "missed_by_harness_triage": triage_counts([_category(r, triage) for r in missed]),
        "survivors_triage": triage_counts([_category(r, triage) for r in results if not r.killed]),
        # triaged, yet the harness killed it: the entry is wrong (equivalent) or obsolete
        "triaged_but_killed": [r.mutant.id for r in results
                               if r.mutant and r.harness_killed and _category(r, triage) is not None],
    }


_COLUMNS = ("mutants", "killed by unit tests", "killed by harness", "by real runs", "by sim (checker)",
            "sim: node raised", "hung (killed)", "harness unknown/crashed/timeout", "survived")

# What the table's columns mean, printed under it in mutation.md.
LEGEND = ("Columns: *by real runs* = a real run's verdict was invalid (or it hung); *by sim (checker)* = "
          "a sim seed's verdict was invalid; *sim: node raised* = node code raised on a seed and no checker "
          "failed (a kill only when the unmutated copy raised on none of the seeds); *hung (killed)* = a sim "
          "seed or real run outlived its wall limit and that limit was at least {factor:g}x the unmutated "
          "copy's time on the same seed or run (mutmut's rule: a mutant that hangs code which is fast "
          "unmutated is killed; the margin is per seed, so a loaded machine's slowness, about 3-5x here, "
          "does not make kills); *harness unknown/crashed/timeout* = the harness noticed something without "
          "a kill: an unknown verdict, a crash, an uncounted raise, or a timeout where that margin did not "
          "hold.")


def per_file(results: Sequence[MutantResult]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = defaultdict(lambda: {"mutants": 0, "unit_killed": 0, "harness_killed": 0,
                                                          "runs_killed": 0, "sim_killed": 0, "sim_raised": 0,
                                                          "hung": 0, "harness_unknown_or_crashed": 0,
                                                          "survived": 0})
    for r in results:
        assert r.mutant is not None
        row = rows[r.mutant.path]
        row["mutants"] += 1
        row["unit_killed"] += r.unit.status == "killed"
        row["harness_killed"] += r.harness_killed
        row["runs_killed"] += r.harness.counts_as_kill
        row["sim_killed"] += r.sim.status == "killed"
        row["sim_raised"] += r.sim.status == "raised"
        row["hung"] += r.sim.status == "hung" or r.harness.status == "hung"
        row["harness_unknown_or_crashed"] += _unsure(r) is not None
        row["survived"] += not r.killed
    return [{"file": path, **row} for path, row in sorted(rows.items())]


def _row_values(row: dict[str, Any]) -> list[Any]:
    return [row["mutants"], row["unit_killed"], row["harness_killed"], row["runs_killed"], row["sim_killed"],
            row["sim_raised"], row["hung"], row["harness_unknown_or_crashed"], row["survived"]]


def _total(figs: dict[str, Any]) -> list[Any]:
    return [figs["mutants"], figs["unit_killed"], figs["harness_killed"], figs["runs_killed"], figs["sim_killed"],
            figs["sim_raised"], figs["hung_killed"], figs["harness_unknown"] + figs["harness_crashed"],
            figs["survived"]]


def _cell(status: str, detail: str = "") -> str:
    return status if not detail else f"{status} ({detail})"


def plain_table(results: Sequence[MutantResult], figs: dict[str, Any]) -> str:
    header = ("file", *_COLUMNS)
    body = [(r["file"], *_row_values(r)) for r in per_file(results)]
    body.append(("total", *_total(figs)))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in (header, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _score_line(figs: dict[str, Any]) -> str:
    if figs["harness_score"] is None:
        return "Harness mutation score: n/a (needs mutants killed by the unit tests and run through the harness)."
    pct = lambda x: "n/a" if x is None else f"{100 * x:.0f}%"  # noqa: E731
    line = (f"Harness mutation score: {pct(figs['harness_score'])} ({figs['killed_by_both']} of the "
            f"{figs['killed_by_both'] + figs['missed_by_harness']} mutants the unit tests kill are killed by the "
            f"harness; Raft core, log and KV only: {pct(figs['harness_score_core'])}; counting unknown/crashed "
            f"harness runs as noticed: {pct(figs['harness_noticed'])}).")
    if "harness_score_without_equivalent" in figs:
        line += (f" Without the {figs['equivalent_left_out']} triaged equivalent: "
                 f"{pct(figs['harness_score_without_equivalent'])} ({figs['killed_without_equivalent']} of "
                 f"{figs['judged_without_equivalent']}).")
        missed = figs["missed_by_harness_triage"]
        if figs["missed_by_harness"]:
            line += (" Misses by triage: " + ", ".join(f"{n} {c}" for c, n in missed.items() if n) + ".")
    if figs.get("sim_judged") and figs.get("runs_judged"):
        line += (f" Real runs killed {figs['runs_killed']}, the sim {figs['sim_killed']} by a checker"
                 f" + {figs['sim_raised_killed']} by a node raise (of {figs['sim_raised']} that raised)"
                 f" + {figs['sim_hung']} by a hang;"
                 f" only the sim: {figs['killed_by_sim_not_runs']}, only real runs: {figs['killed_by_runs_not_sim']}.")
    return line


def survivors(results: Sequence[MutantResult]) -> list[MutantResult]:
    return [r for r in results if not r.killed]


def missed_by_harness(results: Sequence[MutantResult]) -> list[MutantResult]:
    return [r for r in results if r.unit.status == "killed" and r.harness_judged and not r.harness_killed]


def triage_cell(r: MutantResult, triage: TriageMap | None) -> str:
    """``category: reason`` of the mutant's triage entry, or ``untriaged``."""
    entry = (triage or {}).get(r.mutant.id) if r.mutant else None
    return f"{entry.category}: {entry.reason}" if entry else "untriaged"


def triage_lines(results: Sequence[MutantResult], triage: TriageMap | None) -> list[str]:
    """The printed listing: every mutant the harness missed, and every survivor, with its triage."""
    out: list[str] = []
    for title, rows in (("killed by the unit tests, missed by the harness", missed_by_harness(results)),
                        ("survivors (killed by neither)", survivors(results))):
        if rows:
            out.append(f"{title} ({len(rows)}):")
            out += [f"  {r.mutant.id}  [{triage_cell(r, triage)}]" for r in rows if r.mutant]
    return out


def markdown(results: Sequence[MutantResult], figs: dict[str, Any], meta: dict[str, Any],
             triage: TriageMap | None = None) -> str:
    out = ["# Mutation run", "",
           f"Command: `{meta['command']}`", "",
           f"Commit: `{meta.get('commit') or 'working tree (not a git checkout)'}`; seed {meta['seed']}; "
           f"{figs['mutants']} mutants run of {meta['population']} found"
           + (f", {figs['not_run']} not run (time budget)" if figs["not_run"] else "") + ".", "",
           "| file | " + " | ".join(_COLUMNS) + " |", "|---" * (len(_COLUMNS) + 1) + "|"]
    for r in per_file(results):
        out.append(f"| {r['file']} | " + " | ".join(map(str, _row_values(r))) + " |")
    out.append("| **total** | " + " | ".join(map(str, _total(figs))) + " |")
    from .simbudget import TIMEOUT_KILL_FACTOR

    out += ["", LEGEND.format(factor=TIMEOUT_KILL_FACTOR), "", _score_line(figs), ""]

    def listing(title: str, rows: Sequence[MutantResult]) -> None:
        out.extend([f"## {title} ({len(rows)})", ""])
        if not rows:
            out.extend(["none", ""])
            return
        out.extend(["| mutant | change | unit tests | sim | real runs | triage |", "|---|---|---|---|---|---|"])
        for r in rows:
            assert r.mutant is not None
            change = r.mutant.describe().replace("|", "\\|")
            sim = _cell(r.sim.status, r.sim.detail) + (" (not counted)" if r.sim.status == "raised"
                                                        and not r.sim.counts_as_kill else "")
            out.append(f"| `{r.mutant.id}` | `{change}` | {_cell(r.unit.status)} | {sim.replace('|', '/')} | "
                       f"{_cell(r.harness.status, r.harness.detail).replace('|', '/')} | "
                       f"{triage_cell(r, triage).replace('|', '/')} |")
        out.append("")

    listing("Survivors (killed by neither)", survivors(results))
    listing("Killed by the unit tests, missed by the harness", missed_by_harness(results))
    listing("All mutants", list(results))
    info = meta.get("triage") or {}
    if info.get("stale") or info.get("ambiguous") or figs.get("triaged_but_killed"):
        out.extend(["## Triage registry problems", ""])
        out += [f"- stale (matches no mutant): {label}" for label in info.get("stale", [])]
        out += [f"- ambiguous: {label}" for label in info.get("ambiguous", [])]
        out += [f"- triaged, yet killed by the harness (check the entry): `{i}`" for i in figs.get("triaged_but_killed", [])]
        out.append("")
    return "\n".join(out)


def write_report(results_dir: str | os.PathLike[str], where: Path, results: Sequence[MutantResult],
                 not_run: Sequence[Mutant], meta: dict[str, Any], baseline: MutantResult | None,
                 triage: TriageMap | None = None) -> dict[str, Any]:
    figs = figures(results, not_run, triage)
    (where / "mutation.md").write_text(markdown(results, figs, meta, triage) + "\n", encoding="utf-8")

    def mutant_json(r: MutantResult) -> dict[str, Any]:
        entry = (triage or {}).get(r.mutant.id) if r.mutant else None
        return {**r.to_json(), "triage": entry.to_json() if entry else None}

    data = {**meta, "figures": figs, "per_file": per_file(results),
            "baseline": baseline.to_json() if baseline else None,
            "mutants": [mutant_json(r) for r in results], "not_run": [m.id for m in not_run]}
    (where / "mutation.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    base = where.parent
    link, tmp = base / "latest", base / f".latest.tmp{os.getpid()}"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(where.name, tmp)
    os.replace(tmp, link)
    return figs
