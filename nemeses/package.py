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


def one_at_a_time(name: str, packages: Sequence[NemesisPackage]) -> NemesisPackage:
    """Several packages as one, with at most one fault open at a time.

    Each step either closes the fault the previous step opened (the same package's next op,
    e.g. ``stop-partition`` after ``start-partition``) or opens a fault of the next package
    of a shuffled deck: every package takes its turn once before any takes a second (drawn
    independently, a 20 s run at one op a second left a package out in two seeds of five).
    ``compose`` lets every package keep its fault open until that package is drawn
    again, so with six packages about three faults overlap and the cluster rarely has a
    quorum; a default mix meant to exercise leader changes with entries in flight needs the
    cluster serving between faults.
    """
    if not packages:
        raise ValueError(f"{name}: no packages to take turns")
    route = ComposedNemesis(packages)._route  # refuses two packages claiming one op
    state: dict[str, NemesisPackage | None] = {"open": None}
    deck: list[NemesisPackage] = []

    def generator(rng: random.Random) -> OpDict | None:
        opened = state["open"]
        if opened is not None:
            state["open"] = None
            op = opened.generator(rng)
            if op is not None:
                return op
        for _ in range(2 * len(packages)):
            if not deck:
                deck.extend(packages)
                rng.shuffle(deck)
            package = deck.pop()
            op = package.generator(rng)
            if op is None:
                continue
            if op["f"] in package.shading.start:
                state["open"] = package
            return op
        return None

    async def invoke(op: OpDict) -> Any:
        package = route.get(op["f"])
        if package is None:
            raise ValueError(f"no nemesis package of {name} performs {op['f']!r}")
        return await package.invoke(op)

    shading = Shading(name, start=tuple(f for p in packages for f in p.shading.start),
                      stop=tuple(f for p in packages for f in p.shading.stop),
                      instant=tuple(f for p in packages for f in p.shading.instant))
    return NemesisPackage(name=name, generator=generator,
                          final=lambda: [op for p in packages for op in p.final()],
                          invoke=invoke, shading=shading, fs=frozenset(route))
