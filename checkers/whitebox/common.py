"""Shared shape of a white-box result: ``{"valid", "violations", "explanation", ...}``."""

from __future__ import annotations

from typing import Any

SHOWN = 8  # violations spelled out in an explanation; the rest are counted


def result(violations: list[dict[str, Any]], ok_text: str, **extra: Any) -> dict[str, Any]:
    """``valid`` is False when there is any violation; the explanation names the first few."""
    if not violations:
        return {"valid": True, "violations": [], "explanation": ok_text, **extra}
    lines = [v["what"] for v in violations[:SHOWN]]
    if len(violations) > SHOWN:
        lines.append(f"... and {len(violations) - SHOWN} more")
    return {"valid": False, "violations": violations[:100], "violation_count": len(violations),
            "explanation": "; ".join(lines), **extra}


def nothing_to_judge(why: str) -> dict[str, Any]:
    """No node data at all (e.g. a history checked without its run): not a pass, not a failure."""
    return {"valid": "unknown", "violations": [], "explanation": why}
