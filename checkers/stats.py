"""Counts of ok / fail / info completions per operation (Jepsen's stats checker).

A run in which some operation never succeeded is ``"unknown"``, not valid: the other
checkers had nothing of that kind to judge (e.g. every write timed out), so a clean
verdict would say more than the run shows.
"""

from __future__ import annotations

from typing import Any, Sequence

from checkers.history import Op


def check_stats(history: Sequence[Op]) -> dict[str, Any]:
    """``{"valid", "count", "ok_count", "fail_count", "info_count", "by_f", "never_succeeded"}``."""
    by_f: dict[str, dict[str, int]] = {}
    for op in history:
        if not op.is_client:
            continue
        counts = by_f.setdefault(op.f, {"ok": 0, "fail": 0, "info": 0, "open": 0})
        if op.type == "invoke":
            counts["open"] += 1
        else:
            counts[op.type] += 1
            counts["open"] -= 1
    for counts in by_f.values():
        counts["open"] = max(counts["open"], 0)  # a history may start mid-operation
    totals = {t: sum(c[t] for c in by_f.values()) for t in ("ok", "fail", "info")}
    never = sorted(f for f, c in by_f.items() if c["ok"] == 0)
    if not by_f:
        valid: Any = "unknown"
        explanation = "no client operations in the history"
    elif never:
        valid = "unknown"
        explanation = f"operation(s) {', '.join(never)} never succeeded, so nothing checked them"
    else:
        valid = True
        explanation = "every operation succeeded at least once"
    return {"valid": valid, "checker": "stats", "count": sum(totals.values()),
            "ok_count": totals["ok"], "fail_count": totals["fail"], "info_count": totals["info"],
            "by_f": {f: {t: c[t] for t in ("ok", "fail", "info", "open")} for f, c in sorted(by_f.items())},
            "never_succeeded": never, "explanation": explanation}
