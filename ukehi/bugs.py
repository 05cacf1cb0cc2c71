"""Planted bugs for testing the harness: a node that is wrong on purpose.

The harness must prove it catches a broken system, so a node can be started with
`--unsafe-bug NAME`. That is refused unless the environment variable
`UKEHI_I_KNOW_THIS_IS_UNSAFE=1` is set, so nobody turns one on by accident in production.
Each bug is a name the driver checks at one precise place; nothing else changes.
"""

from __future__ import annotations

import os
from typing import Mapping

__all__ = ["KNOWN_BUGS", "ENV_VAR", "UnsafeBugRefused", "check_unsafe_bug"]

ENV_VAR = "UKEHI_I_KNOW_THIS_IS_UNSAFE"

KNOWN_BUGS: dict[str, str] = {
    # Serve get from this node's state machine at once, on any node and without ReadIndex:
    # a partitioned old leader or a lagging follower returns stale values.
    "stale-read": "answer reads from local state on any node, without ReadIndex",
    # Acknowledge a write as soon as it is proposed, before it commits: a write lost in a
    # leader change was still reported ok.
    "early-ack": "acknowledge writes when proposed instead of when applied",
}


class UnsafeBugRefused(ValueError):
    """The bug name is unknown or the safety switch is not set."""


def check_unsafe_bug(name: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Validate `--unsafe-bug`: returns the name (or None) or raises UnsafeBugRefused."""
    if name is None:
        return None
    env = os.environ if environ is None else environ
    if name not in KNOWN_BUGS:
        known = ", ".join(f"{k} ({v})" for k, v in KNOWN_BUGS.items())
        raise UnsafeBugRefused(f"unknown --unsafe-bug {name!r}; known bugs: {known}")
    if env.get(ENV_VAR) != "1":
        raise UnsafeBugRefused(
            f"--unsafe-bug {name} makes this node incorrect on purpose; set {ENV_VAR}=1 "
            "in the environment if you really want that (test harness only)"
        )
    return name
