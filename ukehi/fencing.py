"""Fencing tokens: a u64 with the Raft term in the high 32 bits and a sequence in the low 32.

Every Raft entry carries one, the WAL stores it as a u64, and the state machine compares
them. Because the term is the high half, any token from a later term is greater than every
token from an earlier term, whatever the sequences: a deposed leader's entries always compare
lower than the new leader's. Within a term the sequence orders the entries of that leader.

`FencingToken` is an `int` subclass, so a token *is* its u64 value: comparison, hashing,
msgpack encoding and `struct.pack("<Q", token)` work without conversion, and
`FencingToken(n)` turns a stored u64 back into a token (validating the range).
"""

from __future__ import annotations

__all__ = [
    "FencingToken",
    "FencingTokenState",
    "MAX_TERM",
    "MAX_SEQ",
    "MAX_TOKEN",
]

MAX_TERM = 0xFFFF_FFFF
MAX_SEQ = 0xFFFF_FFFF
MAX_TOKEN = 0xFFFF_FFFF_FFFF_FFFF


def _check_u32(name: str, value: object) -> int:
    # bool is an int subclass; True as a term is always a caller bug.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"fencing token {name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"fencing token {name} must be >= 0, got {value}")
    if value > 0xFFFF_FFFF:
        raise ValueError(
            f"fencing token {name} must fit in 32 bits (<= {0xFFFF_FFFF}), got {value}"
        )
    return int(value)


class FencingToken(int):
    """A fencing token: `(term << 32) | seq`, always within 0 .. 2**64-1."""

    __slots__ = ()

    def __new__(cls, value: int = 0) -> "FencingToken":
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"fencing token must be an int (u64), got {type(value).__name__}")
        if value < 0 or value > MAX_TOKEN:
            raise ValueError(f"fencing token must be a u64 (0 .. {MAX_TOKEN}), got {value}")
        return super().__new__(cls, value)

    @classmethod
    def new(cls, term: int, seq: int) -> "FencingToken":
        """The token for sequence `seq` in `term` (both 0 .. 2**32-1)."""
        t = _check_u32("term", term)
        s = _check_u32("seq", seq)
        return super().__new__(cls, (t << 32) | s)

    @classmethod
    def new_leader_term(cls, term: int) -> "FencingToken":
        """The first token of a leader elected in `term`: `(term, 0)`."""
        return cls.new(term, 0)

    @property
    def term(self) -> int:
        return int(self) >> 32

    @property
    def seq(self) -> int:
        return int(self) & 0xFFFF_FFFF

    def bump_seq(self) -> "FencingToken":
        """The next token in the same term.

        Raises OverflowError when the sequence is exhausted (2**32 entries in one term): the
        leader must not wrap into the next term's space, it should step down or start a new term.
        """
        if self.seq == MAX_SEQ:
            raise OverflowError(
                f"fencing token sequence exhausted in term {self.term}; "
                "a new term is needed before more tokens can be issued"
            )
        return FencingToken(int(self) + 1)

    def __repr__(self) -> str:
        return f"FencingToken(term={self.term}, seq={self.seq})"

    def __reduce__(self) -> tuple[type, tuple[int]]:
        # Keep copy/deepcopy working on the int value (and validation on the way back).
        return (FencingToken, (int(self),))


class FencingTokenState:
    """The token counter a leader keeps: issues strictly increasing tokens.

    `bump_term_token(term)` is called when the node becomes leader of `term`; afterwards every
    `issue_token()` returns `(term, 1)`, `(term, 2)`, ... The first issued token is above
    `(term, 0)` so that it is also strictly above any token of the previous term's leader.
    """

    __slots__ = ("_current",)

    def __init__(self, current: int | FencingToken = 0) -> None:
        self._current = FencingToken(current)

    @property
    def current(self) -> FencingToken:
        """The last token issued (or the term's starting token if none issued yet)."""
        return self._current

    @property
    def term(self) -> int:
        return self._current.term

    def issue_token(self) -> FencingToken:
        """Issue the next token in the current term."""
        self._current = self._current.bump_seq()
        return self._current

    def bump_term_token(self, term: int) -> FencingToken:
        """Start `term` at `(term, 0)`. Refuses a term not above the current one.

        Raises ValueError for `term <= current term`: reusing or rewinding a term would issue
        tokens that collide with, or sort below, tokens already handed out.
        """
        start = FencingToken.new_leader_term(term)
        if start.term <= self._current.term and int(self._current) != 0:
            raise ValueError(
                f"cannot start fencing term {term}: current term is {self._current.term}; "
                "terms must strictly increase"
            )
        self._current = start
        return start

    def observe(self, token: int | FencingToken) -> None:
        """Raise the floor to `token` if it is higher (e.g. after replaying the log)."""
        tok = FencingToken(token)
        if tok > self._current:
            self._current = tok

    def __repr__(self) -> str:
        return f"FencingTokenState(current={self._current!r})"
