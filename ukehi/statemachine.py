"""The interface between the Raft apply loop and a replicated state machine.

The node's apply loop feeds committed entries, in log order, to any object that satisfies
`StateMachine`; `ukehi.kv.KVStateMachine` is the built-in one. Implementations must be
deterministic: the result and the new state may depend only on the prior state and the
entry (index, fencing token, command bytes), never on clocks, randomness or the host, since
every replica applies the same entries and must reach the same state.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol, Union, runtime_checkable

from ukehi.fencing import FencingToken

__all__ = ["StateMachine", "EntryLike", "Result", "entry_fields"]

# A result is a plain dict a node can send to a client:
#   {"ok": True, "value": ...}            or
#   {"ok": False, "error": <ErrorCode value>, "message": str}
Result = dict[str, Any]


@runtime_checkable
class _HasEntryFields(Protocol):
    index: int
    fencing_token: int
    command: bytes


@runtime_checkable
class _RaftEntry(Protocol):
    index: int
    fencing_token: int
    kind: int
    data: bytes


# Accepted entry shapes:
#   * an object with .index/.fencing_token/.command (e.g. ukehi.storage.format.WalEntry);
#   * a Raft log entry with .index/.fencing_token/.kind/.data (ukehi.raft Entry): only kind 0
#     (NORMAL) carries a state-machine command; no-op and configuration entries are passed on
#     as an empty command, so they consume their index (last_applied stays equal to the Raft
#     applied index, which snapshots depend on) without touching the state;
#   * a plain (index, fencing_token, command) tuple.
EntryLike = Union[_HasEntryFields, _RaftEntry, tuple[int, int, bytes]]


def entry_fields(entry: EntryLike) -> tuple[int, int, bytes]:
    """(index, fencing_token, command) of an entry given in any accepted shape."""
    # Attribute access first: WalEntry is a NamedTuple whose positional order differs.
    if hasattr(entry, "fencing_token") and hasattr(entry, "index"):
        if hasattr(entry, "command"):
            return entry.index, entry.fencing_token, entry.command  # type: ignore[union-attr]
        if hasattr(entry, "kind") and hasattr(entry, "data"):
            command = entry.data if int(entry.kind) == 0 else b""  # type: ignore[union-attr]
            return entry.index, entry.fencing_token, command  # type: ignore[union-attr]
    if isinstance(entry, tuple) and len(entry) == 3:
        return entry[0], entry[1], entry[2]
    raise TypeError(
        "an entry must have .index, .fencing_token and .command (or .kind and .data) "
        f"attributes or be an (index, fencing_token, command) tuple, got {type(entry).__name__}"
    )


@runtime_checkable
class StateMachine(Protocol):
    """What the apply loop needs from a replicated state machine."""

    @property
    def last_applied(self) -> int:
        """Index of the last entry applied (0 before any)."""
        ...

    @property
    def last_token(self) -> FencingToken:
        """Fencing token of the last entry accepted (0 before any)."""
        ...

    def apply(self, index: int, fencing_token: int, command: bytes) -> Result:
        """Apply one committed entry and return its result."""
        ...

    def apply_batch(self, entries: Iterable[EntryLike]) -> list[Result]:
        """Apply entries in order; one result per entry."""
        ...

    def snapshot(self) -> bytes:
        """The whole state (including last_applied/last_token) as deterministic bytes."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's; raises ValueError on bad bytes."""
        ...
