"""The two kinds of trouble the core reports while it runs, and what the driver does about each.

- :class:`BadPeerMessage`: *someone else's* input is wrong. A message from a peer is
  malformed, addressed elsewhere, or claims something that cannot be true of this node's
  state (e.g. an acknowledgement of log entries this leader never had). The core raised it
  before acting on the message, so its own state is intact: the driver drops the message,
  counts it, logs a warning and keeps serving. Raft tolerates lost messages, so dropping one
  is always safe.
- :class:`InvariantViolation`: *this node's own* state is broken. A rule the core relies on
  for safety does not hold (a committed entry would be overwritten or conflicts with what a
  leader sends, the commit index would go backwards or past the log, entries would be applied
  out of order). The core's state can no longer be trusted, and anything it does next could
  spread the damage (acknowledge a write, vote, answer a read). The driver must stop at once,
  persisting nothing more: the node logs one ``level=fatal event=invariant-violated`` line
  naming the invariant, the term and the index, and exits with its own exit code
  (``ukehi.node.EXIT_INVARIANT_VIOLATED``). A node that stops is a crash the rest of the
  cluster tolerates; a node that limps on can corrupt it.

Neither derives from the other, and InvariantViolation is deliberately not a ValueError nor a
:class:`~ukehi.raft.types.RaftError`, so no ``except ValueError`` or ``except RaftError``
meant for ordinary refusals swallows it. These are explicit raises, never ``assert``
statements, so they hold under ``python -O`` too.
"""

from __future__ import annotations

from .types import RaftError

__all__ = ["BadPeerMessage", "InvariantViolation"]


class BadPeerMessage(RaftError, ValueError):
    """A peer's message is malformed or impossible; drop it (this node's state is intact)."""


class InvariantViolation(Exception):
    """This node's own Raft state broke a safety invariant: stop the node, persist nothing.

    ``invariant`` is a short stable name (used in the node's fatal log line), ``index`` the
    log index concerned, ``term`` the node's current term when the core knew it (the log
    alone does not know the current term: then it is None and the driver fills it in).
    """

    def __init__(self, invariant: str, detail: str, *, index: int | None = None,
                 term: int | None = None) -> None:
        self.invariant = invariant
        self.detail = detail
        self.index = index
        self.term = term
        super().__init__(f"Raft invariant {invariant!r} violated (term {term}, index {index}): {detail}")
