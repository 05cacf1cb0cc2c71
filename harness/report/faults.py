"""Fault windows and instants for shading plots, from the nemesis ops of a history.

The derivation lives in :mod:`checkers.faults` (the counterexample page reads faults
the same way, and checkers import nothing from the harness); this module keeps the
report's names for it. A :class:`FaultSpec` says which nemesis ``f`` names open a
fault window, which close it, and which are instantaneous; ``nemeses.package.Shading``
and its dict form are accepted as is. Any ``start-X`` op without a spec is paired with
``stop-X`` under the name ``X``. A window runs from the start op's invocation to the
stop op's completion; a window still open at the end of the history runs to its end.
"""

from __future__ import annotations

from checkers.faults import (FaultInstant, FaultSpec, FaultWindow, coerce_specs, describe_fault_value,
                             fault_events, process_nodes)

__all__ = ["FaultInstant", "FaultSpec", "FaultWindow", "coerce_specs", "describe_fault_value",
           "fault_events", "process_nodes"]
