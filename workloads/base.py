"""What every workload provides to the run: generators, clients and checkers.

A workload is plain data built from the test spec: the main-phase generator,
an optional final-phase generator (made after the main phase, so it can read
every key that was used), a client factory, and the checkers that judge the
history. Clients turn a ``ukehi.client.Result`` into a completion with the
honest three-valued outcome (see :func:`completion`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Sequence

from checkers.history import Op
from ukehi.client import Result, UkehiClient

Check = Callable[[Sequence[Op], Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Outcome:
    """A client's answer, shaped like harness.interpreter.Completion (workloads do not import the harness)."""

    type: str
    value: Any = None
    error: Any = None


@dataclass
class Workload:
    name: str
    generator: Any  # harness.generator.Generator
    open_client: Callable[[int], Awaitable[Any]]
    checkers: Mapping[str, Check]
    final_generator: Callable[[], Any] | None = None
    #: checker options, e.g. {"time_limit": 60}
    options: Mapping[str, Any] | None = None


def read_options(workload: str, options: Mapping[str, Any],
                 known: Mapping[str, tuple[Callable[[Any], Any], Any]]) -> dict[str, Any]:
    """The workload's options, each converted by its parser (strings from the command line
    included), defaults filled in. Unknown names and unparsable values raise ValueError
    naming the option and what it takes."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"the {workload} workload has no option {', '.join(unknown)}; "
                         f"its options: {', '.join(sorted(known))}")
    parsed: dict[str, Any] = {}
    for key, (parse, default) in known.items():
        raw = options.get(key, default)
        try:
            parsed[key] = parse(raw)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{workload} workload option {key}={raw!r}: {err}") from None
    return parsed


def number(kind: Callable[[Any], Any], minimum: float) -> Callable[[Any], Any]:
    """A parser for read_options: ``kind(raw)`` (int or float) at least ``minimum``."""
    def parse(raw: Any) -> Any:
        if isinstance(raw, bool):
            raise ValueError("expected a number")
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            raise ValueError(f"expected {'a whole number' if kind is int else 'a number'}") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value
    return parse


def completion(result: Result, *, read: bool = False, value: Any = None) -> Outcome:
    """ok -> ok; definite failure -> fail; unknown -> info, except for reads.

    A read has no effect on the state, so a read whose answer was lost is
    recorded as ``fail`` (Knossos does the same); every other unknown is
    ``info`` and the checker lets it take effect at any later time, or never.
    """
    if result.ok:
        return Outcome("ok", value=result.value if value is None else value)
    error = result.error or "error"
    if result.failed or read:
        return Outcome("fail", error=error)
    return Outcome("info", error=error)


def bound_node(worker: int, node_count: int) -> int:
    """Which node (position in the cluster's node list) worker WORKER's client is bound to.
    The interpreter records the same choice in the history (``node`` on each invocation)."""
    return worker % node_count


def pinned_client(addresses: Sequence[str], worker: int, timeout: float) -> UkehiClient:
    """A client bound to node ``worker mod n`` (Jepsen style); it follows redirects per request."""
    if not addresses:
        raise ValueError("a workload client needs at least one node address")
    first = bound_node(worker, len(addresses))
    ordered = list(addresses[first:]) + list(addresses[:first])
    return UkehiClient(ordered, timeout=timeout, pinned=True)
