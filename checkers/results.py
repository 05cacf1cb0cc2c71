"""Three-valued verdicts and how checkers' results combine: false beats "unknown" beats true."""

from __future__ import annotations

from typing import Any, Iterable, Literal, Mapping

Valid = Literal[True, False, "unknown"]
VALID_VALUES: tuple[Valid, ...] = (True, False, "unknown")


def merge_valid(values: Iterable[Any]) -> Valid:
    """Combine verdicts: any ``False`` makes ``False``, else any ``"unknown"`` makes
    ``"unknown"``, else ``True`` (no verdicts at all is ``True``, like Jepsen's compose)."""
    seen_unknown = False
    for value in values:
        if value is False:
            return False
        if value == "unknown":
            seen_unknown = True
        elif value is not True:
            raise ValueError(f"a verdict must be true, false or \"unknown\", got {value!r}")
    return "unknown" if seen_unknown else True


def merge_results(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``{"valid": combined, name: result, ...}`` for named checker results."""
    for name, result in results.items():
        if "valid" not in result:
            raise ValueError(f"checker result {name!r} has no 'valid' field")
    merged: dict[str, Any] = {"valid": merge_valid(r["valid"] for r in results.values())}
    merged.update({name: dict(result) for name, result in results.items()})
    return merged


def exit_code(valid: Valid) -> int:
    """Jepsen's exit codes: 0 valid, 1 invalid, 2 unknown."""
    if valid is True:
        return 0
    if valid is False:
        return 1
    if valid == "unknown":
        return 2
    raise ValueError(f"a verdict must be true, false or \"unknown\", got {valid!r}")
