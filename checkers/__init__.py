"""Checkers judge a history. They import nothing from the harness but the history type.

The Porcupine-shaped library, importable from here::

    from checkers import Model, Operation, Event, check_operations, check_events, visualize

and the checkers the harness runs (each returns ``{"valid": True | False | "unknown", ...}``)::

    from checkers import check_linearizability, check_fencing, check_stats, check_availability, merge_results

Names are loaded on first use, so ``import checkers.history`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # Porcupine's vocabulary
    "Model": "checkers.model", "Operation": "checkers.model", "Event": "checkers.model",
    "CheckResult": "checkers.model", "UNKNOWN": "checkers.model",
    "check_operations": "checkers.checker", "check_operations_verbose": "checkers.checker",
    "check_events": "checkers.checker", "check_events_verbose": "checkers.checker",
    "LinearizationInfo": "checkers.checker",
    "visualize": "checkers.visualize",
    "make_model": "checkers.models",
    # the harness's checkers
    "check_linearizability": "checkers.linearizability", "analyze": "checkers.linearizability",
    "check_fencing": "checkers.fencing", "check_stats": "checkers.stats",
    "merge_results": "checkers.results", "merge_valid": "checkers.results",
    "check_availability": "checkers.availability",
    # histories
    "read_history": "checkers.readers", "to_operations": "checkers.mapping",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'checkers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
