"""Which consistency models an anomaly rules out, and the weakest of them.

A model is ruled out when an anomaly it proscribes occurs, and so is every model that
implies it. ``IMPLIES`` is the part of Elle's lattice (after Adya, Cerone et al. and
Bailis et al.) that these anomalies reach; each entry lists the directly weaker models.
"""

from __future__ import annotations

from typing import Iterable

IMPLIES: dict[str, tuple[str, ...]] = {
    "strict-serializable": ("serializable", "strong-session-serializable"),
    "strong-session-serializable": ("serializable",),
    "serializable": ("repeatable-read", "snapshot-isolation"),
    "snapshot-isolation": ("consistent-view", "cursor-stability", "read-atomic"),
    "repeatable-read": ("cursor-stability",),
    "consistent-view": ("read-committed",),
    "cursor-stability": ("read-committed",),
    "read-atomic": ("read-committed",),
    "read-committed": ("read-uncommitted",),
    "read-uncommitted": (),
}
MODELS = tuple(IMPLIES)

_CYCLES = ("G0", "G1c", "G-single", "G-nonadjacent", "G2-item")

# anomaly -> the models that proscribe it directly
PROSCRIBED_BY: dict[str, tuple[str, ...]] = {
    "G0": ("read-uncommitted",),
    "G1a": ("read-committed",),
    "G1b": ("read-committed",),
    "G1c": ("read-committed",),
    "G-single": ("consistent-view", "repeatable-read"),
    "G-nonadjacent": ("snapshot-isolation", "repeatable-read"),
    "G2-item": ("repeatable-read",),
    "lost-update": ("cursor-stability",),
    "internal": ("read-atomic",),
    "future-read": ("read-atomic",),
    # no model allows a read that no order of the writes can produce
    "garbage-read": ("read-uncommitted",),
    "duplicate-elements": ("read-uncommitted",),
    "incompatible-order": ("read-uncommitted",),
    "cyclic-versions": ("read-uncommitted",),
    **{f"{c}-process": ("strong-session-serializable",) for c in _CYCLES},
    **{f"{c}-realtime": ("strict-serializable",) for c in _CYCLES},
}
ANOMALY_TYPES = tuple(PROSCRIBED_BY)


def _stronger() -> dict[str, set[str]]:
    up: dict[str, set[str]] = {m: set() for m in IMPLIES}
    for strong, weaker in IMPLIES.items():
        for w in weaker:
            up[w].add(strong)
    return up


_UP = _stronger()


def ruled_out(anomalies: Iterable[str]) -> set[str]:
    """Every model that some anomaly rules out (directly or through a weaker one)."""
    out: set[str] = set()
    todo = [m for a in anomalies for m in PROSCRIBED_BY.get(a, ())]
    while todo:
        m = todo.pop()
        if m not in out:
            out.add(m)
            todo.extend(_UP[m])
    return out


def weakest(models: set[str]) -> list[str]:
    """The ruled-out models none of whose weaker models is ruled out."""
    return sorted(m for m in models if not any(w in models for w in IMPLIES[m]))


def _below(model: str) -> set[str]:
    out: set[str] = set()
    todo = [model]
    while todo:
        m = todo.pop()
        if m not in out:
            out.add(m)
            todo.extend(IMPLIES[m])
    return out


def check_models(models: Iterable[str]) -> tuple[str, ...]:
    models = tuple(models)
    for m in models:
        if m not in IMPLIES:
            raise ValueError(f"unknown consistency model {m!r}; choose from {', '.join(MODELS)}")
    return models
