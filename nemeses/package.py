"""Nemesis packages: Jepsen's composable fault families.

A package is plain data plus one coroutine:

- ``generator(rng)`` gives the next fault op (``{"f": ..., "value": ...}``) or None;
- ``final()`` lists the ops that undo everything the package may have done
  (run before the final phase, always, even if the package never fired);
- ``invoke(op)`` performs one op through the backend's verbs and returns a
  :class:`~harness.interpreter.Completion` whose value records what was done
  (the grudge, the pid, the offsets...), so the history alone explains the run;
- ``shading`` tells the plots which ops open and close fault windows.

:func:`compose` merges packages into one nemesis for the interpreter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

OpDict = dict[str, Any]


@dataclass(frozen=True)
class Shading:
    """How a fault family appears on plots: windows from start to stop ops, or instants."""

    name: str
    start: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    instant: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "start": list(self.start), "stop": list(self.stop),
                "instant": list(self.instant)}


@dataclass
class NemesisPackage:
    name: str
    generator: Callable[[random.Random], OpDict | None]
    final: Callable[[], list[OpDict]]
    invoke: Callable[[OpDict], Awaitable[Any]]
    shading: Shading
    #: f names this package performs; compose() routes ops by them
    fs: frozenset[str] = field(default_factory=frozenset)


class ComposedNemesis:
    """Several packages as one nemesis: each step picks a package at random."""

    def __init__(self, packages: Sequence[NemesisPackage]) -> None:
        self.packages = list(packages)
        self._route: dict[str, NemesisPackage] = {}
        for package in self.packages:
            for f in package.fs:
                if f in self._route:
                    raise ValueError(f"nemesis op {f!r} is claimed by both {self._route[f].name} "
                                     f"and {package.name}")
                self._route[f] = package

    def next(self, rng: random.Random) -> OpDict | None:
        if not self.packages:
            return None
        order = list(self.packages)
        rng.shuffle(order)
        for package in order:
            op = package.generator(rng)
            if op is not None:
                return op
        return None

    async def invoke(self, op: OpDict) -> Any:
        package = self._route.get(op["f"])
        if package is None:
            raise ValueError(f"no nemesis package performs {op['f']!r}")
        return await package.invoke(op)

    def final_ops(self) -> list[OpDict]:
        return [op for package in self.packages for op in package.final()]

    @property
    def shading(self) -> list[Shading]:
        return [package.shading for package in self.packages]


def compose(packages: Sequence[NemesisPackage]) -> ComposedNemesis:
    return ComposedNemesis(packages)


def alternate(start: Callable[[random.Random], OpDict], stop: OpDict) -> Callable[[random.Random], OpDict]:
    """A generator that starts a fault, then stops it, then starts another, ... (Jepsen's cycle)."""
    state = {"active": False}

    def generator(rng: random.Random) -> OpDict:
        state["active"] = not state["active"]
        return start(rng) if state["active"] else dict(stop)

    return generator
